"""Read receipts: the reader's slot first, then the peer's (two steps).

Step 1 (read.lua, the reader's slot) moves the read pointer, recounts unread,
tells the reader's sockets and, when the peer is to hear of it, appends a
`receipt` entry to the outbox of the reader's slot. Step 2 (receipt.lua, the
peer's slot) re-checks what may have changed since (a block, the peer's
receipts setting, a request) and delivers the receipt event, once: the peer's
`rcpt:{peer}` keeps the last receipt delivered from each reader. A crash
between the two is finished by the reconciler.
"""

from __future__ import annotations

import weakref
from typing import Any

from chat.store import keys
from chat.store.crashpoints import crash_point
from chat.store.lua import script as _script
from chat.store.outbox import OUTBOX_LUA

RECEIPT = "receipt"


class Receipts:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.redis: Any = store.redis
        self._read = self.redis.register_script(OUTBOX_LUA + "\n" + _script("read.lua"))
        self._receipt = self.redis.register_script(_script("receipt.lua"))

    async def mark_read(self, me: str, peer: str, up_to: str, body: str, tell_peer: bool) -> int:
        """-1 no such message, 0 the pointer was there already, 1 it moved."""
        result = await self.read_first(me, peer, up_to, body, tell_peer)
        if len(result) > 1:
            crash_point("read:after_first")
            await self.deliver(me, peer, body, up_to)
            await self.store.outbox.done(me, result[1])
        return int(result[0])

    async def read_first(
        self, me: str, peer: str, up_to: str, body: str, tell_peer: bool
    ) -> list[Any]:
        result: list[Any] = await self._read(
            keys=[
                keys.user(me),
                keys.view(me, peer),
                keys.events(me),
                keys.channel(me),
                keys.blocking(me),
                keys.blocked_by(me),
                keys.outbox(me),
            ],
            args=[
                me,
                peer,
                up_to,
                body,
                "1" if tell_peer else "0",
                self.store.event_retention,
            ],
        )
        return result

    async def deliver(self, me: str, peer: str, body: str, up_to: str) -> bool:
        """Step 2: the receipt in the peer's stream and channel, if still wanted
        and not delivered already."""
        delivered = await self._receipt(
            keys=[
                keys.events(peer),
                keys.channel(peer),
                keys.blocking(peer),
                keys.user(peer),
                keys.requests(peer),
                keys.receipts_delivered(peer),
            ],
            args=[me, body, self.store.event_retention, up_to],
        )
        return bool(delivered)


_receipts: weakref.WeakKeyDictionary[Any, Receipts] = weakref.WeakKeyDictionary()


def receipts(store: Any) -> Receipts:
    """One Receipts per Store, so its scripts are registered once."""
    found = _receipts.get(store)
    if found is None:
        found = _receipts[store] = Receipts(store)
    return found


def register_handlers(store: Any) -> None:
    """The reconciler's step 2 of a receipt."""
    steps = receipts(store)

    async def receipt(payload: dict[str, Any]) -> None:
        await steps.deliver(
            str(payload["me"]), str(payload["peer"]), str(payload["body"]), str(payload["up_to"])
        )

    store.outbox.register(RECEIPT, receipt)
