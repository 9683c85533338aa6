"""The objects one process shares between requests, built in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as redis

from chat.config import Settings
from chat.hub import Hub
from chat.store.store import Store


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    store: Store
    hub: Hub


# The runtime of the app this process serves, for the signal handler's drain.
current: Runtime | None = None
