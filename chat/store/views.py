"""Conversation views: each user's own copy of each of its conversations.

`msgs:{me}:peer` (keys.view) is a sorted set in me's slot: score = the message
id (chat/store/msgid.py), member = `<sender lc>[/<agent>] <message JSON>`, the
same bytes in both views. The JSON is the one the recipient sees; the agent
who wrote a business's message is kept in the member's head and added as
`"agent"` only for the business (`reader_copy`). Identical members let either
side's view complete the other (chat/store/sends.py). A sorted set and not a
stream because the two views are written in two slots at different moments,
and a view may receive a message whose id is below its top.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from chat.store import keys

_encoder = msgspec.json.Encoder()


def member(sender: str, message_json: str, agent: str = "") -> str:
    head = f"{sender}/{agent}" if agent else sender
    return f"{head} {message_json}"


def split(stored: str) -> tuple[str, str, str]:
    """(sender lc, agent or '', message JSON) of a view member. Handles hold no
    space and no slash."""
    head, _, message_json = stored.partition(" ")
    sender, _, agent = head.partition("/")
    return sender, agent, message_json


def reader_copy(stored: str, reader: str) -> str:
    """The message JSON as `reader` sees it: the agent only on the business's side."""
    sender, agent, message_json = split(stored)
    if not agent or sender != reader:
        return message_json
    return f'{message_json[:-1]},"agent":{_encoder.encode(agent).decode()}}}'


async def find(redis: Any, me: str, peer: str, message_id: str) -> tuple[str, str] | None:
    """(sender, JSON as me sees it) of message `message_id` in me's view, if there."""
    found = await redis.zrangebyscore(keys.view(me, peer), message_id, message_id, 0, 1)
    return (split(found[0])[0], reader_copy(found[0], me)) if found else None


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
    return [reader_copy(stored, me) for stored, _ in reversed(shown)], next_id


async def every_message(redis: Any, me: str, peer: str, batch: int) -> AsyncIterator[list[str]]:
    """The whole view as me sees it, oldest first, in batches of message JSON."""
    bottom = "-inf"
    while True:
        rows = await redis.zrangebyscore(
            keys.view(me, peer), bottom, "+inf", 0, batch, withscores=True
        )
        if not rows:
            return
        yield [reader_copy(stored, me) for stored, _ in rows]
        if len(rows) < batch:
            return
        bottom = f"({int(rows[-1][1])}"
