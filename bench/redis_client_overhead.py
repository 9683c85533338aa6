"""What one Redis command costs through each client path, in µs.

    python bench/redis_client_overhead.py            # starts its own Valkey

Compares a raw socket PING, redis-py's client (as dmhub configured it before
the lane, and with defaults), and the lane (chat/store/lane.py), each running
COUNT EVALSHA calls of a trivial script one after another, then 50 at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as redis
import uvloop
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from chat.store.embedded import EmbeddedValkey
from chat.store.lane import Lane

SCRIPT = "return {1, ARGV[1]}"


async def timed(call: Callable[[], Awaitable[Any]], count: int) -> tuple[float, float]:
    started = time.perf_counter()
    for _ in range(count):
        await call()
    sequential = (time.perf_counter() - started) / count * 1e6

    async def worker() -> None:
        for _ in range(count // 50):
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(50)))
    concurrent = (time.perf_counter() - started) / count * 1e6
    return sequential, concurrent


def raw_ping(path: str, password: str, count: int) -> float:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(password), password.encode()))
        assert sock.recv(64) == b"+OK\r\n"
        started = time.perf_counter()
        for _ in range(count):
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            sock.recv(64)
        return (time.perf_counter() - started) / count * 1e6


async def run(url: str, socket_path: str, password: str, count: int) -> None:
    print(f"{count} calls each; µs per call (sequential / 50 concurrent)")
    print(f"{'raw socket PING':42s} {raw_ping(socket_path, password, count):8.1f}")
    clients = {
        "redis-py, timeouts + health checks": dict(
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 2),
        ),
        "redis-py, defaults": {},
    }
    for name, options in clients.items():
        pool = redis.BlockingConnectionPool.from_url(
            url, decode_responses=True, max_connections=64, **options
        )
        client = redis.Redis(connection_pool=pool)
        script = client.register_script(SCRIPT)
        await script(keys=["k"], args=["v"])
        seq, par = await timed(lambda s=script: s(keys=["k"], args=["v"]), count)
        print(f"{name:42s} {seq:8.1f} / {par:8.1f}")
        await client.aclose()
    lane = Lane(url)
    sha = await lane.execute("SCRIPT", "LOAD", SCRIPT)
    seq, par = await timed(lambda: lane.evalsha(sha, SCRIPT, ["k"], ["v"]), count)
    print(f"{'lane (chat/store/lane.py)':42s} {seq:8.1f} / {par:8.1f}")
    await lane.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dmhub-bench-") as data:
        with EmbeddedValkey(Path(data), lock=False) as valkey:
            assert valkey.socket_path is not None
            uvloop.run(run(valkey.url, str(valkey.socket_path), valkey.password, args.count))


if __name__ == "__main__":
    main()
