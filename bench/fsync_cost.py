"""What `appendfsync always` costs against `everysec`, on this machine's disk.

    .venv/bin/python bench/fsync_cost.py

For each policy, an embedded Valkey (as `dmhub serve` starts it) in a temporary
folder: 2,000 sequential INCR (each one pays a whole fsync under `always`), then
4,000 from 50 concurrent clients (which share fsyncs: group commit).
docs/performance.md ("The cost of appendfsync always") records the results.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
import redis.asyncio as aioredis

from chat.config import APPENDFSYNC_CHOICES
from chat.store.embedded import EmbeddedValkey

SEQUENTIAL = 2000
CONCURRENT = 4000
WIDTH = 50


async def concurrent_rate(url: str) -> float:
    client = aioredis.Redis.from_url(url, max_connections=WIDTH)

    async def worker() -> None:
        for _ in range(CONCURRENT // WIDTH):
            await client.incr("concurrent")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(WIDTH)))
    elapsed = time.perf_counter() - started
    await client.aclose()
    return CONCURRENT / elapsed


def main() -> None:
    for policy in APPENDFSYNC_CHOICES:
        with (
            tempfile.TemporaryDirectory() as folder,
            EmbeddedValkey(Path(folder) / "v", policy, lock=False) as valkey,
        ):
            client = redis.Redis.from_url(valkey.url)
            latencies = []
            for _ in range(SEQUENTIAL):
                started = time.perf_counter()
                client.incr("sequential")
                latencies.append((time.perf_counter() - started) * 1e3)
            client.close()
            latencies.sort()
            p50 = latencies[SEQUENTIAL // 2]
            p99 = latencies[SEQUENTIAL * 99 // 100]
            rate = asyncio.run(concurrent_rate(valkey.url))
            print(
                f"{policy:9s} sequential INCR p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
                f"{WIDTH} concurrent clients {rate:,.0f} INCR/s"
            )


if __name__ == "__main__":
    main()
