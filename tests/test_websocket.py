"""The /ws contract over real sockets: handshake, frames, fan-out, resume, closes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chat.client import Client, ClientError
from tests.support import RunningServer, handle, new_user, running_server, settings_for


async def raw_socket(server: RunningServer, client: Client, query: str = "") -> ClientConnection:
    return await connect(
        server.ws_url + query, additional_headers={"Authorization": f"Bearer {client.token}"}
    )


async def recv(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def refused(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as raised:
        await connect(url, additional_headers=headers)
    response = raised.value.response
    return response.status_code, json.loads(response.body or b"{}")


async def nothing_more(ws: ClientConnection, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), wait)


async def test_ready_comes_first_with_user_and_cursor(server: RunningServer) -> None:
    alice = await new_user(server.url)
    ws = await raw_socket(server, alice)
    ready = await recv(ws)
    assert ready["type"] == "ready"
    assert ready["user"] == alice.user
    assert isinstance(ready["cursor"], str) and ready["cursor"]
    assert "peer" not in ready
    await ws.close()


async def test_handshake_refusals_are_http_with_an_error_body(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    auth = {"Authorization": f"Bearer {alice.token}"}
    status, body = await refused(server.ws_url, {})
    assert status == 401 and body["error"]["code"] == "unauthenticated"
    status, body = await refused(server.ws_url, {"Authorization": "Bearer wrong"})
    assert status == 401 and body["error"]["code"] == "unauthenticated"
    status, body = await refused(f"{server.ws_url}?peer={handle(bob)}", auth)
    assert status == 403 and body["error"]["code"] == "not_allowed"
    assert body["error"]["detail"]
    status, body = await refused(f"{server.ws_url}?peer=nobody_here", auth)
    assert status == 404 and body["error"]["code"] == "unknown_user"


async def test_cookie_handshakes_need_an_allowed_origin(server: RunningServer) -> None:
    alice = await new_user(server.url)
    cookie = {"Cookie": f"dmhub_session={alice.token}"}
    status, body = await refused(server.ws_url, cookie)
    assert status == 403 and body["error"]["code"] == "forbidden_origin"
    status, _ = await refused(server.ws_url, {**cookie, "Origin": "https://evil.example"})
    assert status == 403
    ws = await connect(server.ws_url, additional_headers={**cookie, "Origin": server.url})
    assert (await recv(ws))["type"] == "ready"
    await ws.close()


async def test_peer_socket_ready_and_business_greeting(server: RunningServer) -> None:
    shop = await new_user(server.url, open_dms=True, kind="business")
    await shop.update_me(greeting="Welcome! Ask us anything.")
    fan = await new_user(server.url)
    ws = await raw_socket(server, fan, f"?peer={handle(shop).upper()}")
    ready = await recv(ws)
    assert ready["peer"]["handle"] == handle(shop)
    assert ready["greeting"] == "Welcome! Ask us anything."
    await ws.close()
    await fan.post_message(handle(shop), "hello")
    ws = await raw_socket(server, fan, f"?peer={handle(shop)}")
    assert "greeting" not in await recv(ws)  # only before any history
    await ws.close()


async def test_send_acks_the_sender_and_reaches_every_other_socket(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    await bob.follow(handle(alice))
    await alice.follow(handle(bob))  # so that bob may open a socket for this conversation
    a1, a2 = await raw_socket(server, alice), await raw_socket(server, alice)
    b1, b2 = await raw_socket(server, bob), await raw_socket(server, bob, f"?peer={handle(alice)}")
    for ws in (a1, a2, b1, b2):
        assert (await recv(ws))["type"] == "ready"
    await a1.send(json.dumps({"type": "send", "to": handle(bob), "text": "hi", "client_id": "c-1"}))
    ack = await recv(a1)
    assert ack["type"] == "ack" and ack["client_id"] == "c-1"
    message = ack["message"]
    assert message["text"] == "hi" and message["to"] == handle(bob)
    for ws, folder in ((b1, "inbox"), (b2, "inbox"), (a2, "inbox")):
        frame = await recv(ws)
        assert frame["type"] == "message" and frame["message"] == message
        assert frame["folder"] == folder and frame["cursor"]
    await nothing_more(a1)  # the sending socket gets the ack, not a copy
    for ws in (a1, a2, b1, b2):
        await ws.close()


async def test_message_bytes_are_the_same_in_ack_delivery_and_history(
    server: RunningServer,
) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    a, b = await raw_socket(server, alice), await raw_socket(server, bob)
    await recv(a), await recv(b)
    text, client_id = 'quote " slash \\ tab \t é ✓ </script>', 'c "1" ✓'
    await a.send(
        json.dumps({"type": "send", "to": handle(bob), "text": text, "client_id": client_id})
    )
    ack, delivery = str(await a.recv()), str(await b.recv())
    ack_prefix = f'{{"type":"ack","client_id":{msgspec.json.encode(client_id).decode()},"message":'
    assert ack.startswith(ack_prefix) and ack.endswith("}")
    in_ack = ack[len(ack_prefix) : -1]
    assert delivery.startswith('{"type":"message","message":')
    in_delivery = delivery[len('{"type":"message","message":') : delivery.rindex(',"folder":')]
    async with httpx.AsyncClient(base_url=server.url) as http:
        history = await http.get(
            f"/api/conversations/{handle(alice)}/messages",
            headers={"Authorization": f"Bearer {bob.token}"},
        )
    in_history = history.text[len('{"messages":[') : history.text.index('],"next":')]
    # The bytes dmhub has always sent: msgspec's encoding, in this field order.
    message = json.loads(in_ack)
    fields = {
        "from": handle(alice),
        "to": handle(bob),
        "text": text,
        "sent_at": message["sent_at"],
        "client_id": client_id,
    }
    expected = f'{{"id":"{message["id"]}",' + msgspec.json.encode(fields).decode()[1:]
    assert in_ack == in_delivery == in_history == expected
    await a.close(), await b.close()


async def test_repeated_client_id_acks_the_first_message_once(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    a = await raw_socket(server, alice)
    b = await raw_socket(server, bob)
    await recv(a), await recv(b)
    frame = {"type": "send", "to": handle(bob), "text": "once", "client_id": "dup"}
    await a.send(json.dumps(frame))
    first = await recv(a)
    await a.send(json.dumps({**frame, "text": "twice?"}))
    second = await recv(a)
    assert first["message"] == second["message"]
    assert (await recv(b))["message"]["text"] == "once"
    await nothing_more(b)
    assert len((await bob.messages(handle(alice)))["messages"]) == 1
    await a.close(), await b.close()


async def test_errors_do_not_close_the_socket(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    ws = await raw_socket(server, alice)
    await recv(ws)
    cases = [
        ({"type": "send", "to": handle(bob), "text": "hi", "client_id": "n1"}, "not_allowed"),
        ({"type": "send", "to": "nobody_here", "text": "hi", "client_id": "n2"}, "unknown_user"),
        ({"type": "send", "to": handle(bob), "text": "x" * 10_001, "client_id": "n3"}, "too_long"),
        ({"type": "send", "to": handle(bob), "text": "  ", "client_id": "n4"}, "invalid"),
        ({"type": "send", "to": handle(bob), "client_id": "n5"}, "invalid"),
        ({"type": "dance"}, "invalid"),
        ({"type": "typing", "to": handle(bob)}, "not_allowed"),
        ({"type": "read", "peer": handle(bob), "up_to": "1"}, "invalid"),
    ]
    for frame, code in cases:
        await ws.send(json.dumps(frame))
        error = await recv(ws)
        assert error["type"] == "error" and error["code"] == code, frame
        assert error["detail"]
        if "client_id" in frame:
            assert error["client_id"] == frame["client_id"]
    await ws.send("{broken")
    assert (await recv(ws))["code"] == "invalid"
    await ws.send(b"\x00binary")
    assert (await recv(ws))["code"] == "invalid"
    await ws.send(json.dumps({"type": "ping", "nonce": 7}))
    assert await recv(ws) == {"type": "pong", "nonce": 7}
    await ws.close()


async def test_twenty_invalid_frames_in_a_row_close_with_1008(server: RunningServer) -> None:
    alice = await new_user(server.url)
    ws = await raw_socket(server, alice)
    await recv(ws)
    for _ in range(19):
        await ws.send("nope")
        assert (await recv(ws))["code"] == "invalid"
    await ws.send(json.dumps({"type": "ping", "nonce": 1}))  # a good frame resets the count
    assert (await recv(ws))["type"] == "pong"
    for _ in range(19):
        await ws.send("nope")
        await recv(ws)
    await ws.send("nope")
    await recv(ws)
    with pytest.raises(ConnectionClosed):
        await recv(ws)
    assert ws.close_code == 1008


async def test_frames_over_64_kib_close_with_1009(server: RunningServer) -> None:
    alice = await new_user(server.url)
    ws = await raw_socket(server, alice)
    await recv(ws)
    await ws.send(json.dumps({"type": "ping", "nonce": "x" * 65_536}))
    with pytest.raises(ConnectionClosed):
        await recv(ws)
    assert ws.close_code == 1009


async def test_typing_is_live_and_never_stored(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    await bob.follow(handle(alice))
    a, b = await raw_socket(server, alice), await raw_socket(server, bob)
    await recv(a), await recv(b)
    await a.send(json.dumps({"type": "typing", "to": handle(bob).upper()}))
    assert await recv(b) == {"type": "typing", "from": handle(alice)}
    await a.close(), await b.close()
    replay = await raw_socket(server, bob, "?since=0-0")
    await recv(replay)
    await nothing_more(replay)
    await replay.close()


async def test_no_typing_or_receipts_from_someone_who_has_not_accepted(
    server: RunningServer,
) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    request = await alice.post_message(handle(bob), "hello stranger")
    a, b = await raw_socket(server, alice), await raw_socket(server, bob)
    await recv(a), await recv(b)
    await b.send(json.dumps({"type": "typing", "to": handle(alice)}))
    await b.send(json.dumps({"type": "read", "peer": handle(alice), "up_to": request["id"]}))
    own = await recv(b)
    assert own["type"] == "read" and own["reader"] == handle(bob)
    await nothing_more(a)
    await bob.accept(handle(alice))
    await b.send(json.dumps({"type": "typing", "to": handle(alice)}))
    assert (await recv(a))["type"] == "typing"
    await a.close(), await b.close()


async def test_read_receipts_reach_the_peer_only_when_both_have_them_on(
    server: RunningServer,
) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    await bob.follow(handle(alice))
    first = await alice.post_message(handle(bob), "one")
    a, b1, b2 = [await raw_socket(server, c) for c in (alice, bob, bob)]
    for ws in (a, b1, b2):
        await recv(ws)
    await b1.send(json.dumps({"type": "read", "peer": handle(alice), "up_to": first["id"]}))
    expected = {"type": "read", "reader": handle(bob), "peer": handle(alice), "up_to": first["id"]}
    for ws in (b1, b2, a):
        frame = await recv(ws)
        assert {k: v for k, v in frame.items() if k != "cursor"} == expected
        assert frame["cursor"]
    await alice.update_me(read_receipts=False)
    second = await alice.post_message(handle(bob), "two")
    # An HTTP send reaches all of the sender's sockets too.
    assert (await recv(a))["message"] == second
    await recv(b1), await recv(b2)
    await b1.send(json.dumps({"type": "read", "peer": handle(alice), "up_to": second["id"]}))
    assert (await recv(b1))["up_to"] == second["id"]
    await nothing_more(a)
    for ws in (a, b1, b2):
        await ws.close()


async def test_peer_socket_hears_only_its_conversation(server: RunningServer) -> None:
    bob = await new_user(server.url, open_dms=True)
    alice, carol = await new_user(server.url), await new_user(server.url)
    # Alice wrote first, so bob may answer: his socket for her is allowed.
    await alice.post_message(handle(bob), "first")
    scoped = await raw_socket(server, bob, f"?peer={handle(alice)}")
    await recv(scoped)
    await carol.post_message(handle(bob), "from carol")
    await alice.post_message(handle(bob), "from alice")
    frame = await recv(scoped)
    assert frame["message"]["text"] == "from alice"
    assert frame["folder"] == "requests"
    await nothing_more(scoped)
    await scoped.close()


async def test_rule_is_rechecked_on_every_send(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    await bob.follow(handle(alice))
    async with alice.socket(peer=handle(bob)) as socket:
        await socket.send(handle(bob), "allowed")
        await bob.unfollow(handle(alice))
        with pytest.raises(ClientError) as raised:
            await socket.send(handle(bob), "not any more")
        assert raised.value.code == "not_allowed"
        await bob.update_me(open_dms=True)
        await socket.send(handle(bob), "allowed again")


async def test_resume_from_a_cursor_replays_in_order_without_gaps(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    await bob.follow(handle(alice))
    async with bob.socket() as socket:
        await alice.post_message(handle(bob), "seen live")
        live = await socket.next_event()
        cursor = live["cursor"]
    missed = [await alice.post_message(handle(bob), f"missed {i}") for i in range(5)]
    async with bob.socket(since=cursor) as socket:
        assert socket.ready and socket.ready["cursor"] == cursor
        replayed = [await socket.next_event() for _ in range(5)]
        assert [e["message"] for e in replayed] == missed
        cursors = [e["cursor"] for e in replayed]
        assert cursors == sorted(cursors, key=lambda c: tuple(map(int, c.split("-"))))
        after = await alice.post_message(handle(bob), "live again")
        assert (await socket.next_event())["message"] == after
        with pytest.raises(TimeoutError):
            await socket.next_event(timeout=0.3)


async def test_resume_while_messages_keep_arriving_has_no_gap_or_repeat(
    server: RunningServer,
) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    await bob.follow(handle(alice))
    async with bob.socket() as socket:
        cursor = socket.cursor

    async def keep_sending() -> list[str]:
        return [(await alice.post_message(handle(bob), f"n{i}"))["id"] for i in range(40)]

    sender = asyncio.create_task(keep_sending())
    await asyncio.sleep(0.05)
    async with bob.socket(since=cursor) as socket:
        sent = await sender
        got = [(await socket.next_event())["message"]["id"] for _ in range(len(sent))]
        assert got == sent
        with pytest.raises(TimeoutError):
            await socket.next_event(timeout=0.3)


async def test_a_cursor_past_retention_gets_reset(redis_url: str, tmp_path: Path) -> None:
    # The flood is a test's, not a spammer's: the messages limit is off here.
    settings = settings_for(redis_url, tmp_path, event_retention=5, limit_messages_per_min=0)
    async with running_server(settings) as server:
        alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
        async with bob.socket() as socket:
            old = socket.cursor
        for i in range(300):
            await alice.post_message(handle(bob), f"flood {i}")
        ws = await raw_socket(server, bob, f"?since={old}")
        ready = await recv(ws)
        assert ready["type"] == "ready"
        assert await recv(ws) == {"type": "reset"}
        await ws.close()
        for bogus in ("garbage", "99999999999999-0"):
            ws = await raw_socket(server, bob, f"?since={bogus}")
            await recv(ws)
            assert await recv(ws) == {"type": "reset"}
            await ws.close()


async def test_logout_closes_that_sessions_sockets_with_4401(server: RunningServer) -> None:
    alice = await new_user(server.url)
    other_device = Client(server.url)
    assert alice.user
    await other_device.sign_in(alice.user["handle"], "correct horse battery")
    doomed = await raw_socket(server, alice)
    survivor = await raw_socket(server, other_device)
    await recv(doomed), await recv(survivor)
    await alice.sign_out()
    with pytest.raises(ConnectionClosed):
        await recv(doomed)
    assert doomed.close_code == 4401
    await survivor.send(json.dumps({"type": "ping", "nonce": "still here"}))
    assert (await recv(survivor))["type"] == "pong"
    await survivor.close()


async def test_a_refused_handshake_logs_no_server_error(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("ERROR", logger="uvicorn.error"):
        status, _ = await refused(server.ws_url, {})
        await asyncio.sleep(0.1)  # the ASGI task ends after the response is out
    assert status == 401
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


async def test_a_burst_of_frames_is_answered_in_order(server: RunningServer) -> None:
    # More frames than the server reads ahead before it pauses the socket.
    alice = await new_user(server.url)
    ws = await raw_socket(server, alice)
    await recv(ws)
    for n in range(200):
        await ws.send(json.dumps({"type": "ping", "nonce": str(n)}))
    nonces = [(await recv(ws))["nonce"] for _ in range(200)]
    assert nonces == [str(n) for n in range(200)]
    await ws.close()
