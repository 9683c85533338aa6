"""Message ids (chat/store/msgid.py): the arithmetic, and its Lua twin held equal."""

from __future__ import annotations

import itertools

from chat.store import msgid
from chat.store.sends import MSGID_LUA, SEND_DECIDE_LUA, SEND_LIB, SEND_WHOLE_LUA
from tests.support import redis_client


def test_an_id_is_at_the_clock_and_above_everything_seen_with_its_parity() -> None:
    assert msgid.next_id(5, 0, 0, 0, 0) == 5000
    assert msgid.next_id(5, 0, 0, 0, 1) == 5001
    # The last id of the slot, the sender's view and the recipient's view all push it up.
    assert msgid.next_id(5, 7000, 0, 0, 1) == 7001
    assert msgid.next_id(5, 7000, 0, 0, 0) == 7002
    assert msgid.next_id(5, 0, 9000, 0, 1) == 9001
    assert msgid.next_id(5, 0, 0, 9001, 1) == 9003


def test_directions_have_opposite_parities() -> None:
    assert msgid.direction("alice", "bob") == 1 - msgid.direction("bob", "alice")


def test_ids_of_one_direction_increase_and_never_meet_the_other_direction() -> None:
    a_to_b, b_to_a = msgid.direction("a", "b"), msgid.direction("b", "a")
    last_b = last_a = top = 0
    issued: list[int] = []
    # Both sides write in the same millisecond, each reply above what it had seen.
    for turn in range(50):
        if turn % 3:
            last_b = msgid.next_id(1, last_b, top, top, a_to_b)
            issued.append(last_b)
        else:
            last_a = msgid.next_id(1, last_a, top, top, b_to_a)
            issued.append(last_a)
        top = issued[-1]
    assert issued == sorted(issued) and len(set(issued)) == len(issued)


def test_ids_stay_exact_as_doubles_until_the_year_2255() -> None:
    year_2255_ms = 9_000_000_000_000  # 2255-03-14
    assert msgid.next_id(year_2255_ms, 0, 0, 0, 1) < msgid.MAX_ID


def test_the_send_scripts_use_the_lua_twin() -> None:
    for name in ("IDS_PER_MS", "next_message_id", "id_string"):
        piece = SEND_LIB.piece(name)
        assert piece in MSGID_LUA and piece in SEND_DECIDE_LUA and piece in SEND_WHOLE_LUA


EVALUATE = (
    MSGID_LUA
    + """
local out = {}
for i = 1, #ARGV, 5 do
  out[#out + 1] = id_string(next_message_id(tonumber(ARGV[i]), tonumber(ARGV[i + 1]),
    tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])))
end
return out
"""
)


def test_lua_ids_agree_with_python_on_a_grid(redis_url: str) -> None:
    now = 1_764_000_000_000
    near = [0, now * 1000 - 1, now * 1000, now * 1000 + 1, now * 1000 + 2, now * 1000 + 999_999]
    grid = list(itertools.product([now, now + 1], near, near, near, [0, 1]))
    client = redis_client(redis_url, decode_responses=True)
    try:
        got: list[str] = []
        for start in range(0, len(grid), 500):
            chunk = grid[start : start + 500]
            args = [value for case in chunk for value in case]
            got.extend(client.eval(EVALUATE, 0, *args))
    finally:
        client.close()
    want = [str(msgid.next_id(*case)) for case in grid]
    assert len(got) == len(grid) == 2 * 6**3 * 2
    mismatches = [(c, g, w) for c, g, w in zip(grid, got, want, strict=True) if g != w]
    assert not mismatches, mismatches[:3]
