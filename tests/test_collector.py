"""The garbage-collection rounds: young cycles freed, survivors frozen, frozen cycles reclaimed."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import Iterator

import httpx
import pytest
import uvloop
from websockets.asyncio.client import connect

from chat.collector import YOUNG_THRESHOLD, Collector
from chat.config import Settings
from tests.support import new_user, running_server


class Cycle:
    """An object only the cyclic collector can free."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def nothing_frozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def tracked(obj: object) -> bool:
    """In a generation the collector walks (frozen objects are in none)."""
    return any(o is obj for o in gc.get_objects())


def test_a_round_frees_young_cycles_and_freezes_what_survives() -> None:
    collector = Collector(full_every=100)
    kept = Cycle()
    dropped = weakref.ref(Cycle())
    assert dropped() is not None  # its cycle keeps it until a collection
    assert tracked(kept)
    collector.round()
    assert dropped() is None
    assert not tracked(kept)
    assert gc.get_freeze_count() > 0


def test_a_cycle_frozen_alive_is_reclaimed_by_the_full_round() -> None:
    collector = Collector(full_every=2)
    survivor = Cycle()
    ref = weakref.ref(survivor)
    collector.round()  # a young round: the survivor is frozen
    del survivor
    gc.collect()  # ordinary passes do not see frozen objects
    assert ref() is not None
    collector.round()  # every second round is a full one here
    assert ref() is None


def test_running_raises_the_young_threshold_and_stopping_restores_it() -> None:
    before = gc.get_threshold()

    async def run() -> tuple[int, int, int]:
        collector = Collector()
        collector.start()
        try:
            return gc.get_threshold()
        finally:
            await collector.stop()

    try:
        during = asyncio.run(run())
        assert during == (YOUNG_THRESHOLD, before[1], before[2])
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)


async def plain_get(base_url: str, path: str, headers: dict[str, str]) -> int:
    """GET over a connection of its own, closed by the server after the answer:
    the status code. Not httpx: a pooled client connection that the server's
    keep-alive timeout ends mid-test leaves its own cycles (httpcore, anyio),
    counted here as if the server had left them."""
    url = httpx.URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    lines = [f"GET {path} HTTP/1.1", f"Host: {url.host}:{url.port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return int(answer.split(b" ", 2)[1])


def test_sockets_frozen_while_open_leave_nothing_behind_when_closed(settings: Settings) -> None:
    # Freezing is safe only if what dies later is freed by refcount: a socket
    # that left a cycle would stay frozen until the hourly full round. On
    # uvloop, as dmhub serve runs (asyncio's own selector transports end in a
    # cycle with their socket; uvloop's do not).
    rounds = 30

    async def open_and_close_sockets() -> int:
        async with running_server(settings) as server:
            alice, bob = await new_user(server.url), await new_user(server.url)
            assert alice.user and bob.user
            alice_handle, bob_handle = str(alice.user["handle"]), str(bob.user["handle"])
            await bob.follow(alice_handle)
            auth = {"Authorization": f"Bearer {alice.token}"}
            collector = Collector(full_every=10**9)
            for n in range(rounds):
                ws = await connect(server.ws_url, additional_headers=auth)
                await ws.recv()
                send = {"type": "send", "to": bob_handle, "text": "hi", "client_id": f"c{n}"}
                await ws.send(json.dumps(send))
                await ws.recv()
                assert await plain_get(server.url, "/api/me", auth) == 200
                assert await plain_get(server.url, "/api/no-such-thing", auth) == 404
                collector.round()  # frozen while the socket is open
                await ws.close()
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            collector.round()
            gc.unfreeze()
            return gc.collect()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        reclaimed = runner.run(asyncio.wait_for(open_and_close_sockets(), 60))
    assert reclaimed < rounds, f"{reclaimed} objects were left in cycles by {rounds} sockets"
