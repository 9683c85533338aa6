"""Counters behind the sign-in and sign-up limits (chat/signin.py decides)."""

from __future__ import annotations

from typing import Any

from chat.store import keys


class SigninStore:
    def __init__(self, client: Any) -> None:
        self.redis = client

    async def _count(self, key: str, window_s: int) -> tuple[int, int]:
        """One more in a fixed window that opens with the first; (count, seconds left)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window_s, nx=True)
            pipe.ttl(key)
            count, _, ttl = await pipe.execute()
        return int(count), max(int(ttl), 1)

    async def begin(self, ip: str, window_s: int) -> tuple[int, int]:
        """Count one sign-in attempt from the IP; (attempts in the window, seconds left)."""
        return await self._count(keys.ip_login_failures(ip), window_s)

    async def account_failures(self, ip: str, lc: str) -> tuple[int, int]:
        """(failures of this IP on this account, when the last was, ms)."""
        n, last = await self.redis.hmget(keys.account_login_failures(lc, ip), ["n", "t"])
        return int(n or 0), int(last or 0)

    async def failed(self, ip: str, lc: str, now_ms: int, window_s: int) -> None:
        # The IP's attempt stays counted (begin); the account remembers the IP.
        account = keys.account_login_failures(lc, ip)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(account, "n", 1)
            pipe.hset(account, "t", str(now_ms))
            pipe.expire(account, window_s)
            await pipe.execute()

    async def succeeded(self, ip: str, lc: str, had_failures: bool, window_s: int) -> None:
        """A right password: the attempt is given back, and this IP's backoff on the
        account ends. Failures on other accounts stay counted."""
        # Two slots (the IP's and the account's): a plain pipeline, not MULTI.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.decr(keys.ip_login_failures(ip))
            # The window may have ended meanwhile: never leave a key without a TTL.
            pipe.expire(keys.ip_login_failures(ip), window_s, nx=True)
            if had_failures:
                pipe.delete(keys.account_login_failures(lc, ip))
            await pipe.execute()

    async def count_signup(self, ip: str, window_s: int) -> tuple[int, int]:
        """Counts one sign-up attempt; (attempts in the window, seconds left in it)."""
        return await self._count(keys.ip_signups(ip), window_s)

    async def uncount_signup(self, ip: str, window_s: int) -> None:
        # The window may have ended during the password hash: a bare DECR would
        # then leave a key at -1 with no TTL, one per IP, forever.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.decr(keys.ip_signups(ip))
            pipe.expire(keys.ip_signups(ip), window_s, nx=True)
            await pipe.execute()
