"""The hot path's scripts as one Valkey function library (chat/store/lua.py,
HOT): its source's shape, and a node that lost it getting it back at the
first call that misses it, on one Valkey and on every master of a cluster."""

from __future__ import annotations

import contextlib
import re

import pytest
import redis

from chat.config import SEND_STEPS_ALWAYS
from chat.store import keys
from chat.store.lua import HOT, FunctionLibrary, Library, LibraryError
from chat.store.sends import SEND_LIB, SendResult
from chat.store.store import Store
from tests.cluster_support import handles_on_shards
from tests.support import _seeds, async_redis_client, hot_lane, is_cluster_url

REGISTERED = re.compile(r"function_name = '([A-Za-z0-9_]+)'")


def test_every_hot_script_is_a_function_of_one_versioned_library() -> None:
    source = HOT.source
    assert source.startswith(f"#!lua name={HOT.name}\n")
    assert re.fullmatch(r"dmhub_[0-9a-f]{12}", HOT.name)
    wanted = {
        "send_prepare",
        "send_decide",
        "send_apply",
        "send_whole",
        "send_unmark",
        "facts_sender",
        "facts_recipient",
        "counter",
        "outbox_scan",
    }
    assert set(HOT.functions) == wanted
    assert REGISTERED.findall(source) == [f"{HOT.name}_{name}" for name in HOT.functions]
    # Each shared piece is defined once, however many functions call it.
    for piece in ("decide", "outbox_add", "owed_messages", "write_sender_side"):
        assert len(re.findall(rf"local function {piece}\(", source)) == 1, piece
    # Flags from a script's shebang, and those given to `add`.
    assert "'no-writes', 'allow-cross-slot-keys'}, callback" in source
    assert f"'{HOT.name}_facts_sender', flags = {{'no-writes'}}" in source


def test_a_function_or_a_piece_defined_twice_is_refused() -> None:
    library = FunctionLibrary("t")
    library.add("one", "return 1\n")
    with pytest.raises(LibraryError):
        library.add("one", "return 2\n")
    with pytest.raises(LibraryError):
        library.add("bad-name", "return 1\n")
    clash = FunctionLibrary("t")
    clash.add("a", "return f()\n", Library("local function f() return 1 end\n"))
    clash.add("b", "return f()\n", Library("local function f() return 2 end\n"))
    with pytest.raises(LibraryError):
        _ = clash.source
    built = FunctionLibrary("t")
    built.add("a", "return 1\n")
    _ = built.source
    with pytest.raises(LibraryError):  # its name is its source's hash: frozen once built
        built.add("b", "return 1\n")


def test_a_changed_script_is_a_library_of_another_name() -> None:
    first, second = FunctionLibrary(), FunctionLibrary()
    first.add("a", "return 1\n")
    second.add("a", "return 2\n")
    assert first.name != second.name
    assert first.name.startswith("dmhub_")


async def test_the_library_loads_and_a_piece_reads_the_calls_argv(redis_url: str) -> None:
    """owed_messages (send_side.lua) reads ARGV itself, not through the body:
    the library's ARGV is the current call's."""
    library = FunctionLibrary("argvtest")
    function = library.add("owed", "return {owed_messages(KEYS[1], 1)}\n", SEND_LIB)
    lane = hot_lane(redis_url)
    try:
        # One owed id, no member passed: reported missing (the view is empty).
        first = await lane.fcall(function.qualified, library, ["v:{ann}"], ["1", "7"])
        second = await lane.fcall(function.qualified, library, ["v:{ann}"], ["1", "9"])
    finally:
        await lane.aclose()
        for node in _masters(redis_url):
            with contextlib.closing(node):
                if any(str(row[1], "ascii") == library.name for row in node.function_list()):
                    node.function_delete(library.name)
    assert first[0] == ["7"] and second[0] == ["9"]


def _masters(url: str) -> list[redis.Redis]:
    if not is_cluster_url(url):
        return [redis.Redis.from_url(url)]
    return [redis.Redis(host=host, port=port) for host, port in _seeds(url)]


def _flush_functions(url: str) -> None:
    for node in _masters(url):
        with contextlib.closing(node):
            node.function_flush()


def _libraries(url: str) -> list[list[str]]:
    found = []
    for node in _masters(url):
        with contextlib.closing(node):
            found.append(sorted(str(row[1], "ascii") for row in node.function_list()))
    return found


@pytest.mark.timeout(60)
async def test_a_node_that_lost_the_library_gets_it_at_the_first_call(redis_url: str) -> None:
    client = async_redis_client(redis_url, decode_responses=True)
    lane = hot_lane(redis_url)
    store = Store(client, event_retention=100, lane=lane)
    steps = Store(client, event_retention=100, lane=lane, send_steps=SEND_STEPS_ALWAYS)
    try:
        # A pair whose users are on two masters of the cluster (any on one Valkey).
        ann, bob, cy = handles_on_shards(3, prefix="fl")
        for lc in (ann, bob, cy):
            assert await store.create_user(lc, "x", lc, "person")
        await store.follow(bob, ann)
        await store.follow(cy, ann)
        sent = await store.send(sender=ann, recipient=bob, text="one", client_id="c1", origin="-")
        assert isinstance(sent, SendResult) and sent.created
        assert any(HOT.name in names for names in _libraries(redis_url))

        # A restart without its data, a FUNCTION FLUSH, a promoted replica
        # that never had it: every master loses the library.
        _flush_functions(redis_url)
        assert _libraries(redis_url) == [[] for _ in _masters(redis_url)]
        again = await store.send(sender=ann, recipient=bob, text="two", client_id="c2", origin="-")
        assert isinstance(again, SendResult) and again.created
        _flush_functions(redis_url)
        # The three steps and the facts, each a first call somewhere.
        split = await steps.send(sender=ann, recipient=cy, text="three", client_id="c3", origin="-")
        assert isinstance(split, SendResult) and split.created
        facts = await store.pair_facts(bob, ann)
        assert facts.facts.recipient_exists
        assert (await store.count_in_window(keys.typing_count(ann), 1000))[0] == 1
        # Every master (one per user on the cluster) has it again, once.
        assert all(names == [HOT.name] for names in _libraries(redis_url))
        assert await client.zcard(keys.view(bob, ann)) == 2
        assert await client.zcard(keys.view(cy, ann)) == 1
    finally:
        await lane.aclose()
        await client.aclose()
