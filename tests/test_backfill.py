"""`dmhub admin backfill`: a deployment written before the relationship letters
and the read state moved into the user hash (issue 13) gets them back, so a
block made before the upgrade stops messages again; a second run changes nothing.

The old layout is made from the current one: state built through the Store,
then every `p:`, `t:`, `r:` and `u:` field taken out of the user hashes and the
read state written into `rd:{lc}` / `unread:{lc}` as the code before kept it.
Each test runs on one Valkey and on the three-master cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from chat.permission.rule import Reason
from chat.store import keys
from chat.store.backfill import backfill, backfill_account
from chat.store.sends import SendRefused, SendResult
from chat.store.store import Store
from tests.support import ROOT, pair_flags_disagreements

USERS = ["ann", "bob", "cy", "di"]
# The fields this change's code added to user hashes.
NEW_FIELDS = ("p:", "t:", "r:", "u:")


def admin(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chat", "admin", "backfill", *args],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def admin_json(redis_url: str) -> dict[str, Any]:
    done = admin(redis_url, "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def send(store: Store, sender: str, recipient: str, text: str) -> SendResult | SendRefused:
    result = await store.send(
        sender=sender, recipient=recipient, text=text, client_id=None, origin="-"
    )
    assert isinstance(result, SendResult | SendRefused)
    if isinstance(result, SendResult):
        await store.sends.finish(result)
    return result


async def to_old_layout(store: Store, users: list[str]) -> None:
    """The user hashes as the code before the change left them: no letters, no
    view tops, the read state in rd:{lc} (pointers) and unread:{lc} (counts,
    never 0: the old code deleted a count that fell to 0)."""
    redis = store.redis
    for lc in users:
        fields = await redis.hgetall(keys.user(lc))
        unread_key, read_key = keys.read_state_before(lc)
        pointers = {f[2:]: v for f, v in fields.items() if f.startswith("r:")}
        counts = {f[2:]: v for f, v in fields.items() if f.startswith("u:") and v != "0"}
        if pointers:
            await redis.hset(read_key, mapping=pointers)
        if counts:
            await redis.hset(unread_key, mapping=counts)
        gone = [f for f in fields if f.startswith(NEW_FIELDS)]
        if gone:
            await redis.hdel(keys.user(lc), *gone)


async def unread(store: Store, me: str, peer: str) -> int:
    conversations, _ = await store.conversation_page(me, "inbox", 50, None)
    return next(int(c["unread"]) for c in conversations if c["peer"]["handle"].lower() == peer)


async def test_a_block_from_before_the_upgrade_stops_messages_again(
    store: Store, redis_url: str
) -> None:
    for handle in ("Ann", "Bob", "Cy", "Di"):
        await store.create_user(handle, "-", handle, "person")
    await store.update_user("cy", {"open_dms": "1"}, [])
    await store.follow("ann", "bob")
    await store.follow("bob", "ann")
    await store.block("cy", "di")
    # Both ways, and Bob leaves two of Ann's messages unread.
    await send(store, "ann", "bob", "hi")
    reply = await send(store, "bob", "ann", "hello")
    assert isinstance(reply, SendResult)
    await send(store, "ann", "bob", "how are you?")
    await send(store, "ann", "bob", "?")
    assert await unread(store, "bob", "ann") == 2
    assert await store.peer_read_up_to("ann", "bob") == reply.message_id
    refused = await send(store, "di", "cy", "let me in")
    assert refused == SendRefused(Reason.CANNOT_RECEIVE, "Cy")
    assert await pair_flags_disagreements(store.redis, USERS) == []

    await to_old_layout(store, USERS)
    old_read_state = [k for lc in USERS for k in keys.read_state_before(lc)]
    assert await store.redis.exists(*old_read_state) == 3  # bob's both, ann's pointer
    # The regression this fixes: without the letters, the block is not seen...
    let_in = await send(store, "di", "cy", "let me in")
    assert isinstance(let_in, SendResult) and let_in.folder == "requests"
    # ... nor the read state.
    assert await unread(store, "bob", "ann") == 0
    assert await store.peer_read_up_to("ann", "bob") is None
    assert await pair_flags_disagreements(store.redis, USERS) != []

    first = await asyncio.to_thread(admin_json, redis_url)
    assert first["accounts"] == 4 and first["skipped"] == 0
    # fFwh in ann's p:bob and bob's p:ann; b in cy's p:di and B in di's p:cy
    # (the send let in wrote h and w already).
    assert (first["letters_set"], first["letters_cleared"]) == (4 + 4 + 1 + 1, 0)
    assert first["read_pointers_moved"] == 2 and first["unread_counts_moved"] == 1
    assert first["old_hashes_deleted"] == 3

    assert await pair_flags_disagreements(store.redis, USERS) == []
    assert await send(store, "di", "cy", "let me in") == SendRefused(Reason.CANNOT_RECEIVE, "Cy")
    assert await unread(store, "bob", "ann") == 2
    assert await store.peer_read_up_to("ann", "bob") == reply.message_id
    assert await store.redis.exists(*old_read_state) == 0

    before = {lc: await store.redis.hgetall(keys.user(lc)) for lc in USERS}
    again = await asyncio.to_thread(admin, redis_url)
    assert again.returncode == 0, again.stderr
    assert "letters set" in again.stdout and "read pointers moved" in again.stdout
    assert again.stdout.splitlines()[-1].split() == ["4", "0", "0", "0", "0", "0", "0"]
    assert {lc: await store.redis.hgetall(keys.user(lc)) for lc in USERS} == before


async def test_a_large_account_is_backfilled_in_batches(store: Store) -> None:
    await store.create_user("Ann", "-", "Ann", "person")
    redis = store.redis
    peers = [f"p{n:03d}" for n in range(300)]
    unread_key, read_key = keys.read_state_before("ann")
    # Collections and old read state as the code before wrote them, without
    # letters, each larger than one batch (a packed small hash or set is read
    # whole by one SCAN, at most Valkey's listpack size).
    await redis.zadd(keys.following("ann"), {p: n for n, p in enumerate(peers)})
    await redis.zadd(keys.blocking("ann"), {p: n for n, p in enumerate(peers[:150])})
    await redis.sadd(keys.wrote("ann"), *peers[100:])
    await redis.hset(read_key, mapping={p: "7" for p in peers})
    await redis.hset(unread_key, mapping={p: "3" for p in peers[:200]})
    # Letters nothing backs are cleared; a newer read state is kept.
    await redis.hset(
        keys.user("ann"),
        mapping={"p:ghost": "bF", "p:p299": "hf", keys.read_field("p000"): "9"},
    )

    done = await backfill(store, batch=50)
    assert done.accounts == 1
    # A sorted set goes by rank, 50 members a call: following alone takes 6.
    assert done.batches >= 300 // 50 + 150 // 50
    assert done.letters_cleared == 2 + 1  # ghost's b and F, p299's h
    assert done.letters_set == 300 + 150 + 200 - 1  # p299's f was there
    assert (done.read_pointers_moved, done.unread_counts_moved) == (299, 200)
    assert done.old_hashes_deleted == 2
    assert await pair_flags_disagreements(redis, ["ann"]) == []
    user = await redis.hgetall(keys.user("ann"))
    assert user[keys.read_field("p000")] == "9"
    assert user[keys.read_field("p001")] == "7" and user[keys.unread_field("p001")] == "3"
    assert keys.unread_field("p250") not in user
    assert set(user[keys.pair_field("p120")]) == {"b", "f", "w"}
    assert await redis.exists(unread_key, read_key) == 0

    again = await backfill_account(store, "ann", batch=50)
    assert again.accounts == 1 and again.public() | {"accounts": 0, "batches": 0} == {
        key: 0 for key in again.public()
    }
    assert await redis.hgetall(keys.user("ann")) == user


async def test_a_deleted_account_is_left_as_it_is(store: Store) -> None:
    await store.create_user("Ann", "-", "Ann", "person")
    await redis_tombstone(store, "ann")
    done = await backfill(store)
    assert (done.accounts, done.skipped) == (0, 1)
    assert await store.redis.hgetall(keys.user("ann")) == {"deleted": "1", "created": "1"}


async def redis_tombstone(store: Store, lc: str) -> None:
    """A deleted account's hash, with a collection a crashed deletion left."""
    await store.redis.delete(keys.user(lc))
    await store.redis.hset(keys.user(lc), mapping={"deleted": "1", "created": "1"})
    await store.redis.zadd(keys.following(lc), {"bob": 1})
