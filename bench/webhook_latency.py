"""Webhook delivery latency: from an event being stored to its receiver being called.

    python bench/webhook_latency.py                      # at rest
    python bench/webhook_latency.py --under-load 1000    # while `dmhub loadtest` sends 1000 msg/s

Starts its own dmhub (embedded Valkey, DMHUB_WEBHOOK_ALLOW_PRIVATE=1) and a
receiver on 127.0.0.1, both on this machine. Alice sends COUNT messages to Bob
one after another over HTTP, each after the previous one reached Bob's
webhook. "stored -> called" is the receiver's clock at arrival minus the
event's cursor, which is Valkey's clock (milliseconds) when send.lua stored
it: same machine, same clock, +-1 ms. "sent -> called" starts before the HTTP
send, so it adds the API request itself. Prints percentiles in milliseconds.
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.limits import BENCH_LIMITS_ENV
from bench.two_socket_latency import percentiles
from chat.client import Client
from tests.support import DmhubProcess

ENV = {
    "DMHUB_WEBHOOK_ALLOW_PRIVATE": "1",
    **BENCH_LIMITS_ENV,
    "REDIS_URL": "",
}


LOAD_DURATION_S = 45
LOAD_SETUP_S = 15
LOAD_FIELDS = ("connections", "sent", "delivered", "lost", "errors", "send_rate", "latency_ms")


class Receiver:
    """Answers 204 at once and notes when each delivery arrived."""

    def __init__(self) -> None:
        self.arrivals: asyncio.Queue[tuple[float, float, dict[str, object]]] = asyncio.Queue()
        self.writers: set[asyncio.StreamWriter] = set()

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        await asyncio.sleep(0.1)  # let each connection's task see its end

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while await reader.readline():
                headers: dict[str, str] = {}
                while (raw := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                arrived, arrived_perf = time.time(), time.perf_counter()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
                self.arrivals.put_nowait((arrived, arrived_perf, json.loads(body)))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def run(url: str, count: int, warmup: int) -> None:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    alice, bob = Client(url), Client(url)
    suffix = uuid.uuid4().hex[:6]
    await alice.sign_up(f"wh_a{suffix}", "benchmark-password")
    await bob.sign_up(f"wh_b{suffix}", "benchmark-password")
    assert alice.user and bob.user
    await bob.follow(alice.user["handle"])
    await bob.request(
        "POST", "/api/webhooks", {"url": f"http://127.0.0.1:{port}/", "events": ["message"]}
    )
    stored: list[float] = []
    sent: list[float] = []
    to = bob.user["handle"]
    for i in range(warmup + count):
        started = time.perf_counter()
        message = await alice.post_message(to, f"m{i}")
        arrived, arrived_perf, body = await asyncio.wait_for(receiver.arrivals.get(), 30)
        event = body["event"]
        assert isinstance(event, dict) and event["message"]["id"] == message["id"]
        cursor_ms = int(str(body["id"]).split("-")[0])
        if i >= warmup:
            stored.append(max(arrived - cursor_ms / 1000, 0.0))
            sent.append(arrived_perf - started)
    await alice.aclose(), await bob.aclose()
    server.close()
    await receiver.close()
    print(f"{count} webhook deliveries, one at a time, {url}")
    print(f"stored -> receiver called (ms): {percentiles(stored)}")
    print(f"sent   -> receiver called (ms): {percentiles(sent)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument(
        "--under-load", type=float, metavar="RATE", help="run `dmhub loadtest` at RATE msg/s too"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dmhub-bench-") as data:
        server = DmhubProcess({"DMHUB_DATA_DIR": data, **ENV}).start()
        load: subprocess.Popen[str] | None = None
        try:
            if args.under_load:
                load = subprocess.Popen(
                    [sys.executable, "-m", "chat", "loadtest", "--url", server.url,
                     "--connections", "100", "--pairs", "50", "--rate", str(args.under_load),
                     "--duration", str(LOAD_DURATION_S), "--json"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                )  # fmt: skip
                time.sleep(LOAD_SETUP_S)  # sign-ups and sockets first, then measure
            started = time.monotonic()
            asyncio.run(run(server.url, args.count, args.warmup))
            if load is not None:
                took = time.monotonic() - started
                print(f"measured for {took:.0f} s of the load test's {LOAD_DURATION_S} s")
                summary = json.loads(load.communicate(timeout=LOAD_DURATION_S + 180)[0])
                print("load test:", {k: summary.get(k) for k in LOAD_FIELDS})
        finally:
            if load is not None and load.poll() is None:
                load.terminate()
                load.wait(30)
            server.terminate()


if __name__ == "__main__":
    main()
