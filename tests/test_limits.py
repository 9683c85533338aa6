"""The limits' arithmetic (chat/limits.py), and its Lua twins held equal to it."""

from __future__ import annotations

import itertools

import pytest

from chat import limits
from chat.limits import BucketStep, Verdict, fixed_window, gcra, retry_after_s, sliding_window
from chat.store.sends import (
    LIMITS_LUA,
    SEND_DECIDE_LUA,
    SEND_LIB,
    SEND_PREPARE_LUA,
    SEND_WHOLE_LUA,
)
from tests.support import redis_client


def drain(burst: int, period_ms: int, now: int, count: int) -> tuple[int | None, list[bool]]:
    tat: int | None = None
    allowed = []
    for _ in range(count):
        step = gcra(tat, now, burst, period_ms)
        allowed.append(step.verdict.allowed)
        tat = step.tat_ms
    return tat, allowed


def test_a_bucket_allows_its_burst_at_once_then_refuses() -> None:
    tat, allowed = drain(120, limits.MINUTE_MS, 1_000_000, 121)
    assert allowed == [True] * 120 + [False]
    refused = gcra(tat, 1_000_000, 120, limits.MINUTE_MS)
    # One token comes back every 500 ms.
    assert refused.verdict == Verdict(False, 500)
    assert refused.tat_ms == tat


def test_a_bucket_refills_at_its_rate_and_never_above_its_burst() -> None:
    tat, _ = drain(3, 3000, 0, 3)  # empty at t=0; one token per second
    assert not gcra(tat, 999, 3, 3000).verdict.allowed
    assert gcra(tat, 1000, 3, 3000).verdict.allowed
    # After a long pause the bucket holds its burst, not more.
    later = 1_000_000
    _, allowed = drain(3, 3000, later, 4)
    assert allowed == [True, True, True, False]
    assert gcra(tat, later, 3, 3000).verdict.allowed


def test_a_bucket_state_expires_when_full() -> None:
    # The stored time is where a full bucket would start: the key can expire then.
    step = gcra(None, 5000, 10, 60_000)
    assert step == BucketStep(Verdict(True), 5000 + 6000)


def test_sliding_window() -> None:
    assert sliding_window(0, None, 10, 3, 100) == Verdict(True)
    assert sliding_window(2, 5, 10, 3, 100) == Verdict(True)
    # Full: the next is allowed when the oldest leaves the window.
    assert sliding_window(3, 5, 10, 3, 100) == Verdict(False, 95)
    assert sliding_window(3, 5, 104, 3, 100) == Verdict(False, 1)


def test_fixed_window_tells_only_the_first_refusal() -> None:
    assert fixed_window(20, 4000, 20).verdict.allowed
    first = fixed_window(21, 3000, 20)
    assert first.verdict == Verdict(False, 3000) and first.first_refusal
    later = fixed_window(22, 2500, 20)
    assert not later.verdict.allowed and not later.first_refusal


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after_s(ms) for ms in (0, 1, 999, 1000, 1001, 59_500)] == [1, 1, 1, 1, 2, 60]


def test_the_send_scripts_run_the_limits_lua() -> None:
    gcra, window = SEND_LIB.piece("gcra"), SEND_LIB.piece("sliding_window")
    assert gcra in LIMITS_LUA and window in LIMITS_LUA
    assert gcra in SEND_PREPARE_LUA and window in SEND_PREPARE_LUA and window in SEND_DECIDE_LUA
    assert gcra in SEND_WHOLE_LUA and window in SEND_WHOLE_LUA


EVALUATE = (
    LIMITS_LUA
    + """
local out = {}
for i = 1, #ARGV, 5 do
  local state = ARGV[i] ~= '' and tonumber(ARGV[i]) or nil
  local now, n, period = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  if ARGV[i + 4] == 'gcra' then
    local ok, tat, wait = gcra(state, now, n, period)
    table.insert(out, {ok and 1 or 0, string.format('%d', tat), wait})
  else
    local count = tonumber(string.sub(ARGV[i + 4], 2))
    local ok, wait = sliding_window(count, state, now, n, period)
    table.insert(out, {ok and 1 or 0, wait})
  end
end
return out
"""
)


def test_lua_limits_agree_with_limits_py(redis_url: str) -> None:
    now = 1_764_000_000_000  # real clock values: 13 digits
    cases: list[tuple[int | None, int, int, int, str]] = []
    for burst, period in ((1, 60_000), (3, 60_000), (7, 60_000), (120, 60_000), (5, 1000)):
        for offset in (None, -10_000, 0, 1, 499, 500, 8571, 60_000, 420_000, 59_999):
            tat = None if offset is None else now + offset
            cases.append((tat, now, burst, period, "gcra"))
    for count, limit, oldest in itertools.product(
        (0, 1, 2, 3, 50), (1, 3, 50), (None, -5, -86_399_999)
    ):
        state = None if oldest is None else now + oldest
        cases.append((state, now, limit, limits.DAY_MS, f"c{count}"))
    args: list[str | int] = []
    for state, at, n, period, kind in cases:
        args += ["" if state is None else state, at, n, period, kind]
    client = redis_client(redis_url, decode_responses=True)
    try:
        replies = client.eval(EVALUATE, 0, *args)
    finally:
        client.close()
    assert len(replies) == len(cases)
    for case, reply in zip(cases, replies, strict=True):
        state, at, n, period, kind = case
        if kind == "gcra":
            step = gcra(state, at, n, period)
            want = [int(step.verdict.allowed), str(step.tat_ms), step.verdict.retry_after_ms]
        else:
            verdict = sliding_window(int(kind[1:]), state, at, n, period)
            want = [int(verdict.allowed), verdict.retry_after_ms]
        assert reply == want, case


@pytest.mark.parametrize("limit", [1, 2, 30])
def test_fixed_window_refuses_from_the_limit_on(limit: int) -> None:
    results = [fixed_window(count, 1000, limit) for count in range(1, limit + 4)]
    assert [r.verdict.allowed for r in results] == [True] * limit + [False] * 3
    assert [r.first_refusal for r in results] == [False] * limit + [True, False, False]
