"""`python -m bench.peers.channels_peer --port P --redis-url URL`: serve it with uvicorn."""

from __future__ import annotations

import os

from bench.peers._serve import arguments, serve


def main() -> None:
    args = arguments("Django Channels with channels_redis, served by uvicorn")
    os.environ["REDIS_URL"] = args.redis_url
    from bench.peers.channels_peer.asgi import application

    # Channels' router speaks no lifespan protocol.
    serve(application, args.host, args.port, lifespan="off")


if __name__ == "__main__":
    main()
