"""uvicorn's sans-I/O WebSocket protocol, tuned for many small frames.

What it changes, each measured under `dmhub loadtest` (docs/performance.md):

- A direct write. Frames the hub fans out go straight to the transport when it
  has room (`try_send_text`), with no writer task, queue or ASGI `send`
  coroutine per frame. The ASGI path stays for everything else, and for any
  frame that must wait (see `chat.hub.connection`). A server's frame is not
  masked, so with no extension negotiated (dmhub turns per-message deflate
  off) it is a 2-10 byte header and the payload: `text_frame` builds it
  without websockets' frame objects (about 6 µs less per frame).
- Frames in read by the protocol itself. websockets' parser (a generator per
  frame, a stream reader, a Frame object) cost about 19 µs per received frame;
  a complete, final, masked text or binary frame of a connection with no
  extension is unmasked here instead (about 1.5 µs). Everything else (control
  frames, fragments, anything malformed or too big) still goes to websockets,
  whole frames only, so its parser is always at a frame boundary when it gets
  bytes; see `FrameSplitter`.
- Read-ahead. uvicorn pauses and resumes reading around every received message
  (two epoll changes per frame); this pauses only once `READ_AHEAD` messages
  wait unread, which still bounds what a client can make the server buffer.
- Lighter per-socket state. uvicorn gives every socket an `asyncio.Queue` for
  received messages and an `asyncio.Event` for write room: about 4 KB between
  them, in deques sized for heavy use. A socket needs a short list and a flag.
  The handshake request, its parsed headers and the response are let go once
  the socket is open: nothing reads them later, and every open socket
  carried them.
- No cycles left behind. A closed socket's reference cycles are broken in
  `connection_lost`, so refcounting frees it at once instead of the cyclic
  collector, whose full passes pause every socket in the process.

It also marks the handshake done after a denial response (401, 403, 404 over
HTTP), so uvicorn does not log an error for a refusal that went out correctly,
and answers `400 invalid` to a handshake request websockets cannot parse, which
uvicorn left unanswered and open.

And it releases clients that stop reading. uvicorn waits for room in the
transport before it writes a close frame, and room never comes from a client
that does not read: the close was never sent and the socket stayed open, its
buffers full. Here a close frame is written at once (it is a few bytes past a
buffer that is bounded anyway), and every way a connection ends (our close,
the keepalive's, the app returning, server shutdown) aborts the transport if
the client has not let it go `close_timeout` later: a graceful close would wait
for the buffer to drain, which it never does. The app can abort sooner
(`transport_abort`, used by `chat.hub.connection` with its close deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from typing import Any

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import Protocol, State
from websockets.streams import StreamReader

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask

from chat.config import DEFAULT_CLOSE_DEADLINE_S, SOCKET_SEND_BUFFER

# Messages a client may have waiting unread before the server stops reading its
# socket (TCP then pushes back). One is uvicorn's own choice.
READ_AHEAD = 8
# The scope extension under which the app finds `try_send_text`.
DIRECT_WRITE = "dmhub.direct_write"


# RFC 6455 5.2: FIN and the text opcode; then the length in 7 bits, or 126 and
# 16 bits, or 127 and 64 bits (a server's frames carry no mask).
_FIN_TEXT = 0x81
_LEN_16 = struct.Struct("!BBH")
_LEN_64 = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame with no extension, as bytes on the wire."""
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 1 << 16:
        return _LEN_16.pack(_FIN_TEXT, 126, size) + payload
    return _LEN_64.pack(_FIN_TEXT, 127, size) + payload


_OP_TEXT = 0x1
_OP_BINARY = 0x2
_FIN = 0x80
_MASKED = 0x80
_UINT16 = struct.Struct("!H")
_UINT64 = struct.Struct("!Q")
_AT_EOF = StreamReader.at_eof.__code__


def at_frame_boundary(conn: Protocol) -> bool:
    """websockets' parser has nothing buffered and waits for a frame's first byte.

    Its parser is a chain of generators; between frames, with an empty buffer,
    the innermost one is the stream reader's `at_eof` (mid-frame, it is
    `read_exact`). Anything else (pipelined bytes before the handshake answer,
    another websockets version) keeps the connection on websockets' parser."""
    generator = getattr(conn, "parser", None)
    while generator is not None and getattr(generator, "gi_yieldfrom", None) is not None:
        generator = generator.gi_yieldfrom
    return generator is not None and getattr(generator, "gi_code", None) is _AT_EOF


class FrameSplitter:
    """Cuts received bytes into whole frames, unmasking the plain data frames (pure).

    `next_frame` returns the next whole frame: `(True, payload, opcode)` for a
    final, masked text or binary frame with no reserved bit and at most
    `limit` bytes, outside a fragmented message; `(False, raw, 0)` for any
    other whole frame, which the caller hands to websockets as it came. It
    returns None when no whole frame is buffered, or when the next frame
    announces more than `limit` bytes or is not masked: then `handover` is
    set, and `rest()` (from that frame's first byte) belongs to websockets,
    which refuses it at once (1009, 1002). What waits for more bytes is at
    most one frame: `limit` plus a 14-byte header.
    """

    __slots__ = ("buf", "handover", "limit", "pos")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = b""
        self.pos = 0
        self.handover = False

    def push(self, data: bytes) -> None:
        self.buf = self.buf[self.pos :] + data if self.pos < len(self.buf) else data
        self.pos = 0

    def rest(self) -> bytes:
        rest = self.buf[self.pos :]
        self.buf, self.pos = b"", 0
        return rest

    def next_frame(self, in_fragment: bool = False) -> tuple[bool, bytes, int] | None:
        buf, pos = self.buf, self.pos
        available = len(buf) - pos
        if available < 2:
            return None
        first, second = buf[pos], buf[pos + 1]
        size = second & 0x7F
        header = 2
        if size == 126:
            if available < 4:
                return None
            size = _UINT16.unpack_from(buf, pos + 2)[0]
            header = 4
        elif size == 127:
            if available < 10:
                return None
            size = _UINT64.unpack_from(buf, pos + 2)[0]
            header = 10
        if size > self.limit or not second & _MASKED:
            self.handover = True
            return None
        header += 4  # the mask
        if header + size > available:
            return None
        start, stop = pos + header, pos + header + size
        if stop == len(buf):
            # All read: an idle socket keeps no bytes (its last frame could be 64 KiB).
            self.buf, self.pos = b"", 0
        else:
            self.pos = stop
        opcode = first & 0x0F
        if (
            first & 0xF0 == _FIN  # final, and no reserved bit
            and (opcode == _OP_TEXT or opcode == _OP_BINARY)
            and not in_fragment
        ):
            return True, apply_mask(buf[start:stop], buf[start - 4 : start]), opcode
        return False, buf[pos:stop], 0


class Inbox:
    """The received-message queue uvicorn's protocol uses, for one consumer."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[ASGIReceiveEvent] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: ASGIReceiveEvent) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> ASGIReceiveEvent:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class Flag:
    """The write-room event uvicorn's protocol uses; waiters are rare (a full socket)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter
        return True


class DmhubWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.close_timeout = DEFAULT_CLOSE_DEADLINE_S
        # Set once the socket is open, when this connection's frames can be
        # read here (see FrameSplitter); None: websockets reads them all.
        self.splitter: FrameSplitter | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linux grows a socket's send buffer up to tcp_wmem's maximum (4 MiB)
            # even while the peer reads nothing: a fixed size bounds what the
            # kernel holds for a client that stopped reading.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER)

    def data_received(self, data: bytes) -> None:
        if self.splitter is not None:
            self._receive_frames(self.splitter, data)
            return
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.handshake_initiated:
            self._refuse_bad_handshake()

    def _receive_frames(self, splitter: FrameSplitter, data: bytes) -> None:
        """The plain data frames straight to the app; every other whole frame
        through websockets, as uvicorn's `data_received` would handle it."""
        conn = self.conn
        splitter.push(data)
        while True:
            if conn.state is not State.OPEN or splitter.handover:
                # Closing (websockets answers or discards what follows), or a
                # frame websockets refuses: it reads everything from here on.
                self.splitter = None
                rest = splitter.rest()
                if rest:
                    WebSocketsSansIOProtocol.data_received(self, rest)
                return
            frame = splitter.next_frame(in_fragment=conn.current_size is not None)
            if frame is None:
                if splitter.handover:
                    continue
                return
            plain, payload, opcode = frame
            if plain:
                # What uvicorn's handle_text / handle_bytes do with a final frame.
                self.curr_msg_data_type = "text" if opcode == _OP_TEXT else "bytes"
                self.frames = [payload]
                self.send_receive_event_to_app()
            else:
                WebSocketsSansIOProtocol.data_received(self, payload)

    def _start_splitting(self) -> None:
        """Once the socket is open: read frames here if websockets is between frames."""
        conn = self.conn
        limits = [
            size
            for size in (
                getattr(conn, "max_message_size", None),
                getattr(conn, "max_fragment_size", None),
            )
            if size is not None
        ]
        if (
            limits
            and not conn.extensions
            and conn.state is State.OPEN
            and hasattr(conn, "current_size")
            and at_frame_boundary(conn)
        ):
            self.splitter = FrameSplitter(min(limits))

    def _refuse_bad_handshake(self) -> None:
        """Answer a handshake request websockets could not parse (a request line
        over 8 KiB, say), and close. uvicorn only writes what websockets queues
        after a parsed request, so without this the connection hung, unanswered,
        for as long as the client kept it open."""
        self.conn.data_to_send()  # websockets' own answer, in plain text: ours instead
        detail = f"The WebSocket handshake request is not valid: {self.conn.handshake_exc}."
        body = json.dumps({"error": {"code": "invalid", "detail": detail}}).encode()
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.handshake_complete = self.close_sent = True
        self.transport.close()
        self._abort_later()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The scope has its own copy; websockets' parser would keep this one
        # (a local of its generator) for the life of the socket.
        event.headers.clear()
        if self.handshake_initiated and not self.close_sent:
            # Offered to the app (the ASGI task starts on the next loop turn).
            extensions = self.scope["extensions"]
            assert extensions is not None
            extensions[DIRECT_WRITE] = {"write_now": self.try_send_text, "abort": self.abort}

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # Break the reference cycles a socket would otherwise leave for the
        # cyclic collector (whose full passes pause every socket): the offer of
        # the direct write points back here, and websockets' parser generator
        # holds the protocol object that holds it.
        extensions = self.scope.get("extensions") if self.handshake_initiated else None
        if extensions:
            extensions.pop(DIRECT_WRITE, None)
        self.conn.parser = None  # type: ignore[assignment]
        self.splitter = None

    def send_receive_event_to_app(self) -> None:
        # uvicorn's version pauses reading after every message; ours lets a few
        # queue first. `receive` (inherited) resumes once the queue is empty.
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused and self.queue.qsize() >= READ_AHEAD:
            self.read_paused = True
            self.transport.pause_reading()

    def try_send_text(self, text: str) -> bool:
        """Write one text frame now if the socket is open and has room; else False.

        False asks the caller to queue the frame and send it through ASGI, which
        waits for room. Frames are never dropped here.
        """
        if (
            self.disconnected
            or self.close_sent
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
        ):
            return False
        conn = self.conn
        if conn.extensions or conn.writes or conn.expect_continuation_frame or conn.debug:
            # Anything but the plain case goes through websockets.
            conn.send_text(text.encode())
            self.transport.write(b"".join(conn.data_to_send()))
        else:
            self.transport.write(text_frame(text.encode()))
        return True

    def abort(self) -> None:
        """Drop the connection now, buffered data and all (a client that stopped reading)."""
        if not self.disconnected:
            self.transport.abort()

    def _abort_later(self) -> None:
        """The transport is closing gracefully; make sure it is gone after `close_timeout`."""
        if not self.disconnected:
            if self.close_timer is not None:
                self.close_timer.cancel()
            self.close_timer = self.loop.call_later(self.close_timeout, self.abort)

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self._abort_later()

    def shutdown(self) -> None:
        super().shutdown()
        self._abort_later()

    async def run_asgi(self) -> None:
        await super().run_asgi()
        if self.close_timer is None:
            self._abort_later()

    def _send_close_now(self, code: int, reason: str) -> None:
        """uvicorn's close, without first waiting for room the client may never make."""
        if self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        try:
            self.conn.send_close(code, reason)
        except InvalidState:
            raise ClientDisconnected() from None
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self._abort_later()

    async def send(self, message: ASGISendEvent) -> None:
        if (
            message["type"] == "websocket.close"
            and self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
        ):
            if self.disconnected:
                raise ClientDisconnected()
            self._send_close_now(message.get("code", 1000), message.get("reason", "") or "")
            return
        await super().send(message)
        kind = message["type"]
        if kind == "websocket.accept":
            self.request = self.response = None  # type: ignore[assignment]
            self._start_splitting()
        elif kind == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True


def direct_write(scope: Any) -> Any:
    """The server's direct write for this socket, or None (other ASGI servers)."""
    extension = (scope.get("extensions") or {}).get(DIRECT_WRITE)
    return extension["write_now"] if extension else None


def transport_abort(scope: Any) -> Any:
    """Drops this socket's connection at once, or None (other ASGI servers)."""
    extension = (scope.get("extensions") or {}).get(DIRECT_WRITE)
    return extension["abort"] if extension else None
