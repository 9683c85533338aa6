"""The arithmetic of every limit, as pure functions (PROTOCOL.md v1.1, Limits).

Redis holds the state and the scripts do the bookkeeping; the decisions are
made here, and, for the limits checked inside the send script, by their Lua
twins in limits.lua, which tests/test_limits.py holds equal to these.

Three shapes cover every limit:

- `gcra`: a token bucket (burst of N, refilled at N per period) kept as one
  number, the theoretical arrival time, so its state is a single key that
  expires once the bucket is full again (`messages`).
- `sliding_window`: at most N events in any window, from the times of the
  events still inside it, kept in a sorted set capped by N itself
  (`new_conversations`, `requests_received`).
- `fixed_window`: a counter that starts with the first event and expires with
  its window; cheap, and it tells the one event that crosses the limit apart
  from the ones after it (`typing`, `reports`).

All times are integer milliseconds, so both twins compute the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

# The names clients see in `limit`.
MESSAGES = "messages"
NEW_CONVERSATIONS = "new_conversations"
REQUESTS_RECEIVED = "requests_received"
TYPING = "typing"
SIGNUPS = "signups"
LOGINS = "logins"
SOCKETS = "sockets"
REPORTS = "reports"

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
TYPING_WINDOW_MS = 10_000
# A socket slot frees when another socket of the user closes; nothing tells
# when that will be, so the client is asked to wait this long.
SOCKETS_RETRY_AFTER_S = 5


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    # Milliseconds until the same event would be allowed; 0 when allowed.
    retry_after_ms: int = 0


@dataclass(frozen=True, slots=True)
class BucketStep:
    verdict: Verdict
    # The new theoretical arrival time to store (unchanged when refused).
    tat_ms: int


def gcra_interval(burst: int, period_ms: int) -> int:
    """Milliseconds between two refills of one token."""
    return max(1, period_ms // burst)


def gcra(tat_ms: int | None, now_ms: int, burst: int, period_ms: int) -> BucketStep:
    """Take one token from a bucket of `burst` refilled at `burst` per `period_ms`.

    `tat_ms` is the stored state (None when there is none, i.e. a full bucket):
    the time at which the bucket would be full again plus one interval per
    token. A token can be taken while that lies less than a burst's worth of
    intervals ahead.
    """
    interval = gcra_interval(burst, period_ms)
    tat = now_ms if tat_ms is None or tat_ms < now_ms else tat_ms
    ahead = tat + interval - now_ms
    capacity = interval * burst
    if ahead > capacity:
        return BucketStep(Verdict(False, ahead - capacity), tat)
    return BucketStep(Verdict(True), tat + interval)


def sliding_window(
    count: int, oldest_ms: int | None, now_ms: int, limit: int, window_ms: int
) -> Verdict:
    """May one more event happen, given the `count` events of the last `window_ms`?

    `oldest_ms` is the time of the oldest of them; the next one is allowed
    once it leaves the window.
    """
    if count < limit:
        return Verdict(True)
    oldest = now_ms if oldest_ms is None else oldest_ms
    return Verdict(False, max(1, oldest + window_ms - now_ms))


@dataclass(frozen=True, slots=True)
class WindowCount:
    verdict: Verdict
    # True for the first refused event of a window only: the one to tell the
    # client about (typing sends one error frame per window, not one per frame).
    first_refusal: bool


def fixed_window(count: int, ttl_ms: int, limit: int) -> WindowCount:
    """`count` events so far in this window (this one included), which ends in `ttl_ms`."""
    if count <= limit:
        return WindowCount(Verdict(True), False)
    return WindowCount(Verdict(False, max(1, ttl_ms)), count == limit + 1)


def retry_after_s(retry_after_ms: int) -> int:
    """Whole seconds, at least 1, as `retry_after` and `Retry-After` carry them."""
    return max(1, -(-retry_after_ms // 1000))
