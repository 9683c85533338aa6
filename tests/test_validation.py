"""Validation of what clients send, and frame parsing: pure functions."""

from __future__ import annotations

import json

import pytest

from chat.errors import ApiError
from chat.protocol import frames, validation
from chat.protocol.frames import PingFrame, ReadFrame, SendFrame, TypingFrame


@pytest.mark.parametrize("good", ["a", "Alice_99", "x" * 15, "_", "ABC"])
def test_valid_handles(good: str) -> None:
    assert validation.handle(good) == good


@pytest.mark.parametrize(
    "bad", ["", "x" * 16, "al ice", "al-ice", "élodie", "a.b", "bob\n", None, 5]
)
def test_invalid_handles(bad: object) -> None:
    with pytest.raises(ApiError) as raised:
        validation.handle(bad)
    assert raised.value.code == "invalid" and raised.value.field == "handle"


def test_passwords_need_eight_characters() -> None:
    assert validation.password("12345678") == "12345678"
    for bad in ("1234567", None, 12345678, "x" * 1025):
        with pytest.raises(ApiError) as raised:
            validation.password(bad)
        assert raised.value.field == "password"


def test_text_is_trimmed_and_bounded() -> None:
    assert validation.text("  hi \n") == "hi"
    assert validation.text(" " + "x" * 10_000 + " ") == "x" * 10_000
    with pytest.raises(ApiError) as too_long:
        validation.text("x" * 10_001)
    assert too_long.value.code == "too_long" and too_long.value.status == 422
    for empty in ("", "   ", "\n\t"):
        with pytest.raises(ApiError) as raised:
            validation.text(empty)
        assert raised.value.code == "invalid"
    with pytest.raises(ApiError):
        validation.text(42)


def test_text_length_counts_characters_not_bytes() -> None:
    assert validation.text("é" * 10_000) == "é" * 10_000


def test_client_id_bounds() -> None:
    assert validation.client_id(None) is None
    assert validation.client_id("c" * 64) == "c" * 64
    for bad in ("", "c" * 65, 7):
        with pytest.raises(ApiError):
            validation.client_id(bad)


def test_message_ids_and_limits() -> None:
    assert validation.message_id("42") == "42"
    for bad in ("0", "-1", "abc", "1-0", "42\n", 42, ""):
        with pytest.raises(ApiError):
            validation.message_id(bad)
    assert validation.limit(None, 50, 200) == 50
    assert validation.limit("10", 50, 200) == 10
    for bad in ("0", "201", "x"):
        with pytest.raises(ApiError):
            validation.limit(bad, 50, 200)


def test_greeting_and_name() -> None:
    assert validation.greeting("  Hello!  ") == "Hello!"
    assert validation.greeting("   ") is None
    assert validation.greeting(None) is None
    with pytest.raises(ApiError):
        validation.greeting("x" * 501)
    assert validation.name("  Ada   Lovelace ") == "Ada Lovelace"
    with pytest.raises(ApiError):
        validation.name("   ")


def test_parse_each_client_frame() -> None:
    send = frames.parse_client_frame('{"type":"send","to":"bob","text":"hi","client_id":"c-1"}')
    assert send == SendFrame(to="bob", text="hi", client_id="c-1")
    assert frames.parse_client_frame('{"type":"typing","to":"bob"}') == TypingFrame(to="bob")
    read = frames.parse_client_frame('{"type":"read","peer":"bob","up_to":"7"}')
    assert read == ReadFrame(peer="bob", up_to="7")
    assert frames.parse_client_frame('{"type":"ping","nonce":{"a":[1]}}') == PingFrame({"a": [1]})


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    frame = frames.parse_client_frame('{"type":"typing","to":"bob","future":1}')
    assert frame == TypingFrame(to="bob")


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("not json", "valid JSON"),
        ("[1,2]", "JSON object"),
        ('"send"', "JSON object"),
        ('{"type":"launch"}', "Unknown frame type"),
        ('{"to":"bob"}', "type"),
        ('{"type":"send","to":"bob"}', "text"),
        ('{"type":"send","to":"bob","text":5}', "text"),
        ('{"type":"read","peer":"bob"}', "up_to"),
    ],
)
def test_bad_frames_are_invalid_with_a_reason(raw: str, says: str) -> None:
    with pytest.raises(ApiError) as raised:
        frames.parse_client_frame(raw)
    assert raised.value.code == "invalid"
    assert says in raised.value.detail


def test_error_frame_carries_client_id_and_retry_after() -> None:
    error = ApiError("rate_limited", "slow down", retry_after=3)
    frame = json.loads(frames.error_frame(error, "c-9"))
    assert frame == {
        "type": "error",
        "code": "rate_limited",
        "detail": "slow down",
        "client_id": "c-9",
        "retry_after": 3,
    }


def test_with_cursor_closes_a_stored_event_body() -> None:
    body = '{"type":"read","reader":"a","peer":"b","up_to":"3"'
    assert json.loads(frames.with_cursor(body, "5-0"))["cursor"] == "5-0"


def test_message_times_are_iso_utc_with_milliseconds() -> None:
    from datetime import UTC, datetime

    from chat.store.store import iso_ms

    for epoch_ms in (0, 999, 1_000, 1_795_264_452_670, 1_795_264_452_999, 1_795_264_453_001):
        moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
        expected = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"
        assert iso_ms(epoch_ms) == expected


# -- issue 8: every bad input is a clean client error ------------------------------

INVISIBLES = ["\u200b", "\u2060", "\u3164", "\ufeff", "\u202e", "\u2066\u2069", "\u115f\u1160"]


@pytest.mark.parametrize("blank", [*INVISIBLES, " \u200b \u2060\n\ufeff ", "\u2800", "\ufe0f"])
def test_texts_of_only_invisible_characters_are_refused(blank: str) -> None:
    with pytest.raises(ApiError) as raised:
        validation.text(blank)
    assert raised.value.code == "invalid" and raised.value.field == "text"


def test_trimming_removes_invisible_characters_at_the_ends_only() -> None:
    assert validation.text("\ufeff\u200bhi\u200b there\u2060\n") == "hi\u200b there"
    # What the page counts (web/js/format.js) is what the server counts.
    assert validation.text("\ufeff" + "x" * 10_000) == "x" * 10_000
    with pytest.raises(ApiError) as raised:
        validation.text("\ufeff" + "x" * 10_001)
    assert raised.value.code == "too_long"
    # A variation selector after an emoji is part of it, not trimmed.
    assert validation.text("\u2764\ufe0f") == "\u2764\ufe0f"
    assert validation.trim("\u3164 a \u2800") == "a"


def reference_trim(value: str) -> str:
    """The definition, one character at a time (trim's fast paths must agree)."""
    start, end = 0, len(value)
    while start < end and validation._trims(value[start]):
        start += 1
    while end > start and validation._trims(value[end - 1]):
        end -= 1
    return value[start:end]


def test_trim_and_blank_checks_agree_with_their_definitions() -> None:
    ends = [
        "",
        " ",
        "a",
        "~",
        "!",
        "\x7f",
        "\x1f",
        "\t",
        "\u200b",
        "\ufe0f",
        "\u034f",
        "é",
        "\u2800",
    ]
    for head in ends:
        for tail in ends:
            for middle in ("", "x", " ", "\ufe0f"):
                value = head + middle + tail
                assert validation.trim(value) == reference_trim(value), repr(value)
                blank = validation.is_blank(reference_trim(value))
                try:
                    validation.text(value)
                    refused = False
                except ApiError:
                    refused = True
                assert refused == blank, repr(value)


@pytest.mark.parametrize("blank", [*INVISIBLES, "\u202e\u202c", " \u200e "])
def test_names_of_only_invisible_characters_are_refused(blank: str) -> None:
    with pytest.raises(ApiError) as raised:
        validation.name(blank)
    assert raised.value.code == "invalid" and raised.value.field == "name"


def test_bidi_controls_are_stripped_from_names() -> None:
    assert validation.name("Ali\u202ece\u202c") == "Alice"
    assert validation.name("\u2067evil\u2069 corp\u200f") == "evil corp"
    assert validation.greeting("\u200b\u2060") is None


@pytest.mark.parametrize("bad", ["\u00b2", "1\u00b2", "\u0661", "9" * 5000, "-1", "1.5", " 1", "x"])
def test_page_cursors_refuse_what_int_or_redis_would_choke_on(bad: str) -> None:
    with pytest.raises(ApiError) as raised:
        validation.page_cursor(bad)
    assert raised.value.code == "invalid" and raised.value.field == "before"


def test_page_cursors() -> None:
    assert validation.page_cursor(None) is None and validation.page_cursor("") is None
    assert validation.page_cursor("42") == 42


@pytest.mark.parametrize(
    "bad",
    [
        "5-99999999999999999999999",
        "99999999999999999999999-0",
        "18446744073709551616-0",
        "0-18446744073709551616",
        "1\u00b2-0",
        "1-",
        "-1",
        "1",
        "1-2-3",
        "9" * 5000 + "-0",
        None,
    ],
)
def test_stream_ids_out_of_range_are_no_cursor(bad: str | None) -> None:
    assert validation.stream_id(bad) is None


def test_stream_ids() -> None:
    assert validation.stream_id("0-0") == (0, 0)
    assert validation.stream_id("18446744073709551615-18446744073709551615") == (2**64 - 1,) * 2


def test_unknown_profile_fields_are_named() -> None:
    validation.me_fields({"name": "x", "greeting": None})
    for field in ("password", "handle"):
        with pytest.raises(ApiError) as raised:
            validation.me_fields({"name": "x", field: "y"})
        assert raised.value.code == "invalid" and raised.value.field == field


def test_deeply_nested_json_is_invalid_not_a_crash() -> None:
    deep = "[" * 1000 + "]" * 1000
    with pytest.raises(ApiError) as raised:
        validation.json_document(deep.encode())
    assert raised.value.code == "invalid"
    for frame in (
        '{"type":"ping","nonce":' + deep + "}",
        '{"type":"send","to":"bob","text":"hi","x":' + deep + "}",
        '{"type":"dance","x":' + deep + "}",
        deep,
    ):
        with pytest.raises(ApiError) as bad_frame:
            frames.parse_client_frame(frame)
        assert bad_frame.value.code == "invalid"
        assert frames.frame_client_id(frame) is None


def test_error_frames_carry_only_the_contracts_frame_codes() -> None:
    error = ApiError("not_found", "There is no message 1.", field="up_to")
    frame = json.loads(frames.error_frame(error))
    assert frame["code"] == "invalid" and frame["field"] == "up_to"
    assert json.loads(frames.error_frame(ApiError("too_long", "x")))["code"] == "too_long"


def test_quick_reply_labels_show_something_and_lose_bidi_controls() -> None:
    replies = validation.quick_replies([{"label": " \u202eYes\u202c\u200b", "metadata": "y"}])
    assert replies == [{"label": "Yes", "metadata": "y"}]
    for blank in ("\u200b", "\u3164", " \u2060 "):
        with pytest.raises(ApiError) as raised:
            validation.quick_replies([{"label": blank, "metadata": "m"}])
        assert raised.value.field == "quick_replies"
