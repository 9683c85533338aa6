"""A master fails over (by hand, and by being killed): the lane and the sharded
pub/sub follow the promoted replica, and only that shard's channels resync."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from chat.pubsub import Broker
from chat.store import keys
from chat.store.cluster_lane import ClusterLane
from chat.store.connection import seed_endpoints
from tests.cluster_support import (
    ClusterNode,
    ValkeyCluster,
    handles_on_shards,
    read_only,
    until_answers,
)
from tests.test_cluster_pubsub import Heard, Rig


@pytest.fixture
async def rig(failover_cluster: ValkeyCluster) -> AsyncIterator[Rig]:
    heard = Heard()
    broker = Broker(
        failover_cluster.url,
        on_message=heard.message,
        on_resubscribed=heard.on_resynced,
        on_reconnect=heard.on_lost,
        cluster=True,
    )
    lane = ClusterLane(seed_endpoints(failover_cluster.url), timeout_s=2)
    await broker.start()
    try:
        channels = [keys.channel(lc) for lc in handles_on_shards(3)]
        for channel in channels:
            await asyncio.wait_for(broker.subscribe(channel), 10)
        yield Rig(broker, lane, heard, channels)
    finally:
        await broker.stop()
        await lane.aclose()


async def replicated_to(replica: ClusterNode, key: str, value: str) -> None:
    with read_only(replica) as client:
        for _ in range(200):
            if client.get(key) == value:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{key} never reached the replica")


@pytest.mark.timeout(60)
async def test_a_manual_failover_moves_the_shard_to_its_replica(
    rig: Rig, failover_cluster: ValkeyCluster
) -> None:
    channel = rig.channels[2]
    key = channel.replace("ch:", "user:", 1)
    master = failover_cluster.master_for(channel)
    replica = failover_cluster.replica_of(master)
    assert await rig.lane.execute("SET", key, "before") == "OK"
    with contextlib.closing(replica.client()) as client:
        client.execute_command("CLUSTER", "FAILOVER")  # waits for the offsets to match
    # Homed on the promoted replica in the end (on the way, the demoted master,
    # which serves SSUBSCRIBE as a replica, may have confirmed it first).
    await rig.heard.until(
        "the channel on the new master", lambda: rig.broker.shards.get(replica.address)
    )
    await rig.heard.until("the resync", lambda: not rig.broker._lost_channels)
    assert rig.heard.resynced and set(rig.heard.resynced) == {frozenset({channel})}
    assert await until_answers(rig.lane, "GET", key) == "before"
    await rig.publish_and_hear(channel, "from the new master")
    with contextlib.closing(replica.client()) as client:
        assert client.pubsub_shardnumsub(channel) == [(channel, 1)]
    for other in rig.channels[:2]:
        await rig.publish_and_hear(other, "unaffected")


@pytest.mark.timeout(60)
async def test_a_killed_master_is_replaced_and_its_channels_come_back(
    rig: Rig, failover_cluster: ValkeyCluster
) -> None:
    channel = rig.channels[0]
    key = channel.replace("ch:", "user:", 1)
    master = failover_cluster.master_for(channel)
    replica = failover_cluster.replica_of(master)
    assert await rig.lane.execute("SET", key, "acked") == "OK"
    # The write reaches the replica before the master dies: replication is
    # asynchronous, and a write the replica never got is lost with the master.
    await replicated_to(replica, key, "acked")
    # A lane whose only seed is the master about to die: it must find the
    # promoted replica through the nodes it learned, not through its seeds.
    lonely = ClusterLane(seed_endpoints(f"redis://{master.address}"), timeout_s=2)
    try:
        assert await lonely.execute("GET", key) == "acked"
        master.kill()
        assert await until_answers(rig.lane, "GET", key) == "acked"
        assert await until_answers(lonely, "GET", key) == "acked"
    finally:
        await lonely.aclose()
    await rig.heard.until("the resync", lambda: rig.heard.resynced)
    assert rig.heard.lost == [frozenset({channel})]
    assert rig.heard.resynced == [frozenset({channel})]
    await rig.publish_and_hear(channel, "after the failover")
    assert replica.address in rig.broker.shards
