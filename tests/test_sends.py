"""A send in per-slot steps (chat/store/sends.py) on a real Valkey: the same id
in both views, replies after what they answer, and a send left after step 2
completed once, by a retry or by the reconciler. The steps on one Valkey too
(DMHUB_SEND_STEPS=steps): there a send is otherwise one script."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis as redis_sync

from chat.config import SEND_STEPS_ALWAYS
from chat.store import keys, views
from chat.store.connection import seed_endpoints
from chat.store.sends import SEND_SIDE_LUA, Decided, Prepared, SendRefused, SendResult
from chat.store.store import Store
from tests.faults import eventually
from tests.support import async_redis_client, is_cluster_url, pair_flags_disagreements


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    client = async_redis_client(redis_url, decode_responses=True)
    try:
        yield Store(client, event_retention=100, send_steps=SEND_STEPS_ALWAYS)
        # Whatever a test left, the pair's letters in each user hash are the
        # twins of the collections (pair_flags.lua).
        assert await pair_flags_disagreements(client) == []
    finally:
        await client.aclose()


async def two_people(store: Store, a: str = "Ann", b: str = "Bob") -> tuple[str, str]:
    """Two accounts that follow each other: every send between them is allowed."""
    for handle in (a, b):
        await store.create_user(handle, "-", handle, "person")
    a_lc, b_lc = a.lower(), b.lower()
    await store.follow(a_lc, b_lc)
    await store.follow(b_lc, a_lc)
    return a_lc, b_lc


async def sent(store: Store, a: str, b: str, text: str, client_id: str | None = None) -> SendResult:
    result = await store.send(sender=a, recipient=b, text=text, client_id=client_id, origin="o1")
    assert isinstance(result, SendResult)
    await store.sends.finish(result)
    return result


async def after_step_2(store: Store, a: str, b: str, text: str, client_id: str) -> Decided:
    """A send whose process died right after step 2 (the decision)."""
    prepared = await store.sends.prepare(a, b, client_id)
    assert isinstance(prepared, Prepared)
    decided = await store.sends.decide(
        prepared, text=text, sent_at="2026-01-01T00:00:00.000Z", client_id=client_id, origin="o1"
    )
    assert isinstance(decided, Decided) and decided.created
    return decided


async def view(store: Store, me: str, peer: str) -> list[tuple[str, int]]:
    rows: list[tuple[str, float]] = await store.redis.zrange(
        keys.view(me, peer), 0, -1, withscores=True
    )
    return [(member, int(score)) for member, score in rows]


async def in_flight(store: Store, a: str, b: str) -> int:
    """How many of a's sends to b are marked in flight; a mark never outlives
    its expiry."""
    key = keys.sending(a, b)
    count = int(await store.redis.get(key) or 0)
    assert count >= 0 and (count == 0 or await store.redis.pttl(key) > 0)
    return count


async def message_events(store: Store, lc: str) -> list[dict[str, Any]]:
    entries = await store.redis.xrange(keys.events(lc))
    return [fields for _, fields in entries if '"type":"message"' in fields["f"]]


async def test_a_message_has_the_same_id_in_both_views(store: Store) -> None:
    a, b = await two_people(store)
    first = await sent(store, a, b, "hi")
    reply = await sent(store, b, a, "hello")
    for me, peer in ((a, b), (b, a)):
        rows = await view(store, me, peer)
        assert [score for _, score in rows] == [int(first.message_id), int(reply.message_id)]
        assert [views.split(member)[0] for member, _ in rows] == [a, b]
        texts = [msgspec.json.decode(views.split(member)[2])["text"] for member, _ in rows]
        assert texts == ["hi", "hello"]
    # The two directions differ in parity, so they can never take each other's id.
    assert int(first.message_id) % 2 != int(reply.message_id) % 2


async def test_a_reply_sorts_after_the_message_it_answers_even_from_a_slower_clock(
    store: Store,
) -> None:
    a, b = await two_people(store)
    # Bob's slot has issued ids a second ahead of the clock (another shard's clock,
    # or a burst): Ann's message to Bob gets such an id.
    ahead = int(time.time() * 1000 + 1000) * 1000
    await store.redis.hset(keys.user(b), keys.ID_GENERATOR_FIELD, ahead)
    asked = await sent(store, a, b, "lunch?")
    assert int(asked.message_id) > ahead
    # Bob's reply is decided in Ann's slot, whose clock is a second behind: its
    # id still goes above what Bob had seen.
    answered = await sent(store, b, a, "yes")
    assert int(answered.message_id) > int(asked.message_id)
    page, _ = await store.message_page(a, b, 10, None)
    assert [msgspec.json.decode(m)["text"] for m in page] == ["lunch?", "yes"]


async def test_a_retry_after_step_2_completes_the_send_once(store: Store) -> None:
    a, b = await two_people(store)
    decided = await after_step_2(store, a, b, "once", "c-1")
    assert decided.step is not None
    assert await view(store, a, b) == []  # the sender's side is owed
    assert len(await view(store, b, a)) == 1  # the recipient has it
    retried = await store.send(sender=a, recipient=b, text="once", client_id="c-1", origin="o2")
    assert isinstance(retried, SendResult) and not retried.created
    assert retried.message_id == decided.message_id
    assert msgspec.json.decode(retried.message_json)["text"] == "once"
    assert [score for _, score in await view(store, a, b)] == [int(decided.message_id)]
    assert len(await message_events(store, a)) == 1
    # The retry removed the outbox entry; the reconciler has nothing left to do.
    assert await store.redis.xlen(keys.outbox(b)) == 0
    assert await store.outbox.reconcile(min_idle_ms=0) == 0
    # A third attempt is answered from the sender's slot alone.
    again = await store.send(sender=a, recipient=b, text="x", client_id="c-1", origin="o3")
    assert again == SendResult(False, retried.message_json, decided.message_id)
    assert len(await view(store, b, a)) == 1 and len(await message_events(store, b)) == 1


async def test_the_reconciler_completes_a_send_left_after_step_2_once(store: Store) -> None:
    a, b = await two_people(store)
    decided = await after_step_2(store, a, b, "later", "c-2")
    assert await store.outbox.reconcile(min_idle_ms=0) == 1
    rows = await view(store, a, b)
    assert [score for _, score in rows] == [int(decided.message_id)]
    assert await store.redis.hget(keys.client_ids(a), "c-2") == f"{decided.message_id}|{b}"
    assert await store.redis.zscore(keys.inbox(a), b) == int(decided.message_id)
    events = await message_events(store, a)
    assert len(events) == 1 and events[0]["o"] == "o1"  # the socket that sent it had its ack
    # Step 3 again (a reconciler overlapping a slow original) changes nothing.
    assert decided.step is not None
    assert await store.sends.apply(decided.step) == 0
    assert await view(store, a, b) == rows and len(await message_events(store, a)) == 1
    assert await store.outbox.reconcile(min_idle_ms=0) == 0


async def test_a_crossing_message_stays_unread_when_the_reply_lands_late(store: Store) -> None:
    a, b = await two_people(store)
    decided = await after_step_2(store, a, b, "first", "c-3")
    # Bob writes while Ann's side of her message is still owed.
    await sent(store, b, a, "crossing")
    assert decided.step is not None
    await store.sends.apply(decided.step)
    pointer, unread = await store.redis.hmget(
        keys.user(a), [keys.read_field(b), keys.unread_field(b)]
    )
    assert pointer == decided.message_id and unread == "1"


async def test_a_deleted_senders_step_3_brings_nothing_back(store: Store) -> None:
    a, b = await two_people(store)
    decided = await after_step_2(store, a, b, "bye", "c-4")
    await store.redis.delete(keys.user(a))
    assert decided.step is not None
    assert await store.sends.apply(decided.step) == -1
    assert await view(store, a, b) == [] and not await store.redis.exists(keys.events(a))


async def test_a_reply_completes_the_owed_message_it_answers_first(store: Store) -> None:
    a, b = await two_people(store)
    decided = await after_step_2(store, a, b, "question", "c-5")
    # Bob answers while Ann's side of her question is still owed (her process died).
    answer = await sent(store, b, a, "answer")
    rows = await view(store, a, b)
    assert [score for _, score in rows] == [int(decided.message_id), int(answer.message_id)]
    assert rows == await view(store, b, a)  # the same members in both views
    events = await message_events(store, a)
    texts = [msgspec.json.decode(e["f"] + "}")["message"]["text"] for e in events]
    assert texts == ["question", "answer"]  # Ann's sockets: in the order of the history
    assert await store.redis.hget(keys.client_ids(a), "c-5") == f"{decided.message_id}|{b}"
    # Her retry, or the reconciler, finds it done.
    retried = await store.send(sender=a, recipient=b, text="question", client_id="c-5", origin="x")
    assert isinstance(retried, SendResult) and retried.message_id == decided.message_id
    assert len(await message_events(store, a)) == 2


async def test_an_agents_owed_message_keeps_its_agent_on_the_business_side(store: Store) -> None:
    shop, ann = await two_people(store, "Shop", "Ann")
    prepared = await store.sends.prepare(shop, ann, "c-6")
    assert isinstance(prepared, Prepared)
    decided = await store.sends.decide(
        prepared, text="hello", sent_at="2026-01-01T00:00:00.000Z", client_id="c-6",
        origin="o1", agent="zoe",
    )  # fmt: skip
    assert isinstance(decided, Decided) and "agent" in decided.message_json
    await sent(store, ann, shop, "hi")
    page, _ = await store.message_page(shop, ann, 10, None)
    assert [msgspec.json.decode(m).get("agent") for m in page] == ["zoe", None]
    theirs, _ = await store.message_page(ann, shop, 10, None)
    assert [msgspec.json.decode(m).get("agent") for m in theirs] == [None, None]
    first_event = (await message_events(store, shop))[0]
    assert msgspec.json.decode(first_event["f"] + "}")["message"]["agent"] == "zoe"


async def test_a_crossing_message_waits_for_the_send_in_flight_it_would_overtake(
    store: Store,
) -> None:
    # Bob > ann, so bob's sends to ann are the ones that wait.
    ann, bob = await two_people(store)
    prepared = await store.sends.prepare(ann, bob, "c-7")  # ann's send is in flight
    assert isinstance(prepared, Prepared)
    crossing = asyncio.create_task(sent(store, bob, ann, "crossing"))
    await asyncio.sleep(0.01)
    assert not crossing.done()  # it waits for ann's send
    decided = await store.sends.decide(
        prepared, text="first", sent_at="2026-01-01T00:00:00.000Z", client_id="c-7", origin="o1"
    )
    assert isinstance(decided, Decided) and decided.step is not None
    await store.sends.apply(decided.step, unmark=True)
    reply = await asyncio.wait_for(crossing, 5)
    assert int(reply.message_id) > int(decided.message_id)
    # Ann's stream has the conversation in id order, as her history does.
    texts = [
        msgspec.json.decode(e["f"] + "}")["message"]["text"]
        for e in await message_events(store, ann)
    ]
    assert texts == ["first", "crossing"]
    assert await in_flight(store, ann, bob) == 0 and await in_flight(store, bob, ann) == 0


async def test_a_wait_is_bounded_when_the_send_in_flight_never_ends(store: Store) -> None:
    ann, bob = await two_people(store)
    # Ann's process died right after step 1: its mark stays until it expires.
    assert isinstance(await store.sends.prepare(ann, bob, "c-8"), Prepared)
    started = time.monotonic()
    reply = await sent(store, bob, ann, "goes ahead")
    assert time.monotonic() - started < 2
    assert [views.split(m)[2] for m, _ in await view(store, ann, bob)] == [reply.message_json]


async def test_every_end_of_a_send_takes_its_mark_back(store: Store) -> None:
    ann, bob = await two_people(store)
    await sent(store, ann, bob, "stored", "c-9")
    await store.block(bob, ann)
    refused = await store.send(sender=ann, recipient=bob, text="no", client_id="c-10", origin="-")
    assert isinstance(refused, SendRefused)
    retried = await store.send(sender=ann, recipient=bob, text="x", client_id="c-9", origin="-")
    assert isinstance(retried, SendResult) and not retried.created
    assert await in_flight(store, ann, bob) == 0


async def test_a_later_send_completes_the_senders_owed_one_first(store: Store) -> None:
    ann, bob = await two_people(store)
    # Ann's first send lost its process after step 2; she writes again elsewhere.
    owed = await after_step_2(store, ann, bob, "one", "c-11")
    later = await store.send(sender=ann, recipient=bob, text="two", client_id="c-12", origin="o2")
    assert isinstance(later, SendResult) and later.created
    assert [score for _, score in await view(store, ann, bob)] == [
        int(owed.message_id),
        int(later.message_id),
    ]
    events = await message_events(store, ann)
    # Each event still names the socket that had the ack, so that one skips it.
    assert [(msgspec.json.decode(e["f"] + "}")["message"]["text"], e["o"]) for e in events] == [
        ("one", "o1"),
        ("two", "o2"),
    ]
    assert await store.redis.hget(keys.client_ids(ann), "c-11") == f"{owed.message_id}|{bob}"
    # Only the dead process's mark is left, until it expires.
    assert await in_flight(store, ann, bob) == 1
    assert 0 < await store.redis.pttl(keys.sending(ann, bob)) <= 2000


# -- what a send costs Valkey: the count of commands is the cost ---------------


def master_clients(redis_url: str) -> list[Any]:
    if not is_cluster_url(redis_url):
        return [redis_sync.Redis.from_url(redis_url, decode_responses=True)]
    return [
        redis_sync.Redis(host=e.host or "127.0.0.1", port=e.port or 6379, decode_responses=True)
        for e in seed_endpoints(redis_url)
    ]


async def stepped(store: Store, a: str, b: str, text: str) -> SendResult:
    """A send in three steps, whatever layout the store would choose."""
    result = await store.sends.send(
        sender=a, recipient=b, text=text, sent_at="2026-01-01T00:00:00.000Z",
        client_id=None, origin="o1", extra=None, agent=None,
    )  # fmt: skip
    assert isinstance(result, SendResult) and result.created
    return result


async def commands_per_send(
    store: Store, redis_url: str, pairs: list[tuple[str, str]], rounds: int
) -> dict[str, float]:
    """Every command Valkey ran (inside scripts too) per send, summed over masters."""
    masters = master_clients(redis_url)
    for master in masters:
        master.config_resetstat()
    for i in range(rounds):
        for a, b in pairs:
            await stepped(store, a, b, f"m{i}")
    counted: dict[str, float] = {}
    for master in masters:
        for name, row in master.info("commandstats").items():
            name = name.removeprefix("cmdstat_")
            counted[name] = counted.get(name, 0) + row["calls"] / (rounds * len(pairs))
        master.close()
    return counted


@pytest.mark.parametrize("both_ways", [False, True], ids=["one_way", "both_ways"])
async def test_a_send_in_steps_reads_each_view_once_when_nothing_is_owed(
    store: Store, redis_url: str, both_ways: bool
) -> None:
    ann, bob = await two_people(store)
    pairs = [(ann, bob), (bob, ann)] if both_ways else [(ann, bob)]
    for i in range(6):  # both views hold more than the scanned latest entries
        for a, b in pairs:
            await stepped(store, a, b, f"warm {i}")
    counted = await commands_per_send(store, redis_url, pairs, 4)
    # Step 1 and step 2 read their view's latest entries once each (floor, top,
    # the owed checks, the earlier messages); step 3 reads its view once (applied
    # already? crossing messages above?): no read per owed id.
    assert counted.get("zrevrange") == 2
    assert counted.get("zrangebyscore") == 1
    # Step 1's, given to step 3 for the limits; step 2's own for the id.
    assert counted.get("time") == 2
    # The relationship facts are letters of the user hashes (pair_flags.lua),
    # read in each step's HMGET of its user's hash with the account (step 3's
    # with the `messages` bucket it charges): no read of a collection of its
    # own; and wrote/heard, added once, are not written again.
    assert counted.get("hmget") == 3
    assert not {"zscore", "sismember", "sadd"} & set(counted), counted
    # Two people, no business: no team state is read; the read pointer and
    # the unread counts are fields of the user hashes, read in those HMGETs.
    assert "hget" not in counted, counted
    # In-flight marks are plain keys (INCR, PEXPIRE, DECR; a waiting send's GET),
    # not hash fields with their own expiry; the read state is written in the
    # HSETs of the user hashes: no HINCRBY, no HDEL.
    assert not {"hincrby", "hdel", "hpexpire"} & set(counted), counted
    assert [score for _, score in await view(store, ann, bob)] == [
        score for _, score in await view(store, bob, ann)
    ]


async def test_an_owed_check_reads_an_id_only_below_the_latest_entries_read(store: Store) -> None:
    # owed_messages (send_side.lua) given the view's latest entries: an id
    # among them is there, one above the lowest of them is not, and only one
    # below them is read on its own; the answers are those of a read per id.
    script = store.redis.register_script(
        SEND_SIDE_LUA
        + """
local top = nil
if ARGV[1] == '1' then
  top = redis.call('ZREVRANGE', KEYS[1], 0, 3, 'WITHSCORES')
end
local missing = owed_messages(KEYS[1], 2, top, 4)
return missing
"""
    )
    key = keys.view("ann", "bob")
    scores = [10, 20, 30, 40, 50, 60]  # the latest four: 30 to 60
    await store.redis.zadd(key, {f'ann {{"id":"{s}"}}': s for s in scores})
    asked = ["60", "55", "40", "31", "30", "25", "20", "5"]
    expected = ["55", "31", "25", "5"]
    for given_top in ("1", "0"):
        missing = await script(keys=[key], args=[given_top, len(asked), *asked])
        assert missing == expected
    # A view shorter than the scan: everything in it was read.
    short = keys.view("ann", "cat")
    await store.redis.zadd(short, {"ann {}": 10, "cat {}": 20})
    assert await script(keys=[short], args=["1", 3, "20", "15", "5"]) == ["15", "5"]


async def test_step_3_charges_the_limits_at_step_1s_time_and_the_id_has_step_2s(
    store: Store,
) -> None:
    ann, bob = await two_people(store)
    burst, period = store.sends.limit_args[0], store.sends.limit_args[1]
    assert burst > 0  # the messages limit is on: step 1 checks it, step 3 charges it
    prepared = await store.sends.prepare(ann, bob, "c-t")
    assert isinstance(prepared, Prepared) and prepared.now_ms > 0
    await asyncio.sleep(0.2)  # steps 2 and 3 come later
    decided = await store.sends.decide(
        prepared, text="t", sent_at="2026-01-01T00:00:00.000Z", client_id="c-t", origin="o1"
    )
    assert isinstance(decided, Decided) and decided.step is not None
    # The decision's own clock (a fresh pair: nothing else bounds the id).
    assert int(decided.message_id) // 1000 >= prepared.now_ms + 200
    assert await store.sends.apply(decided.step, unmark=True) == 1
    charged = int(await store.redis.hget(keys.user(ann), keys.MESSAGE_RATE_FIELD))
    assert charged == prepared.now_ms + max(1, period // burst)
    await store.outbox.done(bob, decided.entry)
    # A reconciler's step 3 has no step 1 behind it: it reads the clock itself
    # (a time of 0 would leave the bucket's charge in 1970).
    await after_step_2(store, bob, ann, "later", "c-u")
    before_ms = int(time.time() * 1000)
    assert await store.outbox.reconcile(min_idle_ms=0) == 1
    assert int(await store.redis.hget(keys.user(bob), keys.MESSAGE_RATE_FIELD)) >= before_ms


async def test_a_message_decided_after_a_crossing_one_sorts_after_it_in_its_senders_stream(
    store: Store,
) -> None:
    # Amy's send is in flight (step 1 done); zed's crossing send gave up
    # waiting for it (a wait is bounded) and was decided in amy's slot, so it
    # is in amy's stream. Amy's own message reaches her stream after it, in
    # step 3: only its id, taken at its decision, later, keeps the order.
    amy, zed = await two_people(store, "Amy", "Zed")
    mine = await store.sends.prepare(amy, zed, "c-a")
    assert isinstance(mine, Prepared)
    await asyncio.sleep(0.05)
    theirs = await store.sends.prepare(zed, amy, "c-z", mark=False)
    assert isinstance(theirs, Prepared)
    crossing = await store.sends.decide(
        theirs, text="crossing", sent_at="2026-01-01T00:00:00.000Z", client_id="c-z", origin="o2"
    )
    assert isinstance(crossing, Decided)
    decided = await store.sends.decide(
        mine, text="mine", sent_at="2026-01-01T00:00:00.000Z", client_id="c-a", origin="o1"
    )
    assert isinstance(decided, Decided) and decided.step is not None
    await store.sends.apply(decided.step, unmark=True)
    assert int(decided.message_id) > int(crossing.message_id)
    ids = [
        int(msgspec.json.decode(e["f"] + "}")["message"]["id"])
        for e in await message_events(store, amy)
    ]
    assert ids == [int(crossing.message_id), int(decided.message_id)]


async def test_a_send_ending_after_its_mark_expired_leaves_no_mark_behind(store: Store) -> None:
    ann, bob = await two_people(store)
    prepared = await store.sends.prepare(ann, bob, "c-m")  # ann < bob: marked
    assert isinstance(prepared, Prepared) and await in_flight(store, ann, bob) == 1
    await store.redis.delete(keys.sending(ann, bob))  # its 2 s went by
    decided = await store.sends.decide(
        prepared, text="slow", sent_at="2026-01-01T00:00:00.000Z", client_id="c-m", origin="o1"
    )
    assert isinstance(decided, Decided) and decided.step is not None
    assert await store.sends.apply(decided.step, unmark=True) == 1
    # DECR of the gone key made -1 without an expiry: taken back at once.
    assert not await store.redis.exists(keys.sending(ann, bob))


async def test_a_send_that_stopped_waiting_reaches_its_senders_stream_before_the_crossing_one(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fault test's failure, step by step. Amy's send is in flight (step 1:
    # marked) and stays there past zed's bound on waiting (a slow process, or a
    # mark a killed node left). Zed's crossing send goes ahead: decided in amy's
    # slot, and held between its steps 2 and 3. Amy's send is decided now, in
    # zed's slot, with the higher id (step 2's clock); were its event written
    # before zed's step 3 writes zed's own, zed's stream would have the higher
    # id first.
    amy, zed = await two_people(store, "Amy", "Zed")
    sends = store.sends
    decide, apply = sends.decide, sends.apply
    zed_decided, amy_tried = asyncio.Event(), asyncio.Event()

    async def held_decide(prepared: Prepared, **kwargs: Any) -> Any:
        if prepared.sender == amy:
            await zed_decided.wait()
        try:
            return await decide(prepared, **kwargs)
        finally:
            if prepared.sender == amy:
                amy_tried.set()

    async def held_apply(step: Any, **kwargs: Any) -> int:
        if step.sender == zed:
            zed_decided.set()
            await asyncio.wait_for(amy_tried.wait(), 5)
        return await apply(step, **kwargs)

    monkeypatch.setattr(sends, "decide", held_decide)
    monkeypatch.setattr(sends, "apply", held_apply)
    amys = asyncio.create_task(sent(store, amy, zed, "amy's"))
    await eventually(lambda: in_flight(store, amy, zed), 5, "amy's send to be marked")
    zeds = await asyncio.wait_for(sent(store, zed, amy, "zed's"), 5)
    mine = await asyncio.wait_for(amys, 5)
    assert int(mine.message_id) > int(zeds.message_id)
    for person in (amy, zed):
        ids = [
            int(msgspec.json.decode(e["f"] + "}")["message"]["id"])
            for e in await message_events(store, person)
        ]
        assert ids == [int(zeds.message_id), int(mine.message_id)], person
    assert await in_flight(store, amy, zed) == 0 and await in_flight(store, zed, amy) == 0


async def test_a_mark_a_dead_process_left_expires_while_its_sender_keeps_writing(
    store: Store,
) -> None:
    ann, bob = await two_people(store)
    # Ann's process died right after step 1; ann goes on writing elsewhere.
    assert isinstance(await store.sends.prepare(ann, bob, "c-dead"), Prepared)
    await asyncio.sleep(0.3)
    await sent(store, ann, bob, "again")
    # Her later sends did not renew its expiry: it ends 2 s after it was made,
    # and bob's sends stop waiting for it then.
    assert await in_flight(store, ann, bob) == 1
    assert 0 < await store.redis.pttl(keys.sending(ann, bob)) <= 1_800
