"""Conversation views: each user's own copy of each of its conversations.

`msgs:{me}:peer` (keys.view) is a sorted set in me's slot: score = the message
id (chat/store/msgid.py), member = `<sender lc> <message JSON as me sees it>`
(a business's copy of an agent's message carries `"agent"`, the customer's
does not). Both views of a message hold the same id. A sorted set and not a
stream because the two views are written in two slots at different moments,
and a view may receive a message whose id is below its top.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from chat.store import keys


def member(sender: str, message_json: str) -> str:
    return f"{sender} {message_json}"


def split(stored: str) -> tuple[str, str]:
    """(sender lc, message JSON) of a view member. Handles hold no space."""
    sender, _, message_json = stored.partition(" ")
    return sender, message_json


def text_of(stored: str) -> str:
    return split(stored)[1]


async def find(redis: Any, me: str, peer: str, message_id: str) -> tuple[str, str] | None:
    """(sender, JSON) of message `message_id` in me's view, if it is there."""
    found = await redis.zrangebyscore(keys.view(me, peer), message_id, message_id, 0, 1)
    return split(found[0]) if found else None


async def page(
    redis: Any, me: str, peer: str, limit: int, before: str | None, after: str | None
) -> tuple[list[str], str | None]:
    """Message JSON, oldest first: the newest `limit` below `before` and above
    `after` (both exclusive); and the id to ask the next older page with."""
    top = f"({before}" if before else "+inf"
    bottom = f"({after}" if after else "-inf"
    rows = await redis.zrevrangebyscore(
        keys.view(me, peer), top, bottom, 0, limit + 1, withscores=True
    )
    shown, more = rows[:limit], len(rows) > limit
    next_id = f"{int(shown[-1][1])}" if more and shown else None
    return [text_of(stored) for stored, _ in reversed(shown)], next_id


async def every_message(redis: Any, me: str, peer: str, batch: int) -> AsyncIterator[list[str]]:
    """The whole view, oldest first, in batches of message JSON."""
    bottom = "-inf"
    while True:
        rows = await redis.zrangebyscore(
            keys.view(me, peer), bottom, "+inf", 0, batch, withscores=True
        )
        if not rows:
            return
        yield [text_of(stored) for stored, _ in rows]
        if len(rows) < batch:
            return
        bottom = f"({int(rows[-1][1])}"
