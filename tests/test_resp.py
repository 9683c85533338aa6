"""The hot-path connections against a Valkey that wants a password, over TCP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from chat.pubsub import Broker
from chat.resp import Endpoint
from chat.store.lane import Lane
from tests.support import plain_valkey

PASSWORD = "s3cret-pass"


@pytest.fixture
def guarded_valkey(tmp_path: Path) -> Iterator[int]:
    """A Valkey of the test's own on TCP, with requirepass; yields its port."""
    with plain_valkey(tmp_path, "--requirepass", PASSWORD, password=PASSWORD) as port:
        yield port


def test_endpoints_read_urls_as_redis_py_does() -> None:
    tcp = Endpoint.from_url("redis://ann:pw@10.0.0.5:6380/2")
    assert (tcp.host, tcp.port, tcp.db, tcp.tls, tcp.path) == ("10.0.0.5", 6380, 2, False, None)
    assert tcp.hello() == [("AUTH", "ann", "pw"), ("SELECT", 2)]
    assert tcp.hello(select=False) == [("AUTH", "ann", "pw")]
    assert Endpoint.from_url("rediss://:pw@h:1/0").hello() == [("AUTH", "pw")]
    assert Endpoint.from_url("rediss://h:1/0").tls
    unix = Endpoint.from_url("unix:///run/valkey.sock?db=3")
    assert (unix.path, unix.db, unix.hello()) == ("/run/valkey.sock", 3, [("SELECT", 3)])


async def test_lane_and_broker_authenticate_and_the_lane_picks_its_database(
    guarded_valkey: int,
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{guarded_valkey}/2"
    heard: list[tuple[str, str]] = []

    async def resubscribed() -> None:
        return None

    lane = Lane(url)
    broker = Broker(url, on_message=lambda c, p: heard.append((c, p)), on_resubscribed=resubscribed)
    await broker.start()
    try:
        await asyncio.wait_for(broker.subscribe("ch:{ann}"), 5)
        await lane.execute("SET", "k", "v")
        assert await lane.execute("SPUBLISH", "ch:{ann}", "hello") == 1
        check = redis.Redis(port=guarded_valkey, password=PASSWORD, db=2, decode_responses=True)
        assert check.get("k") == "v"
        check.close()
        for _ in range(100):
            if heard:
                break
            await asyncio.sleep(0.02)
        assert heard == [("ch:{ann}", "hello")]
    finally:
        await broker.stop()
        await lane.aclose()


async def test_a_wrong_password_is_a_connection_error(guarded_valkey: int) -> None:
    lane = Lane(f"redis://:wrong@127.0.0.1:{guarded_valkey}/0")
    try:
        with pytest.raises(RedisConnectionError):
            await lane.execute("PING")
    finally:
        await lane.aclose()
