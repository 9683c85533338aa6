"""The permission rule of PRODUCT.md, clause by clause, as a pure function."""

from __future__ import annotations

import dataclasses

import pytest

from chat.permission import Facts, Reason, decide
from chat.permission.rule import refusal_detail

BASE = Facts(sender_exists=True, recipient_exists=True)


def with_(**changes: bool) -> Facts:
    return dataclasses.replace(BASE, **changes)


def test_strangers_with_closed_dms_cannot_write() -> None:
    decision = decide(BASE)
    assert not decision.allowed
    assert decision.reason is Reason.CLOSED
    assert decision.folder is None


def test_recipient_following_sender_allows_into_inbox() -> None:
    decision = decide(with_(recipient_follows_sender=True))
    assert decision.allowed and decision.folder == "inbox"
    assert decision.reason is Reason.FOLLOWS_YOU


def test_open_dms_allow_anyone_into_requests() -> None:
    decision = decide(with_(recipient_open_dms=True))
    assert decision.allowed and decision.folder == "requests"
    assert decision.reason is Reason.OPEN_DMS


def test_accepted_conversation_under_open_dms_lands_in_inbox() -> None:
    decision = decide(with_(recipient_open_dms=True, recipient_has_inbox_conversation=True))
    assert decision.allowed and decision.folder == "inbox"


def test_accepting_alone_does_not_reopen_closed_dms() -> None:
    # Accepting moves a conversation; only the three clauses grant the right to write.
    assert not decide(with_(recipient_has_inbox_conversation=True)).allowed


def test_reply_rule_recipient_wrote_first() -> None:
    decision = decide(with_(recipient_wrote_to_sender=True))
    assert decision.allowed and decision.folder == "inbox"
    assert decision.reason is Reason.REPLY


def test_the_sender_following_the_recipient_grants_nothing() -> None:
    # Direction matters: A following B does not let A write to B.
    assert not decide(BASE).allowed


@pytest.mark.parametrize(
    "grant",
    [
        {"recipient_follows_sender": True},
        {"recipient_open_dms": True},
        {"recipient_wrote_to_sender": True},
    ],
)
@pytest.mark.parametrize(
    ("block", "reason"),
    [
        ({"sender_blocks_recipient": True}, Reason.YOU_BLOCKED),
        ({"recipient_blocks_sender": True}, Reason.CANNOT_RECEIVE),
    ],
)
def test_a_block_in_either_direction_beats_every_grant(
    grant: dict[str, bool], block: dict[str, bool], reason: Reason
) -> None:
    decision = decide(with_(**grant, **block))
    assert not decision.allowed
    assert decision.reason is reason


def test_no_writing_to_yourself() -> None:
    decision = decide(with_(same_account=True, recipient_open_dms=True))
    assert not decision.allowed and decision.reason is Reason.SELF


def test_unknown_accounts() -> None:
    assert decide(with_(recipient_exists=False)).reason is Reason.UNKNOWN_RECIPIENT
    assert decide(with_(sender_exists=False)).reason is Reason.UNKNOWN_SENDER


def test_suspended_accounts_neither_send_nor_receive() -> None:
    open_ = {"recipient_open_dms": True, "recipient_follows_sender": True}
    # Your own suspension is yours to know; theirs reads like a block.
    assert decide(with_(sender_suspended=True, **open_)).reason is Reason.SUSPENDED
    assert decide(with_(recipient_suspended=True, **open_)).reason is Reason.CANNOT_RECEIVE
    both = with_(sender_suspended=True, recipient_suspended=True)
    assert decide(both).reason is Reason.SUSPENDED


def test_restricted_accounts_write_only_to_followers_and_to_who_wrote() -> None:
    assert decide(with_(sender_restricted=True, recipient_follows_sender=True)).allowed
    assert decide(with_(sender_restricted=True, recipient_wrote_to_sender=True)).allowed
    # Open DMs, even an accepted conversation, no longer let it in.
    for grant in ({}, {"recipient_has_inbox_conversation": True}):
        refused = decide(with_(sender_restricted=True, recipient_open_dms=True, **grant))
        assert not refused.allowed and refused.reason is Reason.RESTRICTED
    # Closed DMs say restricted too: it is what the sender must learn.
    assert decide(with_(sender_restricted=True)).reason is Reason.RESTRICTED
    # A block still wins, and a block by them is still not revealed.
    blocked = with_(sender_restricted=True, recipient_blocks_sender=True)
    assert decide(blocked).reason is Reason.CANNOT_RECEIVE


def test_every_refusal_a_client_sees_has_a_contract_reason() -> None:
    from chat.permission.rule import PUBLIC_REASONS

    assert {r.value for r in PUBLIC_REASONS} == {
        "self",
        "you_blocked",
        "closed",
        "restricted",
        "suspended",
        "cannot_receive",
    }


def test_follow_beats_open_dms_for_placement() -> None:
    decision = decide(with_(recipient_open_dms=True, recipient_follows_sender=True))
    assert decision.folder == "inbox"


def test_refusals_explain_themselves_in_plain_words() -> None:
    assert (
        refusal_detail(Reason.CLOSED, "bob")
        == "@bob only receives messages from people they follow."
    )
    assert "unblock" in refusal_detail(Reason.YOU_BLOCKED, "bob")
    # Being blocked is not announced as such, nor told apart from a suspension.
    assert "block" not in refusal_detail(Reason.CANNOT_RECEIVE, "bob")
    assert refusal_detail(Reason.CANNOT_RECEIVE, "bob") == "@bob cannot receive messages from you."
    restricted = refusal_detail(Reason.RESTRICTED, "bob")
    assert "reported" in restricted and "operator" in restricted
