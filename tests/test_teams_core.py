"""The pure part of teams (chat/teams/core.py): statuses, PATCH bodies, filters."""

from __future__ import annotations

import pytest

from chat.errors import ApiError
from chat.teams import core
from chat.teams.core import ConversationState, Filter


def test_a_state_nobody_set_is_open_and_unassigned() -> None:
    assert core.decode_state(None) == ConversationState("open", None)
    assert core.decode_state("not json") == ConversationState("open", None)
    assert core.decode_state('{"status":"weird"}') == ConversationState("open", None)
    assert core.decode_state('{"status":"resolved","assignee":"Ann"}') == ConversationState(
        "resolved", "Ann"
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"status": "pending"}, core.Change("pending", False, None)),
        ({"assignee": None}, core.Change(None, True, None)),
        ({"assignee": "Ann", "status": "open"}, core.Change("open", True, "ann")),
    ],
)
def test_a_patch_body_says_what_changes(body: dict[str, object], expected: core.Change) -> None:
    assert core.change(body) == expected


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, None),
        ({"status": "closed"}, "status"),
        ({"status": None}, "status"),
        ({"assignee": "not a handle"}, "assignee"),
        ({"assignee": 7}, "assignee"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_patch_body_names_its_field(body: dict[str, object], field: str | None) -> None:
    with pytest.raises(ApiError) as refused:
        core.change(body)
    assert refused.value.code == "invalid" and refused.value.field == field


def test_listing_filters() -> None:
    ann_open = ConversationState("open", "Ann")
    nobody_pending = ConversationState("pending", None)
    mine = core.listing_filter(None, "me", "ann")
    assert mine.matches(ann_open) and not mine.matches(nobody_pending)
    unassigned = core.listing_filter("pending", "none", "ann")
    assert unassigned.matches(nobody_pending) and not unassigned.matches(ann_open)
    by_handle = core.listing_filter("", "ANN", "bob")
    assert by_handle == Filter(None, "ann") and by_handle.matches(ann_open)
    assert not core.listing_filter(None, None, "x").active
    for status, assignee in (("done", None), (None, "two words")):
        with pytest.raises(ApiError):
            core.listing_filter(status, assignee, "ann")


def test_the_conversation_frame() -> None:
    frame = core.conversation_frame("Cust", ConversationState("resolved", "Ann"), "Bob")
    assert frame == {
        "type": "conversation",
        "peer": "Cust",
        "status": "resolved",
        "assignee": "Ann",
        "by": "Bob",
    }
