"""One supervised pub/sub connection per process.

The hub asks for a user's channel when that user's first socket arrives here and
gives it back when the last one leaves, so a process hears only about its own
users. Channels are sharded (SSUBSCRIBE; the scripts SPUBLISH): on a Valkey Cluster
a channel lives on the shard that owns its slot, with the user's keys, and a
publish does not travel to every node. A `subscribe` returns once Redis has
confirmed it: from then on nothing
published to that user can be missed, which is what makes resume-by-cursor
gap-free.

If the connection drops, the listener reconnects with capped exponential
backoff and jitter, subscribes to every wanted channel again, and, once Redis has
confirmed all of them (a PING queued behind the SSUBSCRIBE answers after them),
calls `on_resubscribed` so the hub can replay what each socket missed meanwhile.

Pushed messages are parsed by hiredis as the bytes arrive and handed to the hub
in the same callback: no reader task and no redis-py connection machinery per
message (chat/resp.py says why).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any, cast

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from chat.resp import Endpoint, pack, reply_reader
from chat.tasks import cancel_and_wait

log = logging.getLogger("dmhub.pubsub")

HEALTH_INTERVAL_S = 5.0
# Silence this long (no reply, not even to our PINGs) means the link is dead
# even if TCP has not noticed.
DEAD_AFTER_S = 3 * HEALTH_INTERVAL_S
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 3.0
SUBSCRIBE_TIMEOUT_S = 10.0
SUBSCRIBE_BATCH = 500
RESYNC_TOKEN = "dmhub-resubscribed"

MessageHandler = Callable[[str, str], None]


class _Listener(asyncio.Protocol):
    """One pub/sub connection: every reply goes to the broker as it is parsed."""

    def __init__(self, on_reply: Callable[[Any], None]) -> None:
        self.on_reply = on_reply
        self.reader = reply_reader()
        self.transport: asyncio.Transport | None = None
        # Resolves with the reason once the connection is gone.
        self.closed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                if isinstance(reply, ResponseError):
                    # AUTH refused, or a command this connection cannot run.
                    raise RedisConnectionError(f"Redis refused a pub/sub command: {reply}")
                self.on_reply(reply)
        except (hiredis.ProtocolError, RedisConnectionError) as exc:
            self.drop(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed(exc or RedisConnectionError("Redis closed the pub/sub connection"))

    def write(self, *args: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(pack(args))

    def drop(self, reason: BaseException) -> None:
        self._closed(reason)
        if self.transport is not None:
            self.transport.abort()

    def _closed(self, reason: BaseException) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)


class Broker:
    def __init__(
        self,
        url: str,
        on_message: MessageHandler,
        on_resubscribed: Callable[[], Coroutine[Any, Any, None]],
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self._endpoint = Endpoint.from_url(url)
        self._on_message = on_message
        self._on_resubscribed = on_resubscribed
        self._on_reconnect = on_reconnect
        self._wanted: set[str] = set()
        self._confirmed: set[str] = set()
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._link: _Listener | None = None
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._last_heard = 0.0
        self._resync: asyncio.Task[None] | None = None
        self._first_connect = True
        # A restarted Redis refuses SSUBSCRIBE while it loads its data: say so
        # once, not on every retry.
        self._said_loading = False

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="dmhub-pubsub")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._disconnect()

    async def subscribe(self, channel: str) -> None:
        """Listen on `channel`; returns once Redis confirmed the subscription."""
        self._wanted.add(channel)
        if channel in self._confirmed:
            return
        waiter = self._waiters.get(channel)
        if waiter is None or waiter.done():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[channel] = waiter
        if self._connected:
            self._send("SSUBSCRIBE", channel)
        await asyncio.wait_for(asyncio.shield(waiter), SUBSCRIBE_TIMEOUT_S)

    async def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        self._confirmed.discard(channel)
        if self._connected:
            self._send("SUNSUBSCRIBE", channel)

    # -- the supervised listener ---------------------------------------------

    async def _supervise(self) -> None:
        delay = BACKOFF_FIRST_S
        while True:
            try:
                await self._connect_and_listen()
                delay = BACKOFF_FIRST_S
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                loading = "LOADING" in str(exc)
                if loading and self._said_loading:
                    log.debug("pub/sub: Redis still loading; retrying")
                elif self._connected or self._first_connect:
                    log.warning("pub/sub connection lost: %s; reconnecting", exc)
                self._said_loading = self._said_loading or loading
            except Exception:
                log.exception("pub/sub listener failed; restarting it")
            finally:
                self._disconnect()
            # Backoff with jitter so fifty processes do not stampede a recovering Redis.
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _connect_and_listen(self) -> None:
        link = _Listener(self._heard)
        await self._endpoint.connect(lambda: link)
        self._link = link
        for command in self._endpoint.hello(select=False):  # channels ignore the database
            link.write(*command)
        self._connected = True
        self._last_heard = asyncio.get_running_loop().time()
        resubscribing = not self._first_connect
        if resubscribing and self._on_reconnect is not None:
            self._on_reconnect()
        self._first_connect = False
        wanted = list(self._wanted)
        for start in range(0, len(wanted), SUBSCRIBE_BATCH):
            link.write("SSUBSCRIBE", *wanted[start : start + SUBSCRIBE_BATCH])
        # Answered after every SSUBSCRIBE above: when it comes back, all are live.
        link.write("PING", RESYNC_TOKEN if resubscribing else "ready")
        health = asyncio.create_task(self._health_loop(link), name="dmhub-pubsub-health")
        try:
            raise await link.closed
        finally:
            health.cancel()

    def _heard(self, reply: Any) -> None:
        self._last_heard = asyncio.get_running_loop().time()
        self._handle(reply)

    def _handle(self, reply: Any) -> None:
        # RESP3 (redis-py's default from 8.0) answers a PING on a subscribed
        # connection with a plain string; RESP2 with ["pong", token].
        if reply == RESYNC_TOKEN:
            self._resubscribed()
            return
        if not isinstance(reply, list) or not reply:
            return
        kind = reply[0]
        if kind == "smessage":
            try:
                self._on_message(reply[1], reply[2])
            except Exception:
                # One bad event must not take the listener (and every socket) down.
                log.exception("dropping an event that could not be dispatched")
        elif kind == "ssubscribe":
            channel = reply[1]
            if channel in self._wanted:
                self._confirmed.add(channel)
                waiter = self._waiters.pop(channel, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        elif kind == "pong" and len(reply) > 1 and reply[1] == RESYNC_TOKEN:
            self._resubscribed()

    def _resubscribed(self) -> None:
        self._said_loading = False
        self._resync = asyncio.create_task(self._on_resubscribed(), name="dmhub-resync")
        self._resync.add_done_callback(_log_failure)

    async def _health_loop(self, link: _Listener) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            if loop.time() - self._last_heard > DEAD_AFTER_S:
                log.warning("pub/sub connection silent for %.0fs; dropping it", DEAD_AFTER_S)
                link.drop(RedisConnectionError("pub/sub connection silent"))
                return
            link.write("PING", "health")

    def _send(self, *args: str) -> None:
        # A write to a broken link is lost, and that is fine: the listener sees
        # the link close and subscribes to everything wanted again.
        if self._link is not None:
            self._link.write(*args)

    def _disconnect(self) -> None:
        self._connected = False
        self._confirmed.clear()
        link, self._link = self._link, None
        if link is not None:
            link.drop(RedisConnectionError("disconnected"))


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("resync after reconnect failed", exc_info=task.exception())
