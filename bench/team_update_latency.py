"""Team update latency: from one agent's change to the other agents' sockets.

    python bench/team_update_latency.py                 # one dmhub process
    python bench/team_update_latency.py --nodes 2       # agents on two processes

Starts its own dmhub (embedded Valkey) on 127.0.0.1, or two processes sharing
one Valkey. A business with three agents and a customer: agent 1 changes the
conversation's assignee or status over HTTP (`PATCH ...?as=B`) or adds a note,
COUNT times one after another; agents 2 and 3 hold `/ws?as=B` sockets (with
--nodes 2, on the other process). "PATCH -> frame" runs from just before the
request to the `conversation` (or `note`) frame's arrival on each socket, so it
includes the HTTP request itself. Prints percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.limits import BENCH_LIMITS_ENV
from bench.two_socket_latency import percentiles
from chat.client import Client, Socket
from chat.store.embedded import EmbeddedValkey
from tests.support import DmhubProcess

ENV = dict(BENCH_LIMITS_ENV)
PASSWORD = "benchmark-password"


async def until(sock: Socket, kind: str) -> float:
    while True:
        frame = await sock.next_event(10)
        if frame["type"] == kind:
            return time.perf_counter()


async def run(urls: list[str], count: int, warmup: int) -> None:
    suffix = uuid.uuid4().hex[:6]
    shop, customer = Client(urls[0]), Client(urls[0])
    await shop.sign_up(f"shop{suffix}", PASSWORD, kind="business")
    await shop.update_me(open_dms=True)
    await customer.sign_up(f"cust{suffix}", PASSWORD)
    agents = []
    for i in range(3):
        agent = Client(urls[0])
        await agent.sign_up(f"ag{i}{suffix}", PASSWORD)
        await shop.request("PUT", f"/api/team/{agent.user['handle']}")  # type: ignore[index]
        agents.append(agent)
    b, c = f"shop{suffix}", f"cust{suffix}"
    await customer.post_message(b, "hello")
    watchers = []
    for agent in agents[1:]:
        assert agent.token
        sock = Socket(urls[-1], agent.token, act_as=b)
        await sock.connect()
        watchers.append(sock)
    actor = agents[0]
    results: dict[str, list[float]] = {"assignee/status": [], "note": []}
    try:
        for i in range(warmup + count):
            kind = "note" if i % 2 else "conversation"
            started = time.perf_counter()
            waits = [asyncio.ensure_future(until(sock, kind)) for sock in watchers]
            if kind == "note":
                await actor.request(
                    "POST", f"/api/conversations/{c}/notes", {"text": f"n{i}"}, **{"as": b}
                )
            else:
                body = {"status": "pending" if i % 4 else "open", "assignee": None}
                await actor.request("PATCH", f"/api/conversations/{c}", body, **{"as": b})
            arrivals = await asyncio.gather(*waits)
            if i >= warmup:
                label = "note" if kind == "note" else "assignee/status"
                results[label].extend(t - started for t in arrivals)
    finally:
        for sock in watchers:
            await sock.close()
        for client in (shop, customer, *agents):
            await client.aclose()
    for label, samples in results.items():
        print(f"{label:16} -> other agents ({len(samples)} frames): {percentiles(samples)} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        valkey = EmbeddedValkey(Path(tmp) / "valkey", lock=False)
        valkey.start()
        env = {**ENV, "REDIS_URL": valkey.url, "DMHUB_DATA_DIR": tmp}
        nodes = [DmhubProcess(env).start() for _ in range(args.nodes)]
        try:
            asyncio.run(run([n.url for n in nodes], args.count, args.warmup))
        finally:
            for node in nodes:
                node.terminate()
            valkey.stop()


if __name__ == "__main__":
    main()
