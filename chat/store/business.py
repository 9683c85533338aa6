"""What businesses keep and what a customer's quick reply is checked against.

Quick replies live in the business's user hash (`qr`, JSON), bounded by the
validation (10 replies of at most 236 characters); no key of their own.
"""

from __future__ import annotations

import msgspec

from chat.store import keys, views
from chat.store.store import Store, stored_quick_replies

# How far back to look for the business's latest message: replies attached to
# it stay answerable until the business writes again.
LATEST_MESSAGE_SCAN = 20

_encoder = msgspec.json.Encoder()


def encode_quick_replies(replies: list[dict[str, str]]) -> str:
    """The `qr` field of the user hash."""
    return _encoder.encode(replies).decode()


async def offered_quick_replies(
    store: Store, business: dict[str, str], customer: str
) -> list[list[dict[str, str]]]:
    """The quick replies a customer may pick from: the business's own list, and
    those attached to the business's latest message to this customer."""
    offered = [stored_quick_replies(business)]
    business_lc = business["handle"].lower()
    # The customer's own view: it has the business's message from the moment the
    # customer can see it (the business's view gets it a step later).
    latest: list[str] = await store.redis.zrevrange(
        keys.view(customer, business_lc), 0, LATEST_MESSAGE_SCAN - 1
    )
    for stored in latest:
        sender, _, message_json = views.split(stored)
        if sender == business_lc:
            message = msgspec.json.decode(message_json)
            attached = message.get("quick_replies")
            if isinstance(attached, list):
                offered.append(attached)
            break
    return offered
