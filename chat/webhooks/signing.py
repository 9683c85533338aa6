"""Signing deliveries and verifying them: pure functions, no I/O.

A delivery carries `Dmhub-Signature: t=UNIX_SECONDS,v1=HEX`, where HEX is
HMAC-SHA256 over `"{t}.{body}"` keyed with the webhook's secret. The time is
inside the signed text, so a receiver that checks it against its own clock
refuses a captured delivery replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

SIGNATURE_HEADER = "Dmhub-Signature"
DELIVERY_HEADER = "Dmhub-Delivery"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `"{timestamp}.{body}"`."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},{SCHEME}={signature(secret, timestamp, body)}"


def parse_header(value: str) -> tuple[int, list[str]] | None:
    """(t, every v1 signature) from a header value, or None when it is malformed."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in value.split(","):
        key, sep, item = part.strip().partition("=")
        if not sep:
            return None
        if key == "t":
            if not item.isdigit() or timestamp is not None:
                return None
            timestamp = int(item)
        elif key == SCHEME:
            signatures.append(item)
    if timestamp is None or not signatures:
        return None
    return timestamp, signatures


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, item in headers.items():
        if key.lower() == wanted:
            return item
    return None


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> bool:
    """True when `body` was signed with `secret` less than `tolerance_s` ago.

    `headers` is any mapping of the request's headers (names in any case);
    `body` is the raw request body, exactly as received: parse it only after
    this returns True.
    """
    value = _header(headers, SIGNATURE_HEADER)
    if value is None:
        return False
    parsed = parse_header(value)
    if parsed is None:
        return False
    timestamp, signatures = parsed
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    raw = body.encode() if isinstance(body, str) else body
    expected = signature(secret, timestamp, raw)
    # Every candidate is compared, in constant time each, so timing tells nothing.
    matches = [hmac.compare_digest(expected, candidate) for candidate in signatures]
    return any(matches)
