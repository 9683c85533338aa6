"""The webhook scripts in real Valkey: leases, and fenced state changes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chat.store import keys
from chat.store.webhooks import WebhookStore
from tests.support import async_redis_client

FIELDS = {"url": "https://a.example/", "events": "message", "created": "0", "secret": "s",
          "start": "0-0", "gen": "0", "active": "1"}  # fmt: skip


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[WebhookStore]:
    client = async_redis_client(redis_url, decode_responses=True)
    yield WebhookStore(client)
    await client.aclose()


async def test_the_limit_and_the_index(store: WebhookStore) -> None:
    for n in range(3):
        assert await store.create("alice", f"{n:016x}", FIELDS, most=3)
    assert not await store.create("alice", "f" * 16, FIELDS, most=3)
    assert await store.ids("alice") == [f"{n:016x}" for n in range(3)]
    assert [lc async for lc in store.accounts()] == ["alice"]
    for n in range(3):
        assert await store.delete("alice", f"{n:016x}")
    assert [lc async for lc in store.accounts()] == []
    assert not await store.delete("alice", "0" * 16)


async def test_one_lease_holder_and_fenced_updates(store: WebhookStore) -> None:
    wid = "a" * 16
    await store.create("bob", wid, FIELDS, most=5)
    assert await store.acquire("bob", wid, "p1", 10_000)
    assert not await store.acquire("bob", wid, "p2", 10_000)
    assert await store.renew([("bob", wid)], "p2", 10_000) == [False]
    assert await store.renew([("bob", wid)], "p1", 10_000) == [True]
    # Only the holder moves the cursor.
    assert await store.update("bob", wid, owner="p2", gen="0", set_fields={"cursor": "5-0"}) == -1
    assert await store.update("bob", wid, owner="p1", gen="0", set_fields={"cursor": "5-0"}) == 1
    # A replay starts a new generation: an update computed before it is refused.
    assert await store.update("bob", wid, new_generation=True, set_fields={"cursor": "1-0"}) == 1
    assert await store.update("bob", wid, owner="p1", gen="0", set_fields={"cursor": "6-0"}) == -2
    assert (await store.get("bob", wid) or {})["cursor"] == "1-0"
    # A ping is cleared only if it is still the pending one.
    await store.update("bob", wid, set_fields={"ping": "ping-2"})
    await store.update("bob", wid, owner="p1", clear_ping="ping-1")
    assert (await store.get("bob", wid) or {})["ping"] == "ping-2"
    await store.update("bob", wid, owner="p1", clear_ping="ping-2", delete_fields=("error",))
    assert "ping" not in (await store.get("bob", wid) or {})
    # Released by its holder only; a deleted webhook is never brought back.
    await store.release("bob", wid, "p2")
    assert await store.lease_holder("bob", wid) == "p1"
    await store.delete("bob", wid)
    assert await store.lease_holder("bob", wid) is None
    assert await store.update("bob", wid, set_fields={"cursor": "9-0"}) == 0
    assert await store.get("bob", wid) is None
    assert keys.webhook("bob", wid) == "wh:{bob}:" + wid
