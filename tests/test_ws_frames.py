"""Frames the server writes itself (`text_frame`, the direct write) are what
websockets would have written, and arrive whole at every length; frames it
reads itself (`FrameSplitter`) reach the app as websockets would have passed
them, and everything else still goes through websockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from chat.transport.uvicorn_ws import DmhubWebSocketProtocol, FrameSplitter, text_frame
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


def masked(opcode: Opcode, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
    raw = Frame(opcode, payload, fin=fin).serialize(mask=True, extensions=[])
    # websockets will not write a reserved bit with no extension: set it here.
    return bytes([raw[0] | 0x40]) + raw[1:] if rsv1 else raw


def all_frames(splitter: FrameSplitter, in_fragment: bool = False) -> list[tuple[bool, bytes, int]]:
    found = []
    while (frame := splitter.next_frame(in_fragment)) is not None:
        found.append(frame)
    return found


def test_the_splitter_unmasks_data_frames_however_the_bytes_arrive() -> None:
    payloads = [b"", b"hi", "é".encode() * 100, b"x" * 70_000]
    stream = b"".join(masked(Opcode.TEXT, p) for p in payloads[:3])
    stream += masked(Opcode.BINARY, payloads[3])
    for chunk in (1, 3, 1000, len(stream)):
        splitter = FrameSplitter(limit=100_000)
        found = []
        for start in range(0, len(stream), chunk):
            splitter.push(stream[start : start + chunk])
            found += all_frames(splitter)
        assert [(plain, bytes(data)) for plain, data, _ in found] == [(True, p) for p in payloads]
        assert [opcode for _, _, opcode in found] == [1, 1, 1, 2]
        assert splitter.buf == b""  # nothing held once every frame is read
        assert splitter.rest() == b""


def test_the_splitter_leaves_every_other_frame_whole_for_websockets() -> None:
    others = [
        masked(Opcode.PING, b"nonce"),
        masked(Opcode.CLOSE, b"\x03\xe8"),
        masked(Opcode.TEXT, b"first half", fin=False),  # a fragmented message starts
        masked(Opcode.TEXT, b"reserved bit", rsv1=True),
        bytes([0x83, 0x80, 0, 0, 0, 0]),  # a reserved opcode
    ]
    splitter = FrameSplitter(limit=1000)
    splitter.push(b"".join(others))
    assert all_frames(splitter) == [(False, raw, 0) for raw in others]
    # Inside a fragmented message even a final text frame is websockets' to judge.
    final = masked(Opcode.TEXT, b"x")
    splitter.push(final)
    assert all_frames(splitter, in_fragment=True) == [(False, final, 0)]


@pytest.mark.parametrize(
    "frame",
    [
        masked(Opcode.TEXT, b"x" * 1001),  # over the limit: refused on its header
        Frame(Opcode.TEXT, b"plain").serialize(mask=False, extensions=[]),  # not masked
    ],
)
def test_the_splitter_hands_over_what_websockets_refuses(frame: bytes) -> None:
    splitter = FrameSplitter(limit=1000)
    before = masked(Opcode.TEXT, b"ok")
    splitter.push(before + frame[:20])
    assert splitter.next_frame() == (True, b"ok", 1)
    assert splitter.next_frame() is None and splitter.handover
    assert splitter.rest() == frame[:20]


def splitting_sockets(server: RunningServer) -> list[DmhubWebSocketProtocol]:
    connections = server.server.server_state.connections
    return [c for c in connections if isinstance(c, DmhubWebSocketProtocol)]


async def test_frames_in_every_shape_reach_the_app(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    auth = {"Authorization": f"Bearer {alice.token}"}

    def send(cid: str) -> bytes:
        frame = {"type": "send", "to": handle(bob), "text": cid, "client_id": cid}
        return json.dumps(frame).encode()

    async with connect(server.ws_url, additional_headers=auth) as ws:
        await frame_of(ws, "ready")
        assert [p.splitter is not None for p in splitting_sockets(server)] == [True]
        # One frame over two writes, then two frames in one write.
        raw = masked(Opcode.TEXT, send("split"))
        ws.transport.write(raw[:7])
        await asyncio.sleep(0.05)
        ws.transport.write(raw[7:])
        assert (await frame_of(ws, "ack"))["client_id"] == "split"
        ws.transport.write(masked(Opcode.TEXT, send("one")) + masked(Opcode.TEXT, send("two")))
        assert (await frame_of(ws, "ack"))["client_id"] == "one"
        assert (await frame_of(ws, "ack"))["client_id"] == "two"
        # A ping answered by websockets, between data frames.
        await asyncio.wait_for(await ws.ping(), 5)
        # A fragmented message: websockets joins it.
        whole = send("fragments").decode()
        await ws.send([whole[:10], whole[10:30], whole[30:]])
        assert (await frame_of(ws, "ack"))["client_id"] == "fragments"
        ws.transport.write(masked(Opcode.TEXT, send("after")))
        assert (await frame_of(ws, "ack"))["client_id"] == "after"
        # Binary frames are answered as before: not JSON text.
        await ws.send(b'{"type":"ping"}')
        error = await frame_of(ws, "error")
        assert error["code"] == "invalid"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (masked(Opcode.TEXT, b'{"type":"ping","nonce":"\xff"}'), 1007),  # not UTF-8
        (Frame(Opcode.TEXT, b"{}").serialize(mask=False, extensions=[]), 1002),  # not masked
        (masked(Opcode.TEXT, b"x", rsv1=True), 1002),  # a reserved bit
    ],
    # Named: the frames' random mask keys would make the ids differ from one
    # collection to the next, which pytest-xdist's workers refuse.
    ids=["not_utf8", "not_masked", "reserved_bit"],
)
async def test_frames_breaking_the_protocol_close_the_socket(
    server: RunningServer, raw: bytes, code: int
) -> None:
    alice = await new_user(server.url)
    auth = {"Authorization": f"Bearer {alice.token}"}
    async with connect(server.ws_url, additional_headers=auth) as ws:
        await frame_of(ws, "ready")
        ws.transport.write(raw)
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == code
