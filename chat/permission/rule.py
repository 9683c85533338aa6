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
    FOLLOWS_YOU = "follows_you"
    OPEN_DMS = "open_dms"
    REPLY = "reply"
    ACCEPTED = "accepted"
    SELF = "self"
    UNKNOWN_SENDER = "unknown_sender"
    UNKNOWN_RECIPIENT = "unknown_recipient"
    INACTIVE = "inactive"
    YOU_BLOCKED = "you_blocked"
    BLOCKED_YOU = "blocked_you"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Facts:
    """What is true between a sender A and a recipient B right now."""

    sender_exists: bool
    recipient_exists: bool
    same_account: bool = False
    sender_active: bool = True
    recipient_active: bool = True
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
    if not (facts.sender_active and facts.recipient_active):
        return Decision(False, Reason.INACTIVE)
    # A block beats every clause below, in both directions.
    if facts.sender_blocks_recipient:
        return Decision(False, Reason.YOU_BLOCKED)
    if facts.recipient_blocks_sender:
        return Decision(False, Reason.BLOCKED_YOU)
    if facts.recipient_follows_sender:
        return Decision(True, Reason.FOLLOWS_YOU, "inbox")
    if facts.recipient_wrote_to_sender:
        return Decision(True, Reason.REPLY, "inbox")
    if facts.recipient_open_dms:
        folder = "inbox" if facts.recipient_has_inbox_conversation else "requests"
        reason = Reason.ACCEPTED if facts.recipient_has_inbox_conversation else Reason.OPEN_DMS
        return Decision(True, reason, folder)
    return Decision(False, Reason.CLOSED)


def refusal_detail(reason: Reason, recipient: str) -> str:
    """The sentence a person reads when `decide` says no."""
    return {
        Reason.SELF: "You cannot send a message to yourself.",
        Reason.UNKNOWN_SENDER: "Your account no longer exists.",
        Reason.UNKNOWN_RECIPIENT: f"There is no account @{recipient}.",
        Reason.INACTIVE: f"@{recipient} cannot receive messages right now.",
        Reason.YOU_BLOCKED: f"You blocked @{recipient}; unblock them to send a message.",
        Reason.BLOCKED_YOU: f"You can't send messages to @{recipient}.",
        Reason.CLOSED: f"@{recipient} only receives messages from people they follow.",
    }.get(reason, f"You can't send messages to @{recipient}.")
