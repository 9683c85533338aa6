"""`GET /ws`: the WebSocket transport.

Handshake: authenticate, check Origin for cookies, and for `?peer=` apply the
permission rule, all before the upgrade, so a refusal is a plain HTTP response
with an `error` body. Then: subscribe (hub.attach), read the stream position,
send `ready`, replay from `?since=`, and go live with no gap and no repeat.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from chat import limits, metrics
from chat.config import Settings
from chat.errors import INVALID, ApiError, unavailable, unknown_user
from chat.hub import Connection, actions
from chat.hub.connection import Limits
from chat.protocol import closecodes, frames
from chat.protocol.frames import PingFrame, ReadFrame, SendFrame, TypingFrame
from chat.protocol.validation import stream_id
from chat.runtime import Runtime
from chat.store import accounts, failures
from chat.store.store import public_user, stored_quick_replies
from chat.store.teams import team_store
from chat.teams.authz import acting_account
from chat.transport import acked, auth
from chat.transport.http import json
from chat.transport.uvicorn_ws import direct_write, transport_abort

log = logging.getLogger("dmhub.ws")

REDIS_DOWN = failures.STORAGE_UNAVAILABLE
RESTARTING = ApiError(
    "unavailable", "The server is restarting; reconnect and retry with the same client_id."
)


async def deny(websocket: WebSocket, error: ApiError) -> None:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    try:
        await websocket.send_denial_response(json(error.body(), error.status, headers))
    except RuntimeError:
        # A server without the denial-response extension: a close is all we can say.
        await websocket.close(closecodes.POLICY_VIOLATION, error.code)


async def handshake(
    rt: Runtime, websocket: WebSocket
) -> tuple[auth.Principal, dict[str, Any], Any, str]:
    """Authenticate and authorize; returns (principal, the user row of the account the
    socket acts for, peer facts or None, that account's lc). With `?as=BUSINESS`
    the socket is the business's, through the same check as every `as=` route."""
    principal = await auth.authenticate(
        rt.store,
        websocket.headers,
        websocket.cookies,
        needs_origin=True,
        origins=rt.origins,
        server=websocket.scope.get("server"),
    )
    acting = await acting_account(rt.store, principal.user, websocket.query_params.get("as"))
    me = await rt.store.user(acting)
    if me is None:
        raise ApiError("unauthenticated", "This account no longer exists.")
    peer = websocket.query_params.get("peer")
    pair = None
    if peer is not None:
        peer_lc = actions.peer_key(peer)
        pair = await rt.store.pair_facts(acting, peer_lc)
        if pair.recipient is None:
            raise unknown_user(peer)
        actions.require_allowed(pair, peer)
    if acting != principal.user:
        # The agent's handle as typed, to sign its sends and typing for the team.
        agent_row = await rt.store.user(principal.user)
        if agent_row is None:
            raise ApiError("unauthenticated", "This account no longer exists.")
        me = {**me, AGENT_FIELD: agent_row["handle"]}
    return principal, me, pair, acting


async def websocket_endpoint(websocket: WebSocket) -> None:
    rt: Runtime = websocket.app.state.runtime
    if rt.hub.draining:
        await deny(websocket, ApiError("unavailable", "The server is restarting.", status=503))
        return
    try:
        principal, me, pair, acting = await handshake(rt, websocket)
    except ApiError as error:
        await deny(websocket, error)
        return
    except REDIS_DOWN as exc:
        failures.note(exc, "handshake")
        await deny(websocket, unavailable())
        return
    # Checked and counted with no await in between, so concurrent handshakes
    # cannot all slip under the limit.
    socket_limit = rt.settings.limit_sockets_per_user
    if socket_limit > 0 and rt.hub.sockets_of(principal.user) >= socket_limit:
        await deny(
            websocket,
            actions.rate_limited(limits.SOCKETS, limits.SOCKETS_RETRY_AFTER_S * 1000),
        )
        return
    rt.hub.opening[principal.user] += 1
    try:
        await websocket.accept()
    finally:
        rt.hub.opened(principal.user)
    peer_lc = pair.recipient["handle"].lower() if pair is not None else None
    agent = principal.user if acting != principal.user else None
    conn = Connection(
        user=acting,
        agent=agent,
        agent_handle=me.get(AGENT_FIELD),
        session=principal.session,
        peer=peer_lc,
        send_text=websocket.send_text,
        close=lambda code, reason: websocket.close(code, reason),
        limits=socket_limits(rt.settings),
        write_now=direct_write(websocket.scope),
        abort=transport_abort(websocket.scope),
    )
    expiry: asyncio.TimerHandle | None = None
    try:
        await rt.hub.attach(conn)
        # Checked again now that the channel is live: a sign-out that landed
        # between the handshake and the subscription published its 4401 to nobody.
        expiry = await session_expiry(rt, conn)
        if conn.agent is not None:
            await still_in_team(rt, conn)
        if conn.closed:
            return
        start, reset = await starting_point(rt, acting, websocket.query_params.get("since"))
        ready: dict[str, Any] = {"type": "ready", "user": public_user(me), "cursor": start}
        if pair is not None and peer_lc is not None:
            ready["peer"] = public_user(pair.recipient)
            ready.update(await welcome(rt, acting, pair.recipient))
        await conn.put(frames.encode(ready))
        # This frame lives as long as the socket: keep only what it still needs.
        del principal, me, pair, ready
        release_handshake(websocket)
        if reset:
            await conn.put('{"type":"reset"}')
        await rt.hub.sync(conn, reset_to=start)
        await receive_loop(rt, websocket, conn)
    except WebSocketDisconnect:
        pass
    except REDIS_DOWN:
        conn.close(closecodes.TRY_AGAIN_LATER, "storage unavailable; reconnect with your cursor")
    except TimeoutError:
        conn.close(closecodes.TRY_AGAIN_LATER, "could not subscribe; reconnect with your cursor")
    finally:
        if expiry is not None:
            expiry.cancel()
        await rt.hub.detach(conn)
        if conn.writer is not None and not conn.writer.done():
            # Let a queued close frame (4401, 1008, 1012...) go out; never wait long.
            if conn.close_code is None:
                conn.writer.cancel()
            else:
                try:
                    await asyncio.wait_for(conn.writer, timeout=2)
                except Exception:  # a timeout or a failed write; cancellation propagates
                    conn.writer.cancel()


async def welcome(rt: Runtime, me: str, peer: dict[str, str]) -> dict[str, Any]:
    """A business's greeting and quick replies, for a conversation not started yet."""
    if peer.get("kind") != "business":
        return {}
    greeting, replies = peer.get("greeting"), stored_quick_replies(peer)
    if not (greeting or replies) or await rt.store.conversation_exists(me, peer["handle"].lower()):
        return {}
    fields: dict[str, Any] = {}
    if greeting:
        fields["greeting"] = greeting
    if replies:
        fields["quick_replies"] = replies
    return fields


async def session_expiry(rt: Runtime, conn: Connection) -> asyncio.TimerHandle | None:
    """Close the socket with 4401 when its session expires; at once if it is gone."""
    left_ms = await accounts.session_ttl_ms(rt.store, conn.session)
    if left_ms == -2:
        conn.close(closecodes.SESSION_ENDED, "session ended")
        return None
    if left_ms < 0:
        return None
    loop = asyncio.get_running_loop()
    return loop.call_later(left_ms / 1000, conn.close, closecodes.SESSION_ENDED, "session expired")


_limits: tuple[Settings, Limits] | None = None


def socket_limits(settings: Settings) -> Limits:
    """The outbox limits of every socket of this process: one shared object."""
    global _limits
    if _limits is None or _limits[0] is not settings:
        _limits = (
            settings,
            Limits(
                queue_frames=settings.socket_queue,
                queue_bytes=settings.socket_queue_bytes,
                write_deadline_s=settings.write_deadline_s,
                close_deadline_s=settings.close_deadline_s,
            ),
        )
    return _limits[1]


# Carries the agent's handle from the handshake, beside the business's user row.
AGENT_FIELD = "_agent"


async def still_in_team(rt: Runtime, conn: Connection) -> None:
    """Checked again once the channel is live: a removal that landed between the
    handshake and the subscription published its 4401 to nobody."""
    assert conn.agent is not None
    if not await team_store(rt.store).is_member(conn.user, conn.agent):
        conn.close(closecodes.SESSION_ENDED, "no longer in the team")


def release_handshake(websocket: WebSocket) -> None:
    """Let go of the handshake's headers: nothing reads them once the socket is open."""
    headers = websocket.scope.get("headers")
    if isinstance(headers, list):
        headers.clear()  # in place: Starlette's Headers shares this list


async def starting_point(rt: Runtime, user: str, since: str | None) -> tuple[str, bool]:
    """Where this socket's stream begins, and whether the client must refetch (reset)."""
    last, floor = await rt.store.event_bounds(user)
    if since is None:
        return last, False
    wanted = stream_id(since)
    # Too old (trimmed past it), or from the future (a stream that was wiped).
    if (
        wanted is None
        or wanted > parse_cursor_or_zero(last)
        or wanted < parse_cursor_or_zero(floor)
    ):
        return last, True
    return since, False


def parse_cursor_or_zero(cursor: str) -> tuple[int, int]:
    return stream_id(cursor) or (0, 0)


async def receive_loop(rt: Runtime, websocket: WebSocket, conn: Connection) -> None:
    limit = rt.settings.max_frame_bytes
    invalid_run = 0
    while not conn.closed:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None and (
            len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit)
        ):
            conn.close(closecodes.MESSAGE_TOO_BIG, "frame over 64 KiB")
            return
        if rt.hub.draining:
            # Say so rather than drop it: the client retries with the same
            # client_id once it has reconnected elsewhere.
            client_id = frames.frame_client_id(text) if text is not None else None
            if client_id is not None:
                conn.push(frames.error_frame(RESTARTING, client_id))
            continue
        conn.busy = True
        try:
            code = await handle_frame(rt, conn, text if text is not None else message.get("bytes"))
        finally:
            conn.busy = False
            if rt.hub.draining:
                rt.hub.frame_done.set()
        if code == INVALID:
            invalid_run += 1
            metrics.INVALID_FRAMES.inc()
            if invalid_run >= rt.settings.max_invalid_frames:
                conn.close(closecodes.POLICY_VIOLATION, "too many invalid frames")
                return
        else:
            invalid_run = 0


async def handle_frame(rt: Runtime, conn: Connection, data: str | bytes | None) -> str | None:
    """Act on one client frame; returns the error code it produced, if any."""
    client_id: str | None = None
    try:
        if not isinstance(data, str):
            raise ApiError(INVALID, "Frames are JSON text frames.")
        frame = frames.parse_client_frame(data)
        if isinstance(frame, SendFrame):
            client_id = frame.client_id if isinstance(frame.client_id, str) else None
            result = await actions.send_message(
                rt.store,
                conn.user,
                frame.to,
                frame.text,
                frame.client_id,
                origin=conn.id,
                options=frame.options(),
                agent=conn.agent_handle,
            )
            conn.push(actions.ack_frame(frame.client_id, result.message_json))
            # The ack is out: the send's outbox entry is done with.
            await rt.store.sends.finish(result)
        elif isinstance(frame, TypingFrame):
            await actions.send_typing(
                rt.store,
                conn.user,
                frame.to,
                rt.settings.limit_typing_per_10s,
                agent=conn.agent_handle,
                origin=conn.id,
            )
        elif isinstance(frame, ReadFrame):
            read = actions.mark_read(rt.store, conn.user, frame.peer, frame.up_to)
            # DMHUB_ACK_REPLICAS: the read is confirmed as any HTTP write is.
            await (read if rt.store.replica_acks is None else acked.frame(rt.store, read))
        elif isinstance(frame, PingFrame):
            conn.push(frames.encode({"type": "pong", "nonce": frame.nonce}))
        return None
    except ApiError as error:
        if client_id is None and isinstance(data, str) and error.code == INVALID:
            client_id = frames.frame_client_id(data)
        conn.push(frames.error_frame(error, client_id))
        return frames.frame_code(error.code)
    except REDIS_DOWN as exc:
        failures.note(exc, "frame")
        conn.push(frames.error_frame(unavailable(), client_id))
        return "unavailable"
    except RecursionError:
        # A value nested too deeply to encode back (a ping's nonce): the client's doing.
        conn.push(frames.error_frame(ApiError(INVALID, "The frame is nested too deeply.")))
        return INVALID
    except Exception:
        log.exception("failed to handle a frame from @%s", conn.user)
        conn.push(frames.error_frame(unavailable(), client_id))
        return "unavailable"
