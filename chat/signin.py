"""Sign-in throttling arithmetic (v1.1 Limits), pure and unit-tested.

Two brakes, neither of which can be pulled against someone else:

- `logins`: failed sign-ins per client IP per window. An IP that guesses too
  much is refused everything for the rest of the window, whichever account it
  tries; nobody else is affected.
- per-account backoff: after a few failures from one IP on one account, that
  IP (and only that IP) waits longer and longer between attempts on that
  account. A correct password from an IP with no recent failures on the
  account is never slowed down, so nobody can lock an account out.
"""

from __future__ import annotations

from dataclasses import dataclass

# Mistyping a password a few times costs nothing.
FREE_ACCOUNT_FAILURES = 3
FIRST_BACKOFF_S = 1
MAX_BACKOFF_S = 15 * 60


def account_backoff_s(failures: int) -> int:
    """How long an IP waits, after its n-th failure on one account, before the next try."""
    if failures <= FREE_ACCOUNT_FAILURES:
        return 0
    exponent = min(failures - FREE_ACCOUNT_FAILURES - 1, 20)
    backoff: int = FIRST_BACKOFF_S << exponent
    return min(backoff, MAX_BACKOFF_S)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an attempt is refused before its password is checked, and for how long."""

    detail: str
    retry_after_s: float


def ip_refusal(failures: int, limit: int, window_left_s: float) -> Refusal | None:
    """The `logins` limit: `limit` failures per IP per window; 0 turns it off."""
    if limit <= 0 or failures < limit:
        return None
    return Refusal(
        "Too many failed sign-ins from your network; try again later.", max(window_left_s, 1)
    )


def account_refusal(failures: int, last_failure_ms: int, now_ms: int) -> Refusal | None:
    """The per-account backoff of this IP: refused until its wait after the last failure."""
    wait_left_ms = last_failure_ms + account_backoff_s(failures) * 1000 - now_ms
    if failures <= 0 or wait_left_ms <= 0:
        return None
    return Refusal(
        "Too many failed sign-ins to this account from your network; wait before trying again.",
        wait_left_ms / 1000,
    )
