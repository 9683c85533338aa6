"""The pure core of webhooks: validation, the address rule, backoff, the bodies.

No I/O here: the routes, the guard and the dispatcher are thin around these,
and tests/test_webhooks_policy.py tests them directly.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

import msgspec

from chat.errors import invalid
from chat.protocol.validation import MAX_STREAM_PART, stream_id
from chat.store.store import iso_ms

EVENT_TYPES = ("message", "read")
# A business's team events (Teams): delivered only to webhooks that ask for them,
# so the contract's default stays message and read.
TEAM_EVENT_TYPES = ("conversation", "note")
KNOWN_EVENT_TYPES = EVENT_TYPES + TEAM_EVENT_TYPES
PING = "ping"
# A handful per account: enough for a help desk, a CRM and a bot side by side,
# and it bounds what one account can make the dispatcher do.
MAX_WEBHOOKS_PER_ACCOUNT = 5
MAX_URL_LENGTH = 2048
WEBHOOK_ID_LENGTH = 16
# Kinds of `last_error`: a failure clears on the next success; a retention
# gap stays until a ping or a replay, so the integration gets to see it.
ERROR_FAILING = "fail"
ERROR_GAP = "gap"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# NAT64's well-known prefix embeds an IPv4 address in its last 32 bits.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Ranges whose addresses stand for IPv4 ones but that Python 3.11 calls global:
# IPv4-compatible (::a.b.c.d, deprecated), IPv4-translated (::ffff:0:a.b.c.d,
# SIIT) and NAT64's local-use prefix (RFC 8215). None is a public receiver, and
# a translator on the path could carry them to an internal IPv4 address.
_NEVER_GLOBAL = (
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
)


class _Typed(msgspec.Struct):
    type: str = ""


_type_decoder = msgspec.json.Decoder(_Typed)


CREATE_FIELDS = frozenset({"url", "events"})
REPLAY_FIELDS = frozenset({"since"})


def known_fields(data: dict[str, Any], allowed: frozenset[str]) -> None:
    """Refuse a field we do not know rather than ignore it (a typo would look saved)."""
    for name in data:
        if name not in allowed:
            raise invalid(f"Unknown field {str(name)[:40]!r}.", str(name)[:40])


def parse_url(value: object, *, allow_private: bool) -> tuple[str, str]:
    """(url, host) of a webhook URL, or `422 invalid` with field `url`."""
    if not isinstance(value, str) or not value.strip():
        raise invalid("url is required: where deliveries are POSTed.", "url")
    url = value.strip()
    if len(url) > MAX_URL_LENGTH:
        raise invalid(f"A webhook URL has at most {MAX_URL_LENGTH} characters.", "url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise invalid("That is not a valid URL.", "url") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme.lower() not in schemes:
        raise invalid("A webhook URL must start with https://.", "url")
    host = parts.hostname
    if not host:
        raise invalid("A webhook URL needs a host name.", "url")
    if port == 0:
        raise invalid("That is not a valid port.", "url")
    if any(ch.isspace() for ch in url):
        raise invalid("A webhook URL cannot contain spaces.", "url")
    return url, host


def address_allowed(address: Address) -> bool:
    """Only addresses on the public Internet: not loopback, private, link-local,
    multicast, reserved, unspecified, shared (CGNAT) or documentation ranges."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in _NEVER_GLOBAL):
            return False
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_allowed(embedded)
    return address.is_global and not address.is_multicast


def events(value: object) -> tuple[str, ...]:
    """The event filter: a non-empty list of known types (default: all)."""
    if value is None:
        return EVENT_TYPES
    if not isinstance(value, list) or not value:
        raise invalid(
            'events is a non-empty list of "message", "read", "conversation" or "note".',
            "events",
        )
    for item in value:
        if item not in KNOWN_EVENT_TYPES:
            raise invalid(
                f'Unknown event type {item!r}: use "message", "read", "conversation" or "note".',
                "events",
            )
    return tuple(t for t in KNOWN_EVENT_TYPES if t in value)


def replay_cursor(value: object) -> str:
    if not isinstance(value, str) or stream_id(value) is None:
        raise invalid("since must be a cursor this server gave out.", "since")
    return value


def cursor_before(cursor: str) -> str:
    """The greatest stream id below `cursor`: reading after it starts at `cursor`."""
    ms, _, seq = cursor.partition("-")
    if int(seq or 0) > 0:
        return f"{ms}-{int(seq) - 1}"
    return f"{int(ms) - 1}-{MAX_STREAM_PART}"


def is_webhook_id(value: str) -> bool:
    return len(value) == WEBHOOK_ID_LENGTH and all(c in "0123456789abcdef" for c in value)


def backoff_delay(attempt: int, first_s: float, max_s: float, jitter: float) -> float:
    """Seconds before retry number `attempt` (1-based): exponential, capped, with
    jitter in [0, 1) taking up to half off so that retries do not march in step."""
    exponent = min(max(attempt - 1, 0), 60)
    base = min(max_s, first_s * 2.0**exponent)
    return base * (1.0 - 0.5 * jitter)


def past_deadline(failing_since_ms: int, now_ms: int, deactivate_after_s: float) -> bool:
    return now_ms - failing_since_ms >= deactivate_after_s * 1000


def event_type(frame: str) -> str:
    try:
        return _type_decoder.decode(frame).type
    except msgspec.DecodeError:
        return ""


def delivery_body(delivery_id: str, kind: str, account: str, frame: str) -> bytes:
    """The POSTed body; `frame` goes in as the account's sockets get it, byte for byte."""
    head = json.dumps({"id": delivery_id, "type": kind, "account": account}, separators=(",", ":"))
    return f'{head[:-1]},"event":{frame}}}'.encode()


def ping_frame(webhook_id: str) -> str:
    return json.dumps({"type": PING, "webhook": webhook_id}, separators=(",", ":"))


def view(webhook_id: str, row: dict[str, str]) -> dict[str, Any]:
    """The contract's `webhook` object from the stored hash (never the secret)."""
    failing = row.get("failing")
    return {
        "id": webhook_id,
        "url": row.get("url", ""),
        "events": [t for t in row.get("events", "").split(",") if t],
        "created_at": iso_ms(int(row.get("created", "0"))),
        "delivered_up_to": row.get("cursor") or None,
        "failing_since": iso_ms(int(failing)) if failing else None,
        "last_error": row.get("error") or None,
        "active": row.get("active", "1") != "0",
    }
