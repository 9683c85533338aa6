"""A master fails over (by hand, and by being killed): the lane and the sharded
pub/sub follow the promoted replica, and only that shard's channels resync."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from chat.pubsub import Broker
from chat.store import keys
from chat.store.cluster_lane import ClusterLane
from chat.store.connection import seed_endpoints
from tests.cluster_support import ClusterNode, ValkeyCluster, handles_on_shards, valkey_cluster
from tests.test_cluster_pubsub import Heard, Rig

FAILOVER_S = 20.0


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[ValkeyCluster]:
    with valkey_cluster(tmp_path / "cluster", replicas=True) as cluster:
        yield cluster


@pytest.fixture
async def rig(replicated: ValkeyCluster) -> AsyncIterator[Rig]:
    heard = Heard()
    broker = Broker(
        replicated.url,
        on_message=heard.message,
        on_resubscribed=heard.on_resynced,
        on_reconnect=heard.on_lost,
        cluster=True,
    )
    lane = ClusterLane(seed_endpoints(replicated.url), timeout_s=2)
    await broker.start()
    try:
        channels = [keys.channel(lc) for lc in handles_on_shards(3)]
        for channel in channels:
            await asyncio.wait_for(broker.subscribe(channel), 10)
        yield Rig(broker, lane, heard, channels)
    finally:
        await broker.stop()
        await lane.aclose()


def replica_of(cluster: ValkeyCluster, master: ClusterNode) -> ClusterNode:
    return next(r for r in cluster.replicas if r.replica_of is master)


async def replicated_to(replica: ClusterNode, key: str, value: str) -> None:
    client = redis.Redis(port=replica.port, decode_responses=True, single_connection_client=True)
    try:
        client.execute_command("READONLY")
        for _ in range(200):
            if client.get(key) == value:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{key} never reached the replica")
    finally:
        client.close()


async def until_answers(lane: ClusterLane, *command: str) -> object:
    """The command's answer once the shard has a master again (unavailable before)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FAILOVER_S
    while True:
        try:
            return await lane.execute(*command)
        except RedisConnectionError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.timeout(60)
async def test_a_manual_failover_moves_the_shard_to_its_replica(
    rig: Rig, replicated: ValkeyCluster
) -> None:
    channel = rig.channels[2]
    key = channel.replace("ch:", "user:", 1)
    master = replicated.master_for(channel)
    replica = replica_of(replicated, master)
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
    rig: Rig, replicated: ValkeyCluster
) -> None:
    channel = rig.channels[0]
    key = channel.replace("ch:", "user:", 1)
    master = replicated.master_for(channel)
    replica = replica_of(replicated, master)
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
