"""Sharded pub/sub on a real three-master cluster: one connection per shard, and
channels that follow their slot when it moves or their shard's connection drops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from chat.pubsub import Broker
from chat.store import keys
from chat.store.cluster_lane import ClusterLane
from chat.store.connection import seed_endpoints
from chat.store.slots import key_slot
from tests.cluster_support import ValkeyCluster, handles_on_shards, move_slot, slot_owner

WAIT_S = 10.0


@dataclass
class Heard:
    messages: list[tuple[str, str]] = field(default_factory=list)
    lost: list[frozenset[str]] = field(default_factory=list)
    resynced: list[frozenset[str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def message(self, channel: str, payload: str) -> None:
        self.messages.append((channel, payload))
        self.changed.set()

    def on_lost(self, channels: frozenset[str]) -> None:
        self.lost.append(channels)
        self.changed.set()

    async def on_resynced(self, channels: frozenset[str]) -> None:
        self.resynced.append(channels)
        self.changed.set()

    async def until(self, what: str, check: object) -> None:
        assert callable(check)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while not check():
            self.changed.clear()
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.2)


@dataclass
class Rig:
    broker: Broker
    lane: ClusterLane
    heard: Heard
    channels: list[str]

    async def publish_and_hear(self, channel: str, text: str) -> None:
        assert await self.lane.execute("SPUBLISH", channel, text) == 1
        heard = self.heard
        await heard.until(f"{text} on {channel}", lambda: (channel, text) in heard.messages)


@pytest.fixture
async def rig(cluster_url: str) -> AsyncIterator[Rig]:
    heard = Heard()
    broker = Broker(
        cluster_url,
        on_message=heard.message,
        on_resubscribed=heard.on_resynced,
        on_reconnect=heard.on_lost,
        cluster=True,
    )
    lane = ClusterLane(seed_endpoints(cluster_url))
    await broker.start()
    try:
        channels = [keys.channel(lc) for lc in handles_on_shards(3)]
        for channel in channels:
            await asyncio.wait_for(broker.subscribe(channel), WAIT_S)
        yield Rig(broker, lane, heard, channels)
    finally:
        await broker.stop()
        await lane.aclose()


async def test_one_connection_per_shard_each_channel_on_its_owner(
    rig: Rig, valkey_cluster: ValkeyCluster
) -> None:
    assert rig.broker.shards == {m.address: True for m in valkey_cluster.masters}
    assert rig.broker.connected
    for channel in rig.channels:
        owner = valkey_cluster.master_for(channel)
        with contextlib.closing(owner.client()) as client:
            assert client.pubsub_shardnumsub(channel) == [(channel, 1)]
        await rig.publish_and_hear(channel, f"hello {channel}")
    assert rig.heard.lost == [] and rig.heard.resynced == []


async def test_a_moved_slot_is_followed_and_only_its_channel_resynced(
    rig: Rig, valkey_cluster: ValkeyCluster
) -> None:
    channel = rig.channels[0]
    slot = key_slot(channel)
    home = slot_owner(valkey_cluster, slot)
    elsewhere = next(m for m in valkey_cluster.masters if m is not home)
    move_slot(valkey_cluster, slot, elsewhere)
    try:
        # The old owner pushes `sunsubscribe`; the broker subscribes on the new one
        # and asks for a replay of that channel alone.
        await rig.heard.until("the resync", lambda: rig.heard.resynced)
        assert rig.heard.lost == [frozenset({channel})]
        assert rig.heard.resynced == [frozenset({channel})]
        with contextlib.closing(elsewhere.client()) as client:
            assert client.pubsub_shardnumsub(channel) == [(channel, 1)]
        await rig.publish_and_hear(channel, "after the move")
        for other in rig.channels[1:]:
            await rig.publish_and_hear(other, "unaffected")
    finally:
        move_slot(valkey_cluster, slot, home)
    await rig.heard.until("the resync after moving back", lambda: len(rig.heard.resynced) == 2)
    await rig.publish_and_hear(channel, "back home")


async def test_a_dropped_shard_connection_resyncs_only_that_shards_channels(
    rig: Rig, valkey_cluster: ValkeyCluster
) -> None:
    channel = rig.channels[1]
    owner = valkey_cluster.master_for(channel)
    with contextlib.closing(owner.client()) as client:
        client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await rig.heard.until("the resync", lambda: rig.heard.resynced)
    assert rig.heard.lost == [frozenset({channel})]
    assert rig.heard.resynced == [frozenset({channel})]
    for each in rig.channels:
        await rig.publish_and_hear(each, "after the drop")
    assert rig.broker.connected


async def test_a_subscribe_that_meets_moved_goes_to_the_new_owner(
    rig: Rig, valkey_cluster: ValkeyCluster
) -> None:
    channel = keys.channel(handles_on_shards(1)[0])
    slot = key_slot(channel)
    home = slot_owner(valkey_cluster, slot)
    elsewhere = next(m for m in valkey_cluster.masters if m is not home)
    move_slot(valkey_cluster, slot, elsewhere)  # the broker's map is stale now
    try:
        await asyncio.wait_for(rig.broker.subscribe(channel), WAIT_S)
        with contextlib.closing(elsewhere.client()) as client:
            assert client.pubsub_shardnumsub(channel) == [(channel, 1)]
        await rig.publish_and_hear(channel, "found it")
        # It was never live before: nothing to replay.
        assert rig.heard.lost == [] and rig.heard.resynced == []
    finally:
        await rig.broker.unsubscribe(channel)
        move_slot(valkey_cluster, slot, home)


# A store script in miniature: append the event to the user's stream and publish
# its cursor on the user's channel, atomically, in the user's slot.
EVENT_LUA = (
    "local c = redis.call('XADD', KEYS[1], '*', 'n', ARGV[1]) "
    "redis.call('SPUBLISH', KEYS[2], c) return c"
)
EVENT_SHA = __import__("hashlib").sha1(EVENT_LUA.encode()).hexdigest()


def _cursor_key(cursor: str) -> tuple[int, int]:
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq)


@pytest.mark.timeout(60)
async def test_a_slot_migrating_under_load_loses_and_repeats_nothing(
    cluster_url: str, valkey_cluster: ValkeyCluster
) -> None:
    """Events keep coming while the user's slot (stream included) moves to another
    master and back. A consumer that does what the hub does (hold live events
    while a lost channel resyncs, replay the stream after its last cursor, drop
    what it has seen) ends with every event exactly once, in order."""
    lc = handles_on_shards(1)[0]
    stream, channel = keys.events(lc), keys.channel(lc)
    lane = ClusterLane(seed_endpoints(cluster_url))
    delivered: list[str] = []
    pending: list[str] = []
    syncing = False
    resyncs = 0
    progress = asyncio.Event()

    def deliver(cursor: str) -> None:
        if not delivered or _cursor_key(cursor) > _cursor_key(delivered[-1]):
            delivered.append(cursor)
            progress.set()

    def on_message(_: str, cursor: str) -> None:
        if syncing:
            pending.append(cursor)
        else:
            deliver(cursor)

    def on_lost(_: frozenset[str]) -> None:
        nonlocal syncing
        syncing = True

    async def on_resynced(_: frozenset[str]) -> None:
        nonlocal syncing, resyncs
        resyncs += 1
        after = f"({delivered[-1]}" if delivered else "-"
        for cursor, _fields in await lane.execute("XRANGE", stream, after, "+"):
            deliver(cursor)
        for cursor in pending:
            deliver(cursor)
        pending.clear()
        syncing = False

    broker = Broker(
        cluster_url,
        on_message=on_message,
        on_resubscribed=on_resynced,
        on_reconnect=on_lost,
        cluster=True,
    )
    await broker.start()
    written: list[str] = []
    moving = True

    async def produce() -> None:
        n = 0
        while moving or n < 50:
            n += 1
            written.append(await lane.evalsha(EVENT_SHA, EVENT_LUA, [stream, channel], [n]))
            await asyncio.sleep(0.001)

    try:
        await asyncio.wait_for(broker.subscribe(channel), WAIT_S)
        producer = asyncio.create_task(produce())
        slot = key_slot(channel)
        home = slot_owner(valkey_cluster, slot)
        elsewhere = next(m for m in valkey_cluster.masters if m is not home)
        await asyncio.sleep(0.2)
        await asyncio.to_thread(move_slot, valkey_cluster, slot, elsewhere)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(move_slot, valkey_cluster, slot, home)
        await asyncio.sleep(0.2)
        moving = False
        await asyncio.wait_for(producer, WAIT_S)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while (syncing or delivered[-1:] != written[-1:]) and loop.time() < deadline:
            progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), 0.2)
        print(f"{len(written)} events, {resyncs} resyncs")
        assert resyncs >= 2  # the channel was lost and found again at each move
        assert delivered == written
        stored = [cursor for cursor, _ in await lane.execute("XRANGE", stream, "-", "+")]
        assert stored == written
    finally:
        moving = False
        await broker.stop()
        await lane.aclose()
