"""The hot-path lane on a Valkey Cluster: one pipelined Lane per master, routed by slot.

Each command goes to the master that owns the slot of its first key (for
FCALL and EVALSHA, KEYS[1]: dmhub's scripts touch one slot each), over that master's Lane
(chat/store/lane.py: hand-written RESP, one write per event-loop turn), so
routing costs a CRC16 and a table lookup, not a connection checkout.

The slot map comes from CLUSTER SHARDS. When it is stale the cluster says so,
and the command had not run, so it is safe to send again:
- `MOVED slot host:port`: the slot has a new owner for good. The map is
  corrected for that slot at once, refreshed in full in the background, and
  the command goes to the new owner.
- `ASK slot host:port`: the slot is being migrated and this key is already on
  the target. `ASKING` and the command go to the target back to back (one
  write), once; the map does not change.
- `TRYAGAIN` (a multi-key command mid-migration) and `CLUSTERDOWN` (no master
  for the slot, e.g. during a failover): a few short retries, then the error
  goes up and the caller answers `unavailable`, as for a lost connection.
A lost connection fails what was in flight on it (it may have run: the caller
answers `unavailable`, and a retried send is deduplicated by its client_id)
and makes the next command refresh the map, which finds a promoted replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from chat.resp import Endpoint
from chat.store.connection import node_endpoint, refresh_topology
from chat.store.lane import DEFAULT_TIMEOUT_S, Lane, NoFunctionError
from chat.store.lua import FunctionLibrary
from chat.store.slots import key_slot
from chat.store.topology import Shard, Topology

log = logging.getLogger("dmhub.store")

# Redirections one command may follow (a slot moved twice meanwhile is rare).
MAX_REDIRECTS = 5
# TRYAGAIN / CLUSTERDOWN: retries and the first pause (doubling), about 0.6 s in all.
BUSY_RETRIES = 5
BUSY_FIRST_PAUSE_S = 0.02
# Several commands that meet a stale map at once share one refresh.
REFRESH_MIN_INTERVAL_S = 0.05


def command_key(args: tuple[Any, ...]) -> str | None:
    """The key a command routes by: KEYS[1] for EVAL/EVALSHA/FCALL, else the first
    argument. The lane only carries commands whose first argument is a key."""
    name = str(args[0]).upper()
    if name in ("EVALSHA", "EVAL", "FCALL", "FCALL_RO", "EVALSHA_RO", "EVAL_RO"):
        return str(args[3]) if len(args) > 3 and int(args[2]) > 0 else None
    return str(args[1]) if len(args) > 1 else None


def redirection(message: str) -> tuple[str, int, str] | None:
    """('MOVED'|'ASK', slot, host:port) from a redirection error, else None."""
    parts = message.split(" ")
    if len(parts) == 3 and parts[0] in ("MOVED", "ASK") and parts[1].isdigit():
        return parts[0], int(parts[1]), parts[2]
    return None


def _busy(message: str) -> bool:
    return message.startswith(("TRYAGAIN", "CLUSTERDOWN"))


class ClusterLane:
    """Lane's interface (execute, evalsha, fcall, aclose) over every master of a cluster."""

    def __init__(self, seeds: list[Endpoint], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not seeds:
            raise ValueError("a cluster lane needs at least one seed")
        self.seeds = seeds
        self.timeout_s = timeout_s
        self.topology: Topology | None = None
        self._lanes: dict[str, Lane] = {}
        # Lanes to masters that are no longer masters: closed one refresh later,
        # when what was in flight on them has had its answer (MOVED, retried).
        self._retired: list[Lane] = []
        # Corrections from MOVED replies, until the next full map.
        self._moved: dict[int, str] = {}
        self._refresh: asyncio.Task[Topology] | None = None
        self._refreshed_at = -1e9
        # When a slot last changed owner in this map (time.monotonic()): a write
        # from before may have gone to another node than a WAIT would now.
        self.map_changed_at = -1.0
        self._closed = False

    # -- the interface the Store uses ------------------------------------------

    async def execute(self, *args: Any) -> Any:
        return await self._routed(command_key(args), args, None)

    async def execute_many(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Lane.execute_many on the master of the first command's key, for
        commands of one slot that are safe to run twice: on any error reply
        (a slot moved meanwhile, a busy node) they run again one by one, routed."""
        address = self._known_owner(command_key(commands[0]))
        if address is not None:
            lane = self._lanes.get(address) or self.lane(address)
            try:
                return await lane.execute_many(*commands)
            except ResponseError:
                pass
            except RedisConnectionError:
                self._refresh_soon()
                raise
        return [await self.execute(*command) for command in commands]

    async def evalsha(self, sha: str, script: str, keys: list[str], args: list[Any]) -> Any:
        command = ("EVALSHA", sha, len(keys), *keys, *args)
        return await self._routed(keys[0] if keys else None, command, ("SCRIPT", "LOAD", script))

    async def fcall(
        self, name: str, library: FunctionLibrary, keys: list[str], args: list[Any]
    ) -> Any:
        """FCALL on the master of KEYS[1]'s slot; a master without the function
        (new, restarted empty, flushed) is given the library and asked again."""
        command = ("FCALL", name, len(keys), *keys, *args)
        load = ("FUNCTION", "LOAD", "REPLACE", library.source)
        return await self._routed(keys[0] if keys else None, command, load)

    async def wait_replicas(
        self, key: str | None, replicas: int, timeout_ms: int, *, since: float
    ) -> int:
        """Lane.wait_replicas on the master of `key`'s slot, over the connection
        that carried the writes to that slot; 0 when the map changed after
        `since` (the writes may have gone to the node that had the slot then)."""
        if self.map_changed_at >= since:
            return 0
        address = self._known_owner(key) or await self.owner(key)
        lane = self._lanes.get(address) or self.lane(address)
        try:
            count = await lane.wait_replicas(key, replicas, timeout_ms, since=since)
        except ResponseError as exc:
            # A node demoted meanwhile refuses WAIT ("cannot be used with
            # replica instances"): what it took may not be on the new master.
            log.info("WAIT on %s refused: %s", address, exc)
            self._refresh_soon()
            return 0
        return 0 if self.map_changed_at >= since else count

    async def aclose(self) -> None:
        self._closed = True
        if self._refresh is not None:
            self._refresh.cancel()
        lanes, self._lanes = [*self._lanes.values(), *self._retired], {}
        self._retired = []
        for lane in lanes:
            await lane.aclose()

    # -- routing -----------------------------------------------------------------

    def lane(self, address: str) -> Lane:
        lane = self._lanes.get(address)
        if lane is None:
            if self._closed:
                raise RedisConnectionError("the lane is closed")
            lane = Lane(node_endpoint(self.seeds[0], address), timeout_s=self.timeout_s)
            self._lanes[address] = lane
        return lane

    def _known_owner(self, key: str | None) -> str | None:
        """The owner from the map in hand, without waiting (the common case)."""
        topology = self.topology
        if topology is None:
            return None
        if key is None:
            return topology.masters[0]
        slot = key_slot(key)
        return self._moved.get(slot) or topology.owner_of_slot(slot)

    async def owner(self, key: str | None) -> str:
        """The address of the master for `key` (any master for None)."""
        address = self._known_owner(key)
        if address is not None:
            return address
        # No map yet, or a slot without a master (a failover may have ended).
        await self.refresh(force=self.topology is not None)
        address = self._known_owner(key)
        if address is None:
            raise RedisConnectionError(f"no master serves slot {key_slot(key or '')}")
        return address

    async def _routed(
        self, key: str | None, command: tuple[Any, ...], load: tuple[Any, ...] | None
    ) -> Any:
        """`load`: what makes a node that lacks the command's script or
        function able to run it (SCRIPT LOAD, FUNCTION LOAD)."""
        # One coroutine per command on the way there: routing is a CRC16 and two
        # lookups when the map is known.
        address = self._known_owner(key) or await self.owner(key)
        asking = False
        redirects = busy = loads = 0
        while True:
            lane = self._lanes.get(address) or self.lane(address)
            try:
                if asking:
                    return await self._asking(lane, command, load)
                return await lane.execute(*command)
            except (NoScriptError, NoFunctionError):
                if load is None or loads:
                    raise
                # This master has not seen the script or the library (new,
                # restarted, flushed, or promoted); on ASK, the importing node.
                loads += 1
                await lane.execute(*load)
            except ResponseError as exc:
                message = str(exc)
                moved = redirection(message)
                if moved is not None and redirects < MAX_REDIRECTS:
                    redirects += 1
                    kind, slot, address = moved
                    asking = kind == "ASK"
                    if not asking:
                        self._moved[slot] = address
                        self.map_changed_at = time.monotonic()
                        self._refresh_soon()
                    continue
                if _busy(message) and busy < BUSY_RETRIES:
                    await asyncio.sleep(BUSY_FIRST_PAUSE_S * 2**busy)
                    busy += 1
                    if message.startswith("CLUSTERDOWN"):
                        await self.refresh(force=True)
                    address = await self.owner(key)
                    asking = False
                    continue
                if _busy(message):
                    # Storage unavailable for now, like a lost connection.
                    raise RedisConnectionError(f"cluster busy: {message}") from exc
                raise
            except RedisConnectionError:
                # The node may be gone for good (a failover): find out before the
                # next command, which the caller's retry will send.
                self._refresh_soon()
                raise

    @staticmethod
    async def _asking(lane: Lane, command: tuple[Any, ...], load: tuple[Any, ...] | None) -> Any:
        if load is not None and load[0] == "SCRIPT":
            # The importing node may not know the script yet; EVAL cannot miss.
            command = ("EVAL", load[2], *command[2:])
        # A function it lacks: NoFunctionError, then the library is loaded there.
        return await lane.execute_asking(*command)

    # -- the slot map --------------------------------------------------------------

    async def refresh(self, *, force: bool = False) -> Topology:
        """A new map from CLUSTER SHARDS; concurrent callers share one request."""
        loop = asyncio.get_running_loop()
        if self._refresh is None or self._refresh.done():
            if (
                not force
                and self.topology is not None
                and loop.time() - self._refreshed_at < REFRESH_MIN_INTERVAL_S
            ):
                return self.topology
            self._refresh = asyncio.create_task(self._fetch(), name="dmhub-lane-topology")
            self._refresh.add_done_callback(_retrieve)
        return await asyncio.shield(self._refresh)

    def _refresh_soon(self) -> None:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._fetch(), name="dmhub-lane-topology")
            self._refresh.add_done_callback(_retrieve)

    async def _fetch(self) -> Topology:
        topology = await refresh_topology(self.seeds, self.topology)
        self._moved.clear()
        if self.topology is not None and _owners(self.topology) != _owners(topology):
            self.map_changed_at = time.monotonic()
        self.topology = topology
        self._refreshed_at = asyncio.get_running_loop().time()
        retired, self._retired = self._retired, []
        for lane in retired:
            await lane.aclose()
        for address in [a for a in self._lanes if a not in topology.masters]:
            self._retired.append(self._lanes.pop(address))
        return topology


def _owners(topology: Topology) -> set[tuple[str, tuple[tuple[int, int], ...]]]:
    return {(shard.master, shard.ranges) for shard in topology.shards}


def _retrieve(task: asyncio.Task[Topology]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not refresh the cluster's slot map: %s", task.exception())


@dataclass(frozen=True, slots=True)
class ShardHealth:
    shard: Shard
    answers: bool  # PING answered
    state: str  # its cluster_state, "unknown" when it did not answer

    @property
    def ok(self) -> bool:
        return self.answers and self.state == "ok"

    def public(self) -> dict[str, Any]:
        """What /readyz shows: no addresses (the public answer names no hosts)."""
        return {
            "slots": ",".join(f"{a}-{b}" for a, b in self.shard.ranges),
            "replicas": len(self.shard.replicas),
            "ok": self.ok,
            "cluster_state": self.state,
        }


async def shard_health(lane: ClusterLane) -> list[ShardHealth]:
    """Every master of a fresh map: does it answer PING, and is its cluster_state ok."""
    topology = await lane.refresh(force=True)

    async def one(shard: Shard) -> ShardHealth:
        try:
            node = lane.lane(shard.master)
            await node.execute("PING")
            info = str(await node.execute("CLUSTER", "INFO"))
        except (RedisError, OSError):
            return ShardHealth(shard, False, "unknown")
        state = next(
            (line.split(":", 1)[1].strip() for line in info.splitlines()
             if line.startswith("cluster_state:")),
            "unknown",
        )  # fmt: skip
        return ShardHealth(shard, True, state)

    return list(await asyncio.gather(*(one(s) for s in topology.shards)))
