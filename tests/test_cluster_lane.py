"""The slot-routing lane: pure routing rules, then a real three-master cluster."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from chat.store.cluster_lane import (
    BUSY_FIRST_PAUSE_S,
    BUSY_RETRIES,
    ClusterLane,
    command_key,
    redirection,
)
from chat.store.connection import seed_endpoints
from chat.store.slots import key_slot
from tests.cluster_support import (
    ClusterNode,
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


# -- TRYAGAIN and CLUSTERDOWN, produced by the cluster, not mocked -----------------

# The lane's whole patience for a busy slot: its pauses, doubling.
BUSY_PATIENCE_S = sum(BUSY_FIRST_PAUSE_S * 2**i for i in range(BUSY_RETRIES))
# Slack above that patience for the round trips and a loaded 2-core machine.
BUSY_SLACK_S = 5.0
WATCH_POLL_S = 0.002
TWO_KEYS = "return redis.call('GET', KEYS[1]) .. '+' .. redis.call('GET', KEYS[2])"
TWO_KEYS_SHA = __import__("hashlib").sha1(TWO_KEYS.encode()).hexdigest()


def error_replies(node: ClusterNode, code: str) -> int:
    """How many `code` error replies the node has sent (INFO errorstats)."""
    with contextlib.closing(node.client()) as client:
        stats = client.info("errorstats")
    entry = stats.get(f"errorstat_{code}")
    return int(entry["count"]) if entry else 0


def after_first_error(node: ClusterNode, code: str, since: int, act: Callable[[], None]) -> None:
    """Once the node has answered one more `code` error than `since`, `act`:
    the lane is then between its retries."""
    deadline = time.monotonic() + BUSY_SLACK_S
    while error_replies(node, code) <= since:
        assert time.monotonic() < deadline, f"{node.address} never answered {code}"
        time.sleep(WATCH_POLL_S)
    act()


def cluster_state(node: ClusterNode) -> str:
    with contextlib.closing(node.client()) as client:
        info = str(client.execute_command("CLUSTER", "INFO"))
    return next(line.split(":", 1)[1].strip() for line in info.splitlines()
                if line.startswith("cluster_state:"))  # fmt: skip


def wait_for_state(nodes: list[ClusterNode], state: str) -> None:
    deadline = time.monotonic() + BUSY_SLACK_S
    while any(cluster_state(node) != state for node in nodes):
        assert time.monotonic() < deadline, f"cluster_state never became {state}"
        time.sleep(0.01)


@contextlib.asynccontextmanager
async def keys_split_by_a_migration(
    lane: ClusterLane, cluster: ValkeyCluster
) -> AsyncIterator[tuple[list[str], ClusterNode, ClusterNode]]:
    """Two keys of one slot while the slot migrates, one already on the target:
    the owner answers TRYAGAIN to a command that takes both. The slot is given
    back to its owner afterwards."""
    lc = handles_on_shards(1)[0]
    first, second = f"a:{{{lc}}}", f"b:{{{lc}}}"
    slot = key_slot(first)
    assert await lane.execute("SET", first, "one") == "OK"
    assert await lane.execute("SET", second, "two") == "OK"
    home = slot_owner(cluster, slot)
    target = next(m for m in cluster.masters if m is not home)
    begin_slot_move(cluster, slot, target)
    try:
        with contextlib.closing(home.client()) as client:
            client.execute_command("MIGRATE", "127.0.0.1", target.port, second, 0, 5000)
        yield [first, second], home, target
    finally:
        move_slot(cluster, slot, target)
        move_slot(cluster, slot, home)


async def test_tryagain_is_retried_within_the_bound_then_unavailable(
    lane: ClusterLane, valkey_cluster: ValkeyCluster
) -> None:
    async with keys_split_by_a_migration(lane, valkey_cluster) as (both, home, _):
        before = error_replies(home, "TRYAGAIN")
        started = time.monotonic()
        with pytest.raises(RedisConnectionError, match=r"^cluster busy: TRYAGAIN"):
            await lane.evalsha(TWO_KEYS_SHA, TWO_KEYS, both, [])
        took = time.monotonic() - started
        # The first try and every retry reached the owner, and no more.
        assert error_replies(home, "TRYAGAIN") - before == 1 + BUSY_RETRIES
        assert BUSY_PATIENCE_S <= took < BUSY_PATIENCE_S + BUSY_SLACK_S, took


async def test_tryagain_then_the_migration_moves_on_and_the_retry_succeeds(
    lane: ClusterLane, valkey_cluster: ValkeyCluster
) -> None:
    async with keys_split_by_a_migration(lane, valkey_cluster) as (both, home, target):
        before = error_replies(home, "TRYAGAIN")

        def move_the_other_key() -> None:
            with contextlib.closing(home.client()) as client:
                client.execute_command("MIGRATE", "127.0.0.1", target.port, both[0], 0, 5000)

        mover = asyncio.to_thread(after_first_error, home, "TRYAGAIN", before, move_the_other_key)
        # Both keys on the target now: the owner answers ASK, the target runs it.
        reply, _ = await asyncio.gather(lane.evalsha(TWO_KEYS_SHA, TWO_KEYS, both, []), mover)
        assert reply == "one+two"
        assert 1 <= error_replies(home, "TRYAGAIN") - before <= BUSY_RETRIES


class Coverage:
    """A master that forgets one of its own slots (CLUSTER DELSLOTS) no longer
    covers every slot: its cluster_state is `fail` and it answers CLUSTERDOWN to
    every command, while every map (its own included) still names it as the
    owner of its other slots. `restore` gives the slot back (ADDSLOTS)."""

    def __init__(self, owner: ClusterNode, slot: int) -> None:
        self.owner, self.slot, self.lost = owner, slot, False

    def lose(self) -> None:
        with contextlib.closing(self.owner.client()) as client:
            client.execute_command("CLUSTER", "DELSLOTS", self.slot)
        self.lost = True

    def restore(self) -> None:
        if self.lost:
            with contextlib.closing(self.owner.client()) as client:
                client.execute_command("CLUSTER", "ADDSLOTS", self.slot)
            self.lost = False


@contextlib.asynccontextmanager
async def master_without_full_coverage(
    lane: ClusterLane, cluster: ValkeyCluster
) -> AsyncIterator[tuple[str, Coverage]]:
    """A key whose master answers CLUSTERDOWN (see Coverage) until restored;
    restored in any case afterwards, and every master `ok` again."""
    lc = handles_on_shards(1)[0]
    key = f"user:{{{lc}}}"
    assert await lane.execute("SET", key, "kept") == "OK"
    owner = slot_owner(cluster, key_slot(key))
    assert owner.master_of is not None
    first, last = owner.master_of
    coverage = Coverage(owner, last if key_slot(key) != last else first)
    coverage.lose()
    try:
        wait_for_state([owner], "fail")
        yield key, coverage
    finally:
        coverage.restore()
        wait_for_state(cluster.masters, "ok")


async def test_clusterdown_is_retried_within_the_bound_then_unavailable(
    lane: ClusterLane, valkey_cluster: ValkeyCluster
) -> None:
    async with master_without_full_coverage(lane, valkey_cluster) as (key, coverage):
        before = error_replies(coverage.owner, "CLUSTERDOWN")
        started = time.monotonic()
        with pytest.raises(RedisConnectionError, match=r"^cluster busy: CLUSTERDOWN"):
            await lane.execute("GET", key)
        took = time.monotonic() - started
        # Each retry asked for a new map first: it still names the same master.
        assert error_replies(coverage.owner, "CLUSTERDOWN") - before == 1 + BUSY_RETRIES
        assert BUSY_PATIENCE_S <= took < BUSY_PATIENCE_S + BUSY_SLACK_S, took


async def test_clusterdown_then_the_master_recovers_and_the_retry_succeeds(
    lane: ClusterLane, valkey_cluster: ValkeyCluster
) -> None:
    async with master_without_full_coverage(lane, valkey_cluster) as (key, coverage):
        owner = coverage.owner
        before = error_replies(owner, "CLUSTERDOWN")
        mender = asyncio.to_thread(
            after_first_error, owner, "CLUSTERDOWN", before, coverage.restore
        )
        reply, _ = await asyncio.gather(lane.execute("GET", key), mender)
        assert reply == "kept"
        assert 1 <= error_replies(owner, "CLUSTERDOWN") - before <= BUSY_RETRIES
