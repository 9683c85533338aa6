"""The store: every read and write dmhub makes to Redis, behind named methods.

Writes that must be atomic (a send, a read pointer, an edge) are Lua scripts in
`scripts/`; everything else is a plain command or a pipeline. Methods raise
redis' ConnectionError/TimeoutError when Redis is down; the transports turn
those into `unavailable`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster

from chat.config import DEFAULT_CLIENT_ID_TTL_S, DEFAULT_SEND_STEPS, SEND_STEPS_AUTO, SendLimits
from chat.limits import DAY_MS, HOUR_MS, MINUTE_MS
from chat.permission import Facts, Reason
from chat.store import keys, views
from chat.store.cluster_lane import ClusterLane
from chat.store.graph import FollowResult, graph
from chat.store.graph import register_handlers as register_graph_handlers
from chat.store.lane import Lane
from chat.store.lua import HOT, Function
from chat.store.lua import script as _script
from chat.store.outbox import Outbox
from chat.store.receipts import receipts
from chat.store.receipts import register_handlers as register_receipt_handlers
from chat.store.replicas import ReplicaAcks
from chat.store.sends import (
    SendLimited,
    SendRefused,
    SendResult,
    Sends,
)
from chat.store.signin import SigninStore

# The pair's facts and the fixed-window counter run on the hot path: functions
# of its library (chat/store/lua.py). The facts only read: `no-writes` lets
# them run at maxmemory, as they did as EVAL scripts.
FACTS_SENDER = HOT.add("facts_sender", _script("facts_sender.lua"), flags=("no-writes",))
FACTS_RECIPIENT = HOT.add("facts_recipient", _script("facts_recipient.lua"), flags=("no-writes",))
COUNTER = HOT.add("counter", _script("counter.lua"))

# `qr`: a business's quick replies, as JSON (chat/store/business.py).
USER_FIELDS = ("handle", "name", "kind", "open_dms", "greeting", "active", "rr", "qr")
_json = msgspec.json.Encoder()


# A session-end event for every session of the user (a suspension).
EVERY_SESSION = "*"

_iso_second = -1
_iso_prefix = ""


def iso_ms(epoch_ms: int) -> str:
    """ISO 8601 UTC with milliseconds; the date part is formatted once a second."""
    global _iso_second, _iso_prefix
    second, millis = divmod(epoch_ms, 1000)
    if second != _iso_second:
        _iso_prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        _iso_second = second
    return f"{_iso_prefix}{millis:03d}Z"


def public_user(row: dict[str, str]) -> dict[str, Any]:
    """The contract's `user` object from a stored user hash."""
    user = {
        "handle": row["handle"],
        "name": row.get("name") or row["handle"],
        "kind": row.get("kind") or "person",
        "open_dms": row.get("open_dms") == "1",
        "greeting": row.get("greeting") or None,
    }
    if user["kind"] == "business":
        user["quick_replies"] = stored_quick_replies(row)
    return user


def stored_quick_replies(row: dict[str, str]) -> list[dict[str, str]]:
    """A business's quick replies from its user hash (validated when they were set)."""
    raw = row.get("qr")
    replies: list[dict[str, str]] = msgspec.json.decode(raw) if raw else []
    return replies


GONE_NAME = "Deleted account"


def gone_user(lc: str) -> dict[str, Any]:
    """What others see of a deleted account where its conversations remain."""
    return {
        "handle": lc,
        "name": GONE_NAME,
        "kind": "person",
        "open_dms": False,
        "greeting": None,
        "deleted": True,
    }


def _user_from_values(values: list[str | None]) -> dict[str, str] | None:
    if values[0] is None:
        return None
    return {f: v for f, v in zip(USER_FIELDS, values, strict=True) if v is not None}


@dataclass(frozen=True, slots=True)
class PairFacts:
    """The permission facts between A and B, and what the API shows of B."""

    facts: Facts
    sender_handle: str | None
    recipient: dict[str, str] | None
    a_follows_b: bool
    a_has_request: bool = False


@dataclass(frozen=True, slots=True)
class ReceiptFacts:
    reader_handle: str
    peer_handle: str
    both_on: bool
    is_request: bool
    # A block either way: no receipts in either direction (PRODUCT.md).
    blocked: bool = False

    @property
    def tells_peer(self) -> bool:
        return self.both_on and not self.is_request and not self.blocked


def cursor_key(cursor: str) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence)."""
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq or 0)


class Store:
    def __init__(
        self,
        client: redis.Redis,
        *,
        event_retention: int,
        lane: Lane | ClusterLane | None = None,
        limits: SendLimits | None = None,
        client_id_ttl_s: int = DEFAULT_CLIENT_ID_TTL_S,
        replica_acks: ReplicaAcks | None = None,
        send_steps: str = DEFAULT_SEND_STEPS,
    ) -> None:
        # The client decodes responses to str; redis-py's annotations cannot say
        # so (they promise bytes | str everywhere), hence Any rather than casts.
        self.redis: Any = client
        self.event_retention = event_retention
        # How long a client_id is remembered, i.e. a retry honoured (0: forever).
        self.client_id_ttl_s = client_id_ttl_s
        limits = limits or SendLimits()
        self._limit_args = [
            limits.messages_per_min,
            MINUTE_MS,
            limits.new_conversations_per_day,
            DAY_MS,
            limits.requests_per_hour,
            HOUR_MS,
        ]
        self._create_user = client.register_script(_script("create_user.lua"))
        self._facts_sender = FACTS_SENDER
        self._facts_recipient = FACTS_RECIPIENT
        self._stream_read = client.register_script(_script("stream_read.lua"))
        self._counter = COUNTER
        # Without a lane (tools, some tests) the hot path's functions run as
        # EVALSHA scripts through redis-py, registered at first use.
        self._cold_scripts: dict[str, Any] = {}
        self._events_page = client.register_script(_script("events_page.lua"))
        # The hot path (facts, send, session lookups) goes through the pipelined
        # lane when there is one; everything else uses the ordinary client.
        self.lane = lane
        # DMHUB_ACK_REPLICAS: a send's ack waits for replicas (over the lane).
        self.replica_acks = replica_acks
        self.signin = SigninStore(client)
        # What split operations still owe another slot; each operation's module
        # registers the handler that completes it (chat/store/outbox.py).
        self.outbox = Outbox(client, lane)
        register_graph_handlers(self)
        register_receipt_handlers(self)
        self.sends = Sends(
            client,
            self._hot_script,
            self.outbox,
            event_retention=event_retention,
            limit_args=self._limit_args,
            client_id_ttl_s=client_id_ttl_s,
            # One Valkey holds both users' keys, whatever their slots.
            whole=send_steps == SEND_STEPS_AUTO and not isinstance(client, RedisCluster),
        )
        # Modules that import this one register theirs here, imported late.
        from chat.store import accounts
        from chat.store.teams import team_store

        team_store(self)
        accounts.register_handlers(self)

    async def _hot_script(self, function: Function, key_names: list[str], args: list[Any]) -> Any:
        if self.lane is None:
            script = self._cold_scripts.get(function.name)
            if script is None:
                script = self._cold_scripts[function.name] = self.redis.register_script(
                    function.script
                )
            return await script(keys=key_names, args=args)
        return await self.lane.fcall(function.qualified, function.library, key_names, args)

    # -- accounts and sessions ------------------------------------------------

    async def create_user(self, handle: str, password_hash: str, name: str, kind: str) -> bool:
        fields = {
            "handle": handle,
            "name": name,
            "kind": kind,
            "open_dms": "0",
            "rr": "1",
            "active": "1",
            "pw": password_hash,
            "created": str(int(time.time() * 1000)),
        }
        args = [part for pair in fields.items() for part in pair]
        created = await self._create_user(keys=[keys.user(handle.lower())], args=args)
        return bool(created)

    async def user(self, lc: str) -> dict[str, str] | None:
        values = await self.redis.hmget(keys.user(lc), list(USER_FIELDS))
        return _user_from_values(values)

    async def password_hash(self, lc: str) -> tuple[dict[str, str], str] | None:
        values = await self.redis.hmget(keys.user(lc), [*USER_FIELDS, "pw"])
        row = _user_from_values(values[:-1])
        if row is None or values[-1] is None:
            return None
        return row, values[-1]

    async def users(self, lcs: list[str]) -> list[dict[str, str] | None]:
        if not lcs:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for lc in lcs:
                pipe.hmget(keys.user(lc), list(USER_FIELDS))
            rows = await pipe.execute()
        return [_user_from_values(values) for values in rows]

    async def update_user(self, lc: str, fields: dict[str, str], remove: list[str]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            if fields:
                pipe.hset(keys.user(lc), mapping=fields)
            if remove:
                pipe.hdel(keys.user(lc), *remove)
            await pipe.execute()

    async def create_session(self, token_hash: str, lc: str, ttl_s: int) -> None:
        await self.redis.set(keys.session(token_hash), lc, ex=ttl_s)

    async def session_user(self, token_hash: str) -> str | None:
        if self.lane is not None:
            found: str | None = await self.lane.execute("GET", keys.session(token_hash))
            return found
        value: str | None = await self.redis.get(keys.session(token_hash))
        return value

    async def delete_session(self, token_hash: str) -> None:
        await self.redis.delete(keys.session(token_hash))

    async def live_sessions(self, token_hashes: list[str]) -> set[str]:
        if not token_hashes:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for token_hash in token_hashes:
                pipe.exists(keys.session(token_hash))
            found = await pipe.execute()
        return {h for h, ok in zip(token_hashes, found, strict=True) if ok}

    # -- edges: follows and blocks -------------------------------------------

    async def follow(self, a: str, b: str) -> FollowResult:
        """A follows B, unless a block stands between them (either way)."""
        return await graph(self).follow(a, b)

    async def unfollow(self, a: str, b: str) -> None:
        await graph(self).unfollow(a, b)

    async def block(self, a: str, b: str) -> bool:
        """A blocks B: follows end both ways and B leaves A's requests."""
        return await graph(self).block(a, b)

    async def unblock(self, a: str, b: str) -> None:
        await graph(self).unblock(a, b)

    async def edge_page(
        self, key: str, limit: int, before: int | None
    ) -> tuple[list[dict[str, str]], str | None]:
        """Newest first; the cursor is the order number of the last edge shown."""
        top = f"({before}" if before is not None else "+inf"
        rows = await self.redis.zrevrangebyscore(key, top, "-inf", 0, limit + 1, withscores=True)
        page, more = rows[:limit], len(rows) > limit
        users = await self.users([member for member, _ in page])
        shown = [u for u in users if u is not None]
        next_cursor = str(int(page[-1][1])) if more and page else None
        return shown, next_cursor

    # -- the permission facts -------------------------------------------------

    async def pair_facts(self, a: str, b: str) -> PairFacts:
        """Everything `decide` needs about A writing to B: one read in each slot."""
        if a == b:
            row = await self.user(a)
            exists = row is not None
            facts = Facts(sender_exists=exists, recipient_exists=exists, same_account=True)
            return PairFacts(facts, row["handle"] if row else None, row, False)
        # Two slots, so two single-slot reads, side by side: each half is a
        # consistent snapshot of its user's keys, as a cluster allows.
        (
            (sender, a_blocks, a_follows, a_request),
            (
                recipient_values,
                b_blocks,
                b_follows,
                b_wrote,
                b_inbox,
            ),
        ) = await asyncio.gather(
            self._hot_script(
                self._facts_sender,
                [keys.user(a), keys.requests(a)],
                [b],
            ),
            self._hot_script(
                self._facts_recipient,
                [keys.user(b), keys.inbox(b)],
                [a],
            ),
        )
        recipient = _user_from_values(recipient_values)
        facts = Facts(
            sender_exists=sender[0] is not None,
            recipient_exists=recipient is not None,
            sender_suspended=sender[1] == "0",
            recipient_suspended=recipient is not None and recipient.get("active") == "0",
            sender_restricted=sender[2] is not None,
            sender_blocks_recipient=bool(a_blocks),
            recipient_blocks_sender=bool(b_blocks),
            recipient_follows_sender=bool(b_follows),
            recipient_open_dms=recipient is not None and recipient.get("open_dms") == "1",
            recipient_wrote_to_sender=bool(b_wrote),
            recipient_has_inbox_conversation=bool(b_inbox),
        )
        return PairFacts(facts, sender[0], recipient, bool(a_follows), bool(a_request))

    # -- messages ---------------------------------------------------------------

    async def send(
        self,
        *,
        sender: str,
        recipient: str,
        text: str,
        client_id: str | None,
        origin: str,
        extra: dict[str, Any] | None = None,
        agent: str | None = None,
        finish_later: bool = False,
    ) -> SendResult | SendRefused | SendLimited:
        """Decide, store and publish (chat/store/sends.py); a refusal writes nothing.

        With `finish_later`, the send's outbox entry is left for the caller to
        remove once its client has the answer (`self.sends.finish(result)`).

        `sender` and `recipient` are lower case; `text`, `client_id` and the
        optional message fields in `extra` (`ref`, `quick_reply`,
        `quick_replies`) are validated already. `agent` is the handle of the
        team member sending for the business `sender`, if one is.
        """
        if sender == recipient:
            # No conversation to script: the rule's first clause refuses, except
            # that a client_id already used returns its original, as in send_prepare.lua.
            if client_id is not None:
                retried = await self.original_send(sender, client_id)
                if retried is not None:
                    return retried
            return SendRefused(Reason.SELF, None)
        return await self.sends.send(
            sender=sender,
            recipient=recipient,
            text=text,
            sent_at=iso_ms(int(time.time() * 1000)),
            client_id=client_id,
            origin=origin,
            extra=extra,
            agent=agent,
            finish_later=finish_later,
        )

    async def original_send(self, sender: str, client_id: str) -> SendResult | None:
        """The message an earlier send with this client_id stored, if any."""
        seen = await self.redis.hget(keys.client_ids(sender), client_id)
        if seen is None:
            return None
        message_id, _, peer = seen.partition("|")
        original = await self.message(sender, peer, message_id)
        return SendResult(False, original, message_id) if original is not None else None

    async def message(self, a: str, b: str, message_id: str) -> str | None:
        """Message `message_id` as `a` sees it in its conversation with `b`."""
        found = await views.find(self.redis, a, b, message_id)
        return found[1] if found else None

    async def peer_read_up_to(self, me: str, peer: str) -> str | None:
        """How far `peer` has read my conversation with them, if receipts may say so."""
        facts = await self.receipt_facts(peer, me)
        if facts is None or not facts.tells_peer:
            return None
        value: str | None = await self.redis.hget(keys.user(peer), keys.read_field(me))
        return value

    async def conversation_exists(self, a: str, b: str) -> bool:
        return bool(await self.redis.exists(keys.view(a, b)))

    async def message_page(
        self, me: str, peer: str, limit: int, before: str | None
    ) -> tuple[list[str], str | None]:
        """Message JSON, oldest first, for the newest page (or the page before `before`)."""
        cleared = await self.redis.hget(keys.cleared(me), peer)
        return await views.page(self.redis, me, peer, limit, before, cleared)

    async def conversation_page(
        self, me: str, folder: str, limit: int, before: int | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        top = f"({before}" if before is not None else "+inf"
        rows = await self.redis.zrevrangebyscore(
            keys.folder_key(me, folder), top, "-inf", 0, limit + 1, withscores=True
        )
        page, more = rows[:limit], len(rows) > limit
        async with self.redis.pipeline(transaction=False) as pipe:
            for peer, _ in page:
                pipe.hmget(keys.user(peer), list(USER_FIELDS))
                pipe.zrevrange(keys.view(me, peer), 0, 0)
                pipe.hget(keys.user(me), keys.unread_field(peer))
            found = await pipe.execute()
        conversations: list[dict[str, Any]] = []
        for index in range(len(page)):
            row = _user_from_values(found[3 * index])
            last = found[3 * index + 1]
            if row is None and not last:
                continue
            conversations.append(
                {
                    # A deleted account's conversations stay with the other side.
                    "peer": public_user(row) if row is not None else gone_user(page[index][0]),
                    "last_message": msgspec.json.decode(views.reader_copy(last[0], me))
                    if last
                    else None,
                    "unread": int(found[3 * index + 2] or 0),
                    "folder": folder,
                }
            )
        next_cursor = str(int(page[-1][1])) if more and page else None
        return conversations, next_cursor

    async def receipt_facts(self, me: str, peer: str) -> ReceiptFacts | None:
        """What decides whether a read receipt reaches the peer; None if no such peer."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.user(me), ["handle", "rr"])
            pipe.hmget(keys.user(peer), ["handle", "rr"])
            pipe.zscore(keys.requests(me), peer)
            pipe.zscore(keys.requests(peer), me)
            pipe.zscore(keys.blocking(me), peer)
            pipe.zscore(keys.blocking(peer), me)
            pipe.hexists(keys.user(peer), "deleted")
            found = await pipe.execute()
        mine, theirs, my_request, their_request, i_block, they_block, peer_deleted = found
        if mine[0] is None:
            return None
        if theirs[0] is None:
            if not peer_deleted:
                return None
            # A deleted account: its conversations can still be read, and no
            # receipt goes anywhere.
            return ReceiptFacts(mine[0], peer, both_on=False, is_request=False)
        return ReceiptFacts(
            reader_handle=mine[0],
            peer_handle=theirs[0],
            both_on=mine[1] != "0" and theirs[1] != "0",
            is_request=my_request is not None or their_request is not None,
            blocked=i_block is not None or they_block is not None,
        )

    async def mark_read(self, me: str, peer: str, up_to: str, body: str, tell_peer: bool) -> int:
        return await receipts(self).mark_read(me, peer, up_to, body, tell_peer)

    async def accept(self, me: str, peer: str) -> bool:
        """Move a request to the inbox; False when there is no such conversation."""
        score = await self.redis.zscore(keys.requests(me), peer)
        if score is None:
            return await self.redis.zscore(keys.inbox(me), peer) is not None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.requests(me), peer)
            pipe.zadd(keys.inbox(me), {peer: score})
            await pipe.execute()
        return True

    async def hide_conversation(self, me: str, peer: str) -> bool:
        """Hide a conversation and its history so far, for `me` only."""
        last = await self.redis.zrevrange(keys.view(me, peer), 0, 0, withscores=True)
        if not last:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.cleared(me), peer, f"{int(last[0][1])}")
            pipe.zrem(keys.inbox(me), peer)
            pipe.zrem(keys.requests(me), peer)
            pipe.hdel(keys.user(me), keys.unread_field(peer))
            await pipe.execute()
        return True

    # -- events: replay and ephemeral publishes ---------------------------------

    async def event_bounds(self, lc: str) -> tuple[str, str]:
        """(newest event id, oldest id kept after trimming or '0-0') of a user's events."""
        last, floor, _ = await self._stream_read(keys=[keys.events(lc)], args=["0-0", 0])
        return str(last), str(floor)

    async def events_after(
        self, lc: str, cursor: str, count: int
    ) -> list[tuple[str, str, str, str]]:
        """(cursor, peer, origin socket or '-', body) of the events after `cursor`."""
        entries = await self.redis.xrange(keys.events(lc), f"({cursor}", "+", count)
        return [
            (event_id, fields["p"], fields.get("o", "-"), fields["f"])
            for event_id, fields in entries
        ]

    async def count_in_window(self, key: str, window_ms: int) -> tuple[int, int]:
        """Count one event in a fixed window: (events so far, ms until the window ends)."""
        count, ttl = await self._hot_script(self._counter, [key], [window_ms])
        return int(count), int(ttl)

    async def count_typing(self, lc: str, window_ms: int) -> tuple[int, int]:
        return await self.count_in_window(keys.typing_count(lc), window_ms)

    async def events_page(
        self, lc: str, cursor: str, count: int, max_bytes: int
    ) -> tuple[list[tuple[str, str, str, str]], bool]:
        """Like `events_after`, and at most about `max_bytes`; True when more may follow."""
        reply = await self._events_page(keys=[keys.events(lc)], args=[cursor, count, max_bytes])
        events = []
        for index in range(1, len(reply), 2):
            flat = reply[index + 1]
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            events.append((reply[index], fields["p"], fields.get("o", "-"), fields["f"]))
        return events, bool(reply[0])

    async def publish_typing(self, sender: str, recipient: str, frame: str) -> None:
        await self.redis.spublish(keys.channel(recipient), f"t - {sender} -\n{frame}")

    async def publish_team_typing(self, business: str, peer: str, origin: str, frame: str) -> None:
        """An agent typing to `peer`, told to the business's other sockets."""
        await self.redis.spublish(keys.channel(business), f"t - {peer} {origin}\n{frame}")

    async def publish_session_end(self, lc: str, token_hash: str) -> None:
        """Close the sockets of that session on every process (EVERY_SESSION: all of lc's)."""
        await self.redis.spublish(keys.channel(lc), f"x - - -\n{token_hash}")

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def memory(self) -> tuple[int, int]:
        """(used_memory, maxmemory) in bytes; maxmemory 0 means no ceiling. On a
        cluster, the master nearest its ceiling: the first to refuse writes."""
        if isinstance(self.redis, RedisCluster):
            by_node = await self.redis.info("memory", target_nodes=RedisCluster.PRIMARIES)
            rows = [
                (int(i.get("used_memory", 0)), int(i.get("maxmemory", 0))) for i in by_node.values()
            ]
            return max(rows, key=lambda r: (r[0] / r[1] if r[1] else 0.0, r[0]))
        info = await self.redis.info("memory")
        return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
