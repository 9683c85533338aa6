"""Client → server frames: typed decoding, and the server → client frame encoders.

Decoding is msgspec's typed JSON decoder over a tagged union, so a frame is
parsed and its field types checked in one C call; anything it rejects becomes
an `invalid` error that says what was wrong.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from chat.errors import INVALID, ApiError, invalid
from chat.protocol import validation


class SendFrame(msgspec.Struct, tag="send", tag_field="type"):
    to: str
    text: str
    client_id: str | None = None
    # Business fields, checked by validation (so errors name the field).
    ref: Any = None
    quick_reply: Any = None
    quick_replies: Any = None

    def options(self) -> dict[str, Any] | None:
        if self.ref is None and self.quick_reply is None and self.quick_replies is None:
            return None
        return {
            "ref": self.ref,
            "quick_reply": self.quick_reply,
            "quick_replies": self.quick_replies,
        }


class TypingFrame(msgspec.Struct, tag="typing", tag_field="type"):
    to: str


class ReadFrame(msgspec.Struct, tag="read", tag_field="type"):
    peer: str
    up_to: str


class PingFrame(msgspec.Struct, tag="ping", tag_field="type"):
    nonce: Any = None


ClientFrame = SendFrame | TypingFrame | ReadFrame | PingFrame

_decoder = msgspec.json.Decoder(ClientFrame)
_encoder = msgspec.json.Encoder()
KNOWN_TYPES = ("send", "typing", "read", "ping")


_FIELD_AT_FAULT = re.compile(r"(?:missing required field `|- at `\$\.)([A-Za-z_]+)")


def parse_client_frame(data: str | bytes) -> ClientFrame:
    """Decode one client frame or raise `ApiError(invalid)` saying why."""
    try:
        frame: ClientFrame = _decoder.decode(data)
        return frame
    except msgspec.ValidationError as exc:
        message = str(exc)
        if "Invalid value" in message and "$.type" in message:
            raise invalid(
                f"Unknown frame type; expected one of {', '.join(KNOWN_TYPES)}."
            ) from None
        if message.startswith("Expected `object`") and "- at `" not in message:
            raise invalid("A frame is a JSON object.") from None
        # The field at fault, when msgspec names one: `invalid` carries it.
        at = _FIELD_AT_FAULT.search(message)
        raise invalid(f"Bad frame: {message}.", at.group(1) if at else None) from None
    except msgspec.DecodeError:
        raise invalid("A frame must be valid JSON.") from None
    except RecursionError:
        raise invalid("A frame is nested too deeply.") from None


def frame_client_id(data: str | bytes) -> str | None:
    """Best effort: the client_id of a frame that failed to parse, for the error frame."""
    try:
        raw = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None
    value = raw.get("client_id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and len(value) <= validation.MAX_CLIENT_ID else None


def encode(frame: dict[str, Any]) -> str:
    return _encoder.encode(frame).decode()


def encode_value(value: Any) -> str:
    return _encoder.encode(value).decode()


# The error codes a frame may carry (PROTOCOL.md). Others are HTTP's: `not_found`
# names a resource of a path, and frames have no paths; the client sent a value
# that names nothing, which is `invalid`.
FRAME_ERROR_CODES = frozenset(
    {"invalid", "too_long", "not_allowed", "unknown_user", "rate_limited", "unavailable"}
)


def frame_code(code: str) -> str:
    """The code an `error` frame carries for an error of this code."""
    return code if code in FRAME_ERROR_CODES else INVALID


def error_frame(error: ApiError, client_id: str | None = None) -> str:
    frame: dict[str, Any] = {"type": "error", **error.fields()}
    frame["code"] = frame_code(error.code)
    if client_id is not None:
        frame["client_id"] = client_id
    return encode(frame)


def with_cursor(body: str, cursor: str) -> str:
    """Close an event body stored without its cursor (see store/scripts/send.lua)."""
    return f'{body},"cursor":"{cursor}"}}'
