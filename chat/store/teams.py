"""What teams keep in Redis: members, the team's state of each conversation, notes.

Keys (chat/store/keys.py): `team:{b}` (set of agents, at most MAX_TEAM_SIZE),
`teams:{a}` (set of businesses, at most MAX_TEAMS_PER_AGENT), `tconv:{b}`
(hash peer → {"status","assignee"} JSON, one field per conversation of b),
`notes:{b}:peer` (stream, capped at MAX_NOTES_PER_CONVERSATION). Membership is
written to both sides, in two steps through the outbox (team_add.lua,
team_remove.lua, then `sync_member`); `team:{b}` is the one that authorizes,
and `teams:{a}` is checked against it when read, so a half-done change never
grants anything, and the reconciler finishes it.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgspec

from chat.config import MAX_NOTES_PER_CONVERSATION, MAX_TEAM_SIZE, MAX_TEAMS_PER_AGENT
from chat.store import keys, views
from chat.store.crashpoints import crash_point
from chat.store.graph import SYNC_ROUNDS
from chat.store.lua import script as _script
from chat.store.outbox import OUTBOX_LUA, NotYet
from chat.store.store import (
    USER_FIELDS,
    Store,
    _user_from_values,
    iso_ms,
    public_user,
)
from chat.teams.core import ConversationState, Filter, decode_state

FOLDERS = ("inbox", "requests")
# Entries read per folder per round while a filtered listing looks for matches.
SCAN_CHUNK = 200
# The outbox kind of a membership change (step 2: the agent's index).
TEAM = "team"
_json = msgspec.json.Encoder()


class AddResult(IntEnum):
    ADDED = 1
    ALREADY = 0
    TEAM_FULL = -1
    AGENT_FULL = -2


@dataclass(frozen=True, slots=True)
class Note:
    json: str
    cursor: str


_team_stores: weakref.WeakKeyDictionary[Store, TeamStore] = weakref.WeakKeyDictionary()


def team_store(store: Store) -> TeamStore:
    """One TeamStore per Store, so its scripts are registered once."""
    found = _team_stores.get(store)
    if found is None:
        found = _team_stores[store] = TeamStore(store)
    return found


class TeamStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis: Any = store.redis
        self._state = self.redis.register_script(_script("team_state.lua"))
        self._note = self.redis.register_script(_script("note.lua"))
        self._add = self.redis.register_script(OUTBOX_LUA + "\n" + _script("team_add.lua"))
        self._remove = self.redis.register_script(OUTBOX_LUA + "\n" + _script("team_remove.lua"))
        store.outbox.register(TEAM, self._reconcile_member)

    async def _reconcile_member(self, payload: dict[str, Any]) -> None:
        await self.sync_member(str(payload["business"]), str(payload["agent"]))

    # -- membership ---------------------------------------------------------------

    async def is_member(self, business: str, agent: str) -> bool:
        return bool(await self.redis.sismember(keys.team(business), agent))

    async def add_agent(self, business: str, agent: str) -> AddResult:
        """Two slots, so two steps, the business's first (team_add.lua: the authority,
        within its cap), then the agent's index. The agent's cap is read just
        before, in the agent's slot, so a race can pass it by a few at most."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sismember(keys.team(business), agent)
            pipe.scard(keys.teams_of(agent))
            already, agent_teams = await pipe.execute()
        if not already and agent_teams >= MAX_TEAMS_PER_AGENT:
            return AddResult.AGENT_FULL
        result = await self.add_first(business, agent)
        if result[0] < 0:
            return AddResult.TEAM_FULL
        if result[0] == 0:
            # Already a member: the index is made to agree, in case it does not.
            await self._settle(business, agent, None)
            return AddResult.ALREADY
        crash_point("team:after_first")
        await self._settle(business, agent, result[1])
        return AddResult.ADDED

    async def remove_agent(self, business: str, agent: str) -> None:
        """Out of the team, then every node closes the agent's sockets for the business."""
        entry = await self.remove_first(business, agent)
        if entry is not None:
            crash_point("team:after_first")
            await self.redis.spublish(keys.channel(business), f"k - - -\n{agent}")
            await self._settle(business, agent, entry)
            return
        await self._settle(business, agent, None)
        await self.redis.spublish(keys.channel(business), f"k - - -\n{agent}")

    async def _settle(self, business: str, agent: str, entry: str | None) -> None:
        """Step 2 now, and the outbox entry done; left to the reconciler if busy."""
        try:
            await self.sync_member(business, agent)
        except NotYet:
            return
        if entry is not None:
            await self.store.outbox.done(business, entry)

    async def add_first(self, business: str, agent: str) -> list[Any]:
        result: list[Any] = await self._add(
            keys=[keys.team(business), keys.outbox(business)],
            args=[business, agent, MAX_TEAM_SIZE],
        )
        return result

    async def remove_first(self, business: str, agent: str) -> str | None:
        entry: str | None = await self._remove(
            keys=[keys.team(business), keys.outbox(business)], args=[business, agent]
        )
        return entry

    async def sync_member(self, business: str, agent: str) -> None:
        """Step 2, in the agent's slot: teams:{agent} made to agree with team:{b}.
        Read, write, read again until the two reads agree, so that an add and a
        remove racing each other still leave the index equal to the team."""
        for _ in range(SYNC_ROUNDS):
            member = await self.redis.sismember(keys.team(business), agent)
            if member:
                await self.redis.sadd(keys.teams_of(agent), business)
            else:
                await self.redis.srem(keys.teams_of(agent), business)
            if await self.redis.sismember(keys.team(business), agent) == member:
                return
        # Still changing: the outbox entry stays, and the reconciler settles it;
        # `teams` checks every index entry against team:{b} meanwhile.
        raise NotYet(f"team {business}: {agent} still changing")

    async def forget(self, lc: str) -> None:
        """An account is deleted: its team, its place in others' teams, its
        conversations' team state and notes go. Called before its folders are."""
        agents = await self.redis.smembers(keys.team(lc))
        businesses = await self.redis.smembers(keys.teams_of(lc))
        peers: set[str] = set(await self.redis.hkeys(keys.team_conversations(lc)))
        for folder in FOLDERS:
            peers.update(await self.redis.zrange(keys.folder_key(lc, folder), 0, -1))
        peers.update(await self.redis.hkeys(keys.cleared(lc)))
        async with self.redis.pipeline(transaction=False) as pipe:
            for agent in agents:
                pipe.srem(keys.teams_of(agent), lc)
            for business in businesses:
                pipe.srem(keys.team(business), lc)
                pipe.spublish(keys.channel(business), f"k - - -\n{lc}")
            for peer in peers:
                pipe.delete(keys.notes(lc, peer))
            pipe.delete(keys.team(lc), keys.teams_of(lc), keys.team_conversations(lc))
            await pipe.execute()

    async def members(self, business: str) -> list[dict[str, str]]:
        agents = sorted(await self.redis.smembers(keys.team(business)))
        rows = await self.store.users(agents)
        return [row for row in rows if row is not None]

    async def teams(self, agent: str) -> list[str]:
        """The handles of the businesses whose team `agent` is in, checked both ways."""
        businesses = sorted(await self.redis.smembers(keys.teams_of(agent)))
        if not businesses:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for business in businesses:
                pipe.sismember(keys.team(business), agent)
                pipe.hget(keys.user(business), "handle")
            found = await pipe.execute()
        return [
            handle
            for is_member, handle in zip(found[0::2], found[1::2], strict=True)
            if is_member and handle
        ]

    # -- status and assignee --------------------------------------------------------

    async def states(self, business: str, peers: list[str]) -> list[ConversationState]:
        if not peers:
            return []
        values = await self.redis.hmget(keys.team_conversations(business), peers)
        return [decode_state(value) for value in values]

    async def set_state(
        self,
        business: str,
        peer: str,
        peer_handle: str,
        status: str | None,
        assignee: tuple[str | None] | None,
        by: str,
    ) -> ConversationState:
        """`assignee` is None to keep it, or a 1-tuple (handle as typed, or None)."""
        raw, _cursor = await self._state(
            keys=[
                keys.team_conversations(business),
                keys.events(business),
                keys.channel(business),
            ],
            args=[
                peer,
                peer_handle,
                status or "",
                "keep" if assignee is None else "set",
                (assignee[0] or "") if assignee is not None else "",
                by,
                self.store.event_retention,
            ],
        )
        return decode_state(raw)

    # -- notes ------------------------------------------------------------------------

    async def add_note(
        self, business: str, peer: str, peer_handle: str, author: str, text: str
    ) -> Note:
        rest = (
            f'"peer":{_json.encode(peer_handle).decode()},'
            f'"author":{_json.encode(author).decode()},'
            f'"text":{_json.encode(text).decode()},'
            f'"created_at":"{iso_ms(int(time.time() * 1000))}"'
        )
        note, cursor = await self._note(
            keys=[keys.notes(business, peer), keys.events(business), keys.channel(business)],
            args=[
                peer,
                rest,
                MAX_NOTES_PER_CONVERSATION,
                self.store.event_retention,
                _json.encode(peer_handle).decode(),
            ],
        )
        return Note(str(note), str(cursor))

    async def note_page(
        self, business: str, peer: str, limit: int, before: str | None
    ) -> tuple[list[str], str | None]:
        """Notes oldest first, for the newest page (or the page before `before`)."""
        top = f"({before}" if before else "+"
        entries = await self.redis.xrevrange(keys.notes(business, peer), top, "-", limit + 1)
        page, more = entries[:limit], len(entries) > limit
        notes = [f'{{"id":"{entry_id}",{fields["j"]}}}' for entry_id, fields in reversed(page)]
        return notes, (page[-1][0] if more and page else None)

    # -- the team's view of conversations --------------------------------------------

    async def conversation_page(
        self,
        business: str,
        folders: tuple[str, ...],
        wanted: Filter,
        limit: int,
        before: int | None,
        scan_budget: int,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest activity first across `folders`, keeping those that match `wanted`.

        Looks at no more than `scan_budget` conversations per call: a page may then
        be shorter than `limit` and still have a `next` (where the look stopped).
        """
        top = before
        matched: list[tuple[str, str, int, ConversationState]] = []
        scanned = 0
        exhausted = False
        while scanned < scan_budget and len(matched) <= limit:
            rows = await self._merged_chunk(business, folders, top)
            states = await self.states(business, [peer for peer, _, _ in rows])
            for (peer, folder, score), state in zip(rows, states, strict=True):
                scanned += 1
                top = score
                if wanted.matches(state):
                    matched.append((peer, folder, score, state))
                    if len(matched) > limit:
                        break
            if len(rows) < SCAN_CHUNK and len(matched) <= limit:
                exhausted = True
                break
        page = matched[:limit]
        next_cursor: str | None = None
        if len(matched) > limit:
            next_cursor = str(page[-1][2])
        elif not exhausted and top is not None:
            next_cursor = str(top)
        return await self._details(business, page), next_cursor

    async def _merged_chunk(
        self, business: str, folders: tuple[str, ...], before: int | None
    ) -> list[tuple[str, str, int]]:
        """The next SCAN_CHUNK conversations below `before`, newest first, over folders.
        Scores are message ids, unique across folders, so a cursor is one number."""
        top = f"({before}" if before is not None else "+inf"
        async with self.redis.pipeline(transaction=False) as pipe:
            for folder in folders:
                pipe.zrevrangebyscore(
                    keys.folder_key(business, folder), top, "-inf", 0, SCAN_CHUNK, withscores=True
                )
            found = await pipe.execute()
        merged = [
            (peer, folder, int(score))
            for folder, rows in zip(folders, found, strict=True)
            for peer, score in rows
        ]
        merged.sort(key=lambda row: row[2], reverse=True)
        return merged[:SCAN_CHUNK]

    async def _details(
        self, business: str, page: list[tuple[str, str, int, ConversationState]]
    ) -> list[dict[str, Any]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for peer, _, _, _ in page:
                pipe.hmget(keys.user(peer), list(USER_FIELDS))
                pipe.zrevrange(keys.view(business, peer), 0, 0)
                pipe.hget(keys.user(business), keys.unread_field(peer))
            found = await pipe.execute()
        conversations: list[dict[str, Any]] = []
        for index, (_, folder, _, state) in enumerate(page):
            row = _user_from_values(found[3 * index])
            if row is None:
                continue
            last = found[3 * index + 1]
            conversations.append(
                {
                    "peer": public_user(row),
                    "last_message": msgspec.json.decode(views.reader_copy(last[0], business))
                    if last
                    else None,
                    "unread": int(found[3 * index + 2] or 0),
                    "folder": folder,
                    **state.fields(),
                }
            )
        return conversations

    async def conversation(self, business: str, peer: str) -> dict[str, Any] | None:
        """One conversation as the team sees it (for PATCH's answer)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zscore(keys.requests(business), peer)
            pipe.hget(keys.team_conversations(business), peer)
            in_requests, raw = await pipe.execute()
        folder = "requests" if in_requests is not None else "inbox"
        details = await self._details(business, [(peer, folder, 0, decode_state(raw))])
        return details[0] if details else None
