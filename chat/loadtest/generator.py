"""One generator process: its share of sockets, sends and measurements.

Sends are open-loop: message i is due at start + i / rate whether or not
earlier ones were answered, and every latency is measured from the time a
message was *due*, not from when it went out, so a stalled server cannot hide
its stall (no coordinated omission). The due time travels inside the message
text; sender and receiver are in the same process, and time.monotonic is one
clock for every process on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from chat.loadtest.adapters import Account, Adapter, load_adapter
from chat.loadtest.stats import Tally, record

CONNECT_CONCURRENCY = 64
CONNECT_TIMEOUT_S = 30.0


@dataclass
class Plan:
    """A generator process's share of the work (picklable: it crosses processes)."""

    index: int
    adapter: str
    urls: list[str]
    pairs: list[tuple[Account, Account]]  # (sender, recipient)
    sockets: dict[str, int]  # handle -> how many sockets
    rate: float
    duration: float
    drain: float
    ramp: float
    slow_fraction: float = 0.0
    churn_rate: float = 0.0
    text_size: int = 32
    report_interval: float = 0.5
    seed: int = 0
    # Part of every client_id: dmhub answers a client_id it has seen from that
    # sender with the original message, so a rerun on the same accounts would
    # otherwise look like total loss.
    run_id: str = "run"


@dataclass(eq=False)
class LoadSocket:
    account: Account
    url: str
    slow: bool
    connection: ClientConnection | None = None
    cursor: str | None = None
    seen: set[str] = field(default_factory=set)
    reader: asyncio.Task[None] | None = None
    reconnecting: bool = False


class Generator:
    def __init__(self, plan: Plan, report: Callable[[str, dict[str, Any]], None]) -> None:
        self.plan = plan
        self.report = report
        self.adapter: Adapter = load_adapter(plan.adapter)
        self.delta = Tally()
        self.sockets: dict[str, list[LoadSocket]] = {}
        self.pending: dict[str, tuple[float, str]] = {}  # client_id -> (due, recipient)
        self.random = random.Random(plan.seed)
        self.phase = "connecting"
        self._closing = False
        # Running totals (the delta is reset at every report) for the drain.
        self.expected_total = 0
        self.delivered_total = 0
        self.draining = False
        self.settled = asyncio.Event()
        self.stop_churn = asyncio.Event()

    # -- sockets ---------------------------------------------------------------

    async def _open(self, sock: LoadSocket) -> None:
        url, headers = self.adapter.socket(sock.url, sock.account, sock.cursor)
        started = time.monotonic()
        connection = await connect(
            url,
            additional_headers=headers,
            open_timeout=CONNECT_TIMEOUT_S,
            compression=None,
            max_size=None,
            # A slow reader lets one frame queue up, then stops reading the TCP
            # stream, so the server sees a client that cannot keep up.
            max_queue=1 if sock.slow else 1024,
            ping_interval=None,
        )
        cursor = await self.adapter.opened(connection)
        record(self.delta.connect, time.monotonic() - started)
        if cursor:
            sock.cursor = cursor
        if sock.connection is None:
            self.delta.connected += 1  # reopened sockets count as reconnects instead
        sock.connection = connection
        task = self._watch_slow(sock) if sock.slow else self._read(sock, connection)
        sock.reader = asyncio.create_task(task)

    async def _connect_all(self) -> None:
        plan = self.plan
        order: list[LoadSocket] = []
        receiving: list[LoadSocket] = []
        for index, (sender, recipient) in enumerate(plan.pairs):
            for account in (sender, recipient):
                socks = [
                    LoadSocket(account, plan.urls[(index + n) % len(plan.urls)], slow=False)
                    for n in range(plan.sockets.get(account.handle, 1))
                ]
                self.sockets[account.handle] = socks
                order.extend(socks)
                if account is recipient:
                    receiving.extend(socks)
        # A fraction of the receiving sockets stop reading once connected.
        self.random.shuffle(receiving)
        for sock in receiving[: round(plan.slow_fraction * len(receiving))]:
            sock.slow = True
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        start = time.monotonic()

        async def open_one(i: int, sock: LoadSocket) -> None:
            await asyncio.sleep(max(0.0, start + i / plan.ramp - time.monotonic()))
            async with gate:
                try:
                    await self._open(sock)
                except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
                    self.delta.connect_failures += 1
                    self.delta.errors[f"connect:{type(exc).__name__}"] += 1

        await asyncio.gather(*(open_one(i, s) for i, s in enumerate(order)))

    def _regular(self, handle: str) -> list[LoadSocket]:
        return [s for s in self.sockets.get(handle, []) if not s.slow]

    async def _read(self, sock: LoadSocket, connection: ClientConnection) -> None:
        parse = self.adapter.parse
        own = sock.account.handle.lower()
        try:
            async for raw in connection:
                now = time.monotonic()
                frame = parse(raw)
                if frame.reply is not None:
                    await connection.send(frame.reply)
                if frame.kind == "message":
                    if frame.cursor:
                        sock.cursor = frame.cursor
                    if (frame.sender or "").lower() == own or frame.message_id is None:
                        continue  # a copy of our own send
                    if frame.message_id in sock.seen:
                        self.delta.duplicates += 1
                        continue
                    sock.seen.add(frame.message_id)
                    self.delta.delivered += 1
                    self.delivered_total += 1
                    due = _due(frame.text)
                    if due is not None:
                        record(self.delta.delivery, now - due)
                elif frame.kind == "ack" and frame.client_id is not None:
                    entry = self.pending.pop(frame.client_id, None)
                    if entry is not None:
                        due, recipient = entry
                        self.delta.acked += 1
                        expected = len(self._regular(recipient))
                        self.delta.expected += expected
                        self.expected_total += expected
                        record(self.delta.ack, now - due)
                elif frame.kind == "error":
                    self.delta.errors[frame.code or "error"] += 1
                    if frame.client_id is not None:
                        self.pending.pop(frame.client_id, None)
                elif frame.kind in ("read", "ready") and frame.cursor:
                    sock.cursor = frame.cursor
                elif frame.kind == "reset":
                    self.delta.errors["reset"] += 1
                if (
                    self.draining
                    and not self.pending
                    and self.delivered_total >= self.expected_total
                ):
                    self.settled.set()
        except ConnectionClosed:
            pass
        finally:
            code = connection.close_code
            if not self._closing and not sock.reconnecting:
                self.delta.errors[f"closed:{code}"] += 1

    async def _watch_slow(self, sock: LoadSocket) -> None:
        assert sock.connection is not None
        await sock.connection.wait_closed()
        if not self._closing:
            self.delta.slow_closed += 1

    # -- traffic ---------------------------------------------------------------

    async def _send_loop(self, start: float) -> None:
        plan = self.plan
        total = int(plan.rate * plan.duration)
        interval = 1.0 / plan.rate if plan.rate > 0 else 0.0
        padding = "x" * max(0, plan.text_size - 20)
        for i in range(total):
            due = start + i * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sender, recipient = plan.pairs[i % len(plan.pairs)]
            socks = self._regular(sender.handle)
            sock = socks[0] if socks else None
            if sock is None or sock.connection is None or sock.reconnecting:
                self.delta.errors["sender_down"] += 1
                continue
            client_id = f"{plan.run_id}-{plan.index}-{i}"
            if self.adapter.acks:
                self.pending[client_id] = (due, recipient.handle)
            text = f"{due:.9f} {padding}"
            try:
                await sock.connection.send(self.adapter.send_frame(recipient, text, client_id))
                self.delta.sent += 1
                if not self.adapter.acks:
                    expected = len(self._regular(recipient.handle))
                    self.delta.acked += 1
                    self.delta.expected += expected
                    self.expected_total += expected
            except ConnectionClosed:
                self.pending.pop(client_id, None)
                self.delta.errors["send_failed"] += 1

    async def _churn_loop(self) -> None:
        """Drop random receiving sockets and resume them from their cursor."""
        plan = self.plan
        candidates = [s for _, r in plan.pairs for s in self._regular(r.handle)]
        if not candidates or plan.churn_rate <= 0 or not self.adapter.supports_resume:
            return
        while True:
            # Stop only between reconnects: a socket cancelled halfway would stay
            # closed and its messages would look lost.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.stop_churn.wait(), self.random.expovariate(plan.churn_rate)
                )
            if self.stop_churn.is_set():
                return
            sock = self.random.choice(candidates)
            if sock.reconnecting or sock.connection is None:
                continue
            sock.reconnecting = True
            try:
                await sock.connection.close()
                if sock.reader is not None:
                    await sock.reader
                await self._open(sock)
                self.delta.reconnects += 1
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed):
                self.delta.errors["reconnect_failed"] += 1
            finally:
                sock.reconnecting = False

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.plan.report_interval)
            self.flush()

    def flush(self) -> None:
        delta, self.delta = self.delta, Tally()
        self.report(self.phase, delta.to_wire())

    async def run(self, go: Callable[[], Any]) -> None:
        """Connect, wait for `go` (all generators connected), send, drain, close."""
        reporter = asyncio.create_task(self._report_loop())
        try:
            await self._connect_all()
            self.phase = "connected"
            self.flush()
            await go()
            self.phase = "running"
            start = time.monotonic()
            churn = asyncio.create_task(self._churn_loop())
            await self._send_loop(start)
            self.phase = "draining"
            self.stop_churn.set()
            await churn
            self.draining = True
            if self.pending or self.delivered_total < self.expected_total:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.settled.wait(), self.plan.drain)
            self.delta.errors["no_ack"] += len(self.pending)
            if not self.delta.errors["no_ack"]:
                del self.delta.errors["no_ack"]
        finally:
            self._closing = True
            reporter.cancel()
            await self._close_all()
            self.phase = "done"
            self.flush()

    async def _close_all(self) -> None:
        socks = [s for group in self.sockets.values() for s in group]
        for sock in socks:
            if sock.connection is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sock.connection.close(), 2)
            if sock.reader is not None:
                sock.reader.cancel()


def _due(text: str | None) -> float | None:
    if not text:
        return None
    head = text.split(" ", 1)[0]
    try:
        return float(head)
    except ValueError:
        return None
