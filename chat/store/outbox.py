"""The outbox and its reconciler: how an operation that touches two users
finishes even if the process running it dies half-way.

On a Valkey Cluster two users' keys live in different slots, maybe on
different nodes, and no script or transaction spans them. So a send, a
follow, a block or a read receipt runs as steps, one per slot, in a fixed
order. The first step that writes decides the outcome and, in the same
script, appends what remains to be done to its slot's outbox
(scripts/outbox.lua); the later steps are idempotent. The process that ran
the first step runs the rest at once and then calls `Outbox.done`.

If it dies in between, the entry stays in the outbox. Every process runs a
`Reconciler`: it finds the outboxes that hold entries (one script per node,
scripts/outbox_scan.lua), takes their new entries into the consumer group
(XREADGROUP, so they start to idle), claims the entries idle longer than
`RECONCILE_MIN_IDLE_MS` with XAUTOCLAIM (atomic, so two reconcilers never
claim one entry at the same time) and runs the registered handler for the
entry's kind, which performs the remaining steps. A handler that runs twice
has the same effect as once; that is what lets a claim overlap a slow
original without harm. An abandoned entry is therefore completed within
`RECONCILE_MIN_IDLE_MS` plus two sweep intervals.

There is one outbox per hash slot (`keys.outbox_of_slot`), not per user, so
the set of outboxes is finite and known: no SCAN, and nothing global.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError, RedisError, ResponseError

from chat import metrics
from chat.config import DEFAULT_RECONCILE_INTERVAL_S, DEFAULT_RECONCILE_MIN_IDLE_MS
from chat.store import keys
from chat.store.lane import Lane
from chat.store.lua import HOT
from chat.store.lua import script as _script
from chat.store.slots import SLOTS, key_slot
from chat.tasks import cancel_and_wait

log = logging.getLogger("dmhub.reconcile")

GROUP = "reconcile"
# Reconcilers read and claim entries as RECLAIMER. A fixed name: a consumer per
# process would add one to every outbox's group at every restart, without bound.
RECLAIMER = "reconciler"
# The group is created by the first reconciler to find entries in an outbox,
# from its start: every entry there is owed work.
GROUP_START = "0"

# An entry idle this long is taken to be abandoned; a claim that overlaps a slow
# original is harmless (handlers are idempotent), only wasted work. Each
# process sweeps every interval, with jitter so that processes started together
# do not sweep together.
RECONCILE_MIN_IDLE_MS = DEFAULT_RECONCILE_MIN_IDLE_MS
RECONCILE_INTERVAL_S = DEFAULT_RECONCILE_INTERVAL_S
# Outboxes checked per script call: about 2 ms of Valkey time, short enough not
# to stall the sends queued behind it.
SCAN_BATCH = 1024
CLAIM_COUNT = 100

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class NotYet(Exception):
    """A handler could not finish for now (what it reads keeps changing under
    it): the entry stays, and a later sweep runs the handler again."""


OUTBOX_LUA = resources.files("chat.store").joinpath("scripts", "outbox.lua").read_text()
# A function of the hot path's library over a single Valkey's lane; on a
# cluster the sweep sends it to each node through redis-py, as EVALSHA.
OUTBOX_SCAN = HOT.add("outbox_scan", _script("outbox_scan.lua"))


class Outbox:
    """What split operations still owe, and the handlers that pay it."""

    def __init__(self, client: Any, lane: Any = None) -> None:
        self.redis: Any = client
        # The hot path's pipelined connection, when there is one: `done` runs
        # once per send, and redis-py's pipeline cost dmhub more CPU than the
        # send's three steps together.
        self.lane: Any = lane
        self._scan = client.register_script(OUTBOX_SCAN.script)
        self.handlers: dict[str, Handler] = {}

    def register(self, kind: str, handler: Handler) -> None:
        """`handler(payload)` performs the remaining steps of a `kind` operation,
        idempotently: the reconciler may run it after the original did."""
        self.handlers[kind] = handler

    async def done(self, lc: str, *entry_ids: str) -> None:
        """The operations recorded in `lc`'s slot's outbox are complete."""
        outbox = keys.outbox(lc)
        if entry_ids:
            # XDEL alone, no XACK: an entry is pending only if a reconciler took
            # it into the group while its operation was still running, and
            # XAUTOCLAIM drops a claim on a deleted entry by itself, whatever
            # its idle time. Such claims are few (the entries of a slot in
            # flight at one sweep) and go at the next sweep that finds that
            # outbox non-empty. An XACK per operation would cost Valkey about
            # 2.5 µs each to release claims that almost never exist
            # (docs/performance.md).
            if self.lane is not None:
                await self.lane.execute("XDEL", outbox, *entry_ids)
                return
            await self.redis.xdel(outbox, *entry_ids)

    async def _release(self, outbox: str, entry_id: str) -> None:
        """A reconciler's own claim on an entry it completed (or dropped) goes
        with the entry."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xdel(outbox, entry_id)
        pipe.xack(outbox, GROUP, entry_id)
        await pipe.execute()

    async def finish_later(self, lc: str, entry_id: str) -> None:
        """`done`, for callers that already answered their client: a failure is
        only logged, since the entry stays and the reconciler, finding the
        remaining steps already applied, removes it."""
        try:
            await self.done(lc, entry_id)
        except (RedisError, OSError) as exc:
            log.info("outbox entry %s stays for the reconciler: %s", entry_id, exc)

    # -- the reconciler's sweep -----------------------------------------------

    async def nonempty(self, slots: Sequence[int]) -> list[str]:
        """The outboxes of these slots that hold entries (all on one node)."""
        found: list[str] = []
        every = keys.every_outbox()
        for start in range(0, len(slots), SCAN_BATCH):
            names = [every[slot] for slot in slots[start : start + SCAN_BATCH]]
            found.extend(await self._scan_names(names))
        return found

    async def _scan_names(self, names: list[str]) -> list[str]:
        nodes_manager = getattr(self.redis, "nodes_manager", None)
        if nodes_manager is None:
            if isinstance(self.lane, Lane):
                # Packed by hiredis: redis-py's packer took about 45 ms of the
                # process's CPU per sweep of all 16,384 names, in 3 ms bursts
                # between the sends (docs/performance.md).
                found = await self.lane.fcall(OUTBOX_SCAN.qualified, OUTBOX_SCAN.library, [], names)
                return list(found)
            result: list[str] = await self._scan(args=names)
            return result
        # The outboxes span slots (all on one node): they go as ARGV, since
        # Valkey refuses declared KEYS of several slots even to a script flagged
        # allow-cross-slot-keys (the flag lets it reach them), and the call is
        # sent to that node directly.
        node = nodes_manager.get_node_from_slot(key_slot(names[0]))
        try:
            result = await self.redis.execute_command(
                "EVALSHA", self._scan.sha, 0, *names, target_nodes=node
            )
        except NoScriptError:
            await self.redis.execute_command("SCRIPT", "LOAD", self._scan.script, target_nodes=node)
            result = await self.redis.execute_command(
                "EVALSHA", self._scan.sha, 0, *names, target_nodes=node
            )
        return list(result)

    def slot_groups(self) -> list[list[int]]:
        """Slots grouped by the node that serves them (one group on a single Valkey)."""
        nodes_manager = getattr(self.redis, "nodes_manager", None)
        if nodes_manager is None:
            return [list(range(SLOTS))]
        by_node: dict[str, list[int]] = {}
        for slot in range(SLOTS):
            node = nodes_manager.get_node_from_slot(slot)
            by_node.setdefault(node.name, []).append(slot)
        return list(by_node.values())

    async def reconcile(self, min_idle_ms: int = RECONCILE_MIN_IDLE_MS) -> int:
        """One sweep: complete every operation abandoned for `min_idle_ms`.
        Returns how many entries were completed."""
        completed = 0
        for slots in self.slot_groups():
            for outbox in await self.nonempty(slots):
                completed += await self.reconcile_outbox(outbox, min_idle_ms)
        return completed

    async def reconcile_outbox(self, outbox: str, min_idle_ms: int) -> int:
        await self._take_new(outbox)
        completed = 0
        cursor = "0-0"
        while True:
            reply = await self.redis.execute_command(
                "XAUTOCLAIM", outbox, GROUP, RECLAIMER, min_idle_ms, cursor, "COUNT", CLAIM_COUNT
            )
            cursor, entries = reply[0], reply[1]
            for entry in entries:
                if entry is None:
                    continue
                if await self._complete(outbox, entry[0], entry[1]):
                    completed += 1
            if cursor == "0-0":
                return completed

    async def _take_new(self, outbox: str) -> None:
        """Deliver the entries no reconciler has seen yet to RECLAIMER, so that
        they idle from now on; XAUTOCLAIM takes those idle long enough. The
        replies are not used: an entry this young may belong to a running
        operation."""
        created = False
        while True:
            try:
                reply = await self.redis.xreadgroup(
                    GROUP, RECLAIMER, {outbox: ">"}, count=CLAIM_COUNT
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc) or created:
                    raise
                created = True
                try:
                    await self.redis.xgroup_create(outbox, GROUP, GROUP_START, mkstream=True)
                except ResponseError as busy:
                    if "BUSYGROUP" not in str(busy):  # else another reconciler was first
                        raise
                continue
            if _delivered(reply) < CLAIM_COUNT:
                return

    async def _complete(self, outbox: str, entry_id: str, fields: Any) -> bool:
        if isinstance(fields, list):
            fields = dict(zip(fields[::2], fields[1::2], strict=False))
        kind = fields.get("k", "")
        handler = self.handlers.get(kind)
        if handler is None:
            # A newer version's operation, perhaps: leave it for a process that knows it.
            log.warning("outbox %s entry %s: no handler for kind %r", outbox, entry_id, kind)
            return False
        try:
            payload = json.loads(fields.get("p", ""))
            if not isinstance(payload, dict):
                raise ValueError("payload is not an object")
        except ValueError:
            # Nothing can ever complete it: drop it, loudly, rather than claim it forever.
            log.error(
                "outbox %s entry %s (%s): unreadable payload, dropped", outbox, entry_id, kind
            )
            await self._release(outbox, entry_id)
            return False
        try:
            await handler(payload)
        except (RedisError, OSError, NotYet) as exc:
            # The other slot is unreachable for now, or busy: the entry idles
            # again and the next sweep retries it. One such entry does not stop
            # the sweep.
            log.warning(
                "outbox %s entry %s (%s) not completed yet: %s", outbox, entry_id, kind, exc
            )
            return False
        except Exception:
            log.exception("outbox %s entry %s (%s): handler failed", outbox, entry_id, kind)
            return False
        await self._release(outbox, entry_id)
        metrics.RECONCILED.labels(kind).inc()
        log.info("completed a %s left half-done (outbox entry %s)", kind, entry_id)
        return True


def _delivered(reply: Any) -> int:
    """How many entries redis-py's XREADGROUP reply holds: RESP2 gives
    [[stream, entries]], RESP3 {stream: [entries]}."""
    if isinstance(reply, dict):
        return sum(len(value[0]) if value else 0 for value in reply.values())
    return sum(len(row[1]) for row in reply or [])


class Reconciler:
    """The background sweep, in every process: supervised, never fatal."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        interval_s: float = RECONCILE_INTERVAL_S,
        min_idle_ms: int = RECONCILE_MIN_IDLE_MS,
    ) -> None:
        self.outbox = outbox
        self.interval_s = interval_s
        self.min_idle_ms = min_idle_ms
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dmhub-reconciler")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s * random.uniform(0.5, 1.5))
            try:
                await self.outbox.reconcile(self.min_idle_ms)
            except (RedisError, OSError) as exc:
                # Storage down or a slot on the move: the next sweep tries again.
                log.warning("reconciler sweep failed: %s", exc)
            except Exception:
                log.exception("reconciler sweep failed")
