"""Account controls: change password, sessions, sign out everywhere, export, delete;
and sockets that outlive their session (expiry, a sign-out racing the handshake)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat.client import Client, ClientError
from chat.config import WebhookSettings
from chat.hub.hub import Hub
from chat.store import accounts, keys
from tests.support import (
    PASSWORD,
    RunningServer,
    new_user,
    redis_client,
    running_server,
    settings_for,
)

NEW_PASSWORD = "a brand new passphrase"


def h(client: Client) -> str:
    assert client.user is not None
    handle: str = client.user["handle"]
    return handle


async def second_session(server: RunningServer, client: Client) -> Client:
    other = Client(server.url)
    await other.sign_in(h(client), PASSWORD)
    return other


async def assert_signed_out(client: Client, token: str | None) -> None:
    probe = Client(client.base_url, token=token)
    with pytest.raises(ClientError) as raised:
        await probe.me()
    await probe.aclose()
    assert (raised.value.status, raised.value.code) == (401, "unauthenticated")


async def test_changing_the_password_needs_the_current_one_and_ends_other_sessions(
    server: RunningServer,
) -> None:
    alice = await new_user(server.url)
    laptop = await second_session(server, alice)
    async with laptop.socket() as laptop_ws:
        with pytest.raises(ClientError) as wrong:
            await alice.change_password("not my password", NEW_PASSWORD)
        assert (wrong.value.status, wrong.value.code) == (422, "invalid")
        with pytest.raises(ClientError) as short:
            await alice.change_password(PASSWORD, "short")
        assert short.value.code == "invalid"
        await alice.me()  # nothing changed yet
        await laptop.me()

        await alice.change_password(PASSWORD, NEW_PASSWORD)
        assert await laptop_ws.wait_closed(5) == 4401
    await alice.me()  # this session goes on
    await assert_signed_out(alice, laptop.token)
    with pytest.raises(ClientError):
        await Client(server.url).sign_in(h(alice), PASSWORD)
    assert (await Client(server.url).sign_in(h(alice), NEW_PASSWORD))["handle"] == h(alice)


async def test_wrong_current_password_names_the_field(server: RunningServer) -> None:
    alice = await new_user(server.url)
    response = await alice.http.put(
        "/api/me/password",
        json={"current_password": "nope-nope", "new_password": NEW_PASSWORD},
        headers=alice._headers(),
    )
    unknown = await alice.http.put(
        "/api/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD, "handle": "x"},
        headers=alice._headers(),
    )
    assert response.json()["error"]["field"] == "current_password"
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "handle"


async def test_list_sessions_end_one_and_end_all(server: RunningServer) -> None:
    alice = await new_user(server.url)
    phone, laptop = await second_session(server, alice), await second_session(server, alice)
    listed = await alice.sessions()
    assert len(listed) == 3
    assert [s["current"] for s in listed].count(True) == 1
    mine = next(s for s in listed if s["current"])
    assert mine["ip"] == "127.0.0.1" and mine["created_at"].endswith("Z")
    assert all(len(s["id"]) == accounts.SESSION_ID_CHARS for s in listed)

    phone_id = next(s["id"] for s in await phone.sessions() if s["current"])
    await alice.request("DELETE", f"/api/sessions/{phone_id}")
    await assert_signed_out(alice, phone.token)
    assert len(await alice.sessions()) == 2
    with pytest.raises(ClientError) as missing:
        await alice.request("DELETE", f"/api/sessions/{phone_id}")
    assert missing.value.status == 404

    async with laptop.socket() as laptop_ws, alice.socket() as alice_ws:
        token = alice.token
        await alice.sign_out_everywhere()
        assert await laptop_ws.wait_closed(5) == 4401
        assert await alice_ws.wait_closed(5) == 4401
    await assert_signed_out(alice, token)
    await assert_signed_out(alice, laptop.token)


async def test_the_session_index_is_capped(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts, "MAX_SESSIONS_PER_USER", 3)
    alice = await new_user(server.url)
    first_token = alice.token
    others = [await second_session(server, alice) for _ in range(3)]
    assert len(await others[-1].sessions()) == 3
    # The oldest session (the sign-up's) made room.
    await assert_signed_out(alice, first_token)


async def test_export_has_profile_follows_blocks_and_every_message(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts, "BATCH", 1)  # a page per conversation, edge and message
    alice, bob, carol, dan = [await new_user(server.url) for _ in range(4)]
    for a, b in ((alice, bob), (bob, alice), (alice, carol), (carol, alice)):
        await a.follow(h(b))
    await alice.block(h(dan))
    sent = [await alice.post_message(h(bob), f"m{i}") for i in range(5)]
    sent.append(await bob.post_message(h(alice), "reply"))
    await carol.post_message(h(alice), "hi from carol")
    await alice.hide(h(carol))  # hidden, still exported

    response = await alice.http.get("/api/me/export", headers=alice._headers())
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    data: dict[str, Any] = response.json()
    assert data["user"]["handle"] == h(alice) and data["exported_at"].endswith("Z")
    assert data["settings"] == {"read_receipts": True}
    assert sorted(data["following"]) == sorted([h(bob), h(carol)])
    assert sorted(data["followers"]) == sorted([h(bob), h(carol)])
    assert data["blocks"] == [h(dan)]
    by_peer = {c["peer"]["handle"]: c["messages"] for c in data["conversations"]}
    assert [m["id"] for m in by_peer[h(bob)]] == [m["id"] for m in sent]
    assert [m["text"] for m in by_peer[h(carol)]] == ["hi from carol"]
    assert set(by_peer) == {h(bob), h(carol)}


async def test_deleting_an_account_ends_it_everywhere_and_keeps_the_handle(
    redis_url: str, tmp_path: Path
) -> None:
    # Private webhook URLs allowed, so that the account can have one without DNS.
    settings = settings_for(redis_url, tmp_path, webhooks=WebhookSettings(allow_private=True))
    async with running_server(settings) as server:
        await deleting_an_account(server, redis_url)


async def deleting_an_account(server: RunningServer, redis_url: str) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    for a, b in ((alice, bob), (bob, alice)):
        await a.follow(h(b))
    said = await alice.post_message(h(bob), "goodbye")
    await alice.request("POST", "/api/webhooks", {"url": "https://hooks.example.com/dmhub"})
    token = alice.token
    async with alice.socket() as alice_ws:
        with pytest.raises(ClientError) as wrong:
            await alice.delete_account("not my password")
        assert wrong.value.status == 422
        await alice.delete_account(PASSWORD)
        assert await alice_ws.wait_closed(5) == 4401
    await assert_signed_out(alice, token)
    webhooks = redis_client(redis_url, decode_responses=True)
    assert webhooks.scard(keys.webhook_ids(h(alice).lower())) == 0
    webhooks.close()

    with pytest.raises(ClientError) as sign_in:
        await Client(server.url).sign_in(h(alice), PASSWORD)
    assert sign_in.value.code == "bad_credentials"
    with pytest.raises(ClientError) as sign_up:
        await Client(server.url).sign_up(h(alice).upper(), PASSWORD)
    assert sign_up.value.code == "handle_taken"

    # Bob sees the account as gone, coherently.
    with pytest.raises(ClientError) as profile:
        await bob.profile(h(alice))
    assert profile.value.code == "unknown_user"
    with pytest.raises(ClientError) as send:
        await bob.post_message(h(alice), "are you there?")
    assert send.value.code == "unknown_user"
    assert (await bob.request("GET", "/api/followers"))["users"] == []
    assert (await bob.request("GET", "/api/following"))["users"] == []
    [conversation] = (await bob.conversations())["conversations"]
    assert conversation["peer"]["handle"] == h(alice).lower()
    assert conversation["peer"]["deleted"] is True
    assert [m["id"] for m in (await bob.messages(h(alice)))["messages"]] == [said["id"]]
    # Bob can still read what the deleted account wrote; his unread count clears.
    assert conversation["unread"] == 1
    await bob.mark_read(h(alice), said["id"])
    assert (await bob.conversations())["conversations"][0]["unread"] == 0


async def test_a_socket_closes_with_4401_when_its_session_expires(
    redis_url: str, tmp_path: Path
) -> None:
    async with running_server(settings_for(redis_url, tmp_path, session_ttl_s=2)) as server:
        alice = await new_user(server.url)
        async with alice.socket() as alice_ws:
            assert await alice_ws.wait_closed(6) == 4401
        await assert_signed_out(alice, alice.token)


async def test_a_sign_out_racing_the_handshake_does_not_leave_the_socket_open(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session ends after the handshake authenticated it and before the socket
    subscribed: its 4401 was published to nobody, so the socket checks again."""
    alice = await new_user(server.url)
    assert alice.user and alice.token
    real_attach = Hub.attach

    async def attach_after_a_sign_out(hub: Hub, conn: Any) -> None:
        await accounts.end_sessions(hub.store, conn.user, [conn.session])
        await real_attach(hub, conn)

    monkeypatch.setattr(Hub, "attach", attach_after_a_sign_out)
    closed = await raw_close_code(server.ws_url, alice.token)
    assert closed == 4401


async def raw_close_code(url: str, token: str) -> int | None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        try:
            while True:
                frame = await asyncio.wait_for(ws.recv(), 5)
                assert '"ready"' not in str(frame)
        except ConnectionClosed:
            pass
        return ws.close_code


async def test_account_routes_need_credentials(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        for method, path in (
            ("PUT", "/api/me/password"),
            ("GET", "/api/sessions"),
            ("DELETE", "/api/sessions"),
            ("DELETE", "/api/sessions/abcdef0123456789"),
            ("GET", "/api/me/export"),
            ("DELETE", "/api/me"),
        ):
            response = await http.request(method, path, json={})
            assert response.status_code == 401, (method, path)
            assert response.json()["error"]["code"] == "unauthenticated"


async def test_session_index_keys_expire_with_the_newest_session(
    server: RunningServer, redis_url: str
) -> None:
    alice = await new_user(server.url)
    await second_session(server, alice)
    client = redis_client(redis_url, decode_responses=True)
    lc = h(alice).lower()
    ttls = [client.ttl(keys.session_index(lc)), client.ttl(keys.session_info(lc))]
    client.close()
    assert all(0 < ttl <= 30 * 24 * 3600 for ttl in ttls), ttls


async def test_sign_out_everywhere_closes_sockets_of_sessions_the_index_never_knew(
    server: RunningServer, redis_url: str
) -> None:
    """A session from before the index (written as dmhub used to): its sockets
    close too, through the user-wide session-end event."""
    from chat.transport import auth

    alice = await new_user(server.url)
    old_token = auth.new_token()
    client = redis_client(redis_url)
    client.set(keys.session(auth.token_hash(old_token)), h(alice).lower(), ex=3600)
    client.close()
    old = Client(server.url, token=old_token)
    async with old.socket() as old_ws:
        await alice.sign_out_everywhere()
        assert await old_ws.wait_closed(5) == 4401
    await old.aclose()


async def test_a_deleted_account_leaves_every_team(server: RunningServer, redis_url: str) -> None:
    shop = await new_user(server.url, kind="business")
    agent, other_shop = await new_user(server.url), await new_user(server.url, kind="business")
    await shop.request("PUT", f"/api/team/{h(agent)}")
    await other_shop.request("PUT", f"/api/team/{h(agent)}")
    assert sorted((await agent.me())["teams"]) == sorted([h(shop), h(other_shop)])

    await agent.delete_account(PASSWORD)
    assert (await shop.request("GET", "/api/team"))["users"] == []
    await other_shop.request("PUT", f"/api/team/{h(shop)}")  # shop becomes an agent
    await shop.delete_account(PASSWORD)
    assert (await other_shop.request("GET", "/api/team"))["users"] == []
    client = redis_client(redis_url)
    leftovers = [keys.team(h(shop).lower()), keys.teams_of(h(agent).lower())]
    assert client.exists(*leftovers) == 0
    assert client.scard(keys.team(h(other_shop).lower())) == 0
    client.close()
