"""A pipelined Redis connection for the hot path (the send script, sessions).

redis-py's client spends far more time per command than the round trip itself:
pool checkout, retry and timeout wrappers, observability hooks, and a general
command packer. On this project's 2-core reference machine, a script call cost
about 150-300 µs of Python against a 30 µs raw round trip. A later profile of
a first lane built on redis-py's connection object still put its packer and
reader at about a fifth of the server's CPU under load.

So the lane speaks RESP itself, over one asyncio connection that every
coroutine shares. A command is packed into the write buffer and its future
joins a FIFO; the buffer goes out in one write per event-loop turn, so a burst
of sends shares one syscall. Replies are parsed by hiredis straight from
`data_received` and resolve the futures in order: Redis answers one
connection's commands in the order it got them, so the FIFO is the whole
matching rule. There is no reader or writer task and no per-command timer.

Failures: if the connection breaks, every pending command fails with
ConnectionError (the caller answers `unavailable`), and the next command
reconnects. A watchdog treats a reply overdue by `timeout_s` as a dead link,
so a hung Redis cannot hold sends forever.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, cast

import hiredis
from redis.exceptions import BusyLoadingError, NoScriptError, OutOfMemoryError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from chat.resp import Endpoint, pack, reply_reader
from chat.store.lua import FunctionLibrary

log = logging.getLogger("dmhub.store")

DEFAULT_TIMEOUT_S = 5.0
WATCHDOG_INTERVAL_S = 0.5
# A node found with too few replicas is not asked to WAIT again for this long
# (chat/store/replicas.py): a WAIT that cannot be met holds the node's shared
# connection for its whole timeout, every command queued behind it included.
REPLICA_RECHECK_S = 5.0


# Valkey's and Redis 7's answer to FCALL of a function it does not have.
FUNCTION_MISSING = "ERR Function not found"


class NoFunctionError(ResponseError):
    """FCALL of a function this node has not loaded (a new or restarted node
    without its data, a FUNCTION FLUSH, a library of another dmhub version)."""


def _reply_error(message: str) -> Exception:
    """The exception redis-py would raise for this error reply.

    NOSCRIPT and a missing function the lane acts on itself. LOADING (a restarted Redis reading its
    data) and OOM (at maxmemory, noeviction) are storage being unavailable, not
    a bug: callers answer `unavailable` (chat/store/failures.py)."""
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith(FUNCTION_MISSING):
        return NoFunctionError(message)
    if message.startswith("LOADING"):
        return BusyLoadingError(message)
    if message.startswith("OOM"):
        return OutOfMemoryError(message)
    return ResponseError(message)


class _Link(asyncio.Protocol):
    """One connection: parses replies as they arrive and hands them to the lane."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.reader = reply_reader()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.lane._pending
        try:
            while (reply := self.reader.gets()) is not False:
                if not pending:
                    raise RedisConnectionError("a reply with no command waiting for it")
                future, _ = pending.popleft()
                if future.done():
                    continue
                if isinstance(reply, ResponseError):
                    future.set_exception(_reply_error(str(reply)))
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, RedisConnectionError) as exc:
            self.lane._broken(self, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lane._broken(self, exc or RedisConnectionError("Redis closed the connection"))


class Lane:
    def __init__(self, url: str | Endpoint, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.endpoint = url if isinstance(url, Endpoint) else Endpoint.from_url(url)
        self.timeout_s = timeout_s
        self._link: _Link | None = None
        self._connect_lock = asyncio.Lock()
        self._pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._buffer: list[bytes] = []
        self._flush_scheduled = False
        self._watchdog: asyncio.Task[None] | None = None
        self._closed = False
        # When the last link broke (time.monotonic()): writes before it went over
        # another connection, which a WAIT on the next one does not cover.
        self.broken_at = -1.0
        # The WAIT queued on this link and not yet answered: later waiters join
        # it, since it comes after every write they have had a reply for.
        self._wait: tuple[_Link, int, int, asyncio.Future[Any]] | None = None
        # Too few replicas seen: until `_recheck_at`, waits answer 0 at once;
        # then INFO (which does not block) says whether to WAIT again.
        self._short = True
        self._recheck_at = 0.0
        self._probe: asyncio.Future[Any] | None = None

    async def execute(self, *args: Any) -> Any:
        """Run one command; concurrent calls share writes. Raises like redis-py."""
        link = self._link if self._link is not None else await self._connect()
        return await self._submit(link, pack(args))

    async def execute_many(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Several commands back to back, their replies in order: one wait for
        all of them instead of one each. Every command runs whatever the others'
        replies; the first error is raised once all have answered."""
        link = self._link if self._link is not None else await self._connect()
        futures = [self._submit(link, pack(command)) for command in commands]
        replies: list[Any] = []
        failure: BaseException | None = None
        for future in futures:
            try:
                replies.append(await future)
            except asyncio.CancelledError:
                # The replies still come and are skipped; nothing is left to
                # fail unretrieved later.
                for pending in futures:
                    pending.cancel()
                raise
            except Exception as exc:  # each future's error is retrieved, the first raised
                failure = failure or exc
                replies.append(None)
        if failure is not None:
            # The traceback will hold this frame: it lets go of the error (and
            # of the futures holding it), or they would make a cycle.
            futures.clear()
            del future
            try:
                raise failure
            finally:
                failure = None
        return replies

    async def execute_asking(self, *args: Any) -> Any:
        """ASKING and the command back to back (a cluster slot being migrated):
        nothing another coroutine queues can come between them."""
        link = self._link if self._link is not None else await self._connect()
        asking = self._submit(link, pack(("ASKING",)))
        reply = self._submit(link, pack(args))
        results = await asyncio.gather(asking, reply, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results[1]

    async def wait_replicas(
        self, key: str | None, replicas: int, timeout_ms: int, *, since: float
    ) -> int:
        """How many replicas confirm every write this connection carried so far
        (WAIT on this same connection); 0 at once when this node is known to be
        short of replicas, or when the link broke after `since` (time.monotonic()), as
        the writes may have gone over the broken one. `key` routes on a cluster."""
        loop = asyncio.get_running_loop()
        if self.broken_at >= since:
            return 0
        if self._short:
            probe = self._probe
            if loop.time() >= self._recheck_at and (probe is None or probe.done()):
                self._recheck_at = loop.time() + REPLICA_RECHECK_S
                probe = self._probe = asyncio.ensure_future(self.execute("INFO", "replication"))
            if probe is None or (probe.done() and (probe.cancelled() or probe.exception())):
                return 0  # known short until the next look
            # Waits that arrive while the look is under way, or after it found
            # enough replicas, go by its answer rather than count as short.
            if online_replicas(str(await asyncio.shield(probe))) < replicas:
                return 0
            self._short = False
        link = self._link if self._link is not None else await self._connect()
        if self.broken_at >= since:
            return 0
        queued = self._wait
        if queued is not None and queued[:3] == (link, replicas, timeout_ms):
            future = queued[3]
        else:
            future = self._submit(link, pack(("WAIT", replicas, timeout_ms)))
            self._wait = (link, replicas, timeout_ms, future)
            future.add_done_callback(self._wait_answered)
        # Shielded: one waiter cancelled must not fail the others' WAIT.
        count = int(await asyncio.shield(future))
        if count < replicas:
            self._short = True
            self._probe = None
            self._recheck_at = loop.time() + REPLICA_RECHECK_S
        return count

    def _wait_answered(self, future: asyncio.Future[Any]) -> None:
        if self._wait is not None and self._wait[3] is future:
            self._wait = None

    def _submit(self, link: _Link, command: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._buffer.append(command)
        self._pending.append((future, loop.time()))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush, link)
        return future

    def _flush(self, link: _Link) -> None:
        self._flush_scheduled = False
        if link is not self._link or link.transport is None:
            return  # the link broke meanwhile; its commands were failed already
        batch, self._buffer = self._buffer, []
        link.transport.write(b"".join(batch))

    async def evalsha(self, sha: str, script: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script when Redis does not know it (after a restart)."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.execute("SCRIPT", "LOAD", script)
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)

    async def fcall(
        self, name: str, library: FunctionLibrary, keys: list[str], args: list[Any]
    ) -> Any:
        """FCALL, loading `library` when Redis does not have the function (a
        restart without its data, a flush): REPLACE, since another process
        may load the same library meanwhile."""
        try:
            return await self.execute("FCALL", name, len(keys), *keys, *args)
        except NoFunctionError:
            await self.execute("FUNCTION", "LOAD", "REPLACE", library.source)
            return await self.execute("FCALL", name, len(keys), *keys, *args)

    async def _connect(self) -> _Link:
        async with self._connect_lock:
            if self._link is not None:
                return self._link
            if self._closed:
                raise RedisConnectionError("the lane is closed")
            link = _Link(self)
            await self.endpoint.connect(lambda: link)
            self._link = link
            try:
                await self._hello(link)
            except BaseException:
                self._broken(link, RedisConnectionError("Redis refused the connection"))
                raise
            if self._watchdog is None or self._watchdog.done():
                self._watchdog = asyncio.create_task(self._watch(), name="dmhub-lane-watchdog")
            return link

    async def _hello(self, link: _Link) -> None:
        """Authenticate and pick the database, as the URL says."""
        steps = self.endpoint.hello()
        # All submitted before the first await: commands that other coroutines
        # queue meanwhile must come after these in the FIFO.
        replies = [(step[0], self._submit(link, pack(step))) for step in steps]
        for name, reply in replies:
            try:
                await reply
            except ResponseError as exc:
                raise RedisConnectionError(f"{name} failed: {exc}") from exc

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._link is not None:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            link = self._link
            if link is not None and self._pending:
                if loop.time() - self._pending[0][1] > self.timeout_s:
                    self._broken(link, RedisConnectionError("Redis did not answer in time"))

    def _broken(self, link: _Link, exc: BaseException) -> None:
        """Fail everything in flight on this link and forget it; the next call reconnects."""
        if self._link is not link:
            return
        self._link = None
        self.broken_at = time.monotonic()
        if not self._closed:
            log.warning("redis lane lost its connection: %s", exc)
        failure = RedisConnectionError(str(exc) or "connection lost")
        pending, self._pending = self._pending, collections.deque()
        self._buffer = []
        for future, _ in pending:
            if not future.done():
                future.set_exception(failure)
        if link.transport is not None and not link.lost:
            link.transport.abort()

    async def aclose(self) -> None:
        self._closed = True
        if self._link is not None:
            self._broken(self._link, RedisConnectionError("closed"))
        # Let go of the task as it is cancelled: its CancelledError's traceback
        # holds `_watch`'s frame, which holds this lane, which would hold the
        # task, a cycle only a full collection frees (chat/collector.py).
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()


def online_replicas(info: str) -> int:
    """Replicas in `INFO replication` whose link is up (`slaveN:...,state=online,...`)."""
    return sum(
        1
        for line in info.splitlines()
        if line.startswith("slave") and ":" in line and "state=online" in line.split(":", 1)[1]
    )
