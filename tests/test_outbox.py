"""The outbox and the reconciler (chat/store/outbox.py), on a real Valkey."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chat.store import keys
from chat.store.outbox import OUTBOX_LUA, Outbox
from chat.store.slots import SLOTS, all_slot_tags, key_slot, slot_tag
from tests.support import async_redis_client, hot_lane

# A first step in miniature: its own effect and the outbox entry, atomically.
FIRST_STEP_LUA = (
    OUTBOX_LUA
    + """
redis.call('SET', KEYS[2], 'first step done')
return outbox_add(KEYS[1], ARGV[1], ARGV[2])
"""
)


def test_key_slot_matches_the_cluster_specification() -> None:
    # Examples from the Redis Cluster specification and its hash-tag rules.
    assert key_slot("foo") == 12182
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers") == 3443
    assert key_slot("foo{}{bar}") == key_slot("foo{}{bar}")  # an empty tag hashes the whole key
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")
    assert key_slot("foo{bar}{zap}") == key_slot("bar")


def test_every_slot_has_a_tag_that_lands_in_it() -> None:
    tags = all_slot_tags()
    assert len(tags) == SLOTS == len(set(tags))
    assert all(key_slot(tag) == slot for slot, tag in enumerate(tags))
    assert slot_tag(key_slot("alice")) == tags[key_slot("alice")]


def test_a_users_outbox_is_in_that_users_slot() -> None:
    for lc in ("alice", "bob", "acme_support", "x"):
        assert key_slot(keys.outbox(lc)) == key_slot(keys.user(lc)) == key_slot(keys.events(lc))


@pytest.fixture
async def client(redis_url: str) -> Any:
    connection = async_redis_client(redis_url, decode_responses=True)
    yield connection
    await connection.aclose()


async def first_step(client: Any, lc: str, kind: str, payload: dict[str, Any]) -> str:
    script = client.register_script(FIRST_STEP_LUA)
    entry: str = await script(
        keys=[keys.outbox(lc), f"effect:{{{lc}}}"], args=[kind, json.dumps(payload)]
    )
    return entry


async def test_an_entry_is_in_the_outbox_with_the_effect_and_done_removes_it(client: Any) -> None:
    outbox = Outbox(client)
    entry = await first_step(client, "alice", "demo", {"n": 1})
    assert await client.get("effect:{alice}") == "first step done"
    assert [row[0] for row in await client.xrange(keys.outbox("alice"))] == [entry]
    await outbox.done("alice", entry)
    assert await client.xlen(keys.outbox("alice")) == 0


@pytest.mark.parametrize("via_lane", [False, True], ids=["client", "lane"])
async def test_an_entry_a_reconciler_took_while_it_was_running_is_never_run_once_done(
    client: Any, redis_url: str, via_lane: bool
) -> None:
    # done is one XDEL, no XACK: the claim a sweep took on a running operation's
    # entry stays until a sweep finds the outbox non-empty again, which drops it
    # without running anything.
    lane = hot_lane(redis_url) if via_lane else None
    outbox = Outbox(client, lane)
    ran: list[dict[str, Any]] = []

    async def handler(payload: dict[str, Any]) -> None:
        ran.append(payload)

    outbox.register("demo", handler)
    try:
        entry = await first_step(client, "gina", "demo", {"n": "done"})
        # A sweep now takes the entry into the group (it starts to idle) but runs nothing.
        assert await outbox.reconcile(min_idle_ms=60_000) == 0
        pending = await client.xpending(keys.outbox("gina"), "reconcile")
        assert pending["pending"] == 1 and pending["consumers"][0]["name"] == "reconciler"
        await outbox.done("gina", entry)
        assert await client.xlen(keys.outbox("gina")) == 0
        assert await outbox.reconcile(min_idle_ms=0) == 0
        assert ran == []
        # The next entry of that slot, once abandoned, is completed; the old claim
        # goes on the way, unrun.
        await first_step(client, "gina", "demo", {"n": "abandoned"})
        assert await outbox.reconcile(min_idle_ms=0) == 1
        assert ran == [{"n": "abandoned"}]
        assert (await client.xpending(keys.outbox("gina"), "reconcile"))["pending"] == 0
        assert await client.xlen(keys.outbox("gina")) == 0
    finally:
        if lane is not None:
            await lane.aclose()


async def test_a_claim_left_on_a_deleted_entry_is_dropped_not_run(client: Any) -> None:
    # An entry deleted while claimed (by done, which does not XACK, or by
    # another reconciler) leaves a claim on an entry that no longer exists.
    outbox = Outbox(client)
    outbox.register("demo", lambda payload: pytest.fail("deleted: nothing to run"))  # type: ignore[arg-type,return-value]
    entry = await first_step(client, "hank", "demo", {})
    await first_step(client, "hank", "demo_unknown", {})  # keeps the outbox non-empty
    await outbox.reconcile(min_idle_ms=60_000)
    await client.xdel(keys.outbox("hank"), entry)
    assert await outbox.reconcile(min_idle_ms=0) == 0
    pending = await client.xpending(keys.outbox("hank"), "reconcile")
    assert pending["pending"] == 1  # only the unknown kind's, left for a newer version


async def every_nonempty(outbox: Outbox) -> list[str]:
    """The non-empty outboxes of every node (`nonempty` asks one node at a time)."""
    return [name for slots in outbox.slot_groups() for name in await outbox.nonempty(slots)]


@pytest.mark.parametrize("via_lane", [False, True], ids=["client", "lane"])
async def test_a_sweep_finds_exactly_the_outboxes_that_hold_entries(
    client: Any, redis_url: str, via_lane: bool
) -> None:
    # On one Valkey the sweep's script calls go over the lane when there is one.
    lane = hot_lane(redis_url) if via_lane else None
    outbox = Outbox(client, lane)
    try:
        users = ["alice", "bob", "carol"]
        for lc in users:
            await first_step(client, lc, "demo", {"lc": lc})
        expected = sorted({keys.outbox(lc) for lc in users})
        assert sorted(await every_nonempty(outbox)) == expected
        assert keys.every_outbox()[key_slot("bob")] == keys.outbox("bob")
    finally:
        if lane is not None:
            await lane.aclose()


async def test_the_reconciler_completes_abandoned_entries_once(client: Any) -> None:
    outbox = Outbox(client)
    done: list[dict[str, Any]] = []

    async def handler(payload: dict[str, Any]) -> None:
        done.append(payload)

    outbox.register("demo", handler)
    await first_step(client, "alice", "demo", {"n": 1})
    await first_step(client, "bob", "demo", {"n": 2})
    # Young entries belong to the process still working on them.
    assert await outbox.reconcile(min_idle_ms=60_000) == 0
    assert done == []
    assert sorted(await every_nonempty(outbox)) == sorted(
        {keys.outbox("alice"), keys.outbox("bob")}
    )
    assert await outbox.reconcile(min_idle_ms=0) == 2
    assert sorted(p["n"] for p in done) == [1, 2]
    assert await outbox.reconcile(min_idle_ms=0) == 0
    assert len(done) == 2
    assert await every_nonempty(outbox) == []


async def test_a_failing_handler_leaves_the_entry_for_the_next_sweep(client: Any) -> None:
    outbox = Outbox(client)
    calls = 0

    async def flaky(payload: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the other slot is down")

    outbox.register("demo", flaky)
    await first_step(client, "carol", "demo", {})
    assert await outbox.reconcile(min_idle_ms=0) == 0
    assert await client.xlen(keys.outbox("carol")) == 1
    assert await outbox.reconcile(min_idle_ms=0) == 1
    assert await client.xlen(keys.outbox("carol")) == 0


async def test_unknown_kinds_stay_and_unreadable_payloads_are_dropped(client: Any) -> None:
    outbox = Outbox(client)
    await first_step(client, "dave", "from_a_newer_version", {})
    assert await outbox.reconcile(min_idle_ms=0) == 0
    assert await client.xlen(keys.outbox("dave")) == 1

    outbox.register("demo", lambda payload: pytest.fail("must not run"))  # type: ignore[arg-type,return-value]
    script = client.register_script(FIRST_STEP_LUA)
    await script(keys=[keys.outbox("erin"), "effect:{erin}"], args=["demo", "not json"])
    assert await outbox.reconcile(min_idle_ms=0) == 0
    assert await client.xlen(keys.outbox("erin")) == 0


async def test_the_group_keeps_one_consumer_however_many_entries(client: Any) -> None:
    outbox = Outbox(client)
    outbox.register("demo", lambda payload: _nothing())
    for n in range(5):
        await first_step(client, "frank", "demo", {"n": n})
    await outbox.reconcile(min_idle_ms=60_000)
    await outbox.reconcile(min_idle_ms=0)
    consumers = await client.xinfo_consumers(keys.outbox("frank"), "reconcile")
    assert [c["name"] for c in consumers] == ["reconciler"]
    assert await client.xlen(keys.outbox("frank")) == 0


async def _nothing() -> None:
    return None
