"""What a sign-in flood does to messaging: send-to-ack latency with and without it.

    python bench/signin_flood.py                      # argon2 slots as configured
    python bench/signin_flood.py --argon2 12          # as if hashing were unbounded

Starts its own dmhub (embedded Valkey; the logins limit off so the flood keeps
hashing),
then times one user's sends (every 20 ms) for SECONDS while nothing else
happens, and again while FLOOD clients sign in with wrong passwords as fast as
they can. Prints percentiles in milliseconds. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from websockets.asyncio.client import connect

from bench.limits import BENCH_LIMITS_ENV
from bench.two_socket_latency import percentiles
from chat.client import Client
from tests.support import DmhubProcess

SEND_EVERY_S = 0.02


async def timed_sends(url: str, seconds: float) -> list[float]:
    alice, bob = Client(url), Client(url)
    suffix = uuid.uuid4().hex[:6]
    await alice.sign_up(f"flood_a{suffix}", "benchmark-password")
    await bob.sign_up(f"flood_b{suffix}", "benchmark-password")
    assert alice.user and bob.user
    await bob.follow(alice.user["handle"])
    ws_url = "ws" + url.removeprefix("http") + "/ws"
    sock = await connect(ws_url, additional_headers={"Authorization": f"Bearer {alice.token}"})
    await sock.recv()
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        frame = {"type": "send", "to": bob.user["handle"], "text": f"m{i}", "client_id": f"c{i}"}
        await sock.send(json.dumps(frame))
        ack = json.loads(await sock.recv())
        assert ack["type"] == "ack", ack
        samples.append(time.perf_counter() - started)
        i += 1
        await asyncio.sleep(SEND_EVERY_S)
    await sock.close()
    await alice.aclose(), await bob.aclose()
    return samples


async def flood(url: str, stop: asyncio.Event, counter: list[int]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while not stop.is_set():
            body = {"handle": f"nobody{uuid.uuid4().hex[:8]}", "password": "wrong-password"}
            await http.post("/api/sessions", json=body)
            counter[0] += 1


async def run(url: str, seconds: float, clients: int) -> None:
    quiet = await timed_sends(url, seconds)
    stop, counter = asyncio.Event(), [0]
    flooders = [asyncio.create_task(flood(url, stop, counter)) for _ in range(clients)]
    try:
        loud = await timed_sends(url, seconds)
    finally:
        stop.set()
        await asyncio.gather(*flooders)
    print(f"send -> ack, one send every {SEND_EVERY_S * 1000:.0f} ms, {seconds:.0f} s each (ms)")
    print(f"  quiet:                 {percentiles(quiet)}")
    print(f"  {clients} clients signing in: {percentiles(loud)}")
    print(f"  sign-in attempts answered during the flood: {counter[0] / seconds:.0f}/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--flood", type=int, default=12)
    parser.add_argument("--argon2", type=int, help="DMHUB_ARGON2_CONCURRENCY for the server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dmhub-bench-") as data:
        env = {
            "DMHUB_DATA_DIR": data,
            "REDIS_URL": "",
            "DMHUB_LIMIT_LOGIN_FAILURES": "0",
            **BENCH_LIMITS_ENV,
        }
        if args.argon2:
            env["DMHUB_ARGON2_CONCURRENCY"] = str(args.argon2)
        server = DmhubProcess(env).start()
        try:
            asyncio.run(run(server.url, args.seconds, args.flood))
        finally:
            server.terminate()


if __name__ == "__main__":
    main()
