"""Django settings for the Channels peer: no database, no apps, one channel layer."""

from __future__ import annotations

import os

from bench.peers._serve import REDIS_MAX_CONNECTIONS

SECRET_KEY = "dmhub-bench-channels-peer-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.peers.channels_peer.urls"
DATABASES: dict[str, object] = {}
USE_TZ = True
ASGI_APPLICATION = "bench.peers.channels_peer.asgi.application"

_LAYERS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": _LAYERS[os.environ.get("CHANNELS_LAYER", "core")],
        "CONFIG": {
            "hosts": [
                {
                    "address": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                    # redis-py 8 reads with a 5 s socket timeout by default, which
                    # races the layer's 5 s BZPOPMIN and kills the receive loop.
                    "socket_timeout": None,
                    "max_connections": REDIS_MAX_CONNECTIONS,
                }
            ]
        },
    }
}
