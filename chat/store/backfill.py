"""`dmhub admin backfill`: what data written before two layout changes of
issue 13 lacks, derived from what it kept (docs/architecture.md, "Upgrading").

The relationship facts a send reads became letters in the user hash (`p:<peer>`,
scripts/pair_flags.lua) twinning six collections that stayed, and the read
state moved from `rd:{lc}` / `unread:{lc}` into fields `r:<peer>` / `u:<peer>`
of the user hash. Without this, a block made before the upgrade no longer
stops messages. Every account is visited (a SCAN of `user:{*}` on every
master), each in its own slot, by scripts/backfill.lua: atomic per batch, a
bounded batch per call. Running it again changes nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from chat.store import keys
from chat.store.safety import scan_accounts
from chat.store.store import Store

# About how many members, fields or entries one script call reads: a user with
# huge collections takes several calls, so no call holds Valkey for long.
BATCH = 500
# Accounts in flight at once: each is its own slot's scripts, one after another.
CONCURRENCY = 16
# The script's sources, in order; past the last, the account is done.
_DONE = 10

BACKFILL_LUA = "\n".join(
    resources.files("chat.store").joinpath("scripts", name).read_text()
    for name in ("pair_flags.lua", "backfill.lua")
)


@dataclass(slots=True)
class BackfillReport:
    """What a backfill did; a second run reports zero changes."""

    accounts: int = 0
    # Tombstones of deleted accounts, left as they are.
    skipped: int = 0
    letters_set: int = 0
    letters_cleared: int = 0
    read_pointers_moved: int = 0
    unread_counts_moved: int = 0
    old_hashes_deleted: int = 0
    # Script calls made: more than one per account only for large ones.
    batches: int = 0

    def public(self) -> dict[str, int]:
        return asdict(self)


def account_keys(lc: str) -> list[str]:
    """The keys backfill.lua declares, in its order: all in lc's slot."""
    unread, read = keys.read_state_before(lc)
    return [
        keys.user(lc),
        keys.blocking(lc),
        keys.blocked_by(lc),
        keys.following(lc),
        keys.followers(lc),
        keys.wrote(lc),
        keys.heard(lc),
        read,
        unread,
    ]


async def backfill(store: Store, batch: int = BATCH) -> BackfillReport:
    """Backfill every account there is (see the module's docstring)."""
    script = store.redis.register_script(BACKFILL_LUA)
    report = BackfillReport()
    waiting: list[str] = []
    # A SCAN may name a key twice (a rehash between pages): harmless, the
    # second visit finds it done; only `accounts` may count it twice.
    async for lc in scan_accounts(store, keys.user):
        waiting.append(lc)
        if len(waiting) >= CONCURRENCY:
            await asyncio.gather(*(_account(script, lc, batch, report) for lc in waiting))
            waiting.clear()
    await asyncio.gather(*(_account(script, lc, batch, report) for lc in waiting))
    return report


async def backfill_account(store: Store, lc: str, batch: int = BATCH) -> BackfillReport:
    """One account's backfill."""
    report = BackfillReport()
    await _account(store.redis.register_script(BACKFILL_LUA), lc, batch, report)
    return report


async def _account(script: Any, lc: str, batch: int, report: BackfillReport) -> None:
    names = account_keys(lc)
    source, cursor = 1, "0"
    while source < _DONE:
        found = await script(keys=names, args=[source, cursor, batch])
        report.batches += 1
        live, source, cursor = int(found[0]), int(found[1]), str(found[2])
        if not live:
            report.skipped += 1
            return
        report.letters_set += int(found[3])
        report.letters_cleared += int(found[4])
        report.read_pointers_moved += int(found[5])
        report.unread_counts_moved += int(found[6])
        report.old_hashes_deleted += int(found[7])
    report.accounts += 1
