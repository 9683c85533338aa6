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
        ({"recipient_blocks_sender": True}, Reason.BLOCKED_YOU),
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


def test_inactive_accounts_neither_send_nor_receive() -> None:
    open_ = {"recipient_open_dms": True}
    assert decide(with_(sender_active=False, **open_)).reason is Reason.INACTIVE
    assert decide(with_(recipient_active=False, **open_)).reason is Reason.INACTIVE


def test_follow_beats_open_dms_for_placement() -> None:
    decision = decide(with_(recipient_open_dms=True, recipient_follows_sender=True))
    assert decision.folder == "inbox"


def test_refusals_explain_themselves_in_plain_words() -> None:
    assert (
        refusal_detail(Reason.CLOSED, "bob")
        == "@bob only receives messages from people they follow."
    )
    assert "unblock" in refusal_detail(Reason.YOU_BLOCKED, "bob")
    # Being blocked is not announced as such.
    assert "blocked" not in refusal_detail(Reason.BLOCKED_YOU, "bob")
