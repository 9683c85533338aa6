"""Every bad input is a clean client error, over real sockets (issue 8).

Each case here once answered 500, crashed a socket handler (1006) or printed a
traceback; now each is a 4xx or an `error` frame with a contract code.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from chat import metrics
from chat.client import Client
from tests.support import RunningServer, handle, new_user

DEEP = "[" * 1000 + "]" * 1000


def auth(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.token}"}


async def recv(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


@pytest.fixture
def errors_logged(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.WARNING)

    def seen() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

    return seen


async def test_deeply_nested_http_bodies_are_invalid(server: RunningServer, errors_logged) -> None:  # type: ignore[no-untyped-def]
    alice = await new_user(server.url)
    async with httpx.AsyncClient(base_url=server.url, headers=auth(alice)) as http:
        for method, path in [
            ("POST", "/api/accounts"),
            ("PATCH", "/api/me"),
            ("POST", f"/api/conversations/{handle(alice)}/messages"),
        ]:
            response = await http.request(method, path, content='{"a":' + DEEP + "}")
            assert response.status_code == 422, (path, response.text)
            assert response.json()["error"]["code"] == "invalid"
    assert errors_logged() == []


@pytest.mark.parametrize("cursor", ["\u00b2", "9" * 5000, "1\u00b2"])
async def test_page_cursors_that_int_cannot_read_are_invalid(
    server: RunningServer, cursor: str
) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    await alice.post_message(handle(bob), "hi")
    async with httpx.AsyncClient(base_url=server.url, headers=auth(alice)) as http:
        for path in [
            "/api/conversations",
            "/api/following",
            "/api/followers",
            "/api/blocks",
            f"/api/conversations/{handle(bob)}/messages",
        ]:
            response = await http.get(path, params={"before": cursor})
            assert response.status_code == 422, (path, response.text)
            assert response.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize(
    "since", ["5-99999999999999999999999", "18446744073709551616-0", "1\u00b2-0", "9" * 5000]
)
async def test_out_of_range_cursors_on_resume_get_reset(server: RunningServer, since: str) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    await alice.post_message(handle(bob), "an event, so that the stream has a position")
    async with connect(f"{server.ws_url}?since={since}", additional_headers=auth(alice)) as ws:
        assert (await recv(ws))["type"] == "ready"
        assert await recv(ws) == {"type": "reset"}
        await ws.send(json.dumps({"type": "ping", "nonce": 1}))
        assert await recv(ws) == {"type": "pong", "nonce": 1}


async def test_unknown_profile_fields_are_refused_by_name(server: RunningServer) -> None:
    alice = await new_user(server.url)
    async with httpx.AsyncClient(base_url=server.url, headers=auth(alice)) as http:
        for field in ("password", "handle"):
            response = await http.patch("/api/me", json={"name": "New", field: "x" * 12})
            assert response.status_code == 422
            assert response.json()["error"] == {**response.json()["error"], "code": "invalid"}
            assert response.json()["error"]["field"] == field
        # Nothing of a refused body was applied.
        assert (await http.get("/api/me")).json()["user"]["name"] == handle(alice)


async def test_invisible_texts_and_names_are_refused(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    async with httpx.AsyncClient(base_url=server.url, headers=auth(alice)) as http:
        for blank in ("\u200b", "\u2060\u2060", "\u3164", "\ufeff", "\u202e\u202c"):
            sent = await http.post(
                f"/api/conversations/{handle(bob)}/messages", json={"text": blank}
            )
            assert sent.status_code == 422 and sent.json()["error"]["field"] == "text"
            named = await http.patch("/api/me", json={"name": blank})
            assert named.status_code == 422 and named.json()["error"]["field"] == "name"
        renamed = await http.patch("/api/me", json={"name": "Ali\u202ece"})
        assert renamed.json()["user"]["name"] == "Alice"
        over = await http.post(
            f"/api/conversations/{handle(bob)}/messages", json={"text": "\ufeff" + "x" * 10_000}
        )
        assert over.status_code == 201 and over.json()["message"]["text"] == "x" * 10_000


async def test_bad_frames_are_invalid_and_counted(server: RunningServer, errors_logged) -> None:  # type: ignore[no-untyped-def]
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    await alice.post_message(handle(bob), "hi")
    before = metrics.INVALID_FRAMES._value.get()
    async with connect(server.ws_url, additional_headers=auth(alice)) as ws:
        await recv(ws)
        bad = [
            '{"type":"send","to":"'
            + handle(bob)
            + '","text":"hi","client_id":"c","x":'
            + DEEP
            + "}",
            '{"type":"ping","nonce":' + DEEP + "}",
            '{"type":"dance","x":' + DEEP + "}",
            DEEP,
            json.dumps({"type": "read", "peer": handle(bob), "up_to": "999999"}),
        ]
        for frame in bad:
            await ws.send(frame)
            error = await recv(ws)
            assert error["type"] == "error" and error["code"] == "invalid", (frame[:40], error)
        await ws.send(json.dumps({"type": "ping", "nonce": 2}))
        assert await recv(ws) == {"type": "pong", "nonce": 2}
    assert metrics.INVALID_FRAMES._value.get() == before + len(bad)
    assert errors_logged() == []


async def test_a_client_leaving_mid_body_is_not_an_error(
    server: RunningServer, errors_logged
) -> None:  # type: ignore[no-untyped-def]
    alice = await new_user(server.url)
    host, port = server.host.split(":")
    for _ in range(3):
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"PATCH /api/me HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + str(alice.token).encode() + b"\r\n"
            b"Content-Length: 5000\r\n\r\n" + b'{"name": "' + b"x" * 100
        )
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
    await asyncio.sleep(0.3)
    assert errors_logged() == []


async def test_a_handshake_request_too_long_to_parse_is_answered_400(server: RunningServer) -> None:
    alice = await new_user(server.url)
    host, port = server.host.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET /ws?since={'x' * 20_000} HTTP/1.1\r\nHost: {server.host}\r\n"
        f"Authorization: Bearer {alice.token}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    # Once unanswered and held open for as long as the client liked.
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["error"]["code"] == "invalid"
