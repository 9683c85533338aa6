"""The permission rule of PRODUCT.md as one pure function.

`decide` answers `can_message`, the `?peer=` handshake and typing. It reads a
snapshot of facts that the store fetches in a single Redis round trip, so the
decision always reflects the state of that moment.

Sends use its Lua twin, rule.lua, inside the send script, so that deciding and
storing are one atomic step. tests/test_rule_lua.py proves the two agree on
every input: change both or neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    # Why a message may go through (never shown to clients).
    FOLLOWS_YOU = "follows_you"
    OPEN_DMS = "open_dms"
    REPLY = "reply"
    ACCEPTED = "accepted"
    # Why not: these values are the contract's `reason` of a `not_allowed`.
    SELF = "self"
    YOU_BLOCKED = "you_blocked"
    CLOSED = "closed"
    RESTRICTED = "restricted"
    SUSPENDED = "suspended"
    # Deliberately one value for "they blocked you" and "their account is
    # suspended": a refusal must not reveal a block.
    CANNOT_RECEIVE = "cannot_receive"
    # Why not, answered with another error code than `not_allowed`.
    UNKNOWN_SENDER = "unknown_sender"
    UNKNOWN_RECIPIENT = "unknown_recipient"


# The reasons a client may see in `not_allowed` errors and in `relationship`.
PUBLIC_REASONS = frozenset(
    {
        Reason.SELF,
        Reason.YOU_BLOCKED,
        Reason.CLOSED,
        Reason.RESTRICTED,
        Reason.SUSPENDED,
        Reason.CANNOT_RECEIVE,
    }
)


@dataclass(frozen=True, slots=True)
class Facts:
    """What is true between a sender A and a recipient B right now."""

    sender_exists: bool
    recipient_exists: bool
    same_account: bool = False
    # Suspended by an operator (or otherwise not active): sends nothing, receives nothing.
    sender_suspended: bool = False
    recipient_suspended: bool = False
    # Reported by enough people in good standing: may write only to those who
    # follow it or wrote to it, until an operator clears it.
    sender_restricted: bool = False
    sender_blocks_recipient: bool = False
    recipient_blocks_sender: bool = False
    recipient_follows_sender: bool = False
    recipient_open_dms: bool = False
    recipient_wrote_to_sender: bool = False
    # B already has the conversation in their inbox (they accepted it, or it started
    # there): later messages from A stay in the inbox.
    recipient_has_inbox_conversation: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: Reason
    # Where the message lands for the recipient; None when not allowed.
    folder: str | None = None


def decide(facts: Facts) -> Decision:
    """May A message B, and if so, does it land in B's inbox or requests?"""
    if facts.same_account:
        return Decision(False, Reason.SELF)
    if not facts.sender_exists:
        return Decision(False, Reason.UNKNOWN_SENDER)
    if not facts.recipient_exists:
        return Decision(False, Reason.UNKNOWN_RECIPIENT)
    if facts.sender_suspended:
        return Decision(False, Reason.SUSPENDED)
    if facts.recipient_suspended:
        return Decision(False, Reason.CANNOT_RECEIVE)
    # A block beats every clause below, in both directions.
    if facts.sender_blocks_recipient:
        return Decision(False, Reason.YOU_BLOCKED)
    if facts.recipient_blocks_sender:
        return Decision(False, Reason.CANNOT_RECEIVE)
    if facts.recipient_follows_sender:
        return Decision(True, Reason.FOLLOWS_YOU, "inbox")
    if facts.recipient_wrote_to_sender:
        return Decision(True, Reason.REPLY, "inbox")
    # Past this point only open DMs could let A in, and a restricted account
    # loses exactly that: the right to start conversations with strangers.
    if facts.sender_restricted:
        return Decision(False, Reason.RESTRICTED)
    if facts.recipient_open_dms:
        folder = "inbox" if facts.recipient_has_inbox_conversation else "requests"
        reason = Reason.ACCEPTED if facts.recipient_has_inbox_conversation else Reason.OPEN_DMS
        return Decision(True, reason, folder)
    return Decision(False, Reason.CLOSED)


def refusal_detail(reason: Reason, recipient: str) -> str:
    """The sentence a person reads when `decide` says no. It never says "blocked you"."""
    return {
        Reason.SELF: "You cannot send a message to yourself.",
        Reason.UNKNOWN_SENDER: "Your account no longer exists.",
        Reason.UNKNOWN_RECIPIENT: f"There is no account @{recipient}.",
        Reason.SUSPENDED: "Your account is suspended; it cannot send messages.",
        Reason.CANNOT_RECEIVE: f"@{recipient} cannot receive messages from you.",
        Reason.YOU_BLOCKED: f"You blocked @{recipient}; unblock them to send a message.",
        Reason.RESTRICTED: (
            "Your account was reported by several people, so it is restricted: you can "
            "write only to people who follow you or have written to you. An operator "
            f"can lift the restriction. @{recipient} does neither."
        ),
        Reason.CLOSED: f"@{recipient} only receives messages from people they follow.",
    }.get(reason, f"You can't send messages to @{recipient}.")
