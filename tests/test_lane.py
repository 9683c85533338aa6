"""The pipelined lane on a real Valkey: ordering, errors, scripts, failures."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
import weakref

import pytest
import redis.asyncio as redis
import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from chat.resp import pack
from chat.store.embedded import EmbeddedValkey
from chat.store.lane import Lane

# One node's lane, the single Valkey only: on a cluster dmhub runs a ClusterLane
# of these (one per master), whose routing, MOVED/ASK and failover are proven in
# tests/test_cluster_lane.py and tests/test_cluster_failover.py.
pytestmark = pytest.mark.single_layout("the single-node Lane; ClusterLane has its own tests")


async def test_concurrent_commands_get_their_own_replies(redis_url: str) -> None:
    lane = Lane(redis_url)
    try:
        await asyncio.gather(*(lane.execute("SET", f"k{i}", f"v{i}") for i in range(500)))
        values = await asyncio.gather(*(lane.execute("GET", f"k{i}") for i in range(500)))
        assert values == [f"v{i}" for i in range(500)]
    finally:
        await lane.aclose()


async def test_an_error_reply_fails_only_its_own_command(redis_url: str) -> None:
    lane = Lane(redis_url)
    try:
        await lane.execute("SET", "text", "not a number")
        results = await asyncio.gather(
            lane.execute("INCR", "text"),
            lane.execute("INCR", "counter"),
            return_exceptions=True,
        )
        assert isinstance(results[0], ResponseError)
        assert results[1] == 1
        assert await lane.execute("GET", "counter") == "1"
    finally:
        await lane.aclose()


async def test_evalsha_loads_a_script_redis_has_forgotten(redis_url: str) -> None:
    lane = Lane(redis_url)
    script = "return ARGV[1] .. KEYS[1]"
    sha = await lane.execute("SCRIPT", "LOAD", script)
    try:
        await lane.execute("SCRIPT", "FLUSH")
        assert await lane.evalsha(sha, script, ["k"], ["v"]) == "vk"
    finally:
        await lane.aclose()


async def test_a_killed_redis_fails_pending_commands_and_the_lane_reconnects(
    own_valkey: EmbeddedValkey,
) -> None:
    lane = Lane(own_valkey.url)
    try:
        assert await lane.execute("PING") == "PONG"
        own_valkey.kill()
        with pytest.raises(RedisConnectionError):
            await lane.execute("PING")
        own_valkey.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                assert await lane.execute("PING") == "PONG"
                break
            except RedisConnectionError:
                assert time.monotonic() < deadline, "the lane never reconnected"
                await asyncio.sleep(0.1)
    finally:
        await lane.aclose()


async def test_a_redis_that_stops_answering_is_given_up_on(own_valkey: EmbeddedValkey) -> None:
    lane = Lane(own_valkey.url, timeout_s=1.0)
    assert own_valkey.pid is not None
    try:
        assert await lane.execute("PING") == "PONG"
        os.kill(own_valkey.pid, signal.SIGSTOP)  # our own Valkey, frozen
        started = time.monotonic()
        with pytest.raises(RedisConnectionError):
            await lane.execute("PING")
        assert time.monotonic() - started < 5
    finally:
        os.kill(own_valkey.pid, signal.SIGCONT)
        await lane.aclose()


async def test_commands_sent_together_all_run_and_the_first_error_is_raised(
    redis_url: str,
) -> None:
    lane = Lane(redis_url)
    try:
        assert await lane.execute_many(("SET", "a", "1"), ("INCR", "a")) == ["OK", 2]
        await lane.execute("SET", "text", "not a number")
        with pytest.raises(ResponseError):
            await lane.execute_many(("INCR", "text"), ("INCR", "a"), ("INCR", "text"))
        assert await lane.execute("GET", "a") == "3"  # the one after the error ran too
        assert await lane.execute("PING") == "PONG"  # and the replies stayed in step
    finally:
        await lane.aclose()


async def test_a_closed_lane_is_freed_by_refcount_alone(redis_url: str) -> None:
    # What is freed by refcount never waits in a frozen generation
    # (chat/collector.py): a closed lane must leave no cycle behind.
    gc.disable()
    try:
        lane = Lane(redis_url)
        await lane.execute("PING")
        with pytest.raises(ResponseError):  # an error raised leaves no cycle either
            await lane.execute_many(("SET", "k", "v"), ("INCR", "k"))
        await lane.aclose()
        await asyncio.sleep(0.01)  # the watchdog's cancellation runs
        gone = weakref.ref(lane)
        del lane
        assert gone() is None
    finally:
        gc.enable()


async def test_the_url_picks_the_database_and_values_keep_their_bytes(redis_url: str) -> None:
    lane = Lane(redis_url + "?db=3")
    check = redis.Redis.from_url(redis_url, db=3, decode_responses=True)
    try:
        text = "héllo\r\n$3\r\n" + "x" * 70_000  # RESP-looking bytes and a large value
        await asyncio.gather(lane.execute("SET", "k", text), lane.execute("SET", "n", 42))
        assert await check.get("k") == text
        assert await check.get("n") == "42"
        assert await lane.execute("GET", "missing") is None
    finally:
        await check.aclose()
        await lane.aclose()


def test_pack_refuses_what_redis_cannot_store() -> None:
    assert pack(("SET", b"k", 7)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n7\r\n"
    with pytest.raises(TypeError):
        pack(("SET", "k", None))
    with pytest.raises(TypeError):
        pack(("SET", "k", True))


def test_the_lane_runs_on_uvloop_as_the_server_does(redis_url: str) -> None:
    async def exchange() -> list[str]:
        lane = Lane(redis_url)
        try:
            await lane.execute("SET", "k", "v")
            return list(await asyncio.gather(lane.execute("GET", "k"), lane.execute("PING")))
        finally:
            await lane.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(asyncio.wait_for(exchange(), 10)) == ["v", "PONG"]
