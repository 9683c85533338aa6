"""One client socket as the hub sees it: who it is, what it has seen, its outbox.

A frame goes straight to the socket when the transport offers a direct write
and nothing is waiting before it. Otherwise it joins the outbox, drained by a
writer task that exists only while the outbox is not empty. So an idle or
keeping-up socket carries no task and no queue, and fan-out never waits on a
slow client.

Memory per socket is bounded in bytes, not only in frames (a frame can be
64 KiB): the outbox holds at most `Limits.queue_bytes`, the transport's own
buffer stops taking direct writes past its high-water mark, and a replay reads
its pages bounded in bytes too (`Hub.sync`). A socket that cannot keep up is
closed with 1013 and resumes from its cursor:

- fan-out finds its outbox full (by frames or by bytes);
- or one write waits `Limits.write_deadline_s` for room: the client stopped
  reading, whether the frames are live or a replay it asked for.

A client that stops reading would never read the close frame either, so the
transport writes it without waiting for room, and `Limits.close_deadline_s`
later the connection is aborted if the client has not answered it: the socket,
its kernel buffers and its memory are released.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chat import config, metrics
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
# Drops the connection at once, whatever is still buffered for it.
Abort = Callable[[], None]

TOO_SLOW = "too slow to keep up; reconnect with your cursor"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one socket may hold back; one instance is shared by every socket."""

    queue_frames: int = config.DEFAULT_SOCKET_QUEUE
    queue_bytes: int = config.DEFAULT_SOCKET_QUEUE_BYTES
    write_deadline_s: float = config.DEFAULT_WRITE_DEADLINE_S
    close_deadline_s: float = config.DEFAULT_CLOSE_DEADLINE_S


def frame_size(frame: str) -> int:
    """Bytes on the wire; `isascii` is O(1), so only non-ASCII frames are encoded."""
    return len(frame) if frame.isascii() else len(frame.encode())


class Connection:
    __slots__ = (
        "_abort",
        "_close",
        "_room",
        "_send_text",
        "_sync_lock",
        "_write_now",
        "agent",
        "agent_handle",
        "busy",
        "close_code",
        "closed",
        "id",
        "last_cursor",
        "last_key",
        "limits",
        "peer",
        "pending",
        "pending_bytes",
        "queue",
        "queued_bytes",
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
        limits: Limits,
        write_now: WriteNow | None = None,
        abort: Abort | None = None,
        agent: str | None = None,
        agent_handle: str | None = None,
    ) -> None:
        self.id = f"{_PROCESS}.{next(_ids)}"
        # `user` is whose events the socket carries: for a team socket (`?as=`),
        # the business; `agent` is then the signed-in account acting for it.
        self.user = user
        self.agent = agent
        self.agent_handle = agent_handle
        self.session = session
        self.peer = peer
        self._send_text = send_text
        self._close = close
        self._write_now = write_now
        self._abort = abort
        self.limits = limits
        # Created when a frame first has to wait; None means nothing ever waited.
        # Entries are (frame, size); None asks the writer to close after the rest.
        self.queue: deque[tuple[str, int] | None] | None = None
        self.queued_bytes = 0
        # Set while a replay waits for room in the outbox.
        self._room: asyncio.Future[None] | None = None
        self.last_cursor: str = "0-0"
        self.last_key: tuple[int, int] = (0, 0)
        # While syncing (initial replay, or catch-up after a Redis outage), live
        # events wait in `pending` so that they go out after the replay, in order.
        self.syncing = True
        self.pending: list[tuple[tuple[int, int], str, str]] = []
        self.pending_bytes = 0
        # Created on first use: most sockets never need one, and each costs memory.
        self._sync_lock: asyncio.Lock | None = None
        self.closed = False
        # True while a frame from the client is being handled (drain waits for it).
        self.busy = False
        self.close_code: int | None = None
        # Runs only while frames wait in the outbox.
        self.writer: asyncio.Task[None] | None = None

    @property
    def sync_lock(self) -> asyncio.Lock:
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        return self._sync_lock

    def _outbox(self) -> deque[tuple[str, int] | None]:
        if self.queue is None:
            self.queue = deque()
        return self.queue

    def _has_room(self, size: int) -> bool:
        """Room for one more frame; an empty outbox takes any one frame."""
        queue = self.queue
        if not queue:
            return True
        return (
            len(queue) < self.limits.queue_frames
            and self.queued_bytes + size <= self.limits.queue_bytes
        )

    def _enqueue(self, frame: str, size: int) -> None:
        self._outbox().append((frame, size))
        self.queued_bytes += size
        if self.writer is None:
            self.writer = asyncio.create_task(self._write_loop(), name=f"dmhub-writer-{self.id}")

    def _wake(self) -> None:
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_result(None)

    def _direct(self, frame: str) -> bool:
        """Write now if nothing is queued ahead of this frame and the socket has room."""
        return (
            self._write_now is not None
            and self.writer is None
            and not self.queue
            and self._write_now(frame)
        )

    def wants(self, peer: str) -> bool:
        """A `?peer=` socket hears only about its one conversation."""
        return self.peer is None or self.peer == peer

    def push(self, frame: str) -> None:
        """Send or queue a frame without waiting; a full outbox means the client is too slow."""
        if self.closed or self._direct(frame):
            return
        size = frame_size(frame)
        if not self._has_room(size):
            self._too_slow("its outbox is full")
            return
        self._enqueue(frame, size)

    async def put(self, frame: str) -> None:
        """Send or queue a frame, waiting for room: for replays, which the socket drives.

        Returns without sending when the socket closed meanwhile (the client
        left, or stopped reading past the write deadline).
        """
        size = frame_size(frame)
        while not self.closed:
            if self._direct(frame):
                return
            if self._has_room(size):
                self._enqueue(frame, size)
                return
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            await self._room

    def push_event(self, key: tuple[int, int], cursor: str, frame: str) -> None:
        """Deliver a stored event once: anything at or before the last cursor is a repeat."""
        if key <= self.last_key:
            return
        if self.syncing:
            size = frame_size(frame)
            if self.pending and (
                len(self.pending) >= self.limits.queue_frames
                or self.pending_bytes + size > self.limits.queue_bytes
            ):
                self._too_slow("live events piled up during its replay")
                return
            self.pending.append((key, cursor, frame))
            self.pending_bytes += size
            return
        self.last_key, self.last_cursor = key, cursor
        self.push(frame)

    def take_pending(self) -> list[tuple[tuple[int, int], str, str]]:
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        return pending

    def skip_event(self, key: tuple[int, int], cursor: str) -> None:
        """An event this socket must not receive (its own send) still moves its position."""
        if key > self.last_key and not self.syncing:
            self.last_key, self.last_cursor = key, cursor

    def set_position(self, cursor: str) -> None:
        self.last_cursor, self.last_key = cursor, cursor_key(cursor)

    def _too_slow(self, why: str) -> None:
        metrics.SLOW_CLOSES.inc()
        log.info(
            "socket %s of @%s cannot keep up (%s); closing it with 1013", self.id, self.user, why
        )
        self.close(closecodes.TRY_AGAIN_LATER, TOO_SLOW)

    def close(self, code: int, reason: str = "") -> None:
        """Close after the frames already queued (they may explain why).

        For 1013 the queued frames are dropped: the client is not reading them,
        and it will fetch them again from its cursor.
        """
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        if code == closecodes.TRY_AGAIN_LATER:
            self._close_at_once(code, reason)
            return
        self._outbox().append(None)
        if self.writer is None:
            self.writer = asyncio.create_task(self._write_loop(), name=f"dmhub-writer-{self.id}")

    def _close_at_once(self, code: int, reason: str) -> None:
        """Drop what is queued, stop the writer, and close now."""
        if self.queue is not None:
            self.queue.clear()
        self.queued_bytes = 0
        self._wake()
        writer = self.writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
        task = asyncio.create_task(self._close_now(code, reason))
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def _close_now(self, code: int, reason: str) -> None:
        deadline = self.limits.close_deadline_s
        try:
            await asyncio.wait_for(self._close(code, reason), timeout=deadline)
        except Exception:
            log.debug("closing socket %s failed", self.id, exc_info=True)
        finally:
            if self._abort is not None:
                # The client has this long to answer the close; one that stopped
                # reading never will, and its connection must not outlive it.
                asyncio.get_running_loop().call_later(deadline, self._abort)

    async def _write_loop(self) -> None:
        queue = self._outbox()
        try:
            while queue:
                item = queue.popleft()
                if item is None:
                    await self._close_now(self.close_code or closecodes.NORMAL, "")
                    return
                frame, size = item
                self.queued_bytes -= size
                self._wake()
                try:
                    # asyncio.timeout, not wait_for: no task per frame.
                    async with asyncio.timeout(self.limits.write_deadline_s):
                        await self._send_text(frame)
                except TimeoutError:
                    self._stalled()
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            # The client went away mid-write; the reader side notices and cleans up.
            self.closed = True
        finally:
            if self.writer is asyncio.current_task():
                self.writer = None
            self._wake()

    def _stalled(self) -> None:
        """A write waited past the deadline: the client is not reading."""
        if not self.closed:
            self._too_slow(f"no write progress in {self.limits.write_deadline_s:g} s")
            return
        # Already closing (4401, 1012...), but the close frame is stuck behind
        # frames the client does not read: close now instead.
        self._close_at_once(self.close_code or closecodes.TRY_AGAIN_LATER, "")
