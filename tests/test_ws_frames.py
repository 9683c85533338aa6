"""Frames the server writes itself (`text_frame`, the direct write) are what
websockets would have written, and arrive whole at every length."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode

from chat.transport.uvicorn_ws import text_frame
from tests.support import RunningServer, handle, new_user


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_is_websockets_own_frame(size: int) -> None:
    payload = ("é" * size).encode()[:size]
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected


async def frame_of(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == kind:
            return frame


async def test_direct_frames_of_every_length_arrive_whole(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    auth = {"Authorization": f"Bearer {alice.token}"}
    bob_auth = {"Authorization": f"Bearer {bob.token}"}
    async with (
        connect(server.ws_url, additional_headers=auth) as alice_ws,
        connect(server.ws_url, additional_headers=bob_auth) as bob_ws,
    ):
        await frame_of(alice_ws, "ready")
        await frame_of(bob_ws, "ready")
        # Short frames (7-bit length), and 16-bit lengths: 20,000 and 40,000 bytes.
        for n, text in enumerate(["hi", "x" * 200, "é" * 10_000, "😀" * 10_000]):
            cid = f"len-{n}"
            send = {"type": "send", "to": handle(bob), "text": text, "client_id": cid}
            await alice_ws.send(json.dumps(send, ensure_ascii=False))
            ack = await frame_of(alice_ws, "ack")
            delivered = await frame_of(bob_ws, "message")
            assert ack["client_id"] == cid and ack["message"]["text"] == text
            assert delivered["message"]["text"] == text
            assert delivered["message"]["id"] == ack["message"]["id"]
