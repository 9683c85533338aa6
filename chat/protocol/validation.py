"""Pure validation of what clients send: handles, passwords, texts, ids.

Each function returns the cleaned value or raises `ApiError`; none touches I/O,
so the rules are unit-tested directly (tests/test_validation.py).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from chat.errors import TOO_LONG, ApiError, invalid

# \Z, not $: $ also matches before a final newline, and "bob\n" is not a handle.
HANDLE_RE = re.compile(r"^[A-Za-z0-9_]{1,15}\Z")
MIN_PASSWORD = 8
# argon2 hashes any length, but an unbounded input is a cheap way to burn CPU.
MAX_PASSWORD = 1024
MAX_TEXT = 10_000
MAX_CLIENT_ID = 64
MAX_NAME = 50
MAX_GREETING = 500
KINDS = ("person", "business")
FOLDERS = ("inbox", "requests")
# Message ids are decimal sequence numbers; the contract keeps them opaque.
MESSAGE_ID_RE = re.compile(r"^[1-9][0-9]{0,18}\Z")
# Page cursors are order numbers (scores) the server gave out. [0-9], not \d or
# str.isdigit: those accept digits such as "²" that int() refuses.
PAGE_CURSOR_RE = re.compile(r"^[0-9]{1,19}\Z")
# Event cursors are stream ids: two unsigned 64-bit numbers. Anything larger
# makes Redis refuse the range, so it is no cursor this server gave out.
STREAM_ID_RE = re.compile(r"^([0-9]{1,20})-([0-9]{1,20})\Z")
MAX_STREAM_PART = 2**64 - 1
# What trimming removes at both ends, on the server and on the page alike
# (web/js/format.js, trimText): spaces, line breaks, controls, format characters
# (zero-width spaces, joiners, word joiners, byte-order marks, bidi controls),
# and the letters and symbols that render as nothing.
TRIM_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})
BLANK_LOOKALIKES = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Marks that show nothing on their own: a text of only these is as empty as
# one of only spaces. Not trimmed: after an emoji, a variation selector matters.
INVISIBLE_MARKS = frozenset(
    "\u034f\u17b4\u17b5\u180b\u180c\u180d\u180f" + "".join(map(chr, range(0xFE00, 0xFE10)))
)
# Characters that reorder the text around them: in a display name they can make
# the rest of a page read backwards, so names lose them wherever they are.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_NO_BIDI = str.maketrans(dict.fromkeys(map(ord, BIDI_CONTROLS)))


def _trims(char: str) -> bool:
    return char in BLANK_LOOKALIKES or unicodedata.category(char) in TRIM_CATEGORIES


def _visible_ascii(char: str) -> bool:
    """A printable ASCII character other than space: neither trimmed nor invisible."""
    return "!" <= char <= "~"


def trim(value: str) -> str:
    """`value` without blank characters at either end (see TRIM_CATEGORIES)."""
    value = value.strip()  # what str.strip removes is a subset of the above: fast path
    if value and _visible_ascii(value[0]) and _visible_ascii(value[-1]):
        return value  # most texts: nothing more to look up
    start, end = 0, len(value)
    while start < end and _trims(value[start]):
        start += 1
    while end > start and _trims(value[end - 1]):
        end -= 1
    return value[start:end]


def is_blank(value: str) -> bool:
    """Nothing a reader could see: only blank characters and invisible marks."""
    return all(char in INVISIBLE_MARKS or _trims(char) for char in value)


def is_handle(value: object) -> bool:
    return isinstance(value, str) and HANDLE_RE.match(value) is not None


def handle(value: object, field: str = "handle") -> str:
    """A new account's handle, kept as typed."""
    if not isinstance(value, str) or not HANDLE_RE.match(value):
        raise invalid("A handle is 1 to 15 letters, digits or underscores.", field)
    return value


def password(value: object) -> str:
    if not isinstance(value, str) or len(value) < MIN_PASSWORD:
        raise invalid(f"A password has at least {MIN_PASSWORD} characters.", "password")
    if len(value) > MAX_PASSWORD:
        raise invalid(f"A password has at most {MAX_PASSWORD} characters.", "password")
    return value


def name(value: object) -> str:
    if not isinstance(value, str):
        raise invalid("A name is text.", "name")
    cleaned = trim(" ".join(value.translate(_NO_BIDI).split()))
    if is_blank(cleaned):
        raise invalid("A name needs at least one visible character.", "name")
    if len(cleaned) > MAX_NAME:
        raise invalid(f"A name has at most {MAX_NAME} characters.", "name")
    return cleaned


def kind(value: object) -> str:
    if value not in KINDS:
        raise invalid("kind is 'person' or 'business'.", "kind")
    return str(value)


def boolean(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(f"{field} is true or false.", field)
    return value


def greeting(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid("A greeting is text or null.", "greeting")
    cleaned = trim(value)
    if is_blank(cleaned):
        return None
    if len(cleaned) > MAX_GREETING:
        raise invalid(f"A greeting has at most {MAX_GREETING} characters.", "greeting")
    return cleaned


def text(value: object) -> str:
    """A message body: 1 to 10,000 characters after trimming."""
    if not isinstance(value, str):
        raise invalid("text is required and must be a string.", "text")
    trimmed = trim(value)
    # Trimmed, it starts with a character that is not blank, so only an
    # invisible mark there can begin a text with nothing to see.
    if not trimmed or (trimmed[0] in INVISIBLE_MARKS and is_blank(trimmed)):
        raise invalid("A message needs at least one visible character.", "text")
    if len(trimmed) > MAX_TEXT:
        raise ApiError(
            TOO_LONG,
            f"A message has at most {MAX_TEXT:,} characters; this one has {len(trimmed):,}.",
            field="text",
        )
    return trimmed


def client_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_CLIENT_ID:
        raise invalid(f"client_id is 1 to {MAX_CLIENT_ID} characters.", "client_id")
    return value


def message_id(value: object, field: str = "up_to") -> str:
    if not isinstance(value, str) or not MESSAGE_ID_RE.match(value):
        raise invalid(f"{field} must be a message id.", field)
    return value


def page_cursor(value: str | None, field: str = "before") -> int | None:
    """A `before` cursor of a list page (follows, blocks, conversations), or None."""
    if value is None or value == "":
        return None
    if not PAGE_CURSOR_RE.match(value):
        raise invalid("That cursor is not one this server gave out.", field)
    return int(value)


def stream_id(value: object) -> tuple[int, int] | None:
    """An event cursor as (milliseconds, sequence), or None when it cannot be one."""
    if not isinstance(value, str):
        return None
    match = STREAM_ID_RE.match(value)
    if match is None:
        return None
    ms, seq = int(match[1]), int(match[2])
    if ms > MAX_STREAM_PART or seq > MAX_STREAM_PART:
        return None
    return ms, seq


def folder(value: str | None) -> str:
    if value is None:
        return "inbox"
    if value not in FOLDERS:
        raise invalid("folder is 'inbox' or 'requests'.", "folder")
    return value


def limit(value: str | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise invalid("limit must be a whole number.", "limit") from None
    if not 1 <= number <= maximum:
        raise invalid(f"limit is from 1 to {maximum}.", "limit")
    return number


def json_document(raw: bytes | str) -> Any:
    """Decode a JSON document; malformed or absurdly nested input is `invalid`."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise invalid("The body must be valid JSON.") from None
    except RecursionError:
        raise invalid("The JSON is nested too deeply.") from None


def json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid("The body must be a JSON object.")
    return value


# -- businesses: quick replies, ref, the Message button ----------------------------

MAX_QUICK_REPLIES = 10
MAX_QUICK_REPLY_LABEL = 36
MAX_QUICK_REPLY_METADATA = 200
REF_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}\Z")
MAX_BUTTON_LABEL = 60
BUTTON_SIZES = ("small", "large")
QUICK_REPLY_KEYS = frozenset({"label", "metadata"})
# What PATCH /api/me accepts: one allow-list, so that an unknown field is
# refused rather than silently ignored (a typo would otherwise look saved).
ME_FIELDS = frozenset({"name", "open_dms", "read_receipts", "greeting", "quick_replies"})


def me_fields(data: dict[str, Any]) -> None:
    for field in data:
        if field not in ME_FIELDS:
            raise invalid(f"Unknown field {str(field)[:40]!r}.", str(field)[:40])


def ref(value: object) -> str | None:
    """Where a conversation came from, as given in the compose link."""
    if value is None:
        return None
    if not isinstance(value, str) or not REF_RE.match(value):
        raise invalid("ref is 1 to 64 of A-Z a-z 0-9 _ . -", "ref")
    return value


def quick_replies(value: object, field: str = "quick_replies") -> list[dict[str, str]]:
    """Up to 10 `{"label", "metadata"}`; labels are trimmed, metadata kept as given
    (a bot matches it byte for byte)."""
    if not isinstance(value, list):
        raise invalid("quick_replies is a list of {label, metadata}.", field)
    if len(value) > MAX_QUICK_REPLIES:
        raise invalid(f"At most {MAX_QUICK_REPLIES} quick replies.", field)
    cleaned: list[dict[str, str]] = []
    for item in value:
        if not isinstance(item, dict) or set(item) != QUICK_REPLY_KEYS:
            raise invalid("Each quick reply is exactly {label, metadata}.", field)
        label, metadata = item["label"], item["metadata"]
        # Shown as a chip, like a name: no bidi controls, and something visible.
        label = trim(label.translate(_NO_BIDI)) if isinstance(label, str) else ""
        if is_blank(label) or len(label) > MAX_QUICK_REPLY_LABEL:
            raise invalid(f"A quick reply label is 1 to {MAX_QUICK_REPLY_LABEL} characters.", field)
        if not isinstance(metadata, str) or not 1 <= len(metadata) <= MAX_QUICK_REPLY_METADATA:
            raise invalid(
                f"Quick reply metadata is 1 to {MAX_QUICK_REPLY_METADATA} characters.", field
            )
        cleaned.append({"label": label, "metadata": metadata})
    return cleaned


def quick_reply(value: object, offered: list[list[dict[str, str]]]) -> str | None:
    """A customer's pick: the metadata of one of the quick replies the business
    offers (its profile's, or those on its latest message)."""
    if value is None:
        return None
    if isinstance(value, str):
        for replies in offered:
            if any(reply["metadata"] == value for reply in replies):
                return value
    raise invalid(
        "quick_reply must be the metadata of one of the business's quick replies.", "quick_reply"
    )


@dataclass(frozen=True, slots=True)
class ButtonRequest:
    handle: str
    text: str | None
    label: str | None
    size: str
    ref: str | None


def button_request(params: Mapping[str, str]) -> ButtonRequest:
    """The query of GET /api/buttons; syntax only (the account is checked after)."""
    handle_value = params.get("handle", "").strip().removeprefix("@")
    if not HANDLE_RE.match(handle_value):
        raise invalid("A handle is 1 to 15 letters, digits or underscores.", "handle")
    # Trimmed as a message is, so the limit is the one the customer's send meets.
    prefill = trim(params.get("text", "")) or None
    if prefill is not None and len(prefill) > MAX_TEXT:
        raise ApiError(
            TOO_LONG,
            f"A message has at most {MAX_TEXT:,} characters; this text has {len(prefill):,}.",
            field="text",
        )
    label = " ".join(params.get("label", "").split()) or None
    if label is not None and len(label) > MAX_BUTTON_LABEL:
        raise invalid(f"A button label has at most {MAX_BUTTON_LABEL} characters.", "label")
    size = params.get("size") or "large"
    if size not in BUTTON_SIZES:
        raise invalid("size is 'small' or 'large'.", "size")
    return ButtonRequest(handle_value, prefill, label, size, ref(params.get("ref") or None))
