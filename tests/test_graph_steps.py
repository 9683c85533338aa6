"""Follows, blocks and read receipts in per-slot steps: a crash between the steps
is finished by the reconciler, once, and racing changes of one edge converge.

A crash is the first step run alone (what a process that died right after it
leaves); then the reconciler runs what the outbox says remains, twice, to show
that twice is once. Some tests kill a real process at each crash point.

Each test runs on a single Valkey and on a three-master cluster, where Ann's
and Bob's slots are on different masters (2326 and 8955).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import AsyncIterator

import pytest

from chat.store import keys
from chat.store.accounts import delete_account
from chat.store.connection import RedisTarget
from chat.store.graph import FOLLOW, FollowResult, graph
from chat.store.receipts import receipts
from chat.store.store import SendResult, Store
from chat.store.teams import team_store
from tests.support import pair_flags_disagreements

READ_BODY = '{"type":"read","reader":"Bob","peer":"Ann","up_to":"%s"'


@pytest.fixture
def target(redis_url: str, layout: str) -> RedisTarget:
    """The layout under test (conftest runs each test on both)."""
    return RedisTarget(redis_url, layout == "cluster")


# A process of its own, to die at a crash point: the Store on the same target.
CHILD = """
import asyncio
from chat.store.connection import RedisTarget
from chat.store.store import Store
async def main():
    client = RedisTarget({url!r}, {cluster!r}).client()
    store = Store(client, event_retention=100)
    {call}
asyncio.run(main())
"""


async def die_at(target: RedisTarget, crash: str, call: str) -> None:
    program = CHILD.format(url=target.url, cluster=target.cluster, call=call)
    env = dict(os.environ, DMHUB_CRASH_AT=crash)
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", program, env=env)
    assert await asyncio.wait_for(child.wait(), 30) == 70


# Everyone the tests here create.
USERS = ["ann", "bob", "cy", "di", "ed"]


@pytest.fixture
async def store(target: RedisTarget) -> AsyncIterator[Store]:
    client = target.client()
    try:
        made = Store(client, event_retention=100)
        for handle in ("Ann", "Bob"):
            await made.create_user(handle, "-", handle, "person")
        yield made
        # Whatever a test left, finished or cut between steps, the pair's
        # letters in each user hash are the twins of its collections.
        assert await pair_flags_disagreements(client, USERS) == []
    finally:
        await client.aclose()


async def reconcile(store: Store) -> int:
    """One sweep of the reconciler, taking every entry as abandoned."""
    return await store.outbox.reconcile(min_idle_ms=0)


async def pending(store: Store) -> int:
    total = 0
    for lc in ("ann", "bob"):
        if await store.redis.exists(keys.outbox(lc)):
            total += int(await store.redis.xlen(keys.outbox(lc)))
    return total


async def edges(store: Store) -> dict[str, list[tuple[str, float]]]:
    """Every edge list of both users, with scores."""
    found = {}
    for name in ("following", "followers", "blocking", "blocked_by"):
        for lc in ("ann", "bob"):
            key = getattr(keys, name)(lc)
            found[key] = await store.redis.zrange(key, 0, -1, withscores=True)
    return found


async def test_a_follow_cut_after_its_first_step_is_finished_once(store: Store) -> None:
    first = await graph(store).follow_first("ann", "bob")
    assert first[0] == FollowResult.ADDED
    score = await store.redis.zscore(keys.following("ann"), "bob")
    assert await store.redis.zscore(keys.followers("bob"), "ann") is None
    assert await reconcile(store) == 1
    assert await store.redis.zscore(keys.followers("bob"), "ann") == score
    after_once = await edges(store)
    assert await reconcile(store) == 0 and await pending(store) == 0
    # The step itself, run again (a reconciler that died before marking it done).
    await graph(store).sync_follow("ann", "bob")
    assert await edges(store) == after_once
    # And the request path agrees: following again changes nothing.
    assert await store.follow("ann", "bob") == FollowResult.ALREADY


async def test_a_block_cut_after_its_first_step_is_finished_once(store: Store) -> None:
    await store.follow("ann", "bob")
    await store.follow("bob", "ann")
    first = await graph(store).block_first("ann", "bob")
    assert first[0] == 1
    # Ann's side is done; Bob still follows Ann until step 2.
    assert await store.redis.zscore(keys.following("ann"), "bob") is None
    assert await store.redis.zscore(keys.followers("ann"), "bob") is None
    assert await store.redis.zscore(keys.following("bob"), "ann") is not None
    assert await reconcile(store) == 1
    blocked = await edges(store)
    (mirror,), (authority,) = blocked[keys.blocked_by("bob")], blocked[keys.blocking("ann")]
    assert mirror == ("ann", authority[1]) and authority[0] == "bob"
    assert blocked[keys.following("bob")] == blocked[keys.followers("bob")] == []
    assert await reconcile(store) == 0
    await graph(store).sync_block("ann", "bob")
    assert await edges(store) == blocked
    assert await store.block("ann", "bob") is False


async def test_unfollow_and_unblock_cut_after_their_first_step(store: Store) -> None:
    await store.follow("bob", "ann")
    assert await graph(store).unlink_first(FOLLOW, "bob", "ann") is not None
    assert await store.redis.zscore(keys.followers("ann"), "bob") is not None  # not yet
    await store.block("ann", "bob")
    assert await graph(store).unlink_first("block", "ann", "bob") is not None
    assert await store.redis.zscore(keys.blocked_by("bob"), "ann") is not None  # not yet
    assert await reconcile(store) == 2
    assert all(rows == [] for rows in (await edges(store)).values())
    assert await reconcile(store) == 0 and await pending(store) == 0
    # Nothing to remove: no step 1 entry, nothing to reconcile.
    assert await graph(store).unlink_first(FOLLOW, "bob", "ann") is None


async def test_a_follow_meets_a_block_whose_mirror_is_not_written_yet(store: Store) -> None:
    await graph(store).block_first("bob", "ann")  # bob's step 2 (blkby:{ann}) not run
    # Step 1 in ann's slot cannot see the block; step 2 in bob's slot refuses
    # and takes ann's edge back: the same answer as a block already mirrored.
    assert await store.follow("ann", "bob") == FollowResult.BLOCKED_YOU
    assert await store.redis.zscore(keys.following("ann"), "bob") is None
    assert await store.redis.zscore(keys.followers("bob"), "ann") is None
    await reconcile(store)
    assert await store.follow("ann", "bob") == FollowResult.BLOCKED_YOU


async def test_racing_follow_and_unfollow_leave_the_mirror_equal_to_the_edge(
    store: Store,
) -> None:
    edges_ = graph(store)
    # Follow's step 1, unfollow's steps 1 and 2, then follow's (late) step 2.
    await edges_.follow_first("ann", "bob")
    await edges_.unlink_first(FOLLOW, "ann", "bob")
    await edges_.sync_follow("ann", "bob")
    await edges_.sync_follow("ann", "bob")
    assert await store.redis.zscore(keys.followers("bob"), "ann") is None
    # Unfollow's step 1 between follow's steps: the mirror stays absent too.
    await edges_.follow_first("ann", "bob")
    await edges_.sync_follow("ann", "bob")
    await edges_.unlink_first(FOLLOW, "ann", "bob")
    await edges_.follow_first("ann", "bob")
    await edges_.sync_follow("ann", "bob")
    score = await store.redis.zscore(keys.following("ann"), "bob")
    assert await store.redis.zscore(keys.followers("bob"), "ann") == score
    await reconcile(store)
    assert await store.redis.zscore(keys.followers("bob"), "ann") == score


async def test_edge_order_comes_from_each_slot_and_pages_by_it(store: Store) -> None:
    for handle in ("Cy", "Di", "Ed"):
        await store.create_user(handle, "-", handle, "person")
        await store.follow("ann", handle.lower())
    page, cursor = await store.edge_page(keys.following("ann"), 2, None)
    assert [row["handle"] for row in page] == ["Ed", "Di"] and cursor is not None
    rest, more = await store.edge_page(keys.following("ann"), 2, int(cursor))
    assert [row["handle"] for row in rest] == ["Cy"] and more is None
    # Both lists of an edge carry the same order number.
    assert await store.redis.zscore(keys.followers("cy"), "ann") == await store.redis.zscore(
        keys.following("ann"), "cy"
    )


async def test_a_read_receipt_cut_after_its_first_step_is_delivered(store: Store) -> None:
    await store.follow("ann", "bob")
    await store.follow("bob", "ann")
    sent = await store.send(sender="ann", recipient="bob", text="hi", client_id=None, origin="-")
    assert isinstance(sent, SendResult)
    before = await store.redis.xlen(keys.events("ann"))
    body = READ_BODY % sent.message_id
    first = await receipts(store).read_first("bob", "ann", sent.message_id, body, True)
    assert first[0] == 1 and len(first) == 2
    assert await store.redis.xlen(keys.events("ann")) == before  # not yet
    assert await reconcile(store) == 1
    last = await store.redis.xrevrange(keys.events("ann"), "+", "-", 1)
    assert last[0][1] == {"p": "bob", "f": body}
    assert await reconcile(store) == 0 and await store.redis.xlen(keys.events("ann")) == before + 1
    # Step 2 again (a reconciler that died before removing the entry): not twice.
    assert not await receipts(store).deliver("bob", "ann", body, sent.message_id)
    assert await store.redis.xlen(keys.events("ann")) == before + 1


async def test_a_receipt_step_2_refuses_what_changed_since_step_1(store: Store) -> None:
    await store.follow("ann", "bob")
    await store.follow("bob", "ann")
    sent = await store.send(sender="ann", recipient="bob", text="hi", client_id=None, origin="-")
    assert isinstance(sent, SendResult)
    body = READ_BODY % sent.message_id
    await receipts(store).read_first("bob", "ann", sent.message_id, body, True)
    before = await store.redis.xlen(keys.events("ann"))
    await store.update_user("ann", {"rr": "0"}, [])  # ann turns receipts off meanwhile
    assert await reconcile(store) == 1
    assert await store.redis.xlen(keys.events("ann")) == before
    assert await pending(store) == 0


async def test_a_process_killed_after_a_follows_first_step_is_finished(
    store: Store, target: RedisTarget
) -> None:
    await die_at(target, "follow:after_first", 'await store.follow("ann", "bob")')
    authority = await store.redis.zscore(keys.following("ann"), "bob")
    assert authority is not None
    assert await store.redis.zscore(keys.followers("bob"), "ann") is None
    assert await reconcile(store) + await reconcile(store) == 1
    assert await store.redis.zscore(keys.followers("bob"), "ann") == authority


async def test_team_changes_cut_after_their_first_step_are_finished(store: Store) -> None:
    teams = team_store(store)
    added = await teams.add_first("ann", "bob")
    assert added[0] == 1 and await teams.is_member("ann", "bob")
    assert await teams.teams("bob") == []  # the index lags; it never grants
    assert await reconcile(store) == 1
    assert await teams.teams("bob") == ["Ann"]
    assert await reconcile(store) == 0
    assert await teams.remove_first("ann", "bob") is not None
    assert await store.redis.sismember(keys.teams_of("bob"), "ann")
    assert await reconcile(store) == 1
    assert not await store.redis.exists(keys.teams_of("bob"))
    assert await reconcile(store) == 0 and await pending(store) == 0


async def test_a_deletion_cut_after_its_tombstone_is_finished_once(
    store: Store, target: RedisTarget
) -> None:
    await store.follow("ann", "bob")
    await store.follow("bob", "ann")
    await die_at(
        target,
        "delete:after_first",
        'from chat.store.accounts import delete_account; await delete_account(store, "ann")',
    )
    assert await store.user("ann") is None
    assert await store.redis.exists(keys.following("bob"))  # not yet
    assert await reconcile(store) == 1
    assert all(rows == [] for rows in (await edges(store)).values())
    assert await reconcile(store) == 0 and await pending(store) == 0


async def test_an_edge_that_keeps_changing_is_left_to_the_reconciler(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No round settles (as if every re-read found the edge changed again): the
    # request still answers from step 1, and the entry stays, quietly.
    monkeypatch.setattr("chat.store.graph.SYNC_ROUNDS", 0)
    assert await store.follow("ann", "bob") == FollowResult.ADDED
    assert await store.redis.zscore(keys.followers("bob"), "ann") is None
    assert await reconcile(store) == 0 and await pending(store) == 1
    monkeypatch.undo()
    assert await reconcile(store) == 1 and await pending(store) == 0
    assert await store.redis.zscore(keys.followers("bob"), "ann") == await store.redis.zscore(
        keys.following("ann"), "bob"
    )


async def test_processes_killed_after_a_reads_and_a_blocks_first_step(
    store: Store, target: RedisTarget
) -> None:
    await store.follow("ann", "bob")
    await store.follow("bob", "ann")
    sent = await store.send(sender="ann", recipient="bob", text="hi", client_id=None, origin="-")
    assert isinstance(sent, SendResult)
    body = READ_BODY % sent.message_id
    before = await store.redis.xlen(keys.events("ann"))
    read = f"await store.mark_read('bob', 'ann', {sent.message_id!r}, {body!r}, True)"
    await die_at(target, "read:after_first", read)
    assert await store.redis.hget(keys.user("bob"), keys.read_field("ann")) == sent.message_id
    assert await store.redis.xlen(keys.events("ann")) == before
    assert await reconcile(store) == 1 and await reconcile(store) == 0
    assert await store.redis.xlen(keys.events("ann")) == before + 1
    await die_at(target, "block:after_first", "await store.block('ann', 'bob')")
    assert await store.redis.zscore(keys.blocked_by("bob"), "ann") is None
    assert await reconcile(store) == 1 and await reconcile(store) == 0
    assert await store.redis.zscore(keys.blocked_by("bob"), "ann") is not None
    assert await store.redis.zscore(keys.following("bob"), "ann") is None


async def test_concurrent_changes_of_one_edge_leave_mirrors_equal_to_authorities(
    store: Store,
) -> None:
    rng = random.Random(13)
    ops = [
        store.follow,
        store.unfollow,
        store.block,
        store.unblock,
    ]
    for _ in range(3):
        calls = [rng.choice(ops)(*rng.sample(["ann", "bob"], 2)) for _ in range(24)]
        await asyncio.gather(*calls)
        await reconcile(store)
        found = await edges(store)
        for a, b in (("ann", "bob"), ("bob", "ann")):
            follows = dict(found[keys.following(a)])
            assert dict(found[keys.followers(b)]).get(a) == follows.get(b), (a, b, found)
            blocks = dict(found[keys.blocking(a)])
            assert dict(found[keys.blocked_by(b)]).get(a) == blocks.get(b), (a, b, found)
            # A block and a follow between the two never stand together.
            if blocks.get(b) is not None:
                assert follows.get(b) is None and dict(found[keys.following(b)]).get(a) is None
        assert await pending(store) == 0


async def letters(store: Store, lc: str, peer: str) -> str:
    """The pair's letters in lc's hash, in a fixed order."""
    held = await store.redis.hget(keys.user(lc), keys.pair_field(peer))
    return "".join(sorted(held or ""))


async def test_the_pair_letters_follow_every_edge_change_and_deletion(store: Store) -> None:
    await store.follow("ann", "bob")
    assert (await letters(store, "ann", "bob"), await letters(store, "bob", "ann")) == ("f", "F")
    await store.follow("bob", "ann")
    sent = await store.send(sender="ann", recipient="bob", text="hi", client_id=None, origin="-")
    assert isinstance(sent, SendResult)
    # Sorted: capitals first. Ann follows, is followed by and wrote to Bob.
    assert (await letters(store, "ann", "bob"), await letters(store, "bob", "ann")) == (
        "Ffw",
        "Ffh",
    )
    await store.block("bob", "ann")
    assert (await letters(store, "ann", "bob"), await letters(store, "bob", "ann")) == (
        "Bw",
        "bh",
    )
    await store.unblock("bob", "ann")
    await store.unfollow("ann", "bob")  # nothing to undo: the block ended it
    assert (await letters(store, "ann", "bob"), await letters(store, "bob", "ann")) == ("w", "h")
    await store.follow("ann", "bob")
    await store.block("ann", "bob")
    await store.follow("bob", "ann")  # refused: Ann blocks Bob
    assert (await letters(store, "ann", "bob"), await letters(store, "bob", "ann")) == (
        "bw",
        "Bh",
    )
    assert await pair_flags_disagreements(store.redis, USERS) == []
    # A deletion takes Ann out of Bob's lists and their letters with them; the
    # letters whose sets stay (heard:{bob}) stay too. Ann's hash is a tombstone.
    assert await delete_account(store, "ann")
    assert await letters(store, "bob", "ann") == "h"
    assert await store.redis.hkeys(keys.user("ann")) in (
        ["deleted", "created"],
        ["created", "deleted"],
    )


async def test_a_deletion_removes_the_read_state_an_older_version_kept(store: Store) -> None:
    # Before the read state became fields of the user hash (r:, u:), it was
    # two hashes of its own: nothing reads them now, the deletion removes them.
    await store.follow("ann", "bob")
    sent = await store.send(sender="bob", recipient="ann", text="hi", client_id=None, origin="-")
    assert isinstance(sent, SendResult)
    before = keys.read_state_before("ann")
    for key in before:
        await store.redis.hset(key, "bob", sent.message_id)
    assert await store.redis.hget(keys.user("ann"), keys.unread_field("bob")) == "1"
    assert await delete_account(store, "ann")
    assert await store.redis.exists(*before) == 0
    assert await store.redis.hkeys(keys.user("ann")) in (
        ["deleted", "created"],
        ["created", "deleted"],
    )
