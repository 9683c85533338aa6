"""Follows and blocks, each an edge kept in two users' slots, written in steps.

An edge A → B has an authority in A's slot (`fwing:{a}`, `blk:{a}`: what A
did) and a mirror in B's slot (`fwers:{b}`, `blkby:{b}`: what B's lists and
B's permission facts read). No script or transaction spans two users' keys
(a cluster refuses it), so each change is two steps (docs/architecture.md,
"Split operations"):

1. In A's slot, one script: the change to the authority and A's side of it,
   and an outbox entry (kind `follow` or `block`, payload {a, b}) in A's slot.
   This step decides the outcome: once it ran, the operation happens.
2. In B's slot: the mirror made to agree with the authority as it is now
   (`sync_follow`, `sync_block`). Idempotent, and convergent: it reads the
   authority, writes the mirror, and reads the authority again, until the two
   reads agree, so two changes of one edge racing each other (a follow and an
   unfollow from two tabs) still leave the mirror equal to the authority.

The process that ran step 1 runs step 2 at once and then marks the entry done;
if it dies in between, the reconciler runs the same step 2 from the outbox.
"""

from __future__ import annotations

import weakref
from enum import IntEnum
from typing import Any

from chat.store import keys
from chat.store.crashpoints import crash_point
from chat.store.lua import script as _script
from chat.store.outbox import OUTBOX_LUA, NotYet

# Rounds of read-authority, write-mirror, read-again before leaving an edge that
# keeps changing under us to the reconciler.
SYNC_ROUNDS = 5
FOLLOW, BLOCK = "follow", "block"


# Every script that changes an edge keeps the pair's letters in the user hash
# (pair_flags.lua) with it.
PAIR_FLAGS_LUA = _script("pair_flags.lua")
# Step 1 scripts issue edge ids and append to the outbox: those preludes go first.
FIRST_STEP_PRELUDE = "\n".join(
    (_script("msgid.lua"), _script("edge_id.lua"), PAIR_FLAGS_LUA, OUTBOX_LUA)
)


class FollowResult(IntEnum):
    ADDED = 1
    ALREADY = 0
    YOU_BLOCKED = -1
    BLOCKED_YOU = -2


class EdgeUnsettled(NotYet):
    """The edge kept changing while its mirror was written: the outbox entry
    stays, and the reconciler finishes the mirror later."""

    def __init__(self, kind: str, a: str, b: str) -> None:
        super().__init__(f"{kind} {a} -> {b} still changing")
        self.kind, self.a, self.b = kind, a, b


def _score(value: float | None) -> str:
    return "" if value is None else str(int(value))


class Graph:
    def __init__(self, store: Any) -> None:
        self.store = store
        redis = store.redis
        self.redis: Any = redis
        self._follow = redis.register_script(FIRST_STEP_PRELUDE + "\n" + _script("follow.lua"))
        self._block = redis.register_script(FIRST_STEP_PRELUDE + "\n" + _script("block.lua"))
        self._unlink = redis.register_script(
            PAIR_FLAGS_LUA + "\n" + OUTBOX_LUA + "\n" + _script("unlink.lua")
        )
        self._follow_mirror = redis.register_script(
            PAIR_FLAGS_LUA + "\n" + _script("follow_mirror.lua")
        )
        self._block_mirror = redis.register_script(
            PAIR_FLAGS_LUA + "\n" + _script("block_mirror.lua")
        )
        self._zrem_if = redis.register_script(PAIR_FLAGS_LUA + "\n" + _script("zrem_if.lua"))

    # -- step 1 and the rest, for a request ------------------------------------------

    async def follow(self, a: str, b: str) -> FollowResult:
        """A follows B, unless a block stands between them (either way)."""
        result = await self.follow_first(a, b)
        if result[0] != FollowResult.ADDED:
            return FollowResult(int(result[0]))
        crash_point("follow:after_first")
        try:
            refused = await self.sync_follow(a, b)
        except EdgeUnsettled:
            # Step 1 decided: A follows B. The reconciler settles B's side.
            return FollowResult.ADDED
        await self.store.outbox.done(a, result[1])
        return FollowResult.BLOCKED_YOU if refused else FollowResult.ADDED

    async def follow_first(self, a: str, b: str) -> list[Any]:
        result: list[Any] = await self._follow(
            keys=[
                keys.following(a),
                keys.blocking(a),
                keys.blocked_by(a),
                keys.user(a),
                keys.outbox(a),
            ],
            args=[a, b],
        )
        return result

    async def unfollow(self, a: str, b: str) -> None:
        await self._unlink_both(FOLLOW, a, b, "follow:after_first")

    async def block(self, a: str, b: str) -> bool:
        """A blocks B: follows end both ways and B leaves A's requests."""
        result = await self.block_first(a, b)
        if not result[0]:
            return False
        crash_point("block:after_first")
        await self._settle(self.sync_block, a, b, result[1])
        return True

    async def block_first(self, a: str, b: str) -> list[Any]:
        result: list[Any] = await self._block(
            keys=[
                keys.blocking(a),
                keys.following(a),
                keys.followers(a),
                keys.requests(a),
                keys.user(a),
                keys.outbox(a),
            ],
            args=[a, b],
        )
        return result

    async def unblock(self, a: str, b: str) -> None:
        await self._unlink_both(BLOCK, a, b, "block:after_first")

    async def unlink_first(self, kind: str, a: str, b: str) -> str | None:
        edge = keys.following(a) if kind == FOLLOW else keys.blocking(a)
        entry: str | None = await self._unlink(
            keys=[edge, keys.outbox(a), keys.user(a)], args=[a, b, kind]
        )
        return entry

    async def _unlink_both(self, kind: str, a: str, b: str, crash: str) -> None:
        entry = await self.unlink_first(kind, a, b)
        if entry is None:
            return
        crash_point(crash)
        await self._settle(self.sync_follow if kind == FOLLOW else self.sync_block, a, b, entry)

    async def _settle(self, step: Any, a: str, b: str, entry: str) -> None:
        try:
            await step(a, b)
        except EdgeUnsettled:
            return  # step 1 decided; the reconciler settles B's side
        await self.store.outbox.done(a, entry)

    # -- step 2: the mirror in B's slot, from the authority in A's -----------------

    async def sync_follow(self, a: str, b: str) -> bool:
        """fwers:{b} made to agree with fwing:{a}; True when B's block of A
        refused the follow (and A's edge was taken back)."""
        refused = False
        for _ in range(SYNC_ROUNDS):
            score = _score(await self.redis.zscore(keys.following(a), b))
            found = await self._follow_mirror(
                keys=[keys.followers(b), keys.blocking(b), keys.user(b)], args=[a, score]
            )
            if int(found) < 0:
                refused = True
                await self._zrem_if(
                    keys=[keys.following(a), keys.user(a)], args=[b, score, keys.FOLLOWS]
                )
                continue
            if _score(await self.redis.zscore(keys.following(a), b)) == score:
                return refused
        raise EdgeUnsettled(FOLLOW, a, b)

    async def sync_block(self, a: str, b: str) -> None:
        """blkby:{b} made to agree with blk:{a}, with B's side of the block."""
        for _ in range(SYNC_ROUNDS):
            score = _score(await self.redis.zscore(keys.blocking(a), b))
            await self._block_mirror(
                keys=[keys.blocked_by(b), keys.following(b), keys.followers(b), keys.user(b)],
                args=[a, score],
            )
            if _score(await self.redis.zscore(keys.blocking(a), b)) == score:
                return
        raise EdgeUnsettled(BLOCK, a, b)


def _pair(payload: dict[str, Any]) -> tuple[str, str]:
    return str(payload["a"]), str(payload["b"])


_graphs: weakref.WeakKeyDictionary[Any, Graph] = weakref.WeakKeyDictionary()


def graph(store: Any) -> Graph:
    """One Graph per Store, so its scripts are registered once."""
    found = _graphs.get(store)
    if found is None:
        found = _graphs[store] = Graph(store)
    return found


def register_handlers(store: Any) -> None:
    """The reconciler's step 2 of each kind of edge change."""
    edges = graph(store)

    async def follow(payload: dict[str, Any]) -> None:
        await edges.sync_follow(*_pair(payload))

    async def block(payload: dict[str, Any]) -> None:
        await edges.sync_block(*_pair(payload))

    store.outbox.register(FOLLOW, follow)
    store.outbox.register(BLOCK, block)


__all__ = [
    "BLOCK",
    "FOLLOW",
    "EdgeUnsettled",
    "FollowResult",
    "Graph",
    "graph",
    "register_handlers",
]
