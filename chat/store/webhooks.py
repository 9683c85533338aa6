"""Webhooks in Redis: the account's webhooks, their state, the leases, the index.

Every key of one account's webhooks carries its hash tag (`{lc}`), so each
script touches one slot. The account's event stream (`ev:{lc}`) is read on its
own. docs/architecture.md has the key table and what each write guarantees.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster

from chat.protocol.frames import with_cursor
from chat.store import keys
from chat.store.lua import script as _script

INDEX_SCAN_COUNT = 500
# Lease renewals in flight at once on a cluster, where they cannot share a pipeline.
RENEW_CONCURRENCY = 64


@dataclass(frozen=True, slots=True)
class StreamPage:
    newest: str
    floor: str  # the oldest id kept once retention removed older ones, else '0-0'
    events: list[tuple[str, str]]  # (cursor, frame as sockets get it)


class WebhookStore:
    def __init__(self, client: redis.Redis) -> None:
        # decode_responses=True, as in Store: Any rather than casts everywhere.
        self.redis: Any = client
        self._create = client.register_script(_script("webhook_create.lua"))
        self._delete = client.register_script(_script("webhook_delete.lua"))
        self._update = client.register_script(_script("webhook_update.lua"))
        self._lease = client.register_script(_script("webhook_lease.lua"))
        self._read = client.register_script(_script("stream_read.lua"))

    # -- what the API does -----------------------------------------------------

    async def create(self, lc: str, webhook_id: str, fields: dict[str, str], most: int) -> bool:
        args: list[str | int] = [webhook_id, most]
        for name, value in fields.items():
            args += [name, value]
        created = await self._create(
            keys=[keys.webhook_ids(lc), keys.webhook(lc, webhook_id)], args=args
        )
        if created:
            # After the webhook exists, so a dispatcher that finds the account in
            # the index always finds its webhook too.
            await self.redis.sadd(keys.webhook_index(keys.webhook_index_shard(lc)), lc)
        return bool(created)

    async def ids(self, lc: str) -> list[str]:
        return sorted(await self.redis.smembers(keys.webhook_ids(lc)))

    async def get(self, lc: str, webhook_id: str) -> dict[str, str] | None:
        row: dict[str, str] = await self.redis.hgetall(keys.webhook(lc, webhook_id))
        return row or None

    async def all(self, lc: str) -> list[tuple[str, dict[str, str]]]:
        ids = await self.ids(lc)
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for webhook_id in ids:
                pipe.hgetall(keys.webhook(lc, webhook_id))
            rows = await pipe.execute()
        found = [(i, r) for i, r in zip(ids, rows, strict=True) if r]
        return sorted(found, key=lambda pair: (pair[1].get("created", ""), pair[0]))

    async def delete(self, lc: str, webhook_id: str) -> bool:
        removed, left = await self._delete(
            keys=[
                keys.webhook_ids(lc),
                keys.webhook(lc, webhook_id),
                keys.webhook_lease(lc, webhook_id),
            ],
            args=[webhook_id],
        )
        if int(left) == 0:
            await self._unindex(lc)
        return bool(removed)

    async def delete_all(self, lc: str) -> None:
        """An account's end: every webhook goes, and their holders stop."""
        for webhook_id in await self.ids(lc):
            await self.delete(lc, webhook_id)
        await self.redis.spublish(keys.webhook_wake(lc), "*")

    async def _unindex(self, lc: str) -> None:
        """Drop an account without webhooks from the index, safely against a
        create running at the same time: remove, then look again, and put it
        back if a webhook appeared meanwhile (the create's own SADD may have
        come before our removal)."""
        index = keys.webhook_index(keys.webhook_index_shard(lc))
        await self.redis.srem(index, lc)
        if await self.redis.scard(keys.webhook_ids(lc)):
            await self.redis.sadd(index, lc)

    async def update(
        self,
        lc: str,
        webhook_id: str,
        *,
        owner: str = "",
        gen: str = "",
        clear_ping: str = "",
        new_generation: bool = False,
        set_fields: dict[str, str] | None = None,
        delete_fields: tuple[str, ...] = (),
    ) -> int:
        """1 applied; 0 the webhook is gone; -1 lease lost; -2 generation moved on."""
        pairs = set_fields or {}
        args: list[str | int] = [owner, gen, clear_ping, "1" if new_generation else "0", len(pairs)]
        for name, value in pairs.items():
            args += [name, value]
        args += list(delete_fields)
        result = await self._update(
            keys=[keys.webhook(lc, webhook_id), keys.webhook_lease(lc, webhook_id)], args=args
        )
        return int(result)

    async def wake(self, lc: str, webhook_id: str) -> None:
        """Tell whichever process holds the webhook's lease to look at it now."""
        await self.redis.spublish(keys.webhook_wake(lc), webhook_id)

    # -- what the dispatcher does -------------------------------------------------

    async def accounts(self) -> AsyncIterator[str]:
        for shard in range(keys.WEBHOOK_INDEX_SHARDS):
            async for lc in self.redis.sscan_iter(
                keys.webhook_index(shard), count=INDEX_SCAN_COUNT
            ):
                yield lc

    async def acquire(self, lc: str, webhook_id: str, owner: str, ttl_ms: int) -> bool:
        taken = await self.redis.set(keys.webhook_lease(lc, webhook_id), owner, nx=True, px=ttl_ms)
        return bool(taken)

    async def renew(self, leases: list[tuple[str, str]], owner: str, ttl_ms: int) -> list[bool]:
        if not leases:
            return []
        if isinstance(self.redis, RedisCluster):
            # A cluster client refuses scripts in a pipeline (each lease is in
            # its own slot, maybe on another node): one routed call each, a
            # bounded number at a time.
            renewed: list[bool] = []
            for start in range(0, len(leases), RENEW_CONCURRENCY):
                batch = leases[start : start + RENEW_CONCURRENCY]
                results = await asyncio.gather(
                    *(
                        self._lease(keys=[keys.webhook_lease(lc, wid)], args=[owner, ttl_ms])
                        for lc, wid in batch
                    )
                )
                renewed.extend(bool(r) for r in results)
            return renewed
        async with self.redis.pipeline(transaction=False) as pipe:
            for lc, webhook_id in leases:
                # Queued on the pipeline (the await returns at once); sent together.
                await self._lease(
                    keys=[keys.webhook_lease(lc, webhook_id)], args=[owner, ttl_ms], client=pipe
                )
            results = await pipe.execute()
        return [bool(r) for r in results]

    async def release(self, lc: str, webhook_id: str, owner: str) -> None:
        await self._lease(keys=[keys.webhook_lease(lc, webhook_id)], args=[owner, 0])

    async def lease_holder(self, lc: str, webhook_id: str) -> str | None:
        holder: str | None = await self.redis.get(keys.webhook_lease(lc, webhook_id))
        return holder

    async def newest_event(self, lc: str) -> str:
        newest, _, _ = await self._read(keys=[keys.events(lc)], args=["0-0", 0])
        return str(newest)

    async def events_after(self, lc: str, position: str, count: int) -> StreamPage:
        newest, floor, entries = await self._read(keys=[keys.events(lc)], args=[position, count])
        events: list[tuple[str, str]] = []
        for cursor, flat in entries:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            events.append((cursor, with_cursor(fields["f"], cursor)))
        return StreamPage(str(newest), str(floor), events)
