"""One client socket as the hub sees it: who it is, what it has seen, its outbox.

A frame goes straight to the socket when the transport offers a direct write
and nothing is waiting before it. Otherwise it joins a bounded queue, drained
by a writer task that exists only while the queue is not empty. So an idle or
keeping-up socket carries no task and no queue, and fan-out never waits on a
slow client: when the queue is full the socket is closed with 1013 and the
client resumes from its cursor. Memory per socket is bounded by the queue size
and the transport's write buffer.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable

from chat import metrics
from chat.protocol import closecodes
from chat.store.store import cursor_key

log = logging.getLogger("dmhub.hub")

# Socket ids travel through pub/sub as a send's origin, so they must be unique
# across every process sharing the Redis, not just within this one.
_PROCESS = secrets.token_hex(4)
_ids = itertools.count(1)
# Close tasks run detached from any request; keep them referenced until done.
_closing: set[asyncio.Task[None]] = set()

SendText = Callable[[str], Awaitable[None]]
# Writes a frame at once if the transport has room; False means "queue it".
WriteNow = Callable[[str], bool]
Close = Callable[[int, str], Awaitable[None]]


class Connection:
    __slots__ = (
        "_close",
        "_send_text",
        "_sync_lock",
        "_write_now",
        "busy",
        "close_code",
        "closed",
        "id",
        "last_cursor",
        "last_key",
        "peer",
        "pending",
        "queue",
        "queue_size",
        "session",
        "syncing",
        "user",
        "writer",
    )

    def __init__(
        self,
        *,
        user: str,
        session: str,
        peer: str | None,
        send_text: SendText,
        close: Close,
        queue_size: int,
        write_now: WriteNow | None = None,
    ) -> None:
        self.id = f"{_PROCESS}.{next(_ids)}"
        self.user = user
        self.session = session
        self.peer = peer
        self._send_text = send_text
        self._close = close
        self._write_now = write_now
        self.queue_size = queue_size
        # Created when a frame first has to wait; None means nothing is waiting.
        self.queue: asyncio.Queue[str | None] | None = None
        self.last_cursor: str = "0-0"
        self.last_key: tuple[int, int] = (0, 0)
        # While syncing (initial replay, or catch-up after a Redis outage), live
        # events wait in `pending` so that they go out after the replay, in order.
        self.syncing = True
        self.pending: list[tuple[tuple[int, int], str, str]] = []
        # Created on first use: most sockets never need one, and each costs memory.
        self._sync_lock: asyncio.Lock | None = None
        self.closed = False
        # True while a frame from the client is being handled (drain waits for it).
        self.busy = False
        self.close_code: int | None = None
        # Runs only while frames wait in the queue (always, without a direct write).
        self.writer: asyncio.Task[None] | None = None

    @property
    def sync_lock(self) -> asyncio.Lock:
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        return self._sync_lock

    def _outbox(self) -> asyncio.Queue[str | None]:
        if self.queue is None:
            self.queue = asyncio.Queue(self.queue_size)
        return self.queue

    def _ensure_writer(self) -> None:
        if self.writer is None:
            self.writer = asyncio.create_task(self._write_loop(), name=f"dmhub-writer-{self.id}")

    def _direct(self, frame: str) -> bool:
        """Write now if nothing is queued ahead of this frame and the socket has room."""
        return (
            self._write_now is not None
            and self.writer is None
            and (self.queue is None or self.queue.empty())
            and self._write_now(frame)
        )

    def wants(self, peer: str) -> bool:
        """A `?peer=` socket hears only about its one conversation."""
        return self.peer is None or self.peer == peer

    def push(self, frame: str) -> None:
        """Send or queue a frame without waiting; a full queue means the client is too slow."""
        if self.closed or self._direct(frame):
            return
        try:
            self._outbox().put_nowait(frame)
        except asyncio.QueueFull:
            metrics.SLOW_CLOSES.inc()
            log.info("socket %s of @%s cannot keep up; closing it with 1013", self.id, self.user)
            self.close(
                closecodes.TRY_AGAIN_LATER, "too slow to keep up; reconnect with your cursor"
            )
            return
        self._ensure_writer()

    async def put(self, frame: str) -> None:
        """Send or queue a frame, waiting for room: for replays, which the socket drives.

        Gives up when the writer died (the client left mid-replay): nothing
        would ever make room, and the handler would hang.
        """
        while not self.closed:
            if self._direct(frame):
                return
            queue = self._outbox()
            try:
                queue.put_nowait(frame)
                self._ensure_writer()
                return
            except asyncio.QueueFull:
                pass
            self._ensure_writer()
            assert self.writer is not None
            putting = asyncio.ensure_future(queue.put(frame))
            await asyncio.wait({putting, self.writer}, return_when=asyncio.FIRST_COMPLETED)
            if putting.done():
                self._ensure_writer()  # it may have emptied the queue and ended meanwhile
                return
            putting.cancel()
            # Otherwise the writer ended: it died (closed), or it emptied the queue
            # and stopped just before this frame got in; then try again.

    def push_event(self, key: tuple[int, int], cursor: str, frame: str) -> None:
        """Deliver a stored event once: anything at or before the last cursor is a repeat."""
        if key <= self.last_key:
            return
        if self.syncing:
            if len(self.pending) >= self.queue_size:
                metrics.SLOW_CLOSES.inc()
                self.close(closecodes.TRY_AGAIN_LATER, "too slow to keep up; reconnect")
                return
            self.pending.append((key, cursor, frame))
            return
        self.last_key, self.last_cursor = key, cursor
        self.push(frame)

    def skip_event(self, key: tuple[int, int], cursor: str) -> None:
        """An event this socket must not receive (its own send) still moves its position."""
        if key > self.last_key and not self.syncing:
            self.last_key, self.last_cursor = key, cursor

    def set_position(self, cursor: str) -> None:
        self.last_cursor, self.last_key = cursor, cursor_key(cursor)

    def close(self, code: int, reason: str = "") -> None:
        """Close after the frames already queued (they may explain why)."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        if code == closecodes.TRY_AGAIN_LATER and self.writer is not None:
            # The writer is stuck behind a full socket; what is queued cannot go out.
            self.writer.cancel()
            self._close_detached(code, reason)
            return
        try:
            self._outbox().put_nowait(None)
        except asyncio.QueueFull:
            if self.writer is not None:
                self.writer.cancel()
            self._close_detached(code, reason)
            return
        self._ensure_writer()

    def _close_detached(self, code: int, reason: str) -> None:
        task = asyncio.create_task(self._close_now(code, reason))
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def _close_now(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self._close(code, reason), timeout=5)
        except Exception:
            log.debug("closing socket %s failed", self.id, exc_info=True)

    async def _write_loop(self) -> None:
        queue = self._outbox()
        try:
            while True:
                if queue.empty() and self._write_now is not None:
                    # Caught up: direct writes take over again (no await between
                    # this check and the reset, so no frame can slip in).
                    self.writer = None
                    return
                frame = await queue.get()
                if frame is None:
                    await self._close_now(self.close_code or closecodes.NORMAL, "")
                    return
                await self._send_text(frame)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The client went away mid-write; the reader side notices and cleans up.
            self.closed = True
