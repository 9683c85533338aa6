"""Webhooks: each account's event stream, delivered over HTTP, signed, in order.

Receivers verify a delivery with `verify(secret, headers, body, tolerance_s)`:

    from chat.webhooks import verify
    if not verify(SECRET, request.headers, raw_body, 300):
        return 401

docs/webhooks.md describes deliveries; chat/webhooks/dispatcher.py makes them.
"""

from chat.webhooks.signing import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    signature_header,
    verify,
)

__all__ = ["DELIVERY_HEADER", "SIGNATURE_HEADER", "signature_header", "verify"]
