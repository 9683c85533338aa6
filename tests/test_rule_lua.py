"""The rule's Lua twin agrees with rule.py, and send.lua reads the facts as pair_facts does.

A send is decided inside send.lua by chat/permission/rule.lua, everything else
by `decide` in rule.py. These tests run the Lua in a real Valkey: the first over
every combination of facts, the second over real Redis state.
"""

from __future__ import annotations

import dataclasses
import itertools

import msgspec
import pytest

from chat.permission import Facts, Reason, decide
from chat.store import keys
from chat.store.sends import (
    RULE_LUA,
    SEND_DECIDE_LUA,
    SEND_LIB,
    SEND_WHOLE_LUA,
    SendRefused,
    SendResult,
)
from chat.store.store import Store
from tests.support import redis_client

# Every fact but same_account, which the store answers before any script runs.
FACT_NAMES = [f.name for f in dataclasses.fields(Facts) if f.name != "same_account"]

# ARGV holds name, value pairs: the names come from Facts itself, so a fact the
# Lua spells differently reads as nil and shows up as a disagreement.
EVALUATE = (
    RULE_LUA
    + """
local f = {}
for i = 1, #ARGV, 2 do
  f[ARGV[i]] = ARGV[i + 1] == '1'
end
local allowed, reason, folder = decide(f)
return {allowed and 1 or 0, reason, folder or ''}
"""
)


def test_the_send_scripts_run_the_rule_lua() -> None:
    decide = SEND_LIB.piece("decide")
    assert decide in RULE_LUA and "local function decide(f)" in decide
    assert decide in SEND_DECIDE_LUA and decide in SEND_WHOLE_LUA


# Keyless: rule.lua evaluated as a pure function of its ARGV facts, so where it
# runs does not matter; the cluster's scripts are proven by the send tests.
@pytest.mark.single_layout("keyless evaluation of the pure rule; no data, no slots")
def test_lua_rule_agrees_with_rule_py_on_every_input(redis_url: str) -> None:
    assert len(FACT_NAMES) == 11
    combos = [
        dict(zip(FACT_NAMES, values, strict=True))
        for values in itertools.product((False, True), repeat=len(FACT_NAMES))
    ]
    client = redis_client(redis_url, decode_responses=True)
    try:
        sha = client.script_load(EVALUATE)
        with client.pipeline(transaction=False) as pipe:
            for combo in combos:
                args = [part for name in FACT_NAMES for part in (name, int(combo[name]))]
                pipe.evalsha(sha, 0, *args)
            replies = pipe.execute()
    finally:
        client.close()
    assert len(replies) == 2048
    disagreements = []
    for combo, (allowed, reason, folder) in zip(combos, replies, strict=True):
        want = decide(Facts(**combo))
        got = (bool(allowed), reason, folder or None)
        if got != (want.allowed, want.reason.value, want.folder):
            disagreements.append((combo, got, want))
    assert not disagreements, f"{len(disagreements)} disagreements, first: {disagreements[0]}"


# The state behind each fact, written as the app writes it.
STATE_FACTS = [
    "sender_suspended",
    "recipient_suspended",
    "sender_restricted",
    "sender_blocks_recipient",
    "recipient_blocks_sender",
    "recipient_follows_sender",
    "recipient_open_dms",
    "recipient_wrote_to_sender",
    "recipient_has_inbox_conversation",
]


def state(**true: bool) -> dict[str, bool]:
    """Nothing between the two accounts, unless told."""
    return dict.fromkeys(STATE_FACTS, False) | true


# What a send writes, none of which `arrange` touches: a refusal leaves every
# one of them absent.
def written_by_a_send(a: str, b: str) -> list[str]:
    return [
        keys.view(a, b),
        keys.view(b, a),
        keys.heard(b),
        keys.events(a),
        keys.events(b),
        keys.client_ids(a),
        keys.inbox(a),
        keys.requests(a),
        keys.requests(b),
        keys.wrote(a),
    ]


async def arrange(
    store: Store,
    index: int,
    facts: dict[str, bool],
    *,
    sender_exists: bool = True,
    recipient_exists: bool = True,
) -> tuple[str, str]:
    """Accounts Snd{index} and Rcp{index} with these facts between them."""
    a, b = f"Snd{index}", f"Rcp{index}"
    a_lc, b_lc = a.lower(), b.lower()
    if sender_exists:
        await store.create_user(a, "-", a, "person")
    if recipient_exists:
        await store.create_user(b, "-", b, "person")
    async with store.redis.pipeline(transaction=False) as pipe:
        if sender_exists and facts["sender_suspended"]:
            pipe.hset(keys.user(a_lc), "active", "0")
        if recipient_exists and facts["recipient_suspended"]:
            pipe.hset(keys.user(b_lc), "active", "0")
        if sender_exists and facts["sender_restricted"]:
            pipe.hset(keys.user(a_lc), "restricted", "1")
        if recipient_exists and facts["recipient_open_dms"]:
            pipe.hset(keys.user(b_lc), "open_dms", "1")
        # Edges may outlive an account, so they are written either way; each
        # with its letter in the owner's hash (pair_flags.lua), which only a
        # live account's hash gets.
        letters = {a_lc: "", b_lc: ""}
        if facts["sender_blocks_recipient"]:
            pipe.zadd(keys.blocking(a_lc), {b_lc: 1})
            letters[a_lc] += keys.BLOCKS
        if facts["recipient_blocks_sender"]:
            pipe.zadd(keys.blocking(b_lc), {a_lc: 1})
            letters[b_lc] += keys.BLOCKS
        if facts["recipient_follows_sender"]:
            pipe.zadd(keys.following(b_lc), {a_lc: 1})
            letters[b_lc] += keys.FOLLOWS
        if facts["recipient_wrote_to_sender"]:
            pipe.sadd(keys.wrote(b_lc), a_lc)
            letters[b_lc] += keys.WROTE
        if facts["recipient_has_inbox_conversation"]:
            pipe.zadd(keys.inbox(b_lc), {a_lc: 1})
        for owner, peer, exists in ((a_lc, b_lc, sender_exists), (b_lc, a_lc, recipient_exists)):
            if exists and letters[owner]:
                pipe.hset(keys.user(owner), keys.pair_field(peer), letters[owner])
        await pipe.execute()
    return a_lc, b_lc


async def test_send_script_decides_as_pair_facts_and_decide_do(store: Store) -> None:
    n = len(STATE_FACTS)
    cases = [(True, True, values) for values in itertools.product((False, True), repeat=n)] + [
        (sender, recipient, values)
        for sender, recipient in ((False, True), (True, False), (False, False))
        for values in ((False,) * n, (True,) * n)
    ]
    outcomes: set[Reason] = set()
    for index, (sender_exists, recipient_exists, values) in enumerate(cases):
        facts = dict(zip(STATE_FACTS, values, strict=True))
        a, b = await arrange(
            store, index, facts, sender_exists=sender_exists, recipient_exists=recipient_exists
        )
        want = decide((await store.pair_facts(a, b)).facts)
        result = await store.send(
            sender=a, recipient=b, text="hi", client_id=f"c{index}", origin="-"
        )
        context = (sender_exists, recipient_exists, facts, want)
        outcomes.add(want.reason)
        if want.allowed:
            assert isinstance(result, SendResult) and result.created, context
            assert result.folder == want.folder, context
            message = msgspec.json.decode(result.message_json)
            assert (message["from"], message["to"]) == (f"Snd{index}", f"Rcp{index}")
        else:
            shown = f"Rcp{index}" if recipient_exists else None
            assert result == SendRefused(want.reason, shown), context
            assert await store.redis.exists(*written_by_a_send(a, b)) == 0, context
            # Nor a field of either user hash, and no hash for an account
            # that does not exist (it would take the handle).
            for lc, exists in ((a, sender_exists), (b, recipient_exists)):
                assert await store.redis.exists(keys.user(lc)) == exists, context
            assert await store.redis.hget(keys.user(b), keys.ID_GENERATOR_FIELD) is None, context
            # Nor the read state: r's unread count, s's read pointer and count.
            assert await store.redis.hget(keys.user(b), keys.unread_field(a)) is None, context
            for field in (keys.read_field(b), keys.unread_field(b)):
                assert await store.redis.hget(keys.user(a), field) is None, context
            # The letters a send adds: A wrote to B, B heard from A.
            for lc, peer, letter in ((a, b, keys.WROTE), (b, a, keys.HEARD)):
                letters = await store.redis.hget(keys.user(lc), keys.pair_field(peer)) or ""
                assert letter not in letters, context
    assert outcomes == set(Reason) - {Reason.SELF}


async def test_a_retry_gets_its_original_even_when_the_rule_now_refuses(store: Store) -> None:
    a, b = await arrange(store, 1, state(recipient_follows_sender=True))
    first = await store.send(sender=a, recipient=b, text="hi", client_id="r", origin="-")
    assert isinstance(first, SendResult) and first.created
    await store.block(b, a)
    again = await store.send(sender=a, recipient=b, text="other", client_id="r", origin="-")
    assert again == SendResult(False, first.message_json, first.message_id)
    other = await store.send(sender=a, recipient=b, text="hi", client_id="s", origin="-")
    assert other == SendRefused(Reason.CANNOT_RECEIVE, "Rcp1")


async def test_self_is_refused_but_a_retry_still_gets_its_original(store: Store) -> None:
    a, b = await arrange(store, 1, state(recipient_open_dms=True))
    first = await store.send(sender=a, recipient=b, text="hi", client_id="r", origin="-")
    assert isinstance(first, SendResult)
    to_self = await store.send(sender=a, recipient=a, text="hi", client_id=None, origin="-")
    assert to_self == SendRefused(Reason.SELF, None)
    retried = await store.send(sender=a, recipient=a, text="hi", client_id="r", origin="-")
    assert retried == SendResult(False, first.message_json, first.message_id)


async def test_a_stored_handle_that_needs_escaping_is_escaped(store: Store) -> None:
    # Handles are meant to need no escaping (validation.HANDLE_RE), but the
    # script must not produce broken JSON when a stored one does.
    a, b = await arrange(store, 1, state(recipient_open_dms=True))
    await store.redis.hset(keys.user(a), "handle", 'Snd1"\n')
    result = await store.send(sender=a, recipient=b, text="hi", client_id=None, origin="-")
    assert isinstance(result, SendResult)
    odd = msgspec.json.encode('Snd1"\n').decode()
    assert f'"from":{odd},' in result.message_json  # the bytes msgspec would write
    assert msgspec.json.decode(result.message_json)["from"] == 'Snd1"\n'
