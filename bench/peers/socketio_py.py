"""python-socketio with its Redis manager (`AsyncRedisManager`), served by uvicorn.

    python -m bench.peers.socketio_py --port 8002 --redis-url unix:///path/valkey.sock

A client connects to `/socket.io/?EIO=4&transport=websocket&user=U` and joins
room U. The event `send` `{to, text, client_id}` becomes
`sio.emit("message", {id, from, to, text}, room=to)`: the manager delivers it to
the room's sockets in this process and publishes it on Redis for every other
process, which delivers it to theirs. That is python-socketio's own way to
scale out; nothing here is stored or checked.
"""

from __future__ import annotations

import itertools
import os
from typing import Any
from urllib.parse import parse_qs

import socketio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bench.peers._serve import REDIS_MAX_CONNECTIONS, arguments, serve


def create_app(url: str) -> socketio.ASGIApp:
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=socketio.AsyncRedisManager(
            url, redis_options={"max_connections": REDIS_MAX_CONNECTIONS}
        ),
        transports=["websocket"],
        cors_allowed_origins=[],
    )
    users: dict[str, str] = {}
    ids = itertools.count(1)
    pid = os.getpid()

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        user = (query.get("user") or [""])[0]
        if not user and isinstance(auth, dict):
            user = str(auth.get("user") or "")
        if not user:
            return False
        users[sid] = user
        await sio.enter_room(sid, user)
        return True

    @sio.event
    async def disconnect(sid: str, reason: Any = None) -> None:
        users.pop(sid, None)

    @sio.on("send")
    async def send(sid: str, data: Any) -> None:
        sender = users.get(sid)
        if sender is None or not isinstance(data, dict):
            return
        to, text = data.get("to"), data.get("text")
        if not isinstance(to, str) or not isinstance(text, str):
            return
        message = {"id": f"{pid}-{next(ids)}", "from": sender, "to": to, "text": text}
        await sio.emit("message", message, room=to)

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    other = Starlette(routes=[Route("/healthz", healthz)])
    return socketio.ASGIApp(sio, other_asgi_app=other)


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    serve(create_app(args.redis_url), args.host, args.port)


if __name__ == "__main__":
    main()
