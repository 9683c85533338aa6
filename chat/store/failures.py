"""Storage failures that are not the client's fault, and how loudly to report them.

Each is answered `unavailable` (HTTP 503, or an `error` frame): nothing was
stored and the client retries with the same client_id. They are:

- Redis unreachable, timed out, or still loading its data after a restart
  (`LOADING`, which redis-py raises as BusyLoadingError, a ConnectionError);
- Redis refusing a write because it reached `maxmemory` (`OOM`): with
  `noeviction` nothing is dropped, writes wait for an operator.

An outage can fail thousands of requests a second, so this module logs one
warning line per interval, never a traceback, and counts memory refusals for
/metrics.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chat import metrics

log = logging.getLogger("dmhub.store")

# Everything that means "storage cannot take this now; retry" (OOM included).
STORAGE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    OutOfMemoryError,
)
WARN_EVERY_S = 5.0
OOM_WARN_EVERY_S = 60.0

_last_warning = {"down": -WARN_EVERY_S, "oom": -OOM_WARN_EVERY_S}


def note(exc: BaseException, where: str = "") -> None:
    """Count and log a storage failure: at most one line per interval, no traceback."""
    now = time.monotonic()
    if isinstance(exc, OutOfMemoryError):
        metrics.STORAGE_OOM_REFUSALS.inc()
        if now - _last_warning["oom"] >= OOM_WARN_EVERY_S:
            _last_warning["oom"] = now
            log.warning(
                "Redis is at its maxmemory and refuses writes; answering them 'unavailable' "
                "until memory is freed or maxmemory raised (DMHUB_VALKEY_MAXMEMORY)%s: %s",
                f" ({where})" if where else "",
                exc,
            )
        return
    if now - _last_warning["down"] >= WARN_EVERY_S:
        _last_warning["down"] = now
        log.warning(
            "storage unavailable, answering 'unavailable'%s: %s",
            f" ({where})" if where else "",
            exc,
        )
