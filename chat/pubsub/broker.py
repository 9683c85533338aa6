"""Supervised sharded pub/sub: one connection per shard (one in all on a single node).

The hub asks for a user's channel when that user's first socket arrives here and
gives it back when the last one leaves, so a process hears only about its own
users. Channels are sharded (SSUBSCRIBE; the scripts SPUBLISH): on a Valkey
Cluster a channel lives on the master that owns its slot, with the user's keys,
and a publish does not travel to every node. A `subscribe` returns once Redis
has confirmed it: from then on nothing published to that user can be missed,
which is what makes resume-by-cursor gap-free.

A channel that was live and stops being live is *lost*; `on_reconnect(lost)`
lets the hub hold those users' live events, and once the channel is confirmed
again (a PING queued behind the SSUBSCRIBEs answers after them)
`on_resubscribed(channels)` lets it replay what their sockets missed. That
happens when a connection drops (it reconnects with capped exponential backoff
and jitter and subscribes to its channels again), and on a cluster also when a
slot moves (the old owner pushes `sunsubscribe`, or answers MOVED) or a master
fails over: the broker reads the topology again (CLUSTER SHARDS), subscribes
each channel on its new owner, and keeps asking while any wanted channel is not
live.

Pushed messages are parsed by hiredis as the bytes arrive and handed to the hub
in the same callback: no reader task and no redis-py connection machinery per
message (chat/resp.py says why).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, cast

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from chat.resp import Endpoint, pack, reply_reader
from chat.store.connection import node_endpoint, refresh_topology, seed_endpoints
from chat.store.slots import key_slot
from chat.store.topology import Topology
from chat.tasks import cancel_and_wait

log = logging.getLogger("dmhub.pubsub")

HEALTH_INTERVAL_S = 5.0
# Silence this long (no reply, not even to our PINGs) means the link is dead
# even if TCP has not noticed.
DEAD_AFTER_S = 3 * HEALTH_INTERVAL_S
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 3.0
SUBSCRIBE_TIMEOUT_S = 10.0
SUBSCRIBE_BATCH = 500
RESYNC_TOKEN = "dmhub-resubscribed"
# Cluster: the least time between two topology reads, and how often to read it
# again while some wanted channel is not live (a failover takes seconds).
REHOME_MIN_INTERVAL_S = 0.05
REHOME_RETRY_FIRST_S = 0.2
REHOME_RETRY_MAX_S = 2.0
# After the topology changed, read it once more this much later (see _steer).
REHOME_CONFIRM_S = 1.0
# Error replies that mean "ask the cluster where this lives now".
REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")

MessageHandler = Callable[[str, str], None]
ResyncHandler = Callable[[frozenset[str]], Coroutine[Any, Any, None]]
LostHandler = Callable[[frozenset[str]], None]


class _Listener(asyncio.Protocol):
    """One pub/sub connection: every reply goes to its shard as it is parsed."""

    def __init__(self, on_reply: Callable[[Any], None]) -> None:
        self.on_reply = on_reply
        self.reader = reply_reader()
        self.transport: asyncio.Transport | None = None
        # Resolves with the reason once the connection is gone.
        self.closed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                self.on_reply(reply)
        except (hiredis.ProtocolError, RedisConnectionError) as exc:
            self.drop(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed(exc or RedisConnectionError("Redis closed the pub/sub connection"))

    def write(self, *args: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(pack(args))

    def drop(self, reason: BaseException) -> None:
        self._closed(reason)
        if self.transport is not None:
            self.transport.abort()

    def _closed(self, reason: BaseException) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)


class _Shard:
    """The supervised connection to one node and the channels homed on it."""

    def __init__(self, broker: Broker, endpoint: Endpoint, address: str) -> None:
        self.broker = broker
        self.endpoint = endpoint
        self.address = address
        self.channels: set[str] = set()
        # SUNSUBSCRIBEs we sent and whose replies have not come: any other
        # `sunsubscribe` is the server's (the slot moved away).
        self.unsubscribing: collections.Counter[str] = collections.Counter()
        self.link: _Listener | None = None
        self.connected = False
        self.first_connect = True
        self.last_heard = 0.0
        self.task: asyncio.Task[None] | None = None
        # A restarted Redis refuses SSUBSCRIBE while it loads its data: say so
        # once, not on every retry.
        self.said_loading = False

    def start(self) -> None:
        self.task = asyncio.create_task(self._supervise(), name=f"dmhub-pubsub-{self.address}")

    async def stop(self) -> None:
        await cancel_and_wait(self.task)
        self._disconnect()

    def write(self, *args: str) -> None:
        # A write to a broken link is lost, and that is fine: the shard sees the
        # link close and subscribes to its channels again.
        if self.link is not None and self.connected:
            self.link.write(*args)

    def subscribe(self, channels: Iterable[str]) -> None:
        """SSUBSCRIBE, in commands a cluster accepts (one slot each)."""
        if not self.connected:
            return  # sent by _connect_and_listen when the link is up
        for batch in self.broker._batches(channels):
            self.write("SSUBSCRIBE", *batch)

    def unsubscribe(self, channel: str) -> None:
        if self.connected:
            self.unsubscribing[channel] += 1
            self.write("SUNSUBSCRIBE", channel)

    async def _supervise(self) -> None:
        delay = BACKOFF_FIRST_S
        while True:
            try:
                await self._connect_and_listen()
                delay = BACKOFF_FIRST_S
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                loading = "LOADING" in str(exc)
                if loading and self.said_loading:
                    log.debug("pub/sub: Redis still loading; retrying")
                elif self.connected or self.first_connect:
                    log.warning("pub/sub connection to %s lost: %s; reconnecting", self.name, exc)
                self.said_loading = self.said_loading or loading
            except Exception:
                log.exception("pub/sub listener failed; restarting it")
            finally:
                self._disconnect()
            # Backoff with jitter so fifty processes do not stampede a recovering Redis.
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, BACKOFF_MAX_S)

    @property
    def name(self) -> str:
        return self.address or "Redis"

    async def _connect_and_listen(self) -> None:
        link = _Listener(self._heard)
        await self.endpoint.connect(lambda: link)
        self.link = link
        for command in self.endpoint.hello(select=False):  # channels ignore the database
            link.write(*command)
        self.connected = True
        self.last_heard = asyncio.get_running_loop().time()
        self.first_connect = False
        self.subscribe(list(self.channels))
        # Answered after every SSUBSCRIBE above: when it comes back, all are live.
        link.write("PING", RESYNC_TOKEN)
        health = asyncio.create_task(self._health_loop(link), name="dmhub-pubsub-health")
        try:
            raise await link.closed
        finally:
            health.cancel()

    def _heard(self, reply: Any) -> None:
        self.last_heard = asyncio.get_running_loop().time()
        if isinstance(reply, ResponseError):
            message = str(reply)
            if message.startswith(REDIRECTS):
                # An SSUBSCRIBE reached a node that does not own the channel's slot.
                self.broker._rehome_soon()
                return
            # AUTH refused, or a command this connection cannot run.
            raise RedisConnectionError(f"Redis refused a pub/sub command: {message}")
        self.broker._handle(self, reply)

    async def _health_loop(self, link: _Listener) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            if loop.time() - self.last_heard > DEAD_AFTER_S:
                log.warning("pub/sub connection silent for %.0fs; dropping it", DEAD_AFTER_S)
                link.drop(RedisConnectionError("pub/sub connection silent"))
                return
            link.write("PING", "health")

    def _disconnect(self) -> None:
        was_connected, self.connected = self.connected, False
        self.unsubscribing.clear()
        link, self.link = self.link, None
        if link is not None:
            link.drop(RedisConnectionError("disconnected"))
        if was_connected:
            self.broker._lost(self.channels)


class Broker:
    def __init__(
        self,
        url: str,
        on_message: MessageHandler,
        on_resubscribed: ResyncHandler,
        on_reconnect: LostHandler | None = None,
        *,
        cluster: bool = False,
    ) -> None:
        self._seeds = seed_endpoints(url)
        self._cluster = cluster
        self._on_message = on_message
        self._on_resubscribed = on_resubscribed
        self._on_reconnect = on_reconnect
        self._wanted: set[str] = set()
        self._confirmed: set[str] = set()
        # Were live, then were not: replayed once they are live again.
        self._lost_channels: set[str] = set()
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._shards: dict[str, _Shard] = {}
        self._home: dict[str, _Shard] = {}
        self.topology: Topology | None = None
        self._rehome = asyncio.Event()
        self._steering: asyncio.Task[None] | None = None
        self._resyncs: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def connected(self) -> bool:
        shards = list(self._shards.values())
        return bool(shards) and all(shard.connected for shard in shards)

    @property
    def shards(self) -> dict[str, bool]:
        """Each shard's address and whether its connection is up."""
        return {shard.name: shard.connected for shard in self._shards.values()}

    async def start(self) -> None:
        if self._cluster:
            self._rehome.set()
            self._steering = asyncio.create_task(self._steer(), name="dmhub-pubsub-topology")
        else:
            self._shards[""] = _Shard(self, self._seeds[0], "")
            for channel in self._wanted:
                self._place(channel)
            self._shards[""].start()

    async def stop(self) -> None:
        self._stopping = True
        await cancel_and_wait(self._steering)
        for task in list(self._resyncs):
            await cancel_and_wait(task)
        shards, self._shards = list(self._shards.values()), {}
        for shard in shards:
            await shard.stop()

    async def subscribe(self, channel: str) -> None:
        """Listen on `channel`; returns once Redis confirmed the subscription."""
        self._wanted.add(channel)
        if channel in self._confirmed:
            return
        waiter = self._waiters.get(channel)
        if waiter is None or waiter.done():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[channel] = waiter
        shard = self._home.get(channel) or self._place(channel)
        if shard is not None:
            shard.subscribe([channel])
        await asyncio.wait_for(asyncio.shield(waiter), SUBSCRIBE_TIMEOUT_S)

    async def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        self._confirmed.discard(channel)
        self._lost_channels.discard(channel)
        shard = self._home.pop(channel, None)
        if shard is not None:
            shard.channels.discard(channel)
            shard.unsubscribe(channel)

    # -- where a channel lives --------------------------------------------------

    def _place(self, channel: str) -> _Shard | None:
        """Home `channel` on the shard that owns it; None until the topology is known."""
        if not self._cluster:
            shard = self._shards.get("")
        else:
            owner = self.topology.owner(channel) if self.topology else None
            shard = self._shards.get(owner) if owner else None
            if shard is None:
                self._rehome_soon()
        if shard is not None:
            self._home[channel] = shard
            shard.channels.add(channel)
        return shard

    def _batches(self, channels: Iterable[str]) -> list[list[str]]:
        if not self._cluster:
            ordered = list(channels)
            return [
                ordered[i : i + SUBSCRIBE_BATCH] for i in range(0, len(ordered), SUBSCRIBE_BATCH)
            ]
        # A cluster refuses one SSUBSCRIBE over several slots (CROSSSLOT).
        by_slot: dict[int, list[str]] = collections.defaultdict(list)
        for channel in channels:
            by_slot[key_slot(channel)].append(channel)
        return list(by_slot.values())

    def _rehome_soon(self) -> None:
        self._rehome.set()

    async def _steer(self) -> None:
        """Cluster: read the topology whenever asked, and home every channel on its owner.

        A read made because something happened, or that found a change, is made
        again a moment later: the node asked first may not have heard of a failover
        yet (gossip), and a demoted master still serves SSUBSCRIBE as a replica,
        so nothing else would say that the channel is on the wrong node."""
        retry = REHOME_RETRY_FIRST_S
        confirm = False
        while True:
            if self._unsettled():
                timeout: float | None = retry
            else:
                timeout = REHOME_CONFIRM_S if confirm else None
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the
            # cancellation that stop() sends when the event is set at that moment.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._rehome.wait()
            asked = self._rehome.is_set()
            self._rehome.clear()
            try:
                topology = await refresh_topology(self._seeds, self.topology)
            except (RedisError, OSError) as exc:
                log.warning("pub/sub: cannot read the cluster's topology: %s", exc)
                retry = min(retry * 2, REHOME_RETRY_MAX_S)
                continue
            except Exception:
                log.exception("pub/sub: reading the topology failed")
                retry = min(retry * 2, REHOME_RETRY_MAX_S)
                continue
            confirm = asked or topology != self.topology
            await self._apply(topology)
            retry = (
                REHOME_RETRY_FIRST_S
                if not self._unsettled()
                else min(retry * 2, REHOME_RETRY_MAX_S)
            )
            await asyncio.sleep(REHOME_MIN_INTERVAL_S)

    def _unsettled(self) -> bool:
        return not self.connected or any(c not in self._confirmed for c in self._wanted)

    async def _apply(self, topology: Topology) -> None:
        if topology != self.topology:
            log.info("pub/sub: cluster shards: %s", "; ".join(topology.describe()))
        self.topology = topology
        for address in topology.masters:
            if address not in self._shards:
                shard = self._shards[address] = _Shard(
                    self, node_endpoint(self._seeds[0], address), address
                )
                shard.start()
        moved: dict[_Shard, list[str]] = collections.defaultdict(list)
        for channel in list(self._wanted):
            owner = topology.owner(channel)
            target = self._shards.get(owner) if owner else None
            if target is None:
                continue
            current = self._home.get(channel)
            if current is not target:
                if current is not None:
                    current.channels.discard(channel)
                    current.unsubscribe(channel)
                    if channel in self._confirmed:
                        self._lost({channel})
                self._home[channel] = target
                target.channels.add(channel)
                moved[target].append(channel)
            elif channel not in self._confirmed:
                # SSUBSCRIBE is idempotent: ask again (it may have met a MOVED).
                moved[target].append(channel)
        for shard, channels in moved.items():
            shard.subscribe(channels)
            shard.write("PING", RESYNC_TOKEN)
        for address, shard in list(self._shards.items()):
            if address not in topology.masters and not shard.channels:
                del self._shards[address]
                await shard.stop()

    # -- replies -------------------------------------------------------------------

    def _handle(self, shard: _Shard, reply: Any) -> None:
        # RESP3 (redis-py's default from 8.0) answers a PING on a subscribed
        # connection with a plain string; RESP2 with ["pong", token].
        if reply == RESYNC_TOKEN:
            self._settled(shard)
            return
        if not isinstance(reply, list) or not reply:
            return
        kind = reply[0]
        if kind == "smessage":
            try:
                self._on_message(reply[1], reply[2])
            except Exception:
                # One bad event must not take the listener (and every socket) down.
                log.exception("dropping an event that could not be dispatched")
        elif kind == "ssubscribe":
            channel = reply[1]
            if channel in self._wanted and self._home.get(channel) is shard:
                self._confirmed.add(channel)
                waiter = self._waiters.pop(channel, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        elif kind == "sunsubscribe":
            channel = reply[1]
            if shard.unsubscribing[channel] > 0:
                shard.unsubscribing[channel] -= 1
                if not shard.unsubscribing[channel]:
                    del shard.unsubscribing[channel]
            elif channel in self._wanted and self._home.get(channel) is shard:
                # The server dropped it: its slot moved to another master.
                self._lost({channel})
                self._rehome_soon()
        elif kind == "pong" and len(reply) > 1 and reply[1] == RESYNC_TOKEN:
            self._settled(shard)

    def _lost(self, channels: Iterable[str]) -> None:
        lost = frozenset(c for c in channels if c in self._confirmed)
        self._confirmed.difference_update(lost)
        self._lost_channels.update(lost)
        if self._stopping:
            return
        if self._cluster:
            self._rehome_soon()
        if lost and self._on_reconnect is not None:
            self._on_reconnect(lost)

    def _settled(self, shard: _Shard) -> None:
        """Every SSUBSCRIBE sent on `shard` so far is answered: replay what its lost
        channels missed."""
        shard.said_loading = False
        back = frozenset(
            c for c in shard.channels if c in self._lost_channels and c in self._confirmed
        )
        if not back:
            return
        self._lost_channels.difference_update(back)
        task = asyncio.create_task(self._on_resubscribed(back), name="dmhub-resync")
        self._resyncs.add(task)
        task.add_done_callback(self._resynced)

    def _resynced(self, task: asyncio.Task[None]) -> None:
        self._resyncs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("resync after reconnect failed", exc_info=task.exception())
