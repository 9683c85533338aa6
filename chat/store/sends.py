"""A send s → r in three per-slot steps, the way it runs on one Valkey and on
a Valkey Cluster alike (no script spans two users' slots).

1. `send_prepare.lua`, s's slot: the client_id already seen, the sender's
   facts, its limits checked, the floor of the message id, r's latest messages
   in s's view; and, from the lower handle to the higher, the mark that this
   send is in flight (`sending:{s}:r`).
2. `send_decide.lua`, r's slot: THE decision (the rule's Lua twin over every
   fact, s's from step 1), r's limit, the id, the message in r's view, r's
   folders and event, the dedupe record (`cidin:{r}`), and an outbox entry
   holding what step 3 needs. From here the send is certain. Before deciding,
   it completes r's own messages that r's view still lacks, and waits while
   r has a marked send to s in flight (from the higher handle to the lower;
   the other way, for those of r's that went ahead when their own wait ran
   out), so that each user's stream has each conversation in id order.
3. `send_apply.lua`, s's slot, idempotent: s's view, folders, read pointer,
   the charges of s's limits, `cid:{s}`, s's event; the mark goes.

The ack goes out after step 3 (durable in both views); the outbox entry is
removed after the ack (`finish`). If this process dies between 2 and 3, the
reconciler (chat/store/outbox.py) runs step 3 from the entry's payload; a retry
with the same client_id hits the dedupe in step 2 and runs step 3 itself; and
r's next message to s completes it too. docs/architecture.md, "A send in three
steps", has what each crash leaves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import msgspec
from redis.exceptions import RedisError

from chat.permission import Reason
from chat.store import keys, msgid, views
from chat.store.crashpoints import crash_point
from chat.store.lua import HOT, Library
from chat.store.lua import script as _script
from chat.store.outbox import OUTBOX_LUA, Outbox

SEND_KIND = "send"
# How long a send counts as in flight at most (its mark's expiry), should its
# process die before the mark is taken back: well above any live send's time.
IN_FLIGHT_MARK_MS = 2_000
# A send that waits for a crossing one (send_decide.lua) looks again this often,
# this many times (about 50 ms in all), then goes ahead.
YIELD_PAUSE_S = 0.002
YIELD_ATTEMPTS = 25
log = logging.getLogger("dmhub.sends")
_json = msgspec.json.Encoder()


# The decision runs the rule's Lua twin (which defines `decide`), so rule.lua
# goes in front of the send's scripts; line numbers in their errors are offset.
RULE_LUA = resources.files("chat.permission").joinpath("rule.lua").read_text()
# The limits' Lua twins (chat/limits.py).
LIMITS_LUA = resources.files("chat").joinpath("limits.lua").read_text()
# The message id arithmetic (msgid.py's twin).
MSGID_LUA = _script("msgid.lua")
# The relationship facts of a pair as one field of each user's hash.
PAIR_FLAGS_LUA = _script("pair_flags.lua")
# The sender's side of a message, for step 3 and for owed messages in step 2.
SEND_SIDE_LUA = _script("send_side.lua")
# The send's library: every piece of a send (facts, the decision, limits, the
# id, the message's bytes, each side's writes), so that the steps and the
# one-script send run the same code; each script gets the pieces it calls.
SEND_LIB = Library(
    RULE_LUA,
    LIMITS_LUA,
    MSGID_LUA,
    PAIR_FLAGS_LUA,
    SEND_SIDE_LUA,
    _script("send_parts.lua"),
    OUTBOX_LUA,
)
# Each a function of the hot path's library (chat/store/lua.py, HOT); the
# *_LUA texts are the same scripts as EVAL takes them.
SEND_PREPARE = HOT.add("send_prepare", _script("send_prepare.lua"), SEND_LIB)
SEND_DECIDE = HOT.add("send_decide", _script("send_decide.lua"), SEND_LIB)
SEND_APPLY = HOT.add("send_apply", _script("send_apply.lua"), SEND_LIB)
# The whole send in one script, for one Valkey (Sends.send).
SEND_WHOLE = HOT.add("send_whole", _script("send_whole.lua"), SEND_LIB)
SEND_UNMARK = HOT.add("send_unmark", "unmark_send(KEYS[1])\n", SEND_LIB)
SEND_PREPARE_LUA = SEND_PREPARE.script
SEND_DECIDE_LUA = SEND_DECIDE.script
SEND_APPLY_LUA = SEND_APPLY.script
SEND_WHOLE_LUA = SEND_WHOLE.script
SEND_UNMARK_LUA = SEND_UNMARK.script
# send_whole.lua's answer when the send must run as the three steps.
USE_THE_STEPS = 4


@dataclass(frozen=True, slots=True)
class SendResult:
    created: bool
    message_json: str
    message_id: str
    folder: str | None = None
    # The outbox entry to remove once the client has its answer (`Sends.finish`),
    # in the recipient's slot; None when nothing is owed.
    entry: tuple[str, str] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SendLimited:
    """A limit said no (`limit` is its contract name); nothing was written."""

    limit: str
    retry_after_ms: int


@dataclass(frozen=True, slots=True)
class SendRefused:
    """The rule said no; nothing was written."""

    reason: Reason
    # The recipient's handle as they typed it at sign-up; None when there is no
    # such account.
    recipient_handle: str | None


@dataclass(frozen=True, slots=True)
class Applied:
    """What step 3 needs: the payload of a send's outbox entry."""

    sender: str
    recipient: str
    message_id: str
    member: str  # as both views hold it (chat/store/views.py)
    client_id: str  # '' for none
    origin: str
    new_conversation: bool
    # The time step 1 checked the limits at (ms), which this step charges them
    # at; 0 for a reconciler's step 3, which reads the clock. Not in the payload.
    now_ms: int = field(default=0, compare=False)
    # The sender's latest earlier messages in the recipient's view (step 2 read
    # them) that step 1 did not see in the sender's view: step 3 applies first
    # those the sender's view lacks. Not in the payload: a reconciler's step 3
    # comes late anyway.
    earlier: tuple[str, ...] = ()

    def payload(self) -> dict[str, str]:
        return {
            "s": self.sender,
            "r": self.recipient,
            "id": self.message_id,
            "m": self.member,
            "c": self.client_id,
            "o": self.origin,
            "n": "1" if self.new_conversation else "0",
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Applied:
        return cls(
            sender=str(payload["s"]),
            recipient=str(payload["r"]),
            message_id=str(payload["id"]),
            member=str(payload["m"]),
            client_id=str(payload.get("c") or ""),
            origin=str(payload.get("o") or "-"),
            new_conversation=payload.get("n") == "1",
        )


@dataclass(frozen=True, slots=True)
class Prepared:
    """Step 1's reading of the sender's slot."""

    sender: str
    recipient: str
    handle: str  # as typed; '' when there is no such account
    active: str  # the user hash's `active` ('0': suspended)
    restricted: bool
    blocks_recipient: bool
    floor: str  # the top id of the sender's view: the new id goes above it
    messages_wait_ms: int  # 0: the `messages` limit allows it
    new_conversation: bool
    new_conversations_wait_ms: int
    # The ids of the recipient's latest messages in the sender's view: step 2
    # completes those the recipient's own view lacks.
    theirs: list[str]
    # The ids of the latest messages in the sender's view, whoever wrote them:
    # step 3 need not check those are there (a view loses messages only with
    # its account, and then step 3 writes nothing).
    seen: frozenset[str] = frozenset()
    # When the limits were checked (ms; 0 when they are off): step 3 charges
    # them at that time instead of reading the clock again.
    now_ms: int = 0


@dataclass(frozen=True, slots=True)
class Decided:
    """Step 2 stored the message (`created`), or had stored it for this client_id."""

    created: bool
    message_id: str
    message_json: str  # the sender's copy ('' when not created here)
    folder: str | None
    entry: str  # the outbox entry, in the recipient's slot
    step: Applied | None  # step 3, while it may still be owed


class Wait(enum.Enum):
    """Step 2's answer to a send that must wait for a crossing one."""

    WAIT = "wait"


WAIT = Wait.WAIT


def extra_fields(extra: dict[str, Any] | None) -> str:
    """Optional message fields as the JSON text send_decide.lua appends after
    client_id: a message carries each only when it was sent."""
    if not extra:
        return ""
    return "".join(
        f",{_json.encode(name).decode()}:{_json.encode(value).decode()}"
        for name, value in extra.items()
        if value is not None
    )


def _decision_keys(recipient: str, sender: str) -> list[str]:
    """The recipient's keys the decision and the recipient's side use, in the
    order send_decide.lua and send_whole.lua both take them (one list, so the
    two scripts' key numbering cannot drift apart)."""
    return [
        keys.user(recipient),
        keys.inbox(recipient),
        keys.requests(recipient),
        keys.heard(recipient),
        keys.view(recipient, sender),
        keys.events(recipient),
        keys.channel(recipient),
        keys.requests_received(recipient),
        keys.team_conversations(recipient),
    ]


class Sends:
    """The three steps, run in order by `send`; step 3 alone by the reconciler."""

    def __init__(
        self,
        client: Any,
        hot_script: Any,
        outbox: Outbox,
        *,
        event_retention: int,
        limit_args: list[int],
        client_id_ttl_s: int,
        whole: bool = False,
    ) -> None:
        self.redis: Any = client
        # Both users' keys on one Valkey: a send is one script (send_whole.lua),
        # falling back to the steps for what only they handle.
        self.whole = whole
        self._hot_script = hot_script
        self.outbox = outbox
        self.event_retention = event_retention
        # messages burst, period; new conversations, window; requests, window.
        self.limit_args = limit_args
        self.client_id_ttl_s = client_id_ttl_s
        self._prepare = SEND_PREPARE
        self._decide = SEND_DECIDE
        self._apply = SEND_APPLY
        self._unmark_script = SEND_UNMARK
        self._whole = SEND_WHOLE
        outbox.register(SEND_KIND, self.apply_payload)

    async def send(
        self,
        *,
        sender: str,
        recipient: str,
        text: str,
        sent_at: str,
        client_id: str | None,
        origin: str,
        extra: dict[str, Any] | None,
        agent: str | None,
        finish_later: bool = False,
    ) -> SendResult | SendRefused | SendLimited:
        """The whole send in one script on one Valkey, else (or when that script
        says so) steps 1 to 3 (see the module). `sender` != `recipient`, both
        lower case. A split send's outbox entry is removed before returning, or
        with `finish_later` by the caller's `finish`, once its client has the
        ack; a whole send has none."""
        if self.whole:
            reply = await self._hot_script(
                self._whole,
                [
                    keys.client_ids(sender),
                    keys.user(sender),
                    keys.view(sender, recipient),
                    keys.new_conversations(sender),
                    keys.wrote(sender),
                    keys.requests(sender),
                    keys.inbox(sender),
                    keys.events(sender),
                    keys.channel(sender),
                    *_decision_keys(recipient, sender),
                ],
                [
                    *self._message_args(sender, recipient, text, sent_at, client_id, origin, extra),
                    *self.limit_args,
                    self.client_id_ttl_s,
                    agent or "",
                    msgid.direction(sender, recipient),
                ],
            )
            status = reply[0]
            if status == 1:
                return SendResult(True, reply[2], reply[1], reply[3])
            if status == 2:
                return SendRefused(Reason(reply[1]), reply[2] or None)
            if status == 3:
                return SendLimited(reply[1], int(reply[2]))
            if status == 0:
                return await self._original(sender, reply[2], reply[1])
            # USE_THE_STEPS: something owed between the two; the steps complete it.
        # One direction of a conversation (from the higher handle to the lower)
        # waits, briefly, for the other's sends in flight (send_decide.lua,
        # answer 5); only the other direction's are marked. A wait that runs
        # out goes ahead marked, and a marked send waits for those: the send
        # it stopped waiting for may be decided while this one is between its
        # steps 2 and 3, and would then reach this sender's stream before this
        # sender's own message, with a higher id. A send that went ahead never
        # waits again, so no two sends wait for each other.
        marked = msgid.direction(sender, recipient) == 1
        prepared = await self.prepare(sender, recipient, client_id, mark=marked)
        if isinstance(prepared, SendResult):
            return prepared
        # `marked`: the end of this send takes its mark back.
        try:
            waits = YIELD_ATTEMPTS
            while True:
                decided = await self.decide(
                    prepared,
                    text=text,
                    sent_at=sent_at,
                    client_id=client_id,
                    origin=origin,
                    extra=extra,
                    agent=agent,
                    wait=waits > 0,
                )
                if decided != WAIT:
                    break
                waits -= 1
                await asyncio.sleep(YIELD_PAUSE_S)
                goes_ahead = waits == 0 and not marked
                again = await self.prepare(sender, recipient, client_id, mark=goes_ahead)
                if isinstance(again, SendResult):  # a concurrent retry completed it
                    return again
                prepared = again
                marked = marked or goes_ahead
            if not isinstance(decided, Decided):
                return decided
            if decided.step is None:
                # Decided before (a retry): its original, once the sender's side
                # is there. A failover can have lost that side after the outbox
                # entry that held it was removed; the recipient's view holds the
                # same member, so step 3 is run from it.
                lost = await self._lost_side(sender, recipient, decided.message_id, client_id)
                if lost is not None:
                    unmark, marked = marked, False
                    await self.apply(dataclasses.replace(lost, origin=origin), unmark=unmark)
                return await self._original(sender, recipient, decided.message_id)
            crash_point("send:after_decide")
            if not decided.created:
                # A retry finishes what an earlier attempt left after step 2; the
                # retrying socket has the ack, so it is the one to skip.
                unmark, marked = marked, False
                await self.apply(dataclasses.replace(decided.step, origin=origin), unmark=unmark)
                await self.outbox.finish_later(recipient, decided.entry)
                return await self._original(sender, recipient, decided.message_id)
            unmark, marked = marked, False
            await self.apply(decided.step, unmark=unmark)
            if finish_later:
                return SendResult(
                    True,
                    decided.message_json,
                    decided.message_id,
                    decided.folder,
                    (recipient, decided.entry),
                )
            await self.outbox.finish_later(recipient, decided.entry)
            return SendResult(True, decided.message_json, decided.message_id, decided.folder)
        finally:
            if marked:
                await self._unmark(sender, recipient)

    async def prepare(
        self, sender: str, recipient: str, client_id: str | None, *, mark: bool = True
    ) -> Prepared | SendResult:
        """Step 1, the sender's slot: a SendResult when this client_id was sent
        before and the send is complete; else the facts, marked in flight."""
        burst, period, new_limit, new_window, _, _ = self.limit_args
        reply = await self._hot_script(
            self._prepare,
            [
                keys.user(sender),
                keys.client_ids(sender),
                keys.view(sender, recipient),
                keys.new_conversations(sender),
                keys.sending(sender, recipient),
            ],
            [
                client_id or "",
                recipient,
                burst,
                period,
                new_limit,
                new_window,
                IN_FLIGHT_MARK_MS if mark else 0,
            ],
        )
        if reply[0] == 0:
            return await self._original(sender, str(reply[2]), str(reply[1]))
        (
            _,
            handle,
            active,
            restricted,
            blocks,
            floor,
            messages_wait,
            new_conv,
            new_wait,
            theirs,
            seen,
            now_ms,
        ) = reply
        return Prepared(
            sender=sender,
            recipient=recipient,
            handle=str(handle),
            active=str(active),
            restricted=restricted == "1",
            blocks_recipient=blocks == "1",
            floor=str(floor),
            messages_wait_ms=int(messages_wait),
            new_conversation=new_conv == "1",
            new_conversations_wait_ms=int(new_wait),
            theirs=[str(i) for i in theirs],
            seen=frozenset(str(i) for i in seen),
            now_ms=int(now_ms),
        )

    async def _unmark(self, sender: str, recipient: str) -> None:
        """A marked send ended without its step 3 (refused, limited, a retry of a
        complete send, or an error): take the mark back; if that fails too, it
        expires on its own."""
        try:
            await self._hot_script(self._unmark_script, [keys.sending(sender, recipient)], [])
        except (RedisError, OSError) as exc:
            log.info("in-flight mark of %s → %s left to expire: %s", sender, recipient, exc)

    async def decide(
        self,
        prepared: Prepared,
        *,
        text: str,
        sent_at: str,
        client_id: str | None,
        origin: str,
        extra: dict[str, Any] | None = None,
        agent: str | None = None,
        wait: bool = False,
    ) -> Decided | SendRefused | SendLimited | Wait:
        """Step 2, the recipient's slot: the decision, and from it the send is
        certain. WAIT when asked to `wait` and the recipient has a send to the
        sender in flight."""
        theirs = prepared.theirs
        supplied: list[str] = []
        while True:
            reply = await self._decide_call(
                prepared, theirs, supplied, wait, text, sent_at, client_id, origin, extra, agent
            )
            if reply[0] != 4:
                break
            if supplied:
                # Passed and still missing (gone from the sender's view meanwhile):
                # this message does not wait for them.
                theirs, supplied = [], []
                continue
            # The recipient's side of some of its own messages is owed: they go
            # along, as the sender's view holds them (the same member in both).
            supplied = await self._owed(
                prepared.sender, prepared.recipient, [str(i) for i in reply[1]]
            )
            theirs = supplied[::3]
        status = reply[0]
        if status == 5:
            return WAIT
        if status == 2:
            return SendRefused(Reason(reply[1]), reply[2] or None)
        if status == 3:
            return SendLimited(str(reply[1]), int(reply[2]))
        message_id = str(reply[1])
        if status == 0:
            payload = reply[2]
            step = Applied.from_payload(json.loads(payload)) if payload is not None else None
            return Decided(False, message_id, "", None, str(reply[3]), step)
        own, folder, entry, stored = str(reply[2]), str(reply[3]), str(reply[4]), str(reply[5])
        earlier = tuple(i for i in map(str, reply[6]) if i not in prepared.seen)
        step = Applied(
            prepared.sender,
            prepared.recipient,
            message_id,
            stored,
            client_id or "",
            origin,
            prepared.new_conversation,
            prepared.now_ms,
            earlier,
        )
        return Decided(True, message_id, own, folder, entry, step)

    async def _decide_call(
        self,
        prepared: Prepared,
        theirs: list[str],
        supplied: list[str],
        wait: bool,
        text: str,
        sent_at: str,
        client_id: str | None,
        origin: str,
        extra: dict[str, Any] | None,
        agent: str | None,
    ) -> Any:
        sender, recipient = prepared.sender, prepared.recipient
        _, _, _, _, requests_limit, requests_window = self.limit_args
        return await self._hot_script(
            self._decide,
            [
                keys.client_ids_in(recipient),
                *_decision_keys(recipient, sender),
                keys.outbox(recipient),
                keys.client_ids(recipient),
                keys.sending(recipient, sender),
                keys.wrote(recipient),
            ],
            [
                *self._message_args(sender, recipient, text, sent_at, client_id, origin, extra),
                prepared.handle,
                prepared.active,
                "1" if prepared.restricted else "0",
                "1" if prepared.blocks_recipient else "0",
                prepared.floor,
                prepared.messages_wait_ms,
                "1" if prepared.new_conversation else "0",
                prepared.new_conversations_wait_ms,
                requests_limit,
                requests_window,
                self.client_id_ttl_s,
                agent or "",
                msgid.direction(sender, recipient),
                "1" if wait else "0",
                len(theirs),
                *theirs,
                *supplied,
            ],
        )

    def _message_args(
        self,
        sender: str,
        recipient: str,
        text: str,
        sent_at: str,
        client_id: str | None,
        origin: str,
        extra: dict[str, Any] | None,
    ) -> list[Any]:
        """The message's arguments, first in both send_decide.lua and send_whole.lua
        (ARGV 1-9). The text and client_id are JSON-encoded here with the API's
        encoder; the scripts place the bytes as they are."""
        return [
            client_id or "",
            sender,
            recipient,
            _json.encode(text),
            sent_at,
            _json.encode(client_id),
            self.event_retention,
            origin,
            extra_fields(extra),
        ]

    async def _owed(self, owner: str, author: str, owed_ids: list[str]) -> list[str]:
        """(id, view member, origin) of `author`'s messages to `owner` that the
        author's own view lacks: from `owner`'s view and, for the origin (the
        socket that sent it and had its ack), the send's outbox entry in
        `owner`'s slot."""
        supplied: list[str] = []
        for owed_id in owed_ids:
            found = await self.redis.zrangebyscore(keys.view(owner, author), owed_id, owed_id, 0, 1)
            if not found:
                continue
            origin = await self._origin(owner, author, views.split(found[0])[2])
            supplied.extend((owed_id, found[0], origin))
        return supplied

    async def _origin(self, sender: str, recipient: str, message_json: str) -> str:
        """The socket that sent `recipient`'s message to `sender` (and had its
        ack), from the send's outbox entry while there is one; else '-'."""
        try:
            sent = msgspec.json.decode(message_json)
        except msgspec.DecodeError:
            return "-"
        cid = sent.get("client_id") if isinstance(sent, dict) else None
        if not isinstance(cid, str):
            return "-"
        seen = await self.redis.hget(keys.client_ids_in(sender), f"{recipient}:{cid}")
        entry = seen.partition("|")[2] if seen else ""
        rows = await self.redis.xrange(keys.outbox(sender), entry, entry) if entry else []
        if not rows:
            return "-"
        try:
            payload = json.loads(rows[0][1].get("p", "{}"))
        except ValueError:
            return "-"
        return str(payload.get("o") or "-") if isinstance(payload, dict) else "-"

    async def apply(self, step: Applied, *, unmark: bool = False) -> int:
        """Step 3: 1 applied now, 0 applied before, -1 the sender's account is gone."""
        burst, period, _, new_window, _, _ = self.limit_args
        s, r = step.sender, step.recipient
        earlier = list(step.earlier)
        supplied: list[str] = []
        while True:
            result = await self._hot_script(
                self._apply,
                [
                    keys.user(s),
                    keys.view(s, r),
                    keys.wrote(s),
                    keys.requests(s),
                    keys.inbox(s),
                    keys.new_conversations(s),
                    keys.client_ids(s),
                    keys.events(s),
                    keys.channel(s),
                    keys.sending(s, r),
                ],
                [
                    r,
                    step.message_id,
                    step.member,
                    step.client_id,
                    step.origin,
                    "1" if step.new_conversation else "0",
                    self.event_retention,
                    self.client_id_ttl_s,
                    burst,
                    period,
                    new_window,
                    "1" if unmark else "0",
                    step.now_ms,
                    len(earlier),
                    *earlier,
                    *supplied,
                ],
            )
            if not isinstance(result, list):
                return int(result)
            if supplied:
                # Passed and still missing (gone from r's view meanwhile): this
                # message does not wait for them.
                earlier, supplied = [], []
                continue
            # Earlier sends of s's still owed on s's side go along, as r's view holds them.
            supplied = await self._owed(r, s, [str(i) for i in result])
            earlier = supplied[::3]

    async def apply_payload(self, payload: dict[str, Any]) -> None:
        """The reconciler's handler for `send` entries."""
        await self.apply(Applied.from_payload(payload))

    async def finish(self, result: SendResult) -> None:
        """After the client has its answer: the outbox entry is done with."""
        if result.entry is not None:
            await self.outbox.finish_later(*result.entry)

    async def _lost_side(
        self, sender: str, recipient: str, message_id: str, client_id: str | None
    ) -> Applied | None:
        """Step 3 of a decided send whose sender's side is missing while the
        recipient's view has it (a failover lost it); None when nothing is owed
        or nothing is left to rebuild it from. Whether it opened a conversation
        is not known any more: its `new_conversations` charge is not made."""
        if await self.redis.zcount(keys.view(sender, recipient), message_id, message_id):
            return None
        found = await self.redis.zrangebyscore(
            keys.view(recipient, sender), message_id, message_id, 0, 1
        )
        if not found:
            return None
        return Applied(sender, recipient, message_id, found[0], client_id or "", "-", False)

    async def _original(self, sender: str, peer: str, message_id: str) -> SendResult:
        found = await views.find(self.redis, sender, peer, message_id)
        if found is None:  # the conversation was removed under us; keep the promise
            raise LookupError(f"message {message_id} is gone")
        return SendResult(False, found[1], message_id)
