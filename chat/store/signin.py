"""Counters behind the sign-in and sign-up limits (chat/signin.py decides)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chat.store import keys


@dataclass(frozen=True, slots=True)
class SigninState:
    ip_failures: int
    ip_window_left_s: int
    account_failures: int
    account_last_failure_ms: int


class SigninStore:
    def __init__(self, client: Any) -> None:
        self.redis = client

    async def state(self, ip: str, lc: str) -> SigninState:
        # Two slots (the IP's and the account's): separate commands, not a script.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.ip_login_failures(ip))
            pipe.ttl(keys.ip_login_failures(ip))
            ip_count, ttl = await pipe.execute()
        n, last = await self.redis.hmget(keys.account_login_failures(lc, ip), ["n", "t"])
        return SigninState(int(ip_count or 0), max(int(ttl), 1), int(n or 0), int(last or 0))

    async def failed(self, ip: str, lc: str, now_ms: int, window_s: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(keys.ip_login_failures(ip))
            pipe.expire(keys.ip_login_failures(ip), window_s, nx=True)
            await pipe.execute()
        account = keys.account_login_failures(lc, ip)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(account, "n", 1)
            pipe.hset(account, "t", str(now_ms))
            pipe.expire(account, window_s)
            await pipe.execute()

    async def succeeded(self, ip: str, lc: str) -> None:
        # The IP's own count stays: signing in to an account of one's own must not
        # reset the budget for guessing at others.
        await self.redis.delete(keys.account_login_failures(lc, ip))

    async def count_signup(self, ip: str, window_s: int) -> tuple[int, int]:
        """Counts one sign-up attempt; (attempts in the window, seconds left in it)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(keys.ip_signups(ip))
            pipe.expire(keys.ip_signups(ip), window_s, nx=True)
            pipe.ttl(keys.ip_signups(ip))
            count, _, ttl = await pipe.execute()
        return int(count), max(int(ttl), 1)

    async def uncount_signup(self, ip: str) -> None:
        await self.redis.decr(keys.ip_signups(ip))
