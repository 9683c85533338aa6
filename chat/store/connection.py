"""Where dmhub's Redis is and what shape it has: one node, or a Valkey Cluster.

`REDIS_URL` names one server (`redis://h:6379/0`, `rediss://...`, `unix://...`)
or several seed nodes of a cluster separated by commas, the credentials and
options written once for all of them: `redis://:pw@h1:6379,h2:6379,h3:6379`.
Whether it is a cluster is asked, not configured: `INFO cluster` says
`cluster_enabled:1`. Then the cold path is redis-py's `RedisCluster` (routes by
key, follows MOVED/ASK, loads scripts on the node that lacks them), the hot
path the slot-routing lane, and pub/sub one connection per shard. The Store
code is the same in both modes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError

from chat.resp import Endpoint
from chat.store.lane import Lane
from chat.store.topology import Topology
from chat.store.written import TrackingCluster

log = logging.getLogger("dmhub.store")

REDIS_POOL_SIZE = 64
REDIS_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0
# RedisCluster opens connections per node up to this many and then fails a
# command (MaxConnectionsError, a ConnectionError: `unavailable`) instead of
# waiting as the single-node BlockingConnectionPool does; so it is larger.
CLUSTER_CONNECTIONS_PER_NODE = 256
# How long start-up keeps asking an unreachable single seed whether it is a
# cluster before assuming one node (a cluster URL usually lists several seeds).
PROBE_PATIENCE_S = 5.0
PROBE_RETRY_S = 0.25


class RedisUrlError(ValueError):
    """A REDIS_URL that cannot name a cluster's seeds."""


def seed_urls(url: str) -> list[str]:
    """One URL per seed of `redis://[cred@]h1:p1,h2:p2[/db][?query]`, each with
    the shared scheme, credentials, database and query."""
    scheme, sep, rest = url.partition("://")
    if not sep or "," not in rest:
        return [url]
    if scheme == "unix":
        raise RedisUrlError("a unix:// REDIS_URL names one server; seeds need redis://")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i != -1), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    credentials, at, hosts = netloc.rpartition("@")
    prefix = f"{scheme}://{credentials}{at}"
    seeds = [host.strip() for host in hosts.split(",")]
    if not all(seeds):
        raise RedisUrlError("REDIS_URL has an empty seed between commas")
    return [f"{prefix}{host}{tail}" for host in seeds]


def seed_endpoints(url: str) -> list[Endpoint]:
    return [Endpoint.from_url(seed) for seed in seed_urls(url)]


def node_endpoint(template: Endpoint, address: str) -> Endpoint:
    """The endpoint of a cluster node, with the seeds' credentials and TLS."""
    host, _, port = address.rpartition(":")
    return replace(template, path=None, host=host, port=int(port), db=0)


async def query(endpoint: Endpoint, *command: Any) -> Any:
    """One command on a connection of its own (start-up, topology refreshes)."""
    lane = Lane(endpoint, timeout_s=REDIS_TIMEOUT_S)
    try:
        return await lane.execute(*command)
    finally:
        await lane.aclose()


async def is_cluster(endpoint: Endpoint) -> bool:
    info = str(await query(endpoint, "INFO", "cluster"))
    return "cluster_enabled:1" in info


async def fetch_topology(endpoints: list[Endpoint]) -> Topology:
    """CLUSTER SHARDS from the first node that answers; ConnectionError if none does."""
    failures: list[str] = []
    for endpoint in endpoints:
        try:
            reply = await query(endpoint, "CLUSTER", "SHARDS")
            return Topology.from_cluster_shards(reply, tls=endpoint.tls)
        except (RedisError, OSError, ValueError) as exc:
            failures.append(f"{endpoint.host}:{endpoint.port}: {exc}")
    raise RedisConnectionError("no cluster node answered CLUSTER SHARDS: " + "; ".join(failures))


async def refresh_topology(seeds: list[Endpoint], current: Topology | None) -> Topology:
    """A new map, asking the nodes of the current one (masters, then replicas: after
    failovers the seeds may all be gone) and then the seeds."""
    known = [node_endpoint(seeds[0], address) for address in (current.nodes if current else [])]
    seen = {(e.host, e.port) for e in known}
    return await fetch_topology([*known, *(e for e in seeds if (e.host, e.port) not in seen)])


async def detect_cluster(url: str, *, patience_s: float = PROBE_PATIENCE_S) -> bool:
    """Whether REDIS_URL is a Valkey/Redis Cluster, by asking its seeds."""
    endpoints = seed_endpoints(url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience_s
    while True:
        for endpoint in endpoints:
            try:
                return await is_cluster(endpoint)
            except (RedisError, OSError) as exc:
                last = exc
        if len(endpoints) > 1:
            # Several seeds only make sense for a cluster; its routing clients
            # find the nodes once they answer.
            log.warning("no seed of REDIS_URL answered (%s); assuming a cluster", last)
            return True
        if loop.time() >= deadline:
            log.warning("Redis did not answer (%s); assuming a single node", last)
            return False
        await asyncio.sleep(PROBE_RETRY_S)


def single_client(url: str) -> redis.Redis:
    pool = redis.BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        max_connections=REDIS_POOL_SIZE,
        timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=30,
        # The asyncio Retry: the pool awaits it. (redis.retry.Retry, the synchronous
        # one, made every command single-shot, so after a Redis restart the first
        # command on each pooled connection failed.) A retry reconnects first.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 2),
        retry_on_error=[BusyLoadingError],
    )
    return redis.Redis(connection_pool=pool)


def cluster_client(url: str, *, track_writes: bool = False) -> RedisCluster:
    """`track_writes`: note the slots that acknowledged operations write
    (DMHUB_ACK_REPLICAS, chat/store/written.py)."""
    endpoints = seed_endpoints(url)
    first = endpoints[0]
    kind = TrackingCluster if track_writes else RedisCluster
    return kind(
        startup_nodes=[ClusterNode(e.host, e.port) for e in endpoints],
        username=first.username,
        password=first.password,
        ssl=first.tls,
        decode_responses=True,
        max_connections=CLUSTER_CONNECTIONS_PER_NODE,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=30,
        # Follows MOVED/ASK and refreshes its slot map itself; these retries
        # cover a failover's few seconds without a master.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 3),
        retry_on_error=[BusyLoadingError],
    )


@dataclass(frozen=True)
class RedisTarget:
    """REDIS_URL and what it turned out to be."""

    url: str
    cluster: bool

    @property
    def seeds(self) -> list[Endpoint]:
        return seed_endpoints(self.url)

    def client(self, *, track_writes: bool = False) -> Any:
        """The cold-path client: RedisCluster or Redis, with the same commands."""
        if self.cluster:
            return cluster_client(self.url, track_writes=track_writes)
        return single_client(self.url)


async def target(url: str) -> RedisTarget:
    return RedisTarget(url, await detect_cluster(url))
