"""Send-to-ack and send-to-delivery latency of a simple two-socket exchange.

    python bench/two_socket_latency.py                 # starts its own dmhub (embedded Valkey)
    python bench/two_socket_latency.py --url http://127.0.0.1:8000 --count 2000

Alice sends COUNT messages one after another on her socket; Bob's socket
receives them. Both sockets live in this one process, so one clock times both
ends. Prints percentiles in milliseconds. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import connect

from bench.limits import BENCH_LIMITS_ENV
from chat.client import Client
from tests.support import DmhubProcess


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return (
        f"p50 {pick(0.50):6.2f}  p90 {pick(0.90):6.2f}  p99 {pick(0.99):6.2f}  "
        f"max {ordered[-1] * 1000:6.2f}  mean {statistics.fmean(ordered) * 1000:6.2f}"
    )


async def run(url: str, count: int, warmup: int) -> None:
    alice, bob = Client(url), Client(url)
    suffix = uuid.uuid4().hex[:6]
    await alice.sign_up(f"bench_a{suffix}", "benchmark-password")
    await bob.sign_up(f"bench_b{suffix}", "benchmark-password")
    assert alice.user and bob.user
    await bob.follow(alice.user["handle"])
    ws_url = "ws" + url.removeprefix("http") + "/ws"
    a = await connect(ws_url, additional_headers={"Authorization": f"Bearer {alice.token}"})
    b = await connect(ws_url, additional_headers={"Authorization": f"Bearer {bob.token}"})
    await a.recv(), await b.recv()
    acks: list[float] = []
    deliveries: list[float] = []
    to = bob.user["handle"]
    for i in range(warmup + count):
        started = time.perf_counter()
        await a.send(json.dumps({"type": "send", "to": to, "text": f"m{i}", "client_id": f"c{i}"}))
        ack = json.loads(await a.recv())
        acked = time.perf_counter()
        if ack["type"] != "ack":
            raise SystemExit(f"send {i} was not acked: {ack}")
        delivered_frame = json.loads(await b.recv())
        delivered = time.perf_counter()
        assert ack["type"] == "ack" and delivered_frame["message"]["id"] == ack["message"]["id"]
        if i >= warmup:
            acks.append(acked - started)
            deliveries.append(delivered - started)
    await a.close(), await b.close()
    await alice.aclose(), await bob.aclose()
    print(f"{count} messages, one at a time, 2 sockets, {url}")
    print(f"send -> ack       (ms): {percentiles(acks)}")
    print(f"send -> delivered (ms): {percentiles(deliveries)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running dmhub; default: start one here")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args.url, args.count, args.warmup))
        return
    with tempfile.TemporaryDirectory(prefix="dmhub-bench-") as data:
        server = DmhubProcess({**BENCH_LIMITS_ENV, "DMHUB_DATA_DIR": data, "REDIS_URL": ""}).start()
        try:
            asyncio.run(run(server.url, args.count, args.warmup))
        finally:
            server.terminate()


if __name__ == "__main__":
    main()
