"""What a Redis server's persistence settings guarantee for an acknowledged message.

An ack goes out only after the send script returned, so what survives a crash is
whatever that server had made durable before it replied. This depends only on
`appendonly` and `appendfsync` (docs/architecture.md, "What each guarantee
rests on"):

- `appendonly no`: nothing is promised; a restart keeps at most the last
  snapshot.
- `appendfsync always`: the write and its fsync happen before the reply (once
  per event-loop turn, shared by every command of that turn). Nothing
  acknowledged is lost to a crash of Redis or of the machine.
- `appendfsync everysec`: the reply can go out before the write. While the
  background fsync of the previous second is still running, Redis postpones
  the write for up to 2 s (aof.c) yet still answers, so a crash of Redis alone
  can lose up to about 2 s of acknowledged messages; a crash of the machine too.
- `appendfsync no`: written before the reply, fsynced when the kernel chooses;
  a crash of Redis loses nothing, a crash of the machine up to ~30 s.

`dmhub serve` logs the sentence for the server it is given (REDIS_URL).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("dmhub.valkey")

CHECK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Guarantee:
    """`safe`: no acknowledged message is lost if Redis is killed (SIGKILL)."""

    safe: bool
    sentence: str


def guarantee(appendonly: str | None, appendfsync: str | None) -> Guarantee:
    """What these settings promise; None means the server would not say."""
    if appendonly is None:
        return Guarantee(False, "persistence settings unknown (CONFIG GET refused); check them")
    if appendonly.lower() not in ("yes", "1"):
        return Guarantee(
            False,
            "appendonly no: acknowledged messages are lost if Redis restarts "
            "(set appendonly yes and appendfsync always)",
        )
    policy = (appendfsync or "").lower()
    if policy == "always":
        return Guarantee(
            True,
            "appendonly yes, appendfsync always: every acknowledged message is on disk; "
            "none is lost to a crash of Redis or of the machine",
        )
    if policy == "no":
        return Guarantee(
            True,
            "appendonly yes, appendfsync no: a crash of Redis loses no acknowledged "
            "message; a crash of the machine can lose the last ~30 s",
        )
    if policy == "everysec":
        return Guarantee(
            False,
            "appendonly yes, appendfsync everysec: a crash of Redis or of the machine can "
            "lose up to ~2 s of acknowledged messages (set appendfsync always to lose none)",
        )
    return Guarantee(
        False, f"appendonly yes, appendfsync {appendfsync or 'unknown'}: check the fsync policy"
    )


def check(url: str) -> Guarantee:
    """Ask the server for its settings and log what they guarantee (start-up,
    REDIS_URL). A cluster's seeds are each asked; the weakest answer counts."""
    from chat.store.connection import seed_urls

    results = [_check_one(seed) for seed in seed_urls(url)]
    return next((r for r in results if not r.safe), results[0])


def _check_one(url: str) -> Guarantee:
    import redis

    appendonly: str | None = None
    appendfsync: str | None = None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=CHECK_TIMEOUT_S)
        try:
            try:
                found = client.config_get("append*")
                appendonly, appendfsync = found.get("appendonly"), found.get("appendfsync")
            except redis.ResponseError:
                # Managed services often rename or forbid CONFIG; INFO still says
                # whether there is an append-only file, though not the fsync policy.
                info = client.info("persistence")
                appendonly = "yes" if int(info.get("aof_enabled", 0)) else "no"
        finally:
            client.close()
    except Exception as exc:
        log.warning("could not check %s for persistence: %s", redact(url), exc)
        return Guarantee(False, "persistence settings unknown")
    if isinstance(appendonly, bytes):
        appendonly = appendonly.decode()
    if isinstance(appendfsync, bytes):
        appendfsync = appendfsync.decode()
    result = guarantee(appendonly, appendfsync)
    if result.safe:
        log.info("Redis at %s: %s", redact(url), result.sentence)
    else:
        log.warning("Redis at %s: %s", redact(url), result.sentence)
    return result


def redact(url: str) -> str:
    """The URL without its password, fit for a log line."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
