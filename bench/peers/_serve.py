"""One way to serve every Python peer, so that the servers differ only in their app.

Same settings as `dmhub serve`: uvicorn with its default event loop (uvloop when
installed) and HTTP/WebSocket implementations, per-message deflate off, loopback.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

# redis-py 8 caps a connection pool at 100 connections and raises "Too many
# connections" beyond (before 8 it was unbounded). python-socketio and
# channels_redis open one per concurrent command, so with a thousand busy
# sockets they fail at once; this restores the headroom they were built for.
REDIS_MAX_CONNECTIONS = 4096


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    return parser.parse_args()


def serve(app: object, host: str, port: int, lifespan: str = "on") -> None:
    uvicorn.run(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        ws_per_message_deflate=False,
        lifespan=lifespan,
    )
