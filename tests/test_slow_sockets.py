"""Clients that stop reading are released, and cost bounded memory (issue 8).

A real `dmhub serve` process, and real sockets that stop reading after the
handshake: raw TCP with a 4 KiB receive buffer, as a stalled phone or a hostile
client would be. Before the fix their 1013 close waited behind a full buffer
forever, and a `?since=` replay that was not read pinned its whole backlog.
Now each is closed with 1013 (a full outbox, or no write progress for the
write deadline) and aborted at the close deadline; RSS levels off, and the
sockets gauge comes back to the sockets that are really there.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from websockets.sync.client import connect

from chat.store import keys
from chat.store.store import Store
from tests.support import PASSWORD, DmhubProcess, async_redis_client, unique_handle

pytestmark = pytest.mark.timeout(120)

WRITE_DEADLINE_S = 2.0
CLOSE_DEADLINE_S = 3.0
# Past both deadlines: time to notice, and a loaded CI machine.
SLACK_S = 4.0
# A maximum-size message whose frame is as large as frames get: control
# characters are escaped as \u0001, six bytes each.
BIG_TEXT = "a" + "\x01" * 9_998 + "a"
VICTIMS = 4
SLOW_PER_VICTIM = 5
MESSAGES_PER_VICTIM = 30
REPLAYERS = 6
MIB = 1024 * 1024


def sign_up(http: httpx.Client, open_dms: bool = False) -> tuple[str, str]:
    handle = unique_handle("s")
    response = http.post("/api/accounts", json={"handle": handle, "password": PASSWORD})
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    if open_dms:
        patched = http.patch(
            "/api/me", json={"open_dms": True}, headers={"Authorization": f"Bearer {token}"}
        )
        assert patched.status_code == 200, patched.text
    return handle, token


def read_frame(sock: socket.socket, buffer: bytearray) -> tuple[int, bytes] | None:
    """One unmasked server frame from `buffer`, reading more as needed; None at EOF."""

    def need(n: int) -> bool:
        while len(buffer) < n:
            chunk = sock.recv(65536)
            if not chunk:
                return False
            buffer.extend(chunk)
        return True

    if not need(2):
        return None
    opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
    start = 2
    if length == 126:
        if not need(4):
            return None
        length, start = struct.unpack("!H", buffer[2:4])[0], 4
    elif length == 127:
        if not need(10):
            return None
        length, start = struct.unpack("!Q", buffer[2:10])[0], 10
    if not need(start + length):
        return None
    payload = bytes(buffer[start : start + length])
    del buffer[: start + length]
    return opcode, payload


class NonReader:
    """A WebSocket client that reads the handshake and `ready`, then stops reading."""

    def __init__(self, port: int, token: str, query: str = "") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        self.buffer = bytearray()
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, "the server closed during the handshake"
            self.buffer.extend(chunk)
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.buffer = bytearray(rest)
        frame = read_frame(self.sock, self.buffer)
        assert frame is not None and b'"ready"' in frame[1], frame
        self.cursor = re.search(rb'"cursor":"([0-9-]+)"', frame[1])[1].decode()  # type: ignore[index]

    def read_to_close(self) -> int | None:
        """Read on at last: the close code the server sent, if it did."""
        try:
            while (frame := read_frame(self.sock, self.buffer)) is not None:
                if frame[0] == 0x8:
                    return int(struct.unpack("!H", frame[1][:2])[0])
        except OSError:
            pass
        return None

    def close(self) -> None:
        self.sock.close()


def gauge_of(http: httpx.Client) -> float:
    text = http.get("/metrics").text
    return float(re.search(r"^dmhub_sockets (\S+)$", text, re.M)[1])  # type: ignore[index]


class Server:
    def __init__(self, process: DmhubProcess) -> None:
        self.process = process
        assert process.process is not None
        self.ps = psutil.Process(process.process.pid)
        self.http = httpx.Client(base_url=process.url, timeout=10)

    def rss_mib(self) -> float:
        return self.ps.memory_info().rss / MIB

    def gauge(self) -> float:
        return gauge_of(self.http)

    def open_from(self, client_ports: set[int]) -> int:
        """Server-side TCP connections still open to any of these client ports."""
        return sum(
            1
            for c in self.ps.net_connections(kind="tcp")
            if c.raddr and c.raddr.port in client_ports and c.status == psutil.CONN_ESTABLISHED
        )

    def wait_released(self, slow: list[NonReader], live: int, within: float) -> float:
        started = time.monotonic()
        ports = {s.port for s in slow}
        while True:
            gauge, still_open = self.gauge(), self.open_from(ports)
            if gauge == live and still_open == 0:
                return time.monotonic() - started
            if time.monotonic() - started > within:
                raise AssertionError(
                    f"after {within:.0f} s: sockets gauge {gauge:g} (live {live}), "
                    f"{still_open} of {len(slow)} slow connections still open"
                )
            time.sleep(0.1)


class Reader(threading.Thread):
    """A healthy client of the same server: it reads everything, and counts messages."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.ws = connect(
            url.replace("http", "ws") + "/ws",
            additional_headers={"Authorization": f"Bearer {token}"},
            max_size=None,
        ).__enter__()
        self.messages = 0
        self.start()

    def run(self) -> None:
        try:
            for frame in self.ws:
                if '"type":"message"' in str(frame):
                    self.messages += 1
        except Exception:
            pass


def test_non_reading_sockets_are_released_and_memory_levels_off(
    redis_url: str, tmp_path: Path, record_figures: Callable[[str], None]
) -> None:
    env = {
        "REDIS_URL": redis_url,
        "DMHUB_DATA_DIR": str(tmp_path),
        "DMHUB_WRITE_DEADLINE": str(WRITE_DEADLINE_S),
        "DMHUB_CLOSE_DEADLINE": str(CLOSE_DEADLINE_S),
        # Limits on senders are not what this test is about: 0 turns them off.
        "DMHUB_LIMIT_MESSAGES_PER_MIN": "0",
        "DMHUB_LIMIT_NEW_CONVERSATIONS_PER_DAY": "0",
        "DMHUB_LIMIT_REQUESTS_PER_HOUR": "0",
        "DMHUB_LIMIT_SIGNUPS_PER_HOUR": "0",
    }
    process = DmhubProcess(env).start()
    server = Server(process)
    slow: list[NonReader] = []
    try:
        http = server.http
        _, sender_token = sign_up(http)
        victims = [sign_up(http, open_dms=True) for _ in range(VICTIMS)]
        auth = {"Authorization": f"Bearer {sender_token}"}
        for handle, _ in victims:
            assert http.post(
                f"/api/conversations/{handle}/messages", json={"text": "hello"}, headers=auth
            ).status_code in (200, 201)
        healthy = Reader(process.url, victims[0][1])
        slow = [
            NonReader(process.port, token) for _, token in victims for _ in range(SLOW_PER_VICTIM)
        ]
        cursors = {
            token: s.cursor for s, (_, token) in zip(slow[::SLOW_PER_VICTIM], victims, strict=True)
        }
        # Reads again once closed, within the close deadline. Its person is sent to
        # first in every round, so its sockets are the first to be closed.
        late = slow[0]
        time.sleep(0.5)
        assert server.gauge() == 1 + len(slow)
        rss_start = server.rss_mib()
        late_code: list[int | None] = []

        def read_late() -> None:
            # Once sockets start being closed, read again well within the deadline.
            watcher = httpx.Client(base_url=process.url, timeout=10)
            while gauge_of(watcher) == 1 + len(slow):
                time.sleep(0.05)
            watcher.close()
            time.sleep(0.3)
            late_code.append(late.read_to_close())

        late_reading = threading.Thread(target=read_late, daemon=True)
        late_reading.start()

        # Live: maximum-size messages to people whose sockets do not read.
        for _ in range(MESSAGES_PER_VICTIM):
            for handle, _ in victims:
                response = http.post(
                    f"/api/conversations/{handle}/messages", json={"text": BIG_TEXT}, headers=auth
                )
                assert response.status_code == 201, response.text
        late_reading.join(10)
        assert late_code == [1013], "a client that reads again gets 1013"
        live_release = server.wait_released(slow, 1, WRITE_DEADLINE_S + CLOSE_DEADLINE_S + SLACK_S)
        rss_live = server.rss_mib()

        # Replay: resuming sockets that do not read what they asked for, twice.
        rounds: list[tuple[float, float]] = []
        for _ in range(2):
            replayers = [
                NonReader(process.port, token, f"?since={cursors[token]}")
                for _, token in victims
                for _ in range(REPLAYERS // VICTIMS + 1)
            ][:REPLAYERS]
            slow += replayers
            released = server.wait_released(
                replayers, 1, WRITE_DEADLINE_S + CLOSE_DEADLINE_S + SLACK_S
            )
            rounds.append((released, server.rss_mib()))

        # The healthy socket got everything, and the server logged no failure.
        deadline = time.monotonic() + 10
        while healthy.messages < MESSAGES_PER_VICTIM and time.monotonic() < deadline:
            time.sleep(0.1)
        assert healthy.messages == MESSAGES_PER_VICTIM
        healthy.ws.close()
        log = process.log()
        assert "Traceback" not in log and "ERROR" not in log, log

        frame_kib = len(BIG_TEXT.replace("\x01", "\\u0001")) / 1024
        record_figures(
            f"slow sockets: {len(slow)} ({VICTIMS * SLOW_PER_VICTIM} live, "
            f"{2 * REPLAYERS} replaying), frames of {frame_kib:.0f} KiB\n"
            f"live flood: all released {live_release + 0.5:.1f} s after the last send; "
            f"replays released in "
            f"{', '.join(f'{r:.1f}' for r, _ in rounds)} s\n"
            f"RSS MiB: start {rss_start:.0f}, after live {rss_live:.0f}, "
            f"after replays {', '.join(f'{m:.0f}' for _, m in rounds)}"
        )
        # Bounded: each slow socket may hold about one outbox (1 MiB) and one replay
        # page (256 KiB) until it is released; nothing stays pinned.
        assert rss_live - rss_start < 40, (rss_start, rss_live)
        assert rounds[1][1] - rounds[0][1] < 10, rounds
        assert rounds[1][1] - rss_start < 50, (rss_start, rounds)
    finally:
        for s in slow:
            s.close()
        server.http.close()
        process.terminate()


async def test_replay_pages_are_bounded_in_bytes_and_cover_the_stream(redis_url: str) -> None:
    client = async_redis_client(redis_url, decode_responses=True)
    store = Store(client, event_retention=1000)
    key = keys.events("pager")
    sizes = [10, 60_000, 60_000, 100, 200_000, 5, 5, 5, 70_000, 70_000, 70_000, 1]
    for n, size in enumerate(sizes, start=1):
        await client.xadd(key, {"p": "bob", "f": "x" * size}, id=f"{n}-0")
    try:
        cursor, seen, pages = "0-0", [], 0
        while True:
            events, more = await store.events_page("pager", cursor, 500, 100_000)
            pages += 1
            # Over the budget only when one event alone is (it still goes, alone).
            total = sum(len(body) + 3 for _, _, _, body in events)
            assert total <= 100_000 or len(events) == 1, total
            seen += [len(body) for _, _, _, body in events]
            if events:
                cursor = events[-1][0]
            if not more:
                break
        assert seen == sizes and pages == 6
        # A count cap says "more" even when the bytes would allow the rest.
        events, more = await store.events_page("pager", "0-0", 1, 100_000)
        assert len(events) == 1 and more
    finally:
        await client.aclose()
