"""Reports, restriction and suspension in Redis (PROTOCOL.md v1.1).

The decisions are pure (chat/reports.py, chat/permission/rule.py); this module
keeps their state. A restriction is a `restricted` field in the user hash,
where a send's first step (send_prepare.lua) and facts_sender.lua read it with
the rest of the account, plus a
`restriction:{lc}` hash that says why, for operators. A suspension is
`active` = "0" (and `suspended`, when) in the user hash.

The operators' listings scan for `reports:{*}` and `restriction:{*}` keys:
there is no global index to grow (or to pin one Cluster node), and only
reported accounts have such keys.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import msgspec

from chat.reports import Received, Standing, Weighing, weigh
from chat.store import accounts, keys
from chat.store.store import EVERY_SESSION, Store, iso_ms

# Reports kept per reported account for operators, newest first.
REPORTS_KEPT = 200
# Distinct reporters weighed per account and window (the newest).
REPORTERS_KEPT = 1000
SCAN_BATCH = 500

REPORT_LUA = resources.files("chat.store").joinpath("scripts", "report.lua").read_text()
_encoder = msgspec.json.Encoder()


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Restriction:
    handle: str
    since_ms: int
    # The counted reports that restricted it, as logged (reporter, reason, message_id, at).
    reports: list[dict[str, Any]]

    def public(self) -> dict[str, Any]:
        return {
            "handle": self.handle,
            "restricted_at": iso_ms(self.since_ms),
            "reports": self.reports,
        }


async def record_report(
    store: Store,
    reporter: str,
    reporter_handle: str,
    target: str,
    reason: str,
    message_id: str | None,
    at_ms: int,
    window_ms: int,
) -> bool:
    """Log a report; False when this reporter's report is already counted."""
    entry = _encoder.encode(
        {"reporter": reporter_handle, "reason": reason, "message_id": message_id, "at": at_ms}
    )
    # Reports are rare: hashing the script per call costs less than a cache would say.
    added = await store.redis.register_script(REPORT_LUA)(
        keys=[keys.reporters(target), keys.reports(target)],
        args=[reporter, at_ms, window_ms, entry, REPORTS_KEPT, REPORTERS_KEPT],
    )
    return bool(added)


def _standing(values: list[str | None]) -> Standing:
    handle, created, active, restricted = values
    return Standing(
        exists=handle is not None,
        created_ms=int(created) if created and created.isdigit() else 0,
        restricted=restricted is not None,
        suspended=active == "0",
    )


async def weigh_reports(
    store: Store,
    target: str,
    *,
    at_ms: int,
    threshold: int,
    window_ms: int,
    min_age_ms: int,
) -> Weighing:
    """Weigh the reports of `target` in the window, against its reporters' standing now."""
    redis = store.redis
    rows = await redis.zrangebyscore(
        keys.reporters(target), f"({at_ms - window_ms}", "+inf", withscores=True
    )
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hget(keys.user(target), "cleared")
        for reporter, _ in rows:
            pipe.hmget(keys.user(reporter), ["handle", "created", "active", "restricted"])
        found = await pipe.execute()
    cleared = int(found[0]) if found[0] and str(found[0]).isdigit() else 0
    items = [
        (Received(reporter, int(score)), _standing(values))
        for (reporter, score), values in zip(rows, found[1:], strict=True)
    ]
    return weigh(
        items,
        now_ms=at_ms,
        threshold=threshold,
        window_ms=window_ms,
        min_age_ms=min_age_ms,
        cleared_ms=cleared,
    )


async def report_log(store: Store, target: str, limit: int = REPORTS_KEPT) -> list[dict[str, Any]]:
    """Reports about `target`, newest first, as operators see them."""
    raw = await store.redis.lrange(keys.reports(target), 0, limit - 1)
    entries = []
    for item in raw:
        try:
            entry = msgspec.json.decode(item)
        except msgspec.DecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def public_report(handle: str, entry: dict[str, Any]) -> dict[str, Any]:
    at = entry.get("at")
    return {
        "handle": handle,
        "reporter": entry.get("reporter"),
        "reason": entry.get("reason"),
        "message_id": entry.get("message_id"),
        "reported_at": iso_ms(at) if isinstance(at, int) else None,
    }


async def restrict(store: Store, target: str, at_ms: int, counted: tuple[str, ...]) -> bool:
    """Restrict `target` for these reporters' reports; False when it already was."""
    log = await report_log(store, target)
    wanted = set(counted)
    why = [e for e in log if str(e.get("reporter", "")).lower() in wanted]
    # The user hash and restriction:{lc} live in different slots, so no MULTI:
    # the why is written first, so that a restricted account always has one.
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.hsetnx(keys.restriction(target), "since", str(at_ms))
        pipe.hsetnx(keys.restriction(target), "reports", _encoder.encode(why))
        pipe.hsetnx(keys.user(target), "restricted", str(at_ms))
        _, _, first = await pipe.execute()
    return bool(first)


async def is_restricted(store: Store, lc: str) -> bool:
    return bool(await store.redis.hexists(keys.user(lc), "restricted"))


async def restriction(store: Store, lc: str) -> Restriction | None:
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.hmget(keys.user(lc), ["handle", "restricted"])
        pipe.hgetall(keys.restriction(lc))
        (handle, since), why = await pipe.execute()
    if handle is None or since is None:
        return None
    try:
        reports = msgspec.json.decode(why.get("reports") or "[]")
    except msgspec.DecodeError:
        reports = []
    shown = [public_report(handle, e) for e in reports if isinstance(e, dict)]
    return Restriction(handle, int(since), shown)


async def clear(store: Store, lc: str, at_ms: int) -> Restriction | None:
    """Lift a restriction; reports made before now stop counting. Returns what it was."""
    was = await restriction(store, lc)
    # Two slots (the user hash, and lc's own keys): the flag goes first.
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.hset(keys.user(lc), "cleared", str(at_ms))
        pipe.hdel(keys.user(lc), "restricted")
        pipe.delete(keys.restriction(lc), keys.reporters(lc))
        await pipe.execute()
    return was


async def suspend(store: Store, lc: str, at_ms: int) -> None:
    """Suspend: no sign-in, no sends either way, and every session ends now."""
    await store.redis.hset(keys.user(lc), mapping={"active": "0", "suspended": str(at_ms)})
    await accounts.end_all_sessions(store, lc)
    # Sockets of sessions the index does not know (older than it) close too.
    await store.publish_session_end(lc, EVERY_SESSION)


async def unsuspend(store: Store, lc: str) -> None:
    async with store.redis.pipeline(transaction=True) as pipe:  # one key, one slot
        pipe.hset(keys.user(lc), "active", "1")
        pipe.hdel(keys.user(lc), "suspended")
        await pipe.execute()


async def scan_accounts(store: Store, key_of: Any) -> AsyncIterator[str]:
    """The lower-cased handles of accounts that have a `key_of(lc)` key."""
    prefix, suffix = key_of("\0").split("\0")
    async for key in store.redis.scan_iter(match=f"{prefix}*{suffix}", count=SCAN_BATCH):
        if key.startswith(prefix) and key.endswith(suffix):
            yield key[len(prefix) : len(key) - len(suffix)]


async def reported_accounts(store: Store, window_ms: int) -> list[dict[str, Any]]:
    """Every reported account: how often, by how many in the window, restricted or not."""
    found = [lc async for lc in scan_accounts(store, keys.reports)]
    now = now_ms()
    async with store.redis.pipeline(transaction=False) as pipe:
        for lc in found:
            pipe.hmget(keys.user(lc), ["handle", "restricted", "active"])
            pipe.llen(keys.reports(lc))
            pipe.zcount(keys.reporters(lc), f"({now - window_ms}", "+inf")
            pipe.lindex(keys.reports(lc), 0)
        rows = await pipe.execute()
    accounts_: list[dict[str, Any]] = []
    for index, lc in enumerate(found):
        (handle, restricted, active), total, recent, newest = rows[4 * index : 4 * index + 4]
        latest = None
        if newest:
            try:
                latest = msgspec.json.decode(newest).get("at")
            except (msgspec.DecodeError, AttributeError):
                latest = None
        accounts_.append(
            {
                "handle": handle or lc,
                "reports": int(total),
                "reporters_in_window": int(recent),
                "restricted": restricted is not None,
                "suspended": active == "0",
                "last_reported_at": iso_ms(latest) if isinstance(latest, int) else None,
            }
        )
    accounts_.sort(key=lambda a: a["last_reported_at"] or "", reverse=True)
    return accounts_


async def restrictions(store: Store) -> list[Restriction]:
    found = []
    async for lc in scan_accounts(store, keys.restriction):
        current = await restriction(store, lc)
        if current is not None:
            found.append(current)
    found.sort(key=lambda r: r.since_ms, reverse=True)
    return found
