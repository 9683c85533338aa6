"""Sign-in and sign-up limits (v1.1 Limits): per client IP, never a lever against others.

Clients at different IPs are simulated through a trusted proxy (127.0.0.1) and
X-Forwarded-For, as a deployment behind a load balancer sees them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from chat.signin import FREE_ACCOUNT_FAILURES, account_backoff_s, account_refusal, ip_refusal
from chat.store import keys
from chat.store.signin import SigninStore
from chat.transport.client_ip import parse_trusted_proxies
from tests.support import (
    PASSWORD,
    RunningServer,
    async_redis_client,
    redis_client,
    running_server,
    settings_for,
    unique_handle,
)

WRONG = "wrong-password"


def at(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


# -- the arithmetic -----------------------------------------------------------------


def test_backoff_is_free_for_a_few_mistakes_then_doubles_up_to_a_cap() -> None:
    assert [account_backoff_s(n) for n in range(FREE_ACCOUNT_FAILURES + 1)] == [0, 0, 0, 0]
    following = [account_backoff_s(FREE_ACCOUNT_FAILURES + k) for k in range(1, 5)]
    assert following == [1, 2, 4, 8]
    assert account_backoff_s(10_000) == 15 * 60


def test_ip_refusal_counts_up_to_the_limit_and_zero_is_off() -> None:
    assert ip_refusal(49, 50, 100) is None
    refused = ip_refusal(50, 50, 100)
    assert refused is not None and refused.retry_after_s == 100
    assert ip_refusal(10_000, 0, 100) is None


def test_account_refusal_waits_from_the_last_failure() -> None:
    n = FREE_ACCOUNT_FAILURES + 2  # 2 s
    assert account_refusal(n, 10_000, 11_000) is not None
    refused = account_refusal(n, 10_000, 11_500)
    assert refused is not None and refused.retry_after_s == 0.5
    assert account_refusal(n, 10_000, 12_000) is None
    assert account_refusal(0, 0, 0) is None


# -- over HTTP ------------------------------------------------------------------------


@pytest.fixture
async def proxied(redis_url: str, tmp_path: Path) -> AsyncIterator[RunningServer]:
    settings = settings_for(
        redis_url,
        tmp_path,
        trusted_proxies=parse_trusted_proxies("127.0.0.1"),
        limit_login_failures=6,
        limit_signups_per_hour=3,
    )
    async with running_server(settings) as server:
        yield server


async def sign_in(http: httpx.AsyncClient, handle: str, password: str, ip: str) -> httpx.Response:
    return await http.post(
        "/api/sessions", json={"handle": handle, "password": password}, headers=at(ip)
    )


async def test_junk_handles_touch_nothing_in_redis(server: RunningServer, redis_url: str) -> None:
    client = redis_client(redis_url)
    before = client.dbsize()
    async with httpx.AsyncClient(base_url=server.url) as http:
        for handle in ("x" * 60_000, "not a handle", "é"):
            response = await http.post("/api/sessions", json={"handle": handle, "password": WRONG})
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "bad_credentials"
    assert client.dbsize() == before
    client.close()


async def test_a_correct_password_from_a_clean_ip_works_during_a_brute_force(
    proxied: RunningServer,
) -> None:
    """The attacker guesses at alice from one IP until throttled (more than the old
    10-failure lockout); alice, from her own IP, signs in at once, every time."""
    alice = unique_handle("alice")
    async with httpx.AsyncClient(base_url=proxied.url) as http:
        made = await http.post(
            "/api/accounts", json={"handle": alice, "password": PASSWORD}, headers=at("10.9.9.9")
        )
        assert made.status_code == 201
        codes: list[int] = []
        for _ in range(12):
            response = await sign_in(http, alice, WRONG, "203.0.113.66")
            codes.append(response.status_code)
            if response.status_code == 429:
                error = response.json()["error"]
                assert error["limit"] == "logins" and error["retry_after"] >= 1
                assert int(response.headers["Retry-After"]) >= 1
            mine = await sign_in(http, alice, PASSWORD, "198.51.100.1")
            assert mine.status_code == 200, mine.text
        # The attacker's IP is throttled on alice, even with the right password.
        throttled = await sign_in(http, alice, PASSWORD, "203.0.113.66")
    assert codes[:FREE_ACCOUNT_FAILURES] == [401] * FREE_ACCOUNT_FAILURES
    assert 429 in codes
    assert throttled.status_code == 429


async def test_failed_sign_ins_per_ip_are_limited_across_accounts(
    proxied: RunningServer,
) -> None:
    async with httpx.AsyncClient(base_url=proxied.url) as http:
        bob = unique_handle("bob")
        await http.post("/api/accounts", json={"handle": bob, "password": PASSWORD})
        # Spread over accounts (no per-account backoff): the IP's own budget runs out.
        for i in range(6):
            response = await sign_in(http, unique_handle(f"g{i}"), WRONG, "192.0.2.7")
            assert response.status_code == 401
        refused = await sign_in(http, bob, PASSWORD, "192.0.2.7")
        elsewhere = await sign_in(http, bob, PASSWORD, "192.0.2.8")
        metrics = await http.get("/metrics")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and error["limit"] == "logins"
    assert 1 <= error["retry_after"] <= 15 * 60
    assert refused.headers["Retry-After"] == str(error["retry_after"])
    assert elsewhere.status_code == 200
    assert 'dmhub_rate_limited_total{limit="logins"}' in metrics.text


async def test_sign_ups_per_ip_per_hour(proxied: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=proxied.url) as http:

        async def sign_up(handle: str, ip: str) -> httpx.Response:
            body = {"handle": handle, "password": PASSWORD}
            return await http.post("/api/accounts", json=body, headers=at(ip))

        taken = unique_handle()
        assert (await sign_up(taken, "192.0.2.50")).status_code == 201
        # A taken handle does not spend the budget.
        assert (await sign_up(taken, "192.0.2.50")).status_code == 409
        assert (await sign_up(unique_handle(), "192.0.2.50")).status_code == 201
        assert (await sign_up(unique_handle(), "192.0.2.50")).status_code == 201
        refused = await sign_up(unique_handle(), "192.0.2.50")
        other_ip = await sign_up(unique_handle(), "192.0.2.51")
        # The client cannot pick its IP by writing the header itself.
        spoofed = await http.post(
            "/api/accounts",
            json={"handle": unique_handle(), "password": PASSWORD},
            headers={"X-Forwarded-For": "192.0.2.99, 192.0.2.50"},
        )
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["limit"] == "signups" and 1 <= error["retry_after"] <= 3600
    assert int(refused.headers["Retry-After"]) == error["retry_after"]
    assert other_ip.status_code == 201
    assert spoofed.status_code == 429


async def test_counts_given_back_after_their_window_ended_leave_no_key_without_a_ttl(
    redis_url: str,
) -> None:
    client = async_redis_client(redis_url)
    store = SigninStore(client)
    ip = "192.0.2.60"
    try:
        await store.count_signup(ip, 3600)
        await store.begin(ip, 900)
        # Both windows end while the password is hashed; then the count is given back.
        await client.delete(keys.ip_signups(ip), keys.ip_login_failures(ip))
        await store.uncount_signup(ip, 3600)
        await store.succeeded(ip, "someone", had_failures=False, window_s=900)
        assert 0 < await client.ttl(keys.ip_signups(ip)) <= 3600
        assert 0 < await client.ttl(keys.ip_login_failures(ip)) <= 900
    finally:
        await client.aclose()


async def test_the_limits_are_off_at_zero(redis_url: str, tmp_path: Path) -> None:
    settings = settings_for(redis_url, tmp_path, limit_login_failures=0, limit_signups_per_hour=0)
    async with running_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            for i in range(4):
                body = {"handle": unique_handle(f"z{i}"), "password": WRONG}
                response = await http.post("/api/sessions", json=body)
                assert response.status_code == 401
            made = await http.post(
                "/api/accounts", json={"handle": unique_handle(), "password": PASSWORD}
            )
    assert made.status_code == 201


async def test_argon2_work_is_bounded_to_spare_a_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sign-in flood queues for the hashing slots instead of taking every core."""
    import threading

    from argon2 import PasswordHasher

    from chat.transport import auth

    lock = threading.Lock()
    running = peak = 0

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            try:
                return super().verify(hash, password)
            finally:
                with lock:
                    running -= 1

    monkeypatch.setattr(auth, "_hasher", Counting(time_cost=2, memory_cost=19456, parallelism=1))
    results = await asyncio.gather(*(auth.verify_password(None, WRONG) for _ in range(8)))
    assert results == [False] * 8
    assert 1 <= peak <= auth.ARGON2_CONCURRENCY < max(2, os.cpu_count() or 2)


async def test_concurrent_guesses_cannot_slip_past_the_ip_limit(proxied: RunningServer) -> None:
    """Each attempt is counted before its argon2 check waits for a slot."""
    async with httpx.AsyncClient(base_url=proxied.url) as http:
        results = await asyncio.gather(
            *(sign_in(http, unique_handle(f"c{i}"), WRONG, "192.0.2.77") for i in range(20))
        )
    codes = sorted(r.status_code for r in results)
    assert codes.count(401) == 6 and codes.count(429) == 14


async def test_right_passwords_spend_no_budget(proxied: RunningServer) -> None:
    alice = unique_handle("alice")
    async with httpx.AsyncClient(base_url=proxied.url) as http:
        await http.post("/api/accounts", json={"handle": alice, "password": PASSWORD})
        for _ in range(10):
            assert (await sign_in(http, alice, PASSWORD, "192.0.2.88")).status_code == 200
        assert (await sign_in(http, alice, WRONG, "192.0.2.88")).status_code == 401


async def test_the_load_tester_says_which_limit_stopped_its_sign_ups(
    redis_url: str, tmp_path: Path
) -> None:
    from chat.loadtest.adapters import DmhubAdapter

    settings = settings_for(redis_url, tmp_path, limit_signups_per_hour=1)
    async with running_server(settings) as server:
        adapter = DmhubAdapter()
        try:
            with pytest.raises(RuntimeError) as stopped:
                await adapter.create_accounts(server.url, [unique_handle() for _ in range(3)])
        finally:
            await adapter.aclose()
    assert "DMHUB_LIMIT_SIGNUPS_PER_HOUR" in str(stopped.value)
