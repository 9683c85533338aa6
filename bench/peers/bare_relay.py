"""The floor: a bare Starlette + redis-py pub/sub relay, nothing stored, nothing checked.

    python -m bench.peers.bare_relay --port 8001 --redis-url unix:///path/valkey.sock

`/ws?user=U` opens a socket for U. The process holds one pub/sub connection and
subscribes to `relay:U` when U's first socket arrives here (unsubscribes when
the last leaves). A frame `{"type":"send","to":V,"text":T,"client_id":C}` is
published to `relay:V` as the finished frame
`{"type":"message","message":{"id","from","to","text"}}`, and whichever process
holds V's sockets forwards that text to each of them unchanged.

No accounts, no acknowledgement, no storage, no permission rule, no limits: the
least work a Python process can do to carry a direct message through Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bench.peers._serve import arguments, serve

PREFIX = "relay:"
# Publishes share a bounded pool and wait for a free connection (dmhub's is 64 too).
# redis-py 8's default pool raises "Too many connections" past 100 instead.
POOL_SIZE = 64
# redis-py's listen() ends when nothing is subscribed; this channel keeps it going.
KEEPALIVE_CHANNEL = PREFIX + "~"


class Relay:
    def __init__(self, url: str) -> None:
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, timeout=None)
        self.redis = redis.Redis(connection_pool=pool)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.sockets: dict[str, set[WebSocket]] = {}
        self.ids = itertools.count(1)
        self.pid = os.getpid()
        self.listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.pubsub.subscribe(KEEPALIVE_CHANNEL)
        self.listener = asyncio.create_task(self.listen())

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.listener
        await self.pubsub.aclose()
        await self.redis.aclose()

    async def listen(self) -> None:
        async for item in self.pubsub.listen():
            if item["type"] != "message":
                continue
            user = item["channel"].decode()[len(PREFIX) :]
            text = item["data"].decode()
            for socket in list(self.sockets.get(user, ())):
                with contextlib.suppress(Exception):
                    await socket.send_text(text)

    async def join(self, user: str, socket: WebSocket) -> None:
        sockets = self.sockets.setdefault(user, set())
        sockets.add(socket)
        if len(sockets) == 1:
            await self.pubsub.subscribe(PREFIX + user)

    async def leave(self, user: str, socket: WebSocket) -> None:
        sockets = self.sockets.get(user)
        if sockets is None:
            return
        sockets.discard(socket)
        if not sockets:
            del self.sockets[user]
            await self.pubsub.unsubscribe(PREFIX + user)

    async def send(self, sender: str, frame: dict[str, Any]) -> None:
        to, text = frame.get("to"), frame.get("text")
        if frame.get("type") != "send" or not isinstance(to, str) or not isinstance(text, str):
            return
        message = {"id": f"{self.pid}-{next(self.ids)}", "from": sender, "to": to, "text": text}
        await self.redis.publish(PREFIX + to, json.dumps({"type": "message", "message": message}))


def create_app(url: str) -> Starlette:
    relay = Relay(url)

    async def socket_endpoint(socket: WebSocket) -> None:
        user = socket.query_params.get("user", "")
        if not user:
            await socket.close(code=1008)
            return
        await relay.join(user, socket)
        try:
            await socket.accept()
            while True:
                raw = await socket.receive_text()
                try:
                    frame = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(frame, dict):
                    await relay.send(user, frame)
        except WebSocketDisconnect:
            pass
        finally:
            await relay.leave(user, socket)

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await relay.start()
        yield
        await relay.stop()

    return Starlette(
        routes=[Route("/healthz", healthz), WebSocketRoute("/ws", socket_endpoint)],
        lifespan=lifespan,
    )


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    serve(create_app(args.redis_url), args.host, args.port)


if __name__ == "__main__":
    main()
