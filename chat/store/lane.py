"""A pipelined Redis connection for the hot path (facts and send scripts).

redis-py's client spends far more time per command than the round trip itself:
pool checkout, retry and timeout wrappers, observability hooks. On this
project's 2-core reference machine, a script call cost about 150-300 µs of
Python against a 33 µs raw round trip. A send needs two calls, so that was
most of dmhub's CPU per message.

A lane keeps one connection and lets every coroutine use it at once. Each
command is packed (by redis-py) into a buffer, and its future joins a FIFO.
Once per event-loop turn, a writer task sends the whole buffer in one write.
One reader task parses the replies (redis-py's hiredis parser) and resolves
the futures in order. Redis answers a connection's commands in the order it
received them, so the FIFO is the whole matching rule. Concurrent sends share
syscalls instead of each paying its own.

Failures: if the connection breaks, every pending command fails with
ConnectionError (the caller answers `unavailable`), and the next command
reconnects. A watchdog treats a reply overdue by `timeout_s` as a dead link,
so a hung Redis cannot hold sends forever. No per-command timer is needed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

log = logging.getLogger("dmhub.store")

DEFAULT_TIMEOUT_S = 5.0
WATCHDOG_INTERVAL_S = 0.5


class Lane:
    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._pool = redis.ConnectionPool.from_url(
            url, decode_responses=True, socket_timeout=None, socket_connect_timeout=2.0
        )
        self.timeout_s = timeout_s
        self._conn: Any = None
        self._connect_lock = asyncio.Lock()
        self._pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._buffer: list[bytes | memoryview] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    async def execute(self, *args: Any) -> Any:
        """Run one command; concurrent calls share writes. Raises like redis-py."""
        conn = self._conn if self._conn is not None else await self._connect()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._buffer.extend(conn.pack_command(*args))
        self._pending.append((future, loop.time()))
        self._wake.set()
        return await future

    async def evalsha(self, sha: str, script: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script when Redis does not know it (after a restart)."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.execute("SCRIPT", "LOAD", script)
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)

    async def _connect(self) -> Any:
        async with self._connect_lock:
            if self._conn is not None:
                return self._conn
            if self._closed:
                raise RedisConnectionError("the lane is closed")
            conn = self._pool.make_connection()  # type: ignore[no-untyped-call]
            await conn.connect()
            self._conn = conn
            self._tasks = [
                asyncio.create_task(self._write_loop(conn), name="dmhub-lane-writer"),
                asyncio.create_task(self._read_loop(conn), name="dmhub-lane-reader"),
                asyncio.create_task(self._watchdog(conn), name="dmhub-lane-watchdog"),
            ]
            return conn

    async def _write_loop(self, conn: Any) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._buffer:
                    batch, self._buffer = self._buffer, []
                    await conn.send_packed_command(batch, check_health=False)
        except (RedisError, OSError) as exc:
            await self._broken(conn, exc)

    async def _read_loop(self, conn: Any) -> None:
        try:
            while True:
                try:
                    reply = await conn.read_response(disconnect_on_error=False)
                    error: BaseException | None = None
                except ResponseError as exc:  # an error reply: this command's, not the link's
                    reply, error = None, exc
                if not self._pending:
                    raise RedisConnectionError("a reply with no command waiting for it")
                future, _ = self._pending.popleft()
                if future.done():
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(reply)
        except (RedisError, OSError) as exc:
            await self._broken(conn, exc)

    async def _watchdog(self, conn: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            if self._pending and loop.time() - self._pending[0][1] > self.timeout_s:
                await self._broken(conn, RedisConnectionError("Redis did not answer in time"))
                return

    async def _broken(self, conn: Any, exc: BaseException) -> None:
        if self._conn is not conn:
            return
        self._conn = None
        if not self._closed:
            log.warning("redis lane lost its connection: %s", exc)
        failure = RedisConnectionError(str(exc) or "connection lost")
        pending, self._pending = self._pending, collections.deque()
        self._buffer = []
        for future, _ in pending:
            if not future.done():
                future.set_exception(failure)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        try:
            await conn.disconnect(nowait=True)
        except Exception:
            log.debug("ignoring an error while closing the lane's connection")

    async def aclose(self) -> None:
        self._closed = True
        if self._conn is not None:
            await self._broken(self._conn, RedisConnectionError("closed"))
        await self._pool.aclose()
