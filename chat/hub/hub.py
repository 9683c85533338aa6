"""Routes events from pub/sub to the sockets of this process.

Payloads published by the store scripts look like
`KIND CURSOR PEER ORIGIN\\nFRAME`, with the frame already encoded: the hub reads
the short header and forwards the frame text untouched, so one event costs no
JSON work here however many sockets receive it.

Kinds: `m` message, `r` read receipt, `c` a conversation's status or assignee,
`n` a team note (all stored, with a cursor), `t` typing (ephemeral, no cursor),
`x` a session ended (the frame is the session id), `k` an agent left a
business's team (the frame is the agent; its team sockets close with 4401).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable

from chat import metrics
from chat.config import REPLAY_PAGE_BYTES, REPLAY_PAGE_EVENTS
from chat.hub.connection import Connection
from chat.protocol import closecodes
from chat.protocol.frames import with_cursor
from chat.pubsub import Broker
from chat.store import keys
from chat.store.failures import STORAGE_UNAVAILABLE
from chat.store.store import EVERY_SESSION, Store, cursor_key
from chat.store.teams import team_store

log = logging.getLogger("dmhub.hub")

# After pub/sub comes back, how long the resync waits for Redis to answer
# commands (a restarted Redis answers LOADING while it reads its data) before
# giving up and asking every socket to reconnect.
RESYNC_PATIENCE_S = 30.0
RESYNC_BACKOFF_MAX_S = 1.0


class Hub:
    def __init__(self, store: Store, redis_url: str, *, cluster: bool = False) -> None:
        self.store = store
        self.by_user: dict[str, set[Connection]] = defaultdict(set)
        # Handshakes accepted but not attached yet, per user: the `sockets` limit
        # counts them too.
        self.opening: Counter[str] = Counter()
        # Team sockets by the agent signed in on them: its logout closes them too.
        self.by_agent: dict[str, set[Connection]] = defaultdict(set)
        self.broker = Broker(
            redis_url,
            on_message=self.dispatch,
            on_resubscribed=self.resync_all,
            on_reconnect=self._pubsub_reconnected,
            cluster=cluster,
        )
        self.draining = False
        self.frame_done = asyncio.Event()

    async def start(self) -> None:
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()

    @property
    def connections(self) -> list[Connection]:
        return [conn for conns in self.by_user.values() for conn in conns]

    # -- sockets arriving and leaving -----------------------------------------

    def sockets_of(self, user: str) -> int:
        """Sockets this user opened on this process, open or being opened: its own,
        and its team sockets (`?as=`), which live under the business."""
        conns = self.by_user.get(user, ())
        own = sum(1 for conn in conns if conn.agent is None)
        return own + len(self.by_agent.get(user, ())) + self.opening.get(user, 0)

    def opened(self, user: str) -> None:
        """A handshake counted in `opening` is over (attached next, or failed)."""
        left = self.opening[user] - 1
        if left > 0:
            self.opening[user] = left
        else:
            del self.opening[user]

    async def attach(self, conn: Connection) -> None:
        """Register a socket; returns once its user's channel is live on Redis."""
        self.by_user[conn.user].add(conn)
        metrics.SOCKETS.inc()
        if conn.agent is not None:
            self.by_agent[conn.agent].add(conn)
            await self.broker.subscribe(keys.channel(conn.agent))
        # Returns at once when the channel is already live for another socket.
        await self.broker.subscribe(keys.channel(conn.user))

    async def detach(self, conn: Connection) -> None:
        conn.closed = True
        conns = self.by_user.get(conn.user)
        if conns is None or conn not in conns:
            return
        conns.discard(conn)
        metrics.SOCKETS.dec()
        if not conns:
            del self.by_user[conn.user]
        if conn.agent is not None:
            agent_conns = self.by_agent.get(conn.agent)
            if agent_conns is not None:
                agent_conns.discard(conn)
                if not agent_conns:
                    del self.by_agent[conn.agent]
            await self._release(conn.agent)
        await self._release(conn.user)

    async def _release(self, lc: str) -> None:
        """Unsubscribe from `lc`'s channel once no socket here needs it."""
        if lc not in self.by_user and lc not in self.by_agent:
            await self.broker.unsubscribe(keys.channel(lc))

    # -- catching a socket up ---------------------------------------------------

    async def sync(self, conn: Connection, reset_to: str | None = None) -> None:
        """Replay everything after the socket's position, then let live events through.

        Live events that arrive meanwhile wait in `conn.pending` and go out after
        the replay; the cursor comparison drops any that the replay already sent.
        """
        async with conn.sync_lock:
            conn.syncing = True
            if reset_to is not None:
                conn.set_position(reset_to)
            while not conn.closed:
                # If this raises, the socket stays in `syncing` and the caller
                # closes it: going live after a partial replay would leave a gap.
                # Pages are bounded in bytes, and `put` waits for the socket to
                # take each frame (or for the write deadline to close it), so a
                # client that does not read pins one page, not its backlog.
                events, more = await self.store.events_page(
                    conn.user, conn.last_cursor, REPLAY_PAGE_EVENTS, REPLAY_PAGE_BYTES
                )
                for cursor, peer, origin, body in events:
                    conn.set_position(cursor)
                    if conn.wants(peer) and origin != conn.id:
                        await conn.put(with_cursor(body, cursor))
                del events
                if not more:
                    break
            pending = conn.take_pending()
            conn.syncing = False
            for key, cursor, frame in pending:
                conn.push_event(key, cursor, frame)

    def connections_on(self, channels: Iterable[str]) -> list[Connection]:
        """The sockets that listen on any of `channels`: their users' own, and the
        team sockets of the agents among them."""
        users = {keys.channel_user(c) for c in channels if c.startswith(keys.CHANNEL_PREFIX)}
        found: dict[int, Connection] = {}
        for lc in users:
            for conn in (*self.by_user.get(lc, ()), *self.by_agent.get(lc, ())):
                found[id(conn)] = conn
        return list(found.values())

    def _pubsub_reconnected(self, channels: frozenset[str]) -> None:
        """Pub/sub lost these channels (a dropped connection, a slot that moved):
        hold their live events until the replay after they are back has run.

        Without this, a live event dispatched before a socket's replay would move
        its position past the events it missed, and the replay would skip them.
        """
        metrics.PUBSUB_RECONNECTS.inc()
        for conn in self.connections_on(channels):
            conn.syncing = True

    async def _storage_answers(self) -> bool:
        """Wait (bounded) until Redis answers commands, not only SUBSCRIBE."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESYNC_PATIENCE_S
        delay = 0.05
        while True:
            try:
                await self.store.ping()
                return True
            except STORAGE_UNAVAILABLE:
                if loop.time() + delay > deadline:
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESYNC_BACKOFF_MAX_S)

    async def resync_all(self, channels: Iterable[str] | None = None) -> None:
        """After pub/sub came back (for `channels`, or all): drop ended sessions,
        replay what each socket missed."""
        # Closing every socket because Redis is still loading would be a
        # reconnect storm against a Redis that is about to be fine.
        await self._storage_answers()
        conns = self.connections if channels is None else self.connections_on(channels)
        try:
            live = await self.store.live_sessions(list({c.session for c in conns}))
        except Exception:
            log.warning(
                "could not check sessions after reconnect; asking sockets to resume",
                exc_info=True,
            )
            for conn in conns:
                conn.close(closecodes.SERVICE_RESTART, "could not catch up; reconnect")
            return
        for conn in conns:
            if conn.session not in live:
                conn.close(closecodes.SESSION_ENDED, "session ended")
        await self._recheck_teams([c for c in conns if c.agent is not None and not c.closed])
        targets = [c for c in conns if not c.closed]
        results = await asyncio.gather(*(self.sync(c) for c in targets), return_exceptions=True)
        failed = [c for c, r in zip(targets, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            log.warning("%d sockets could not catch up after reconnect; closing them", len(failed))
            for conn in failed:
                conn.close(closecodes.SERVICE_RESTART, "could not catch up; reconnect")

    async def _recheck_teams(self, conns: list[Connection]) -> None:
        """An agent removed while pub/sub was away: its team sockets end now."""
        teams = team_store(self.store)
        for conn in conns:
            assert conn.agent is not None
            if not await teams.is_member(conn.user, conn.agent) and conn.user != conn.agent:
                conn.close(closecodes.SESSION_ENDED, "no longer in the team")

    # -- fan-out ------------------------------------------------------------------

    def dispatch(self, channel: str, payload: str) -> None:
        """Called by the broker for every pub/sub message, in publish order."""
        lc = keys.channel_user(channel)
        conns = self.by_user.get(lc)
        if payload.startswith("x "):
            # A session ended: its own sockets, and its team sockets (`?as=`).
            session = payload.partition("\n")[2]
            for conn in [*(conns or ()), *self.by_agent.get(lc, ())]:
                if conn.session == session or session == EVERY_SESSION:
                    conn.close(closecodes.SESSION_ENDED, "session ended")
            metrics.EVENTS_DISPATCHED.inc()
            return
        if not conns:
            return
        header, _, frame = payload.partition("\n")
        kind, cursor, peer, origin = header.split(" ", 3)
        if kind == "t":
            for conn in conns:
                if conn.wants(peer) and not conn.syncing and conn.id != origin:
                    conn.push(frame)
        elif kind == "k":
            for conn in list(conns):
                if conn.agent == frame:
                    conn.close(closecodes.SESSION_ENDED, "no longer in the team")
        else:
            key = cursor_key(cursor)
            for conn in conns:
                if conn.id == origin or not conn.wants(peer):
                    conn.skip_event(key, cursor)
                else:
                    conn.push_event(key, cursor, frame)
        metrics.EVENTS_DISPATCHED.inc()

    async def drain(self, timeout: float) -> None:
        """SIGTERM: stop taking frames, let in-flight sends finish, close with 1012."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conns = self.connections
        # One event for the whole process, set whenever a frame finishes while
        # draining: cheaper than an event per socket, which every socket would carry.
        while loop.time() < deadline:
            self.frame_done.clear()  # before the check: no await between, so no lost wake-up
            if not any(c.busy for c in conns):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.frame_done.wait(), deadline - loop.time())
        for conn in conns:
            conn.close(closecodes.SERVICE_RESTART, "server restarting; reconnect with your cursor")
        writers = [c.writer for c in conns if c.writer is not None]
        if writers:
            await asyncio.wait(writers, timeout=max(deadline - loop.time(), 0.5))
