"""The pure checks behind businesses: quick replies, a pick among them, ref,
the Message-button query, and the PATCH /api/me allow-list."""

from __future__ import annotations

import pytest

from chat.errors import ApiError
from chat.protocol import validation
from chat.store.sends import extra_fields
from chat.store.store import public_user


def field_of(call: object, *args: object) -> tuple[str, str | None]:
    with pytest.raises(ApiError) as raised:
        call(*args)  # type: ignore[operator]
    return raised.value.code, raised.value.field


def test_quick_replies_are_cleaned_and_bounded() -> None:
    assert validation.quick_replies([{"label": "  Hi  ", "metadata": " m "}]) == [
        {"label": "Hi", "metadata": " m "}
    ]
    assert validation.quick_replies([]) == []
    ten = [{"label": "l" * 36, "metadata": "m" * 200}] * 10
    assert len(validation.quick_replies(ten)) == 10
    for bad in (
        None,
        {"label": "x", "metadata": "m"},
        [{"label": "x", "metadata": "m"}] * 11,
        [{"label": "   ", "metadata": "m"}],
        [{"label": "l" * 37, "metadata": "m"}],
        [{"label": "x", "metadata": "m" * 201}],
        [{"label": "x", "metadata": ""}],
        [{"label": "x"}],
        [{"label": "x", "metadata": "m", "more": "y"}],
        ["x"],
    ):
        assert field_of(validation.quick_replies, bad) == ("invalid", "quick_replies")


def test_a_quick_reply_must_be_offered() -> None:
    offered = [[{"label": "A", "metadata": "a"}], [{"label": "B", "metadata": "b"}]]
    assert validation.quick_reply("a", offered) == "a"
    assert validation.quick_reply("b", offered) == "b"
    assert validation.quick_reply(None, offered) is None
    for bad in ("A", "c", 1, ["a"], ""):
        assert field_of(validation.quick_reply, bad, offered) == ("invalid", "quick_reply")
    assert field_of(validation.quick_reply, "a", []) == ("invalid", "quick_reply")


def test_ref() -> None:
    assert validation.ref("pricing-page_v2.1") == "pricing-page_v2.1"
    assert validation.ref("x" * 64) == "x" * 64
    assert validation.ref(None) is None
    for bad in ("", "x" * 65, "a b", "é", "a/b", "a\n", 5):
        assert field_of(validation.ref, bad) == ("invalid", "ref")


def test_button_request() -> None:
    got = validation.button_request({"handle": "@Shop", "text": "  hi  ", "label": " Chat  now "})
    assert got == validation.ButtonRequest("Shop", "hi", "Chat now", "large", None)
    assert validation.button_request({"handle": "s", "size": "small", "text": " "}).text is None
    cases = [
        ({}, ("invalid", "handle")),
        ({"handle": "a" * 16}, ("invalid", "handle")),
        ({"handle": "s", "text": "x" * 10_001}, ("too_long", "text")),
        ({"handle": "s", "label": "x" * 61}, ("invalid", "label")),
        ({"handle": "s", "size": "medium"}, ("invalid", "size")),
        ({"handle": "s", "ref": "a b"}, ("invalid", "ref")),
    ]
    for params, expected in cases:
        assert field_of(validation.button_request, params) == expected


def test_me_fields_allow_list() -> None:
    validation.me_fields({"name": "A", "open_dms": True, "quick_replies": []})
    assert field_of(validation.me_fields, {"nmae": "A"}) == ("invalid", "nmae")


def test_optional_message_fields_encode_only_what_was_sent() -> None:
    assert extra_fields(None) == ""
    assert extra_fields({"ref": None, "quick_reply": None}) == ""
    assert extra_fields({"ref": "p", "quick_reply": 'say "hi"'}) == (
        ',"ref":"p","quick_reply":"say \\"hi\\""'
    )


def test_business_user_objects_carry_quick_replies() -> None:
    row = {"handle": "Shop", "kind": "business", "qr": '[{"label":"A","metadata":"a"}]'}
    assert public_user(row)["quick_replies"] == [{"label": "A", "metadata": "a"}]
    assert public_user({"handle": "Shop", "kind": "business"})["quick_replies"] == []
    assert "quick_replies" not in public_user({"handle": "bob"})
