"""The slot-routing lane: pure routing rules, then a real three-master cluster."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from chat.store.cluster_lane import ClusterLane, command_key, redirection
from chat.store.connection import seed_endpoints
from chat.store.slots import key_slot
from tests.cluster_support import (
    ValkeyCluster,
    begin_slot_move,
    handles_on_shards,
    move_slot,
    slot_owner,
)

SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])"
SCRIPT_SHA = __import__("hashlib").sha1(SCRIPT.encode()).hexdigest()


def test_commands_route_by_their_first_key() -> None:
    assert command_key(("GET", "sess:abc")) == "sess:abc"
    assert command_key(("SPUBLISH", "ch:{ann}", "x")) == "ch:{ann}"
    assert command_key(("EVALSHA", "f00", 2, "msgs:{ann}:bob", "user:{ann}", "a")) == (
        "msgs:{ann}:bob"
    )
    assert command_key(("EVALSHA", "f00", "0", "a")) is None
    assert command_key(("FCALL", "send", 1, "user:{bob}")) == "user:{bob}"
    assert command_key(("PING",)) is None


def test_redirections_are_read_and_other_errors_are_not() -> None:
    assert redirection("MOVED 3999 127.0.0.1:6381") == ("MOVED", 3999, "127.0.0.1:6381")
    assert redirection("ASK 12 10.0.0.2:7000") == ("ASK", 12, "10.0.0.2:7000")
    assert redirection("MOVED x 127.0.0.1:1") is None
    assert redirection("ERR wrong number of arguments") is None
    assert redirection("CLUSTERDOWN The cluster is down") is None


@pytest.fixture
async def lane(cluster_url: str) -> ClusterLane:
    lane = ClusterLane(seed_endpoints(cluster_url), timeout_s=5)
    try:
        yield lane  # type: ignore[misc]
    finally:
        await lane.aclose()


async def test_each_key_goes_to_the_master_that_owns_it(
    lane: ClusterLane, valkey_cluster: ValkeyCluster
) -> None:
    handles = handles_on_shards(3)
    for lc in handles:
        assert await lane.execute("SET", f"user:{{{lc}}}", lc) == "OK"
        assert await lane.evalsha(SCRIPT_SHA, SCRIPT, [f"x:{{{lc}}}"], [lc + "!"]) == lc + "!"
    for lc in handles:
        owner = valkey_cluster.master_for(f"user:{{{lc}}}")
        with contextlib.closing(owner.client()) as client:
            assert client.get(f"user:{{{lc}}}") == lc
            assert client.get(f"x:{{{lc}}}") == lc + "!"
    # Three masters, three lanes, each used: the load is spread, not proxied.
    assert lane.topology is not None and len(lane.topology.masters) == 3
    assert sorted(lane._lanes) == sorted(m.address for m in valkey_cluster.masters)


async def test_a_master_without_the_script_gets_it(
    lane: ClusterLane, valkey_cluster: ValkeyCluster
) -> None:
    lc = handles_on_shards(1)[0]
    assert await lane.evalsha(SCRIPT_SHA, SCRIPT, [f"x:{{{lc}}}"], ["1"]) == "1"
    for node in valkey_cluster.masters:
        with contextlib.closing(node.client()) as client:
            client.script_flush()
    assert await lane.evalsha(SCRIPT_SHA, SCRIPT, [f"x:{{{lc}}}"], ["2"]) == "2"


async def test_moved_follows_the_slot_to_its_new_owner(
    lane: ClusterLane, valkey_cluster: ValkeyCluster
) -> None:
    lc = handles_on_shards(1)[0]
    key = f"user:{{{lc}}}"
    slot = key_slot(key)
    await lane.execute("SET", key, "before")
    home = slot_owner(valkey_cluster, slot)
    elsewhere = next(m for m in valkey_cluster.masters if m is not home)
    move_slot(valkey_cluster, slot, elsewhere)
    try:
        # The lane's map still says `home`: MOVED, then the new owner answers.
        assert await lane.execute("GET", key) == "before"
        assert await lane.evalsha(SCRIPT_SHA, SCRIPT, [key], ["after"]) == "after"
        for _ in range(100):
            if lane.topology is not None and lane.topology.owner(key) == elsewhere.address:
                break
            await asyncio.sleep(0.02)
        assert lane.topology is not None and lane.topology.owner(key) == elsewhere.address
    finally:
        move_slot(valkey_cluster, slot, home)
    assert await lane.execute("GET", key) == "after"


async def test_commands_sent_together_follow_a_moved_slot(
    lane: ClusterLane, valkey_cluster: ValkeyCluster
) -> None:
    lc = handles_on_shards(1)[0]
    key = f"n:{{{lc}}}"
    slot = key_slot(key)
    assert await lane.execute_many(("SET", key, "1"), ("INCR", key)) == ["OK", 2]
    home = slot_owner(valkey_cluster, slot)
    elsewhere = next(m for m in valkey_cluster.masters if m is not home)
    move_slot(valkey_cluster, slot, elsewhere)
    try:
        # The map still says `home`: MOVED for both, then both again, routed.
        assert await lane.execute_many(("INCR", key), ("GET", key)) == [3, "3"]
    finally:
        move_slot(valkey_cluster, slot, home)


async def test_ask_sends_asking_and_the_command_to_the_importing_node(
    lane: ClusterLane, valkey_cluster: ValkeyCluster
) -> None:
    lc = handles_on_shards(1)[0]
    key, other = f"user:{{{lc}}}", f"x:{{{lc}}}"
    slot = key_slot(key)
    await lane.execute("PING")  # the map, before the migration starts
    home = slot_owner(valkey_cluster, slot)
    target = next(m for m in valkey_cluster.masters if m is not home)
    begin_slot_move(valkey_cluster, slot, target)
    try:
        # Neither key exists on `home`: it answers ASK, the target takes them.
        assert await lane.execute("SET", key, "imported") == "OK"
        assert await lane.evalsha(SCRIPT_SHA, SCRIPT, [other], ["by script"]) == "by script"
        with contextlib.closing(target.client()) as client:
            assert client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 2
        with contextlib.closing(home.client()) as client:
            assert client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        # The slot still belongs to `home`: an ASK does not change the map.
        assert lane.topology is not None and lane.topology.owner(key) == home.address
    finally:
        move_slot(valkey_cluster, slot, target)  # finish it, then give it back
        move_slot(valkey_cluster, slot, home)
    assert await lane.execute("GET", key) == "imported"
