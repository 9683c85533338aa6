"""Sessions a person can see and end, and the end of an account.

Each user has a session index (`sessions:{lc}` scored by expiry, `sessinfo:{lc}`
with what the list shows), both expiring with the user's newest session and
capped at MAX_SESSIONS_PER_USER: past the cap the oldest session ends. The
session itself stays `sess:{sha256(token)}`, read on every request.

Deleting an account turns its user hash into a tombstone (the handle stays
taken, nothing else is kept), ends its sessions, and removes it from everyone's
follow and block lists. Conversations stay with the people it talked to: they
are theirs too; the deleted side shows as a placeholder in their lists.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import msgspec

from chat.store import keys, views
from chat.store.crashpoints import crash_point
from chat.store.outbox import OUTBOX_LUA
from chat.store.store import EVERY_SESSION, Store, iso_ms
from chat.store.teams import team_store
from chat.store.webhooks import WebhookStore

MAX_SESSIONS_PER_USER = 50
# Public ids of sessions: a prefix of the token's hash, enough to tell them apart.
SESSION_ID_CHARS = 16
MAX_AGENT_CHARS = 200
# How many members, entries or messages one Redis call moves during export or deletion.
BATCH = 500

_encoder = msgspec.json.Encoder()
DELETE_USER_LUA = (
    OUTBOX_LUA
    + "\n"
    + resources.files("chat.store").joinpath("scripts", "delete_user.lua").read_text()
)
# The outbox kind of what remains of a deletion after its tombstone.
DELETE = "delete"
EDGE_DROP_LUA = "\n".join(
    resources.files("chat.store").joinpath("scripts", name).read_text()
    for name in ("pair_flags.lua", "edge_drop.lua")
)
# edge_drop.lua calls in flight at once while a deletion clears the other
# sides of its edges (each one key's slot: no pipeline across slots needed).
EDGE_DROP_CONCURRENCY = 50


@dataclass(frozen=True, slots=True)
class SessionRow:
    token_hash: str
    expires_ms: int
    created_ms: int
    ip: str
    agent: str

    @property
    def id(self) -> str:
        return self.token_hash[:SESSION_ID_CHARS]

    def public(self, current: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": iso_ms(self.created_ms),
            "expires_at": iso_ms(self.expires_ms),
            "ip": self.ip,
            "user_agent": self.agent,
            "current": self.token_hash == current,
        }


def _redis(store: Store) -> Any:
    return store.redis


async def start_session(
    store: Store, token_hash: str, lc: str, ttl_s: int, ip: str, agent: str
) -> None:
    """A new session and its index entry; past the cap, the oldest session ends."""
    now = int(time.time() * 1000)
    info = _encoder.encode({"created": now, "ip": ip, "agent": agent[:MAX_AGENT_CHARS]})
    # The index first: a session that exists is always one "sign out everywhere" finds.
    async with _redis(store).pipeline(transaction=True) as pipe:
        pipe.zadd(keys.session_index(lc), {token_hash: now + ttl_s * 1000})
        pipe.hset(keys.session_info(lc), token_hash, info)
        for key in (keys.session_index(lc), keys.session_info(lc)):
            # GT never sets a first TTL (no TTL counts as infinite); NX does.
            pipe.expire(key, ttl_s, gt=True)
            pipe.expire(key, ttl_s, nx=True)
        pipe.zcard(keys.session_index(lc))
        results = await pipe.execute()
    await _redis(store).set(keys.session(token_hash), lc, ex=ttl_s)
    count = int(results[-1])
    if count > MAX_SESSIONS_PER_USER:
        oldest = await _redis(store).zrange(
            keys.session_index(lc), 0, count - MAX_SESSIONS_PER_USER - 1
        )
        await end_sessions(store, lc, list(oldest))


async def sessions(store: Store, lc: str) -> list[SessionRow]:
    """The user's live sessions, newest first; expired entries are dropped on the way."""
    now = int(time.time() * 1000)
    redis = _redis(store)
    expired = await redis.zrangebyscore(keys.session_index(lc), "-inf", now)
    if expired:
        await _forget(store, lc, list(expired))
    rows = await redis.zrevrange(keys.session_index(lc), 0, -1, withscores=True)
    if not rows:
        return []
    infos = await redis.hmget(keys.session_info(lc), [h for h, _ in rows])
    found: list[SessionRow] = []
    for (token_hash, expires), raw in zip(rows, infos, strict=True):
        info: dict[str, Any] = {}
        if raw:
            try:
                info = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                info = {}
        found.append(
            SessionRow(
                token_hash=token_hash,
                expires_ms=int(expires),
                created_ms=int(info.get("created", 0)),
                ip=str(info.get("ip", "")),
                agent=str(info.get("agent", "")),
            )
        )
    return found


async def _forget(store: Store, lc: str, token_hashes: list[str]) -> None:
    async with _redis(store).pipeline(transaction=True) as pipe:
        pipe.zrem(keys.session_index(lc), *token_hashes)
        pipe.hdel(keys.session_info(lc), *token_hashes)
        await pipe.execute()


async def end_sessions(store: Store, lc: str, token_hashes: list[str]) -> None:
    """End these sessions at once: the tokens stop working, and every process
    closes their sockets with 4401."""
    if not token_hashes:
        return
    async with _redis(store).pipeline(transaction=False) as pipe:
        for token_hash in token_hashes:
            pipe.delete(keys.session(token_hash))
        await pipe.execute()
    await _forget(store, lc, token_hashes)
    for token_hash in token_hashes:
        await store.publish_session_end(lc, token_hash)


async def end_all_sessions(store: Store, lc: str, keep: str | None = None) -> int:
    """Every session of the user but `keep`; returns how many ended."""
    hashes = [h for h in await _redis(store).zrange(keys.session_index(lc), 0, -1) if h != keep]
    await end_sessions(store, lc, hashes)
    return len(hashes)


async def session_ttl_ms(store: Store, token_hash: str) -> int:
    """Milliseconds the session has left; -2 when it is gone, -1 when it never ends."""
    # Every socket asks once as it opens: the pipelined lane, as for the session itself.
    if store.lane is not None:
        return int(await store.lane.execute("PTTL", keys.session(token_hash)))
    return int(await _redis(store).pttl(keys.session(token_hash)))


async def set_password_hash(store: Store, lc: str, password_hash: str) -> None:
    await _redis(store).hset(keys.user(lc), "pw", password_hash)


# -- deleting an account ---------------------------------------------------------


async def delete_account(store: Store, lc: str) -> bool:
    """Tombstone the account, end its sessions, and take it out of everyone's lists."""
    entry = await _redis(store).register_script(DELETE_USER_LUA)(
        keys=[keys.user(lc), keys.outbox(lc)], args=[int(time.time() * 1000), lc]
    )
    if not entry:
        return False
    crash_point("delete:after_first")
    await finish_deletion(store, lc)
    await store.outbox.done(lc, entry)
    return True


def register_handlers(store: Store) -> None:
    """The reconciler finishes a deletion whose process died after the tombstone."""

    async def delete(payload: dict[str, Any]) -> None:
        await finish_deletion(store, str(payload["lc"]))

    store.outbox.register(DELETE, delete)


async def finish_deletion(store: Store, lc: str) -> None:
    """Everything after the tombstone; every part may run twice."""
    await end_all_sessions(store, lc)
    # Sockets of sessions the index does not know (older than it) close too.
    await store.publish_session_end(lc, EVERY_SESSION)
    redis = _redis(store)
    # Out of every team, both ways: as an agent, and as a business with agents
    # (whose sockets acting for it close).
    teams = team_store(store)
    for business in await redis.smembers(keys.teams_of(lc)):
        await teams.remove_agent(business, lc)
    for agent in await redis.smembers(keys.team(lc)):
        await teams.remove_agent(lc, agent)
    await WebhookStore(redis).delete_all(lc)
    await team_store(store).forget(lc)
    # Each edge list of the account names the reverse entries to remove
    # elsewhere, each with its letter in that peer's hash (pair_flags.lua): a
    # follow of lc's is F in the followee's, and so on.
    drop = redis.register_script(EDGE_DROP_LUA)
    for own, reverse, letter in (
        (keys.following(lc), keys.followers, keys.FOLLOWED_BY),
        (keys.followers(lc), keys.following, keys.FOLLOWS),
        (keys.blocking(lc), keys.blocked_by, keys.BLOCKED_BY),
        (keys.blocked_by(lc), keys.blocking, keys.BLOCKS),
    ):
        async for members in _members(redis, own):
            for start in range(0, len(members), EDGE_DROP_CONCURRENCY):
                await asyncio.gather(
                    *(
                        drop(keys=[reverse(member), keys.user(member)], args=[lc, letter])
                        for member in members[start : start + EDGE_DROP_CONCURRENCY]
                    )
                )
    # Its views of its conversations go; each peer keeps its own view. The
    # views are named by every set that records a conversation, before those go.
    peers = set(await conversation_peers(store, lc)) | set(await redis.smembers(keys.heard(lc)))
    ordered = sorted(peers)
    for start in range(0, len(ordered), BATCH):
        await redis.delete(*(keys.view(lc, peer) for peer in ordered[start : start + BATCH]))
    await redis.delete(
        keys.heard(lc),
        keys.client_ids_in(lc),
        keys.following(lc),
        keys.followers(lc),
        keys.blocking(lc),
        keys.blocked_by(lc),
        keys.wrote(lc),
        keys.inbox(lc),
        keys.requests(lc),
        # The read state of an account from before it moved into the user hash.
        *keys.read_state_before(lc),
        keys.receipts_delivered(lc),
        keys.cleared(lc),
        keys.client_ids(lc),
        keys.events(lc),
        keys.session_index(lc),
        keys.session_info(lc),
        keys.team(lc),
        keys.teams_of(lc),
    )
    # Its safety state goes too (one slot, {lc}); the reports about it stay, for
    # operators (capped, see chat/store/safety.py).
    await redis.delete(
        keys.restriction(lc),
        keys.reporters(lc),
        keys.new_conversations(lc),
        keys.requests_received(lc),
        keys.typing_count(lc),
        keys.report_count(lc),
    )


async def _members(redis: Any, key: str) -> AsyncIterator[list[str]]:
    """A sorted set's members in batches, from a snapshot of the set taken in pages."""
    start = 0
    while True:
        members = await redis.zrange(key, start, start + BATCH - 1)
        if not members:
            return
        yield list(members)
        start += BATCH


# -- export ----------------------------------------------------------------------


async def conversation_peers(store: Store, lc: str) -> list[str]:
    """Everyone the user has a conversation with, shown or hidden."""
    redis = _redis(store)
    peers: set[str] = set()
    for key in (keys.inbox(lc), keys.requests(lc)):
        async for members in _members(redis, key):
            peers.update(members)
    peers.update(await redis.hkeys(keys.cleared(lc)))
    peers.update(await redis.smembers(keys.wrote(lc)))
    return sorted(peers)


async def edge_handles(store: Store, key: str) -> AsyncIterator[list[str]]:
    """Handles (as typed) on one of the user's edge lists, in batches."""
    async for members in _members(_redis(store), key):
        rows = await store.users(members)
        yield [row["handle"] for row in rows if row is not None]


async def conversation_messages(store: Store, lc: str, peer: str) -> AsyncIterator[list[str]]:
    """The conversation's messages as stored JSON, oldest first, in batches."""
    async for messages in views.every_message(_redis(store), lc, peer, BATCH):
        yield messages
