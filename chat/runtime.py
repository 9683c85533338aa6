"""The objects one process shares between requests, built in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as redis

from chat.config import Settings
from chat.hub import Hub
from chat.store.store import Store
from chat.transport.origins import OriginPolicy


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    store: Store
    hub: Hub
    origins: OriginPolicy = field(init=False)

    def __post_init__(self) -> None:
        self.origins = OriginPolicy.from_urls(
            self.settings.public_url, self.settings.allowed_origins
        )


# The runtime of the app this process serves, for the signal handler's drain.
current: Runtime | None = None
