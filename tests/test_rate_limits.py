"""Every limit of PROTOCOL.md v1.1 over real sockets: `429 rate_limited` with
`Retry-After`, or an `error` frame, both carrying `retry_after` and `limit`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat.client import ClientError, Socket
from chat.store import keys
from tests.faults import eventually
from tests.support import (
    RunningServer,
    async_redis_client,
    handle,
    new_user,
    running_server,
    settings_for,
)


def assert_limited(error: ClientError, limit: str, *, http: bool) -> None:
    assert error.code == "rate_limited", error
    assert error.limit == limit
    assert isinstance(error.retry_after, int) and error.retry_after >= 1
    if http:
        assert error.status == 429
        assert int(error.headers["retry-after"]) == error.retry_after


@pytest.fixture
async def limited(redis_url: str, tmp_path: Path) -> AsyncIterator[RunningServer]:
    """Small limits, so that a test reaches each of them in a few steps."""
    settings = settings_for(
        redis_url,
        tmp_path,
        limit_messages_per_min=3,
        limit_new_conversations_per_day=2,
        limit_requests_per_hour=2,
        limit_typing_per_10s=3,
        limit_sockets_per_user=2,
    )
    async with running_server(settings) as server:
        yield server


async def refill(redis_url: str, lc: str) -> None:
    """A minute passes, as far as the sender's message bucket can tell."""
    client = async_redis_client(redis_url)
    await client.hdel(keys.user(lc), keys.MESSAGE_RATE_FIELD)
    await client.aclose()


async def test_messages_bucket_on_http_and_websocket_and_a_refused_send_retries(
    limited: RunningServer, redis_url: str
) -> None:
    alice = await new_user(limited.url)
    bob = await new_user(limited.url)
    await bob.follow(handle(alice))
    for i in range(3):
        await alice.post_message(handle(bob), f"m{i}")
    with pytest.raises(ClientError) as raised:
        await alice.post_message(handle(bob), "one too many", client_id="late")
    assert_limited(raised.value, "messages", http=True)
    async with alice.socket() as socket:
        with pytest.raises(ClientError) as frame_error:
            await socket.send(handle(bob), "still too many", client_id="late-ws")
        assert_limited(frame_error.value, "messages", http=False)
        assert frame_error.value.error["client_id"] == "late-ws"
        # Nothing was stored: once the bucket refills, the same client_id is a
        # first send, stored once.
        await refill(redis_url, handle(alice).lower())
        stored = await socket.send(handle(bob), "still too many", client_id="late-ws")
    again = await alice.post_message(handle(bob), "one too many", client_id="late")
    history = (await bob.messages(handle(alice)))["messages"]
    assert [m["text"] for m in history] == ["m0", "m1", "m2", "still too many", "one too many"]
    assert stored["client_id"] == "late-ws" and again["client_id"] == "late"


async def test_new_conversations_count_only_people_who_do_not_follow_the_sender(
    limited: RunningServer, redis_url: str
) -> None:
    spammer = await new_user(limited.url)
    strangers = [await new_user(limited.url, open_dms=True) for _ in range(3)]
    friend = await new_user(limited.url)
    await friend.follow(handle(spammer))
    for stranger in strangers[:2]:
        await spammer.post_message(handle(stranger), "buy now")
    with pytest.raises(ClientError) as raised:
        await spammer.post_message(handle(strangers[2]), "buy now")
    assert_limited(raised.value, "new_conversations", http=True)
    assert raised.value.retry_after > 3600  # the oldest leaves a 24 h window
    # A follower is not a new conversation, nor is a conversation already started.
    await spammer.post_message(handle(friend), "hi friend")
    await refill(redis_url, handle(spammer).lower())
    await spammer.post_message(handle(strangers[0]), "again")
    async with spammer.socket() as socket:
        with pytest.raises(ClientError) as frame_error:
            await socket.send(handle(strangers[2]), "buy now")
        assert_limited(frame_error.value, "new_conversations", http=False)
    # Someone who wrote first can be answered: a reply is no new conversation.
    writer = await new_user(limited.url)
    await spammer.update_me(open_dms=True)
    await writer.post_message(handle(spammer), "hello?")
    await spammer.post_message(handle(writer), "hello!")
    assert (await strangers[2].conversations("requests"))["conversations"] == []


async def test_requests_received_per_recipient(limited: RunningServer) -> None:
    target = await new_user(limited.url, open_dms=True)
    senders = [await new_user(limited.url) for _ in range(3)]
    for sender in senders[:2]:
        await sender.post_message(handle(target), "hello")
    with pytest.raises(ClientError) as raised:
        await senders[2].post_message(handle(target), "hello")
    assert_limited(raised.value, "requests_received", http=True)
    async with senders[2].socket() as socket:
        with pytest.raises(ClientError) as frame_error:
            await socket.send(handle(target), "hello")
        assert_limited(frame_error.value, "requests_received", http=False)
    # More messages in a request already there, and anyone the target follows, still land.
    await senders[0].post_message(handle(target), "me again")
    await target.follow(handle(senders[2]))
    await senders[2].post_message(handle(target), "now you follow me")
    requests = (await target.conversations("requests"))["conversations"]
    assert len(requests) == 2


async def frames_for(socket: Socket, wait: float = 0.5) -> list[dict[str, Any]]:
    got = []
    while True:
        try:
            got.append(await socket.next_event(timeout=wait))
        except TimeoutError:
            return got


async def test_typing_excess_is_dropped_with_one_error_per_window(
    limited: RunningServer,
) -> None:
    alice = await new_user(limited.url)
    bob = await new_user(limited.url)
    await bob.follow(handle(alice))
    async with alice.socket() as typist, bob.socket() as watcher:
        for _ in range(10):
            await typist.typing(handle(bob))
        await typist.ping("done")
        seen = await frames_for(watcher)
        errors = [f for f in await frames_for(typist) if f["type"] == "error"]
    assert [f["type"] for f in seen] == ["typing"] * 3
    assert len(errors) == 1
    assert errors[0]["code"] == "rate_limited" and errors[0]["limit"] == "typing"
    assert 1 <= errors[0]["retry_after"] <= 10


async def test_sockets_per_user_per_process(limited: RunningServer) -> None:
    alice = await new_user(limited.url)
    assert alice.token
    first, second = alice.socket(), alice.socket()
    await first.connect()
    await second.connect()
    try:
        with pytest.raises(ClientError) as raised:
            await alice.socket().connect()
        assert_limited(raised.value, "sockets", http=True)
        # Another account is not affected, and a closed socket frees its slot.
        other = await new_user(limited.url)
        async with other.socket():
            pass
        await second.close()

        async def connected() -> Socket:
            sock = alice.socket()
            await sock.connect()
            return sock

        # The server lets the slot go when its end of the socket is done, a moment
        # after the client's close returns: poll for it, bounded, not a fixed sleep.
        third = await eventually(connected, 5, "a closed socket's slot to be free again")
        await third.close()
    finally:
        await first.close()
        await second.close()


async def test_limits_are_counted_in_metrics(limited: RunningServer) -> None:
    alice = await new_user(limited.url)
    bob = await new_user(limited.url)
    await bob.follow(handle(alice))
    for i in range(4):
        try:
            await alice.post_message(handle(bob), f"m{i}")
        except ClientError:
            pass
    async with httpx.AsyncClient() as http:
        text = (await http.get(limited.url + "/metrics")).text
    line = next(
        x for x in text.splitlines() if x.startswith('dmhub_rate_limited_total{limit="messages"}')
    )
    assert float(line.split()[-1]) >= 1


async def test_zero_turns_a_limit_off(redis_url: str, tmp_path: Path) -> None:
    settings = settings_for(redis_url, tmp_path, limit_messages_per_min=0)
    async with running_server(settings) as server:
        alice = await new_user(server.url)
        bob = await new_user(server.url)
        await bob.follow(handle(alice))
        async with alice.socket() as socket:
            for i in range(130):  # past the default burst of 120
                await socket.send(handle(bob), f"m{i}")
        client = async_redis_client(redis_url)
        assert not await client.hexists(keys.user(handle(alice).lower()), keys.MESSAGE_RATE_FIELD)
        await client.aclose()
