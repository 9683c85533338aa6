"""The whole send in one script on one Valkey (send_whole.lua) leaves the state
the three steps leave, and hands a send to the steps when something is owed.

The same operations (inbox and request sends, every refusal reason, every
limit, retries with the same client_id, an agent writing for a business, a
resolved team conversation reopened, blocks) run once through the one-script
send and once through the steps forced on one Valkey (DMHUB_SEND_STEPS=steps);
the answers and every key they leave are compared, with ids, cursors and times
normalized. Single layout: on a cluster there is no one-script send.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis as redis_sync

from chat.config import SEND_STEPS_ALWAYS, SEND_STEPS_AUTO, SendLimits
from chat.store import keys
from chat.store.connection import RedisTarget
from chat.store.sends import SendLimited, SendRefused, SendResult
from chat.store.store import Store
from chat.store.teams import team_store
from tests.support import async_redis_client, flush_all, hot_lane, pair_flags_disagreements
from tests.test_sends import after_step_2

pytestmark = pytest.mark.single_layout("the one-script send exists on one Valkey only")

# Small enough for the scenario to hit each: Fay's eleventh message, Ann's third
# new conversation, Zed's third request.
LIMITS = SendLimits(messages_per_min=10, new_conversations_per_day=2, requests_per_hour=2)
# Keys only the steps write (their records of what is in flight or owed).
STEPS_ONLY = ("cidin:", "obx:", "sending:")


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[Callable[[str], Awaitable[Store]]]:
    """Stores on the test's Valkey, with the hot-path lane, in a given mode."""
    made: list[tuple[Store, Any]] = []

    async def store(mode: str) -> Store:
        client = async_redis_client(redis_url, decode_responses=True)
        lane = hot_lane(redis_url)
        made.append((client, lane))
        return Store(client, event_retention=100, lane=lane, limits=LIMITS, send_steps=mode)

    yield store
    for client, lane in made:
        await lane.aclose()
        await client.aclose()


def scripts_called(store: Store) -> list[str]:
    """Records which send scripts `store` runs (the real calls go through)."""
    called: list[str] = []
    sends = store.sends
    names = {
        sends._whole.sha: "whole",
        sends._prepare.sha: "prepare",
        sends._decide.sha: "decide",
        sends._apply.sha: "apply",
    }
    real = sends._hot_script

    async def recording(script: Any, key_names: list[str], args: list[Any]) -> Any:
        called.append(names.get(script.sha, "other"))
        return await real(script, key_names, args)

    sends._hot_script = recording
    return called


def answer(result: SendResult | SendRefused | SendLimited) -> tuple[Any, ...]:
    """A send's answer, without what differs between two runs (ids, times, waits)."""
    if isinstance(result, SendResult):
        return ("sent", result.created, result.folder, result.message_json)
    if isinstance(result, SendRefused):
        return ("refused", result.reason.value, result.recipient_handle)
    return ("limited", result.limit, result.retry_after_ms > 0)


async def scenario(store: Store) -> list[tuple[Any, ...]]:
    """Every kind of send, in order; the answers."""
    answers: list[tuple[Any, ...]] = []

    async def send(a: str, b: str, text: str, cid: str | None = None, **extra: Any) -> None:
        result = await store.send(
            sender=a, recipient=b, text=text, client_id=cid, origin=f"o-{a}", **extra
        )
        if isinstance(result, SendResult):
            await store.sends.finish(result)
        answers.append(answer(result))
        # Ids come from the clock: a millisecond apart, every id of the run
        # is above the one before, whatever the conversation.
        await asyncio.sleep(0.002)

    for handle in ("Ann", "Bob", "Cat", "Dan", "Eve", "Fay", "Gus", "Hal", "Rex", "Zed"):
        await store.create_user(handle, "-", handle, "person")
    await store.create_user("Shop", "-", "Shop", "business")
    for lc in ("cat", "dan", "eve", "zed", "shop", "hal"):
        await store.update_user(lc, {"open_dms": "1"}, [])
    await store.update_user("rex", {"restricted": "1"}, [])
    await store.follow("bob", "ann")
    await store.follow("gus", "fay")

    await send("ann", "bob", "hi", "a1")  # follows_you: inbox
    await send("ann", "bob", "hi again?", "a1")  # a retry: the original
    await send("bob", "ann", "hey", "b1")  # reply
    await send("ann", "bob", "how are you", None, extra={"ref": "x"})
    await send("ann", "cat", "hello cat", "a2")  # open_dms: a request, a new conversation
    await send("ann", "cat", "still there?", "a3")  # not a new one any more
    await send("ann", "dan", "hello dan", "a4")  # Ann's second new conversation
    await send("ann", "eve", "hello eve", "a5")  # the third: new_conversations
    await send("ann", "eve", "hello eve", "a5")  # its retry is refused again, not remembered
    await send("cat", "ann", "hi ann", "c1")  # a reply to a request accepts it
    await send("ann", "cat", "welcome", "a6")  # now in Cat's inbox: accepted
    await send("bob", "zed", "one", "z1")
    await send("cat", "zed", "two", "z2")
    await send("dan", "zed", "three", "z3")  # Zed's third request: requests_received
    for n in range(11):  # Fay's eleventh message in a minute: messages
        await send("fay", "gus", f"m{n}", f"f{n}")
    await send("ann", "nobody", "x")  # unknown_recipient
    await send("ghost", "ann", "x")  # unknown_sender
    await send("rex", "cat", "x")  # restricted
    await send("ann", "hal", "x")  # Hal: open DMs, but Ann is over her new conversations
    await send("hal", "ann", "x")  # closed
    await store.update_user("eve", {"active": "0"}, [])
    await send("eve", "ann", "x")  # suspended
    await send("ann", "eve", "x")  # cannot_receive
    await send("bob", "dan", "hello dan", "b2")  # Bob's second new conversation
    await store.block("dan", "bob")
    await send("dan", "bob", "x")  # you_blocked
    await send("bob", "dan", "x")  # cannot_receive
    await store.unblock("dan", "bob")
    await send("dan", "bob", "x", "d1")  # a reply: Bob wrote to Dan
    # A business: the customer writes, an agent answers for it, the team
    # resolves the conversation and the customer's next message reopens it.
    await send("cat", "shop", "is it open?", "c2")  # Cat's second new conversation
    await send("shop", "cat", "yes", "s1", agent="al")
    await send("shop", "cat", "yes", "s1", agent="al")  # the agent's retry
    await team_store(store).set_state("shop", "cat", "Cat", "resolved", ("al",), "al")
    await send("cat", "shop", "thanks", "c3")
    await send("ann", "ann", "x", "a9")  # self (answered before any script)
    return answers


ID = re.compile(r"\b\d{16}\b")
TIMES = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"), "<time>"),
    (re.compile(r"\b\d{13}-\d+\b"), "<cursor>"),
    (re.compile(r"\b\d{13}\b"), "<ms>"),
]


async def state(store: Store) -> dict[str, Any]:
    """Every key of the run, as it is."""
    client = store.redis
    dump: dict[str, Any] = {}
    for key in sorted(await client.keys("*")):
        if key.startswith(STEPS_ONLY):
            continue
        kind = await client.type(key)
        if kind == "zset":
            dump[key] = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            dump[key] = sorted((await client.hgetall(key)).items())
        elif kind == "set":
            dump[key] = sorted(await client.smembers(key))
        elif kind == "stream":
            dump[key] = [sorted(fields.items()) for _, fields in await client.xrange(key)]
        else:
            dump[key] = await client.get(key)
    return dump


def normalized(answers: list[Any], dump: dict[str, Any]) -> dict[str, str]:
    """The answers and each key as text, with message ids numbered by order of
    issue over the whole run, and times, cursors and limit timestamps replaced."""
    texts = {"answers": repr(answers), **{key: repr(value) for key, value in dump.items()}}
    for pattern, name in TIMES:
        texts = {key: pattern.sub(name, text) for key, text in texts.items()}
    ids = sorted({int(found) for text in texts.values() for found in ID.findall(text)})
    order = {str(value): f"<id{n}>" for n, value in enumerate(ids)}
    # Scores are floats (1764...0.0): ids once renamed, but for their ".0".
    return {
        key: ID.sub(lambda m: order[m.group(0)], text).replace(">.0", ">")
        for key, text in texts.items()
    }


async def test_one_script_and_the_steps_leave_the_same_state(
    stores: Callable[[str], Awaitable[Store]], redis_url: str
) -> None:
    results = {}
    for mode in (SEND_STEPS_AUTO, SEND_STEPS_ALWAYS):
        flush_all(redis_url)
        store = await stores(mode)
        called = scripts_called(store)
        answers = await scenario(store)
        results[mode] = (answers, await state(store))
        assert await pair_flags_disagreements(store.redis) == [], mode
        if mode == SEND_STEPS_AUTO:
            assert set(called) == {"whole"}, "every send of the scenario is one script"
        else:
            assert "whole" not in called and "decide" in called
    whole, steps = results[SEND_STEPS_AUTO], results[SEND_STEPS_ALWAYS]
    kinds = {a[1] if a[0] != "sent" else "sent" for a in whole[0]}
    assert kinds >= {
        "sent",
        "messages",
        "new_conversations",
        "requests_received",
        "unknown_recipient",
        "unknown_sender",
        "restricted",
        "closed",
        "suspended",
        "cannot_receive",
        "you_blocked",
        "self",
    }, whole[0]
    assert '"type":"conversation"' in repr(whole[1][keys.events("shop")])  # reopened
    assert any(m.startswith("shop/al ") for m, _ in whole[1][keys.view("cat", "shop")])
    one, other = normalized(*whole), normalized(*steps)
    assert sorted(one) == sorted(other)
    for key, text in one.items():
        assert text == other[key], key


async def pair(store: Store) -> tuple[str, str]:
    for handle in ("Ann", "Bob"):
        await store.create_user(handle, "-", handle, "person")
    await store.follow("ann", "bob")
    await store.follow("bob", "ann")
    return "ann", "bob"


async def scores(store: Store, me: str, peer: str) -> list[int]:
    rows = await store.redis.zrange(keys.view(me, peer), 0, -1, withscores=True)
    return [int(score) for _, score in rows]


async def test_an_owed_message_sends_the_next_one_through_the_steps_which_complete_it_first(
    stores: Callable[[str], Awaitable[Store]],
) -> None:
    store = await stores(SEND_STEPS_AUTO)
    ann, bob = await pair(store)
    owed = await after_step_2(store, ann, bob, "question", "q1")
    called = scripts_called(store)
    for sender, recipient in ((bob, ann), (ann, bob)):
        result = await store.send(
            sender=sender, recipient=recipient, text="next", client_id=None, origin="o2"
        )
        assert isinstance(result, SendResult) and result.created
        await store.sends.finish(result)
        assert int(result.message_id) > int(owed.message_id)
    # The first found the tops apart and went to the steps, which applied Ann's
    # owed side before Bob's answer; the second is one script again.
    assert called[:2] == ["whole", "prepare"] and called[-1] == "whole"
    want = await scores(store, bob, ann)
    assert len(want) == 3 and want[0] == int(owed.message_id)
    assert await scores(store, ann, bob) == want
    assert await store.redis.hget(keys.client_ids(ann), "q1") == f"{owed.message_id}|{bob}"


async def test_each_user_hash_holds_the_top_of_its_view_and_the_steps_set_a_wrong_one_right(
    stores: Callable[[str], Awaitable[Store]],
) -> None:
    store = await stores(SEND_STEPS_AUTO)
    ann, bob = await pair(store)

    async def tops() -> tuple[str | None, str | None]:
        return (
            await store.redis.hget(keys.user(ann), keys.view_top_field(bob)),
            await store.redis.hget(keys.user(bob), keys.view_top_field(ann)),
        )

    assert await tops() == (None, None)
    sent = await store.send(sender=ann, recipient=bob, text="hi", client_id=None, origin="-")
    assert isinstance(sent, SendResult)
    assert await tops() == (sent.message_id, sent.message_id)
    # A top that no longer says what the view holds (a crash, an operator's
    # edit): the one script hands the send to the steps, which read the views
    # themselves and write the true tops; the send after is one script again.
    await store.redis.hset(keys.user(bob), keys.view_top_field(ann), "1")
    called = scripts_called(store)
    for n in range(2):
        result = await store.send(
            sender=bob, recipient=ann, text=f"r{n}", client_id=None, origin="-"
        )
        assert isinstance(result, SendResult) and result.created
        await store.sends.finish(result)
        assert await tops() == (result.message_id, result.message_id)
    assert called == ["whole", "prepare", "decide", "apply", "whole"]
    assert await scores(store, ann, bob) == await scores(store, bob, ann)


async def test_a_retry_of_a_split_send_still_owed_gets_its_original_once(
    stores: Callable[[str], Awaitable[Store]],
) -> None:
    store = await stores(SEND_STEPS_AUTO)
    ann, bob = await pair(store)
    owed = await after_step_2(store, ann, bob, "once", "c1")
    assert await store.redis.hexists(keys.client_ids_in(bob), f"{ann}:c1")
    retried = await store.send(sender=ann, recipient=bob, text="x", client_id="c1", origin="o2")
    assert isinstance(retried, SendResult) and not retried.created
    assert retried.message_id == owed.message_id
    assert await scores(store, ann, bob) == await scores(store, bob, ann) == [int(owed.message_id)]
    assert await store.redis.xlen(keys.outbox(bob)) == 0


async def test_a_retry_on_a_node_that_sends_in_steps_gets_the_one_script_original(
    stores: Callable[[str], Awaitable[Store]],
) -> None:
    whole, steps = await stores(SEND_STEPS_AUTO), await stores(SEND_STEPS_ALWAYS)
    ann, bob = await pair(whole)
    sent = await whole.send(sender=ann, recipient=bob, text="hi", client_id="c1", origin="o1")
    assert isinstance(sent, SendResult) and sent.created
    retried = await steps.send(sender=ann, recipient=bob, text="x", client_id="c1", origin="o2")
    assert retried == SendResult(False, sent.message_json, sent.message_id)
    assert await scores(whole, ann, bob) == await scores(whole, bob, ann) == [int(sent.message_id)]


async def test_a_whole_send_leaves_nothing_for_a_reconciler(
    stores: Callable[[str], Awaitable[Store]],
) -> None:
    store = await stores(SEND_STEPS_AUTO)
    ann, bob = await pair(store)
    result = await store.send(sender=ann, recipient=bob, text="hi", client_id="c1", origin="o1")
    assert isinstance(result, SendResult) and result.created and result.entry is None
    # (The follows' outbox entries went before, leaving the stream empty.)
    assert await store.redis.xlen(keys.outbox(bob)) == 0
    for key in (keys.client_ids_in(bob), keys.sending(ann, bob)):
        assert not await store.redis.exists(key), key
    assert await store.outbox.reconcile(min_idle_ms=0) == 0
    assert await store.redis.hget(keys.client_ids(ann), "c1") == f"{result.message_id}|{bob}"


@pytest.mark.timeout(60)
async def test_one_valkey_sends_in_one_script_and_a_cluster_in_steps(
    redis_url: str, cluster_url: str
) -> None:
    single = async_redis_client(redis_url, decode_responses=True)
    cluster = RedisTarget(cluster_url, True).client()
    try:
        assert Store(single, event_retention=10).sends.whole
        assert not Store(single, event_retention=10, send_steps=SEND_STEPS_ALWAYS).sends.whole
        assert not Store(cluster, event_retention=10).sends.whole
    finally:
        await single.aclose()
        await cluster.aclose()


def test_the_setting_is_auto_by_default_or_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from chat.config import Settings

    monkeypatch.delenv("DMHUB_SEND_STEPS", raising=False)
    assert Settings.from_env().send_steps == SEND_STEPS_AUTO
    monkeypatch.setenv("DMHUB_SEND_STEPS", " Steps ")
    assert Settings.from_env().send_steps == SEND_STEPS_ALWAYS
    monkeypatch.setenv("DMHUB_SEND_STEPS", "fused")
    with pytest.raises(SystemExit, match="DMHUB_SEND_STEPS"):
        Settings.from_env()


async def test_a_message_of_an_ongoing_conversation_costs_fifteen_calls(
    stores: Callable[[str], Awaitable[Store]], redis_url: str
) -> None:
    # Each redis.call costs Valkey about 3.5 µs beyond its command's own work
    # (docs/performance.md): their count is the lever. A follower pair, an
    # existing conversation, the limits on, a client_id: the common send.
    store = await stores(SEND_STEPS_AUTO)
    ann, bob = await pair(store)
    for n in range(3):
        for a, b in ((ann, bob), (bob, ann)):
            await store.send(sender=a, recipient=b, text="warm", client_id=f"w{a}{n}", origin="-")
    master = redis_sync.Redis.from_url(redis_url, decode_responses=True)
    try:
        master.config_resetstat()
        for n in range(4):
            result = await store.send(
                sender=ann, recipient=bob, text="x", client_id=f"c{n}", origin="-"
            )
            assert isinstance(result, SendResult) and result.created
        stats = master.info("commandstats")
    finally:
        master.close()
    calls = {
        name.removeprefix("cmdstat_"): row["calls"] / 4
        for name, row in stats.items()
        if name not in ("cmdstat_fcall", "cmdstat_evalsha", "cmdstat_config|resetstat")
    }
    assert calls == {
        "hget": 1,  # the client_id in cid:{s}
        # each user hash: account, bucket or generator, the pair's letters, the
        # top of its view (t:<peer>: no ZREVRANGE of either view), r's unread
        # count (u:<s>)
        "hmget": 2,
        "time": 1,
        # user:{r} (generator, top, unread count one up), user:{s} (bucket,
        # top, read pointer, unread count 0): no HINCRBY, no HSET rd, no HDEL
        "hset": 2,
        "zadd": 4,  # both views, both inboxes
        "hsetex": 1,  # cid:{s}
        "xadd": 2,
        "spublish": 2,
    }, calls
    assert sum(calls.values()) == 15
