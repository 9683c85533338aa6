"""Reports, restriction and suspension over real sockets (PROTOCOL.md v1.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat.client import Client, ClientError
from chat.store import keys
from chat.transport.auth import token_hash
from tests.support import (
    PASSWORD,
    RunningServer,
    async_redis_client,
    handle,
    new_user,
    running_server,
    settings_for,
)

ADMIN_TOKEN = "admin-secret-for-tests"


@pytest.fixture
async def safe(redis_url: str, tmp_path: Path) -> AsyncIterator[RunningServer]:
    """Reporters count from their first second, and the admin API is on."""
    settings = settings_for(
        redis_url, tmp_path, reporter_min_age_s=0, admin_token=ADMIN_TOKEN, limit_reports_per_hour=5
    )
    async with running_server(settings) as server:
        yield server


async def admin(
    server: RunningServer, method: str, path: str, token: str | None = ADMIN_TOKEN
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=server.url) as http:
        return await http.request(method, path, headers=headers)


async def test_a_report_blocks_and_clears_the_request(safe: RunningServer) -> None:
    spammer = await new_user(safe.url)
    victim = await new_user(safe.url, open_dms=True)
    sent = await spammer.post_message(handle(victim), "buy now")
    assert len((await victim.conversations("requests"))["conversations"]) == 1
    await victim.report(handle(spammer), "spam", message_id=sent["id"])
    assert (await victim.conversations("requests"))["conversations"] == []
    relationship = (await victim.profile(handle(spammer)))["relationship"]
    assert relationship["blocking"] is True
    with pytest.raises(ClientError) as raised:
        await spammer.post_message(handle(victim), "hello?")
    assert raised.value.reason == "cannot_receive"
    # Again: still 202, counted once.
    await victim.report(handle(spammer), "abuse")
    log = (await admin(safe, "GET", f"/api/admin/reports?handle={handle(spammer)}")).json()
    assert [(r["reporter"], r["reason"], r["message_id"]) for r in log["reports"]] == [
        (handle(victim), "spam", sent["id"])
    ]
    assert log["restricted"] is False


async def test_report_validation(safe: RunningServer) -> None:
    alice = await new_user(safe.url, open_dms=True)
    bob = await new_user(safe.url, open_dms=True)
    carol = await new_user(safe.url, open_dms=True)
    mine = await alice.post_message(handle(bob), "from alice")
    carols = await carol.post_message(handle(alice), "from carol")

    async def refused(body: dict[str, Any]) -> ClientError:
        with pytest.raises(ClientError) as raised:
            await alice.request("POST", "/api/reports", body)
        return raised.value

    unknown = await refused({"handle": "nobody_here_x", "reason": "spam"})
    assert (unknown.status, unknown.code) == (404, "unknown_user")
    for body, field in [
        ({"handle": handle(bob), "reason": "rude"}, "reason"),
        ({"handle": handle(bob)}, "reason"),
        ({"handle": handle(alice), "reason": "spam"}, "handle"),
        ({"handle": handle(bob), "reason": "spam", "message_id": mine["id"]}, "message_id"),
        ({"handle": handle(bob), "reason": "spam", "message_id": carols["id"]}, "message_id"),
        ({"handle": handle(bob), "reason": "spam", "message_id": "x"}, "message_id"),
    ]:
        error = await refused(body)
        assert (error.status, error.code, error.field) == (422, "invalid", field), body
    # Nothing of that blocked anyone.
    assert (await alice.profile(handle(bob)))["relationship"]["blocking"] is False


async def test_three_reporters_restrict_and_the_restricted_can_still_reply(
    safe: RunningServer,
) -> None:
    spammer = await new_user(safe.url)
    reporters = [await new_user(safe.url, open_dms=True) for _ in range(3)]
    follower = await new_user(safe.url)
    writer = await new_user(safe.url)
    stranger = await new_user(safe.url, open_dms=True)
    await follower.follow(handle(spammer))
    await spammer.update_me(open_dms=True)
    await writer.post_message(handle(spammer), "a question")
    for reporter in reporters[:2]:
        await spammer.post_message(handle(reporter), "buy now")
        await reporter.report(handle(spammer))
    assert (await spammer.me())["restricted"] is False
    await reporters[2].report(handle(spammer), "abuse")
    me = await spammer.me()
    assert me["restricted"] is True
    with pytest.raises(ClientError) as raised:
        await spammer.post_message(handle(stranger), "buy now")
    assert (raised.value.status, raised.value.reason) == (403, "restricted")
    assert "operator" in raised.value.detail
    assert (await spammer.profile(handle(stranger)))["relationship"]["reason"] == "restricted"
    with pytest.raises(ClientError) as handshake:
        await spammer.socket(peer=handle(stranger)).connect()
    assert (handshake.value.status, handshake.value.reason) == (403, "restricted")
    async with spammer.socket() as socket:
        with pytest.raises(ClientError) as frame_error:
            await socket.send(handle(stranger), "buy now")
        assert frame_error.value.reason == "restricted"
        # Who follows it, and who wrote to it, still hear from it.
        await socket.send(handle(follower), "hi")
        await socket.send(handle(writer), "an answer")

    listed = (await admin(safe, "GET", "/api/admin/restrictions")).json()["restrictions"]
    mine = next(r for r in listed if r["handle"] == handle(spammer))
    assert {r["reporter"] for r in mine["reports"]} == {handle(r) for r in reporters}
    cleared = await admin(safe, "DELETE", f"/api/admin/restrictions/{handle(spammer)}")
    assert cleared.status_code == 200
    why = cleared.json()
    assert why["was_restricted"] is True
    assert len(why["restriction"]["reports"]) == 3
    assert (await spammer.me())["restricted"] is False
    await spammer.post_message(handle(stranger), "hello again")
    # Reports made before the clear no longer count: one more report is one, not four.
    another = await new_user(safe.url, open_dms=True)
    await another.report(handle(spammer))
    assert (await spammer.me())["restricted"] is False


async def test_fresh_or_restricted_reporters_do_not_count(redis_url: str, tmp_path: Path) -> None:
    settings = settings_for(redis_url, tmp_path, admin_token=ADMIN_TOKEN)  # default: a day old
    async with running_server(settings) as server:
        target = await new_user(server.url)
        fresh = [await new_user(server.url) for _ in range(3)]
        for reporter in fresh:
            await reporter.report(handle(target))
        assert (await target.me())["restricted"] is False
        # Accounts a day old count, unless restricted themselves.
        client = async_redis_client(redis_url, decode_responses=True)
        old = str(int((await client.time())[0] - 2 * 86400) * 1000)
        olds = [await new_user(server.url) for _ in range(3)]
        for reporter in olds:
            await client.hset(keys.user(handle(reporter).lower()), "created", old)
        await client.hset(keys.user(handle(olds[0]).lower()), "restricted", "1")
        await client.aclose()
        for reporter in olds:
            await reporter.report(handle(target))
        assert (await target.me())["restricted"] is False
        latest = await new_user(server.url)
        client = async_redis_client(redis_url, decode_responses=True)
        await client.hset(keys.user(handle(latest).lower()), "created", old)
        await client.aclose()
        await latest.report(handle(target))
        assert (await target.me())["restricted"] is True


async def test_reports_per_reporter_per_hour(safe: RunningServer) -> None:
    reporter = await new_user(safe.url)
    targets = [await new_user(safe.url) for _ in range(6)]
    for target in targets[:5]:
        await reporter.report(handle(target))
    with pytest.raises(ClientError) as raised:
        await reporter.report(handle(targets[5]))
    error = raised.value
    assert (error.status, error.code, error.limit) == (429, "rate_limited", "reports")
    assert error.retry_after >= 1 and int(error.headers["retry-after"]) == error.retry_after
    # Refused means not done: no block.
    assert (await reporter.profile(handle(targets[5])))["relationship"]["blocking"] is False


async def test_suspension(safe: RunningServer, redis_url: str) -> None:
    bad = await new_user(safe.url, open_dms=True)
    friend = await new_user(safe.url)
    await friend.follow(handle(bad))
    await bad.follow(handle(friend))
    socket = bad.socket()
    await socket.connect()
    answer = await admin(safe, "PUT", f"/api/admin/suspensions/{handle(bad)}")
    assert answer.status_code == 200 and answer.json()["suspended"] is True
    assert await socket.wait_closed(5) == 4401
    with pytest.raises(ClientError) as raised:
        await bad.me()
    assert raised.value.status == 401
    with pytest.raises(ClientError) as raised:
        await Client(safe.url).sign_in(handle(bad), PASSWORD)
    assert (raised.value.status, raised.value.code) == (403, "suspended")
    # Nobody can write to it, and the refusal does not say why.
    with pytest.raises(ClientError) as raised:
        await friend.post_message(handle(bad), "hi")
    assert raised.value.reason == "cannot_receive"
    # Its own sends are refused as suspended: a session that outlived the
    # suspension (one older than the session index, say) still cannot write.
    slipped = Client(safe.url, token="a-token-the-index-never-knew")
    client = async_redis_client(redis_url)
    await client.set(keys.session(token_hash(slipped.token or "")), handle(bad).lower())
    await client.aclose()
    with pytest.raises(ClientError) as raised:
        await slipped.post_message(handle(friend), "still here")
    assert (raised.value.status, raised.value.reason) == (403, "suspended")
    assert (await slipped.profile(handle(friend)))["relationship"]["reason"] == "suspended"
    # Lifted: it signs in and writes again.
    back = await admin(safe, "DELETE", f"/api/admin/suspensions/{handle(bad)}")
    assert back.status_code == 200
    again = Client(safe.url)
    await again.sign_in(handle(bad), PASSWORD)
    await again.post_message(handle(friend), "I'm back")


async def test_admin_api_needs_its_token(
    safe: RunningServer, redis_url: str, tmp_path: Path
) -> None:
    for token in (None, "wrong"):
        answer = await admin(safe, "GET", "/api/admin/restrictions", token)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthenticated"
    user = await new_user(safe.url)
    answer = await admin(safe, "GET", "/api/admin/restrictions", user.token)
    assert answer.status_code == 401
    assert (await admin(safe, "PUT", "/api/admin/suspensions/nobody_here_x")).status_code == 404
    async with running_server(settings_for(redis_url, tmp_path)) as plain:
        assert (await admin(plain, "GET", "/api/admin/restrictions")).status_code == 404
        assert (await admin(plain, "GET", "/api/admin/reports", None)).status_code == 404
