"""Webhooks end to end: a real server, real Valkey, real receivers on 127.0.0.1.

The server runs with DMHUB_WEBHOOK_ALLOW_PRIVATE (as settings) so that it may
call the receivers on loopback, and with the backoff, lease and deadline
shrunk so that retries and deactivation take a fraction of a second.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from chat.client import Client, ClientError
from chat.config import Settings, WebhookSettings
from chat.store import keys
from chat.webhooks import verify
from chat.webhooks.policy import MAX_WEBHOOKS_PER_ACCOUNT
from tests.support import (
    PASSWORD,
    RunningServer,
    async_redis_client,
    new_user,
    running_server,
    settings_for,
)
from tests.webhook_receiver import Delivery, receiver

FAST = WebhookSettings(
    allow_private=True,
    timeout_s=1.0,
    backoff_first_s=0.05,
    backoff_max_s=0.2,
    lease_s=2.0,
    poll_s=0.2,
)


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return settings_for(redis_url, tmp_path, webhooks=FAST)


async def pair(url: str) -> tuple[Client, Client]:
    """alice and bob, where alice may write to bob (bob follows her) and back."""
    alice = await new_user(url)
    bob = await new_user(url)
    assert alice.user and bob.user
    await bob.follow(alice.user["handle"])
    return alice, bob


async def create(client: Client, url: str, **fields: Any) -> dict[str, Any]:
    created: dict[str, Any] = await client.request("POST", "/api/webhooks", {"url": url, **fields})
    return created


async def webhook(client: Client, webhook_id: str) -> dict[str, Any]:
    data: dict[str, Any] = await client.request("GET", f"/api/webhooks/{webhook_id}")
    return data["webhook"]


async def until(check: Any, timeout: float = 10.0) -> None:
    """Poll the API (there is nothing to wait on) until `check()` holds."""
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


def message_ids(deliveries: list[Delivery]) -> list[str]:
    return [d.json["event"]["message"]["id"] for d in deliveries if d.json["type"] == "message"]


# -- the API ---------------------------------------------------------------------------


async def test_create_list_get_delete_and_the_secret_is_shown_once(
    server: RunningServer,
) -> None:
    alice = await new_user(server.url)
    created = await create(alice, "https://hooks.example.com/dmhub", events=["message"])
    secret, hook = created["secret"], created["webhook"]
    assert isinstance(secret, str) and len(secret) >= 32
    assert set(hook) == {
        "id", "url", "events", "created_at", "delivered_up_to",
        "failing_since", "last_error", "active",
    }  # fmt: skip
    assert hook["url"] == "https://hooks.example.com/dmhub"
    assert hook["events"] == ["message"]
    assert hook["delivered_up_to"] is None and hook["failing_since"] is None
    assert hook["last_error"] is None and hook["active"] is True
    assert hook["created_at"].endswith("Z")

    listed = await alice.request("GET", "/api/webhooks")
    assert listed == {"webhooks": [hook]}
    assert await webhook(alice, hook["id"]) == hook
    assert secret not in str(listed)

    await alice.request("DELETE", f"/api/webhooks/{hook['id']}")
    with pytest.raises(ClientError) as gone:
        await webhook(alice, hook["id"])
    assert (gone.value.status, gone.value.code) == (404, "not_found")
    assert await alice.request("GET", "/api/webhooks") == {"webhooks": []}


async def test_deleting_the_account_deletes_its_webhooks(
    server: RunningServer, redis_url: str
) -> None:
    alice = await new_user(server.url)
    assert alice.user
    await create(alice, "https://hooks.example.com/a")
    await create(alice, "https://hooks.example.com/b")
    await alice.request("DELETE", "/api/me", {"password": PASSWORD})
    client = async_redis_client(redis_url)
    lc = alice.user["handle"].lower()
    assert await client.exists(keys.webhook_ids(lc)) == 0
    assert not await client.sismember(keys.webhook_index(keys.webhook_index_shard(lc)), lc)
    assert await client.keys(f"wh:{{{lc}}}:*") == []
    await client.aclose()


async def test_another_account_cannot_see_or_touch_a_webhook(server: RunningServer) -> None:
    alice = await new_user(server.url)
    mallory = await new_user(server.url)
    hook = (await create(alice, "https://hooks.example.com/a"))["webhook"]
    for method, path, body in [
        ("GET", f"/api/webhooks/{hook['id']}", None),
        ("DELETE", f"/api/webhooks/{hook['id']}", None),
        ("POST", f"/api/webhooks/{hook['id']}/ping", None),
        ("POST", f"/api/webhooks/{hook['id']}/replay", {"since": "0-0"}),
    ]:
        with pytest.raises(ClientError) as refused:
            await mallory.request(method, path, body)
        assert (refused.value.status, refused.value.code) == (404, "not_found"), path
    assert await mallory.request("GET", "/api/webhooks") == {"webhooks": []}
    assert (await webhook(alice, hook["id"]))["id"] == hook["id"]
    anonymous = Client(server.url)
    with pytest.raises(ClientError) as unauthenticated:
        await anonymous.request("GET", "/api/webhooks")
    assert unauthenticated.value.status == 401


async def test_bad_input_is_refused_with_the_field(server: RunningServer) -> None:
    alice = await new_user(server.url)
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "url"),
        ({"url": 5}, "url"),
        ({"url": "ftp://hooks.example.com/"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "https://hooks.example.com/", "events": []}, "events"),
        ({"url": "https://hooks.example.com/", "events": ["typing"]}, "events"),
        ({"url": "https://hooks.example.com/", "events": "message"}, "events"),
        ({"url": "https://hooks.example.com/", "event": ["message"]}, "event"),
    ]
    for body, field in cases:
        response = await alice.http.post(
            "/api/webhooks", json=body, headers={"Authorization": f"Bearer {alice.token}"}
        )
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "invalid"
        assert response.json()["error"]["field"] == field, body
    hook = (await create(alice, "https://hooks.example.com/"))["webhook"]
    for since in ["", "nope", "1", 7, None, "99999999999999-0"]:
        response = await alice.http.post(
            f"/api/webhooks/{hook['id']}/replay",
            json={"since": since},
            headers={"Authorization": f"Bearer {alice.token}"},
        )
        assert response.status_code == 422, since
        assert response.json()["error"]["field"] == "since"


async def test_an_account_has_at_most_a_handful(server: RunningServer) -> None:
    alice = await new_user(server.url)
    for n in range(MAX_WEBHOOKS_PER_ACCOUNT):
        await create(alice, f"https://hooks.example.com/{n}")
    with pytest.raises(ClientError) as refused:
        await create(alice, "https://hooks.example.com/one-too-many")
    assert (refused.value.status, refused.value.code) == (422, "invalid")
    listed = await alice.request("GET", "/api/webhooks")
    assert len(listed["webhooks"]) == MAX_WEBHOOKS_PER_ACCOUNT


# -- delivery ------------------------------------------------------------------------


async def test_a_delivery_is_signed_and_a_tampered_body_does_not_verify(
    server: RunningServer,
) -> None:
    alice, bob = await pair(server.url)
    async with receiver() as hooks:
        created = await create(bob, hooks.url)
        sent = await alice.post_message(bob.user["handle"], "hello hook")  # type: ignore[index]
        await hooks.wait_for(lambda: len(hooks.requests) >= 1)
    delivery = hooks.requests[0]
    secret = created["secret"]
    assert verify(secret, delivery.headers, delivery.body, 300)
    assert delivery.headers["dmhub-signature"].startswith("t=")
    body = delivery.json
    assert body["type"] == "message" and body["account"] == bob.user["handle"]  # type: ignore[index]
    assert body["id"] == delivery.id == body["event"]["cursor"]
    assert body["event"]["message"] == sent and body["event"]["folder"] == "inbox"
    tampered = delivery.body.replace(b"hello hook", b"hello hack")
    assert not verify(secret, delivery.headers, tampered, 300)
    assert not verify("whsec_wrong", delivery.headers, delivery.body, 300)
    assert not verify(secret, delivery.headers, delivery.body, 300, now=delivery.at + 3600)


async def test_in_order_with_no_gaps_across_a_receiver_that_fails_then_recovers(
    server: RunningServer,
) -> None:
    alice, bob = await pair(server.url)
    # Fails the first 6 requests (500), then answers.
    async with receiver(lambda n: 500 if n <= 6 else 200) as hooks:
        hook = (await create(bob, hooks.url, events=["message"]))["webhook"]
        sent = [
            (await alice.post_message(bob.user["handle"], f"m{i}"))["id"]  # type: ignore[index]
            for i in range(8)
        ]
        await hooks.wait_for(lambda: len(hooks.delivered) >= 8)
        await asyncio.sleep(0.2)
        assert message_ids(hooks.delivered) == sent
        # The failures were retries of the first event, never a skip ahead.
        assert {d.id for d in hooks.requests[:7]} == {hooks.delivered[0].id}
        state = await webhook(bob, hook["id"])
        assert state["delivered_up_to"] == hooks.delivered[-1].id
        assert state["failing_since"] is None and state["active"] is True


async def test_event_filter_and_read_events(server: RunningServer) -> None:
    alice, bob = await pair(server.url)
    async with receiver() as reads_only, receiver() as everything:
        await create(bob, reads_only.url, events=["read"])
        await create(bob, everything.url)
        sent = await alice.post_message(bob.user["handle"], "read me")  # type: ignore[index]
        await bob.mark_read(alice.user["handle"], sent["id"])  # type: ignore[index]
        await everything.wait_for(lambda: len(everything.delivered) >= 2)
        await reads_only.wait_for(lambda: len(reads_only.delivered) >= 1)
    assert [d.json["type"] for d in everything.delivered] == ["message", "read"]
    assert [d.json["type"] for d in reads_only.delivered] == ["read"]
    assert reads_only.delivered[0].json["event"]["up_to"] == sent["id"]


async def test_replay_from_a_cursor_redelivers_exactly_what_followed(
    server: RunningServer,
) -> None:
    alice, bob = await pair(server.url)
    async with receiver() as hooks:
        hook = (await create(bob, hooks.url))["webhook"]
        for i in range(6):
            await alice.post_message(bob.user["handle"], f"r{i}")  # type: ignore[index]
        await hooks.wait_for(lambda: len(hooks.delivered) >= 6)
        first = [d.id for d in hooks.delivered]
        since = first[2]
        replayed = await bob.request("POST", f"/api/webhooks/{hook['id']}/replay", {"since": since})
        assert replayed["webhook"]["delivered_up_to"] == since
        await hooks.wait_for(lambda: len(hooks.delivered) >= 9)
        await asyncio.sleep(0.2)
        assert [d.id for d in hooks.delivered[6:]] == first[3:]
        assert [d.body for d in hooks.delivered[6:]] != []
        assert len(hooks.delivered) == 9


async def test_deactivated_past_the_deadline_and_a_ping_reactivates(
    redis_url: str, tmp_path: Path
) -> None:
    settings = settings_for(redis_url, tmp_path, webhooks=replace(FAST, deactivate_after_s=0.5))
    healthy = False
    async with (
        running_server(settings) as server,
        receiver(lambda n: 200 if healthy else 503) as hooks,
    ):
        alice, bob = await pair(server.url)
        hook = (await create(bob, hooks.url))["webhook"]
        sent = await alice.post_message(bob.user["handle"], "while down")  # type: ignore[index]

        async def deactivated() -> bool:
            return (await webhook(bob, hook["id"]))["active"] is False

        await until(deactivated)
        state = await webhook(bob, hook["id"])
        assert state["failing_since"] is not None and "503" in state["last_error"]
        assert state["delivered_up_to"] is None
        # Deactivated: no more attempts.
        tried = len(hooks.requests)
        await asyncio.sleep(0.3)
        assert len(hooks.requests) == tried

        healthy = True
        ping = await bob.request("POST", f"/api/webhooks/{hook['id']}/ping")
        await hooks.wait_for(lambda: any(d.json["type"] == "message" for d in hooks.delivered))
        pings = [d for d in hooks.delivered if d.json["type"] == "ping"]
        assert [p.id for p in pings] == [ping["delivery"]]
        assert pings[0].json["event"] == {"type": "ping", "webhook": hook["id"]}
        assert message_ids(hooks.delivered) == [sent["id"]]
        state = await webhook(bob, hook["id"])
        assert state["active"] is True and state["failing_since"] is None
        assert state["last_error"] is None


async def test_a_receiver_that_never_answers_does_not_hold_up_another(
    redis_url: str, tmp_path: Path
) -> None:
    # The contract's 5 s timeout: were the stuck receiver holding the other one
    # up, the quick one would wait 5 s per event.
    settings = settings_for(redis_url, tmp_path, webhooks=replace(FAST, timeout_s=5.0))
    async with running_server(settings) as server:
        alice, bob = await pair(server.url)
        async with receiver(lambda n: None) as stuck, receiver() as quick:
            await create(bob, stuck.url)
            await create(bob, quick.url)
            for i in range(5):
                await alice.post_message(bob.user["handle"], f"q{i}")  # type: ignore[index]
            await quick.wait_for(lambda: len(quick.delivered) >= 5, timeout=3.0)
            assert len(stuck.requests) == 1 and stuck.delivered == []


async def test_redirects_are_not_followed_and_metrics_count_outcomes(
    server: RunningServer,
) -> None:
    alice, bob = await pair(server.url)
    async with receiver(lambda n: 302 if n <= 2 else 200) as hooks:
        hook = (await create(bob, hooks.url))["webhook"]
        await alice.post_message(bob.user["handle"], "moved?")  # type: ignore[index]

        async def redirected() -> bool:
            error = (await webhook(bob, hook["id"]))["last_error"]
            return error is not None and "redirect" in error

        await until(redirected)
        await hooks.wait_for(lambda: len(hooks.delivered) >= 1)
        # Retried at the same URL, never at a Location (the receiver sends none anyway).
        assert {d.headers["dmhub-delivery"] for d in hooks.requests} == {hooks.delivered[0].id}
    metrics = (await alice.http.get("/metrics")).text
    assert 'dmhub_webhook_deliveries_total{outcome="delivered"}' in metrics
    assert 'dmhub_webhook_deliveries_total{outcome="http_error"}' in metrics
    assert "dmhub_webhook_delivery_seconds_bucket" in metrics
    assert "dmhub_webhooks_failing " in metrics and "dmhub_webhooks_served " in metrics


async def test_a_cursor_past_retention_is_reported_and_delivery_resumes(
    server: RunningServer, redis_url: str
) -> None:
    alice, bob = await pair(server.url)
    async with receiver() as hooks:
        hook = (await create(bob, hooks.url, events=["message"]))["webhook"]
        for i in range(5):
            await alice.post_message(bob.user["handle"], f"t{i}")  # type: ignore[index]
        await hooks.wait_for(lambda: len(hooks.delivered) >= 5)
        cursors = [d.id for d in hooks.delivered]
        # What retention does to a long stream, exactly and at once.
        client = async_redis_client(redis_url)
        await client.xtrim(keys.events(bob.user["handle"].lower()), maxlen=2, approximate=False)  # type: ignore[index]
        await client.aclose()
        await bob.request("POST", f"/api/webhooks/{hook['id']}/replay", {"since": cursors[0]})
        await hooks.wait_for(lambda: len(hooks.delivered) >= 7)
        await asyncio.sleep(0.2)
        assert [d.id for d in hooks.delivered[5:]] == cursors[3:]
        state = await webhook(bob, hook["id"])
        assert "retention" in state["last_error"].lower()
        assert state["delivered_up_to"] == cursors[-1]


# -- SSRF ----------------------------------------------------------------------------


PRIVATE = [
    "https://127.0.0.1/hook",
    "https://localhost/hook",  # a host name that resolves to 127.0.0.1
    "https://10.1.2.3/",
    "https://192.168.0.10/",
    "https://100.64.0.1/",
    "https://169.254.169.254/latest/meta-data",
    "https://[::1]/",
    "https://[::ffff:127.0.0.1]/",
    # Other spellings of loopback: getaddrinfo reads them all as 127.0.0.1.
    "https://2130706433/",
    "https://0177.0.0.1/",
    "https://0x7f.1/",
    "https://127.1/",
    # IPv6 forms that stand for an IPv4 address.
    "https://[::127.0.0.1]/",
    "https://[::ffff:0:7f00:1]/",
    "https://[64:ff9b:1::a00:1]/",
    "https://[fe80::1]/",
    "https://0.0.0.0/",
    "https://224.0.0.1/",
    "http://127.0.0.1/hook",
    "http://hooks.example.com/",
]


async def test_private_addresses_are_refused_without_the_setting(
    redis_url: str, tmp_path: Path
) -> None:
    settings = settings_for(redis_url, tmp_path, webhooks=replace(FAST, allow_private=False))
    async with running_server(settings) as server:
        alice = await new_user(server.url)
        for url in PRIVATE:
            response = await alice.http.post(
                "/api/webhooks",
                json={"url": url},
                headers={"Authorization": f"Bearer {alice.token}"},
            )
            assert response.status_code == 422, url
            error = response.json()["error"]
            assert (error["code"], error["field"]) == ("invalid", "url"), url
            assert "127.0.0.1" not in error["detail"] or "127.0.0.1" in url, url
        assert await alice.request("GET", "/api/webhooks") == {"webhooks": []}
        # A name that does not resolve is not an internal address: accepted, and
        # each connection is checked when it is made.
        await create(alice, "https://no-such-host.invalid/hook")


async def test_a_private_address_is_refused_at_delivery_too(redis_url: str, tmp_path: Path) -> None:
    """A webhook stored while its host was public (here: created with the
    setting on) is not delivered to a loopback address once the setting is off:
    the check runs again at every connection, against DNS rebinding."""
    async with receiver() as hooks:
        open_settings = settings_for(redis_url, tmp_path, webhooks=FAST)
        async with running_server(open_settings) as server:
            alice, bob = await pair(server.url)
            hook = (await create(bob, hooks.url.replace("127.0.0.1", "localhost")))["webhook"]
        strict = settings_for(redis_url, tmp_path, webhooks=replace(FAST, allow_private=False))
        async with running_server(strict) as server:
            alice.base_url = bob.base_url = server.url
            alice.http.base_url = bob.http.base_url = server.url  # type: ignore[assignment]
            await alice.post_message(bob.user["handle"], "to loopback?")  # type: ignore[index]

            async def refused() -> bool:
                return (await webhook(bob, hook["id"]))["last_error"] is not None

            await until(refused)
            last_error = (await webhook(bob, hook["id"]))["last_error"]
            # It does not tell which internal address the name resolves to.
            assert "not a public" in last_error and "127.0.0.1" not in last_error
        assert hooks.requests == []
