"""What DMHUB_ACK_REPLICAS costs the writes other than a send (sign-up, follow, profile).

    python bench/ack_write_cost.py                 # about 40 s, starts its own cluster
    python bench/ack_write_cost.py --seconds 2 --concurrency 16

A three-master Valkey Cluster with one replica each (tests/cluster_support.py),
and the real app under uvicorn in this process (tests/support.running_server),
with the setting off and on, alternating (off, on, off, on) so that drift of a
loaded machine hits both. HTTP clients in the same process: absolute figures
include the client's own work, read the differences. For each mode: sign-ups
one at a time (argon2 dominates them), then `PUT`/`DELETE /api/following/X`
between users on different shards, one at a time and CONCURRENCY at a time,
and `PATCH /api/me` one at a time, each for SECONDS. Reports p50/p99 (ms),
requests per second, WAIT calls per request (concurrent requests on one node
share one WAIT) and waits that came back short.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat.client import Client
from chat.metrics import ACK_REPLICA_WAITS
from tests.cluster_support import ValkeyCluster, handles_on_shards, valkey_cluster
from tests.support import PASSWORD, running_server, settings_for

SIGNUPS = 8


def wait_calls(cluster: ValkeyCluster) -> int:
    total = 0
    for node in cluster.masters:
        with contextlib.closing(node.client()) as client:
            stats: Any = client.info("commandstats")
            total += int(stats.get("cmdstat_wait", {}).get("calls", 0))
    return total


def short() -> float:
    return float(ACK_REPLICA_WAITS.labels("short")._value.get())


async def timed(
    cluster: ValkeyCluster,
    name: str,
    mode: str,
    width: int,
    seconds: float,
    request: Callable[[int], Awaitable[object]],
    count: int | None = None,
) -> dict[str, Any]:
    """`request(worker)` by `width` workers for `seconds` (or `count` in all)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    waits, shorts = wait_calls(cluster), short()

    async def worker(n: int) -> None:
        while time.perf_counter() < deadline and (count is None or len(latencies) < count):
            started = time.perf_counter()
            await request(n)
            latencies.append(time.perf_counter() - started)

    wall = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(width)))
    wall = time.perf_counter() - wall
    ordered = sorted(latencies)
    row = {
        "op": name,
        "mode": mode,
        "in_flight": width,
        "requests": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[max(int(len(ordered) * 0.99) - 1, 0)] * 1000, 2),
        "per_s": round(len(ordered) / wall),
        "wait_calls_per_request": round((wait_calls(cluster) - waits) / len(ordered), 2),
        "short": int(short() - shorts),
    }
    print(json.dumps(row), flush=True)
    return row


async def one_mode(
    cluster: ValkeyCluster, tmp: Path, mode: str, seconds: float, width: int
) -> list[dict[str, Any]]:
    settings = settings_for(cluster.url, tmp, ack_replicas=1 if mode == "on" else 0)
    rows = []
    async with running_server(settings) as server:
        handles = handles_on_shards(2 * width + SIGNUPS, prefix="w")
        clients = [Client(server.url) for _ in handles]
        fresh = itertools.count()

        async def sign_up(_: int) -> None:
            n = next(fresh)
            await clients[n].sign_up(handles[n], PASSWORD)

        try:
            rows.append(
                await timed(
                    cluster,
                    "sign-up",
                    mode,
                    1,
                    60,
                    sign_up,
                    count=SIGNUPS,
                )
            )
            for client, lc in zip(clients[SIGNUPS:], handles[SIGNUPS:], strict=True):
                await client.sign_up(lc, PASSWORD)
            # Worker n: handles of two shards, following and unfollowing in turn.
            pairs = [(clients[SIGNUPS + 2 * n], handles[SIGNUPS + 2 * n + 1]) for n in range(width)]
            following = [False] * width

            async def toggle(n: int) -> None:
                client, other = pairs[n]
                await (client.unfollow if following[n] else client.follow)(other)
                following[n] = not following[n]

            for in_flight in (1, width):
                rows.append(await timed(cluster, "follow", mode, in_flight, seconds, toggle))
            rows.append(
                await timed(
                    cluster,
                    "profile",
                    mode,
                    1,
                    seconds,
                    lambda n: pairs[0][0].update_me(name=f"n{time.perf_counter_ns() % 997}"),
                )
            )
        finally:
            for client in clients:
                await client.aclose()
    return rows


def merged(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| op | mode | in flight | requests | p50 ms | p99 ms | req/s | WAIT calls/req | short |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["op"], row["in_flight"], row["mode"]), []).append(row)
    for (op, width, mode), group in sorted(groups.items()):

        def mean(name: str, group: list[dict[str, Any]] = group) -> float:
            return sum(float(r[name]) for r in group) / len(group)

        lines.append(
            f"| {op} | {mode} | {width} | {sum(r['requests'] for r in group)} "
            f"| {mean('p50_ms'):.2f} | {mean('p99_ms'):.2f} | {mean('per_s'):.0f} "
            f"| {mean('wait_calls_per_request'):.2f} | {sum(r['short'] for r in group)} |"
        )
    return lines


async def bench(cluster: ValkeyCluster, tmp: Path, seconds: float, width: int) -> list[str]:
    rows: list[dict[str, Any]] = []
    for mode in ("off", "on", "off", "on"):
        rows += await one_mode(cluster, tmp, mode, seconds, width)
    return merged(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per op, mode and width")
    parser.add_argument("--concurrency", type=int, default=16)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, valkey_cluster(Path(tmp), replicas=True) as cluster:
        lines = asyncio.run(bench(cluster, Path(tmp), options.seconds, options.concurrency))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
