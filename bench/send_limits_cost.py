"""What the send-path limits cost: send.lua with the limits off, and on.

    python bench/send_limits_cost.py            # starts its own Valkey

Stores COUNT messages through Store.send (the one script call a send is),
spread over PAIRS sender/recipient pairs where the recipient follows the
sender, one after another and then 50 at a time, first with every send limit
at 0 (off) and then with them on, set far above this workload as bench/run.py
sets them, so that every send is checked and charged but none is refused.
Rounds alternate off/on to spread out noise; the best round of each is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as redis
import uvloop

from chat.config import SendLimits
from chat.store.embedded import EmbeddedValkey
from chat.store.lane import Lane
from chat.store.sends import SendResult
from chat.store.store import Store

OFF = SendLimits(messages_per_min=0, new_conversations_per_day=0, requests_per_hour=0)
ON = SendLimits(
    messages_per_min=10_000_000, new_conversations_per_day=1_000_000, requests_per_hour=1_000_000
)


async def one_round(
    url: str, limits: SendLimits, tag: str, count: int, pairs: int
) -> tuple[float, float]:
    client = redis.Redis.from_url(url, decode_responses=True)
    lane = Lane(url)
    store = Store(client, event_retention=1000, lane=lane, limits=limits)
    senders = [f"s{tag}{i}" for i in range(pairs)]
    recipients = [f"r{tag}{i}" for i in range(pairs)]
    for handle in senders + recipients:
        await store.create_user(handle, "-", handle, "person")
    for a, b in zip(senders, recipients, strict=True):
        await store.follow(b, a)

    async def send(i: int) -> None:
        k = i % pairs
        result = await store.send(
            sender=senders[k], recipient=recipients[k], text="hello", client_id=None, origin="-"
        )
        assert isinstance(result, SendResult), result

    await client.config_resetstat()
    started = time.perf_counter()
    for i in range(count):
        await send(i)
    sequential = (time.perf_counter() - started) / count * 1e6
    started = time.perf_counter()
    for first in range(0, count, 50):
        await asyncio.gather(*(send(i) for i in range(first, min(first + 50, count))))
    concurrent = (time.perf_counter() - started) / count * 1e6
    # Valkey's own time per script call: the script's cost without the client's
    # or the machine's noise.
    stats = await client.info("commandstats")
    in_valkey = float(stats["cmdstat_evalsha"]["usec_per_call"])
    await lane.aclose()
    await client.aclose()
    return sequential, concurrent, in_valkey


async def main(count: int, pairs: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(Path(tmp), "everysec") as valkey:
        results: dict[str, list[tuple[float, float, float]]] = {"off": [], "on": []}
        for r in range(rounds):
            for name, limits in (("off", OFF), ("on", ON)):
                results[name].append(
                    await one_round(valkey.url, limits, f"{name}{r}x", count, pairs)
                )
        print(
            f"{count:,} sends per round over {pairs} pairs, {rounds} rounds, appendfsync everysec"
        )
        print("µs per send (best / median of the rounds)")
        print(f"{'limits':8} {'one at a time':>20} {'50 at a time':>20} {'inside Valkey':>20}")
        for name, rows in results.items():
            cells = []
            for column in range(3):
                values = [row[column] for row in rows]
                cells.append(f"{min(values):8.1f} / {statistics.median(values):8.1f}")
            print(f"{name:8} " + " ".join(f"{c:>20}" for c in cells))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    uvloop.run(main(args.count, args.pairs, args.rounds))
