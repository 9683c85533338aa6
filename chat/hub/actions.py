"""What a client can do to a conversation, whichever transport it came by.

Each action validates (pure), then asks the permission rule and acts. A send
is one atomic store call that reads the facts, applies the rule (its Lua twin,
chat/permission/rule.lua), stores and publishes; typing asks `decide` over facts
read in one round trip. HTTP and WebSocket both call these, so a send is decided
the same way everywhere.
"""

from __future__ import annotations

import time
from typing import Any

from chat import limits, metrics
from chat.errors import NOT_ALLOWED, NOT_FOUND, UNAUTHENTICATED, ApiError, invalid, unknown_user
from chat.errors import rate_limited as rate_limited_error
from chat.permission import Decision, Reason, decide
from chat.permission.rule import refusal_detail
from chat.protocol import frames, validation
from chat.store import keys
from chat.store.business import offered_quick_replies
from chat.store.replicas import ReplicaAcks
from chat.store.sends import SendLimited, SendRefused, SendResult
from chat.store.store import PairFacts, Store

LIMIT_DETAILS = {
    limits.MESSAGES: "You are sending messages too fast.",
    limits.NEW_CONVERSATIONS: (
        "You have started as many new conversations with people who do not follow "
        "you as a day allows."
    ),
    limits.REQUESTS_RECEIVED: "@{peer} has received too many new message requests lately.",
    limits.TYPING: "Too many typing events; the extra ones were dropped.",
    limits.SOCKETS: "This account has too many sockets open on this server.",
    limits.REPORTS: "You have sent as many reports as an hour allows.",
}


def peer_key(handle: object) -> str:
    """A handle from a path or frame, as the store keys it; unknown when malformed."""
    if not validation.is_handle(handle):
        raise unknown_user(str(handle)[:32])
    return str(handle).lower()


def refusal(reason: Reason, recipient: str, recipient_handle: str | None) -> ApiError:
    """The error for a refusal: the handle shown is the account's, else as asked."""
    if reason is Reason.UNKNOWN_RECIPIENT:
        return unknown_user(recipient)
    if reason is Reason.UNKNOWN_SENDER:
        return ApiError(UNAUTHENTICATED, "This account no longer exists.")
    return ApiError(
        NOT_ALLOWED, refusal_detail(reason, recipient_handle or recipient), reason=reason.value
    )


def rate_limited(limit: str, retry_after_ms: int, peer: str = "") -> ApiError:
    """A limit's refusal, counted in /metrics by limit."""
    metrics.RATE_LIMITED.labels(limit).inc()
    seconds = limits.retry_after_s(retry_after_ms)
    detail = LIMIT_DETAILS.get(limit, "Too many requests.").format(peer=peer)
    return rate_limited_error(limit, seconds, f"{detail} Try again in {seconds} s.")


def require_allowed(pair: PairFacts, recipient: str) -> Decision:
    decision = decide(pair.facts)
    if decision.allowed:
        return decision
    raise refusal(decision.reason, recipient, pair.recipient["handle"] if pair.recipient else None)


async def send_message(
    store: Store,
    sender: str,
    to: object,
    text: object,
    client_id: object,
    origin: str = "-",
    options: dict[str, Any] | None = None,
    agent: str | None = None,
) -> SendResult:
    """Store a message and publish it; returns once it is durably written.

    `options` holds the optional fields of a send (`ref`, `quick_reply`,
    `quick_replies`) as the client gave them. `agent`: the team member sending
    for the business `sender` (it signs the business's copy only).
    """
    started = time.perf_counter()
    # DMHUB_ACK_REPLICAS: writes from here on are what the ack waits for.
    since = ReplicaAcks.started()
    outcome = "error"
    try:
        body = validation.text(text)
        cid = validation.client_id(client_id)
        recipient = peer_key(to)
        extra = await business_fields(store, sender, recipient, options) if options else None
        result = await store.send(
            sender=sender,
            recipient=recipient,
            text=body,
            client_id=cid,
            origin=origin,
            extra=extra,
            agent=agent,
            # The transport removes the outbox entry once the ack is out.
            finish_later=True,
        )
        if isinstance(result, SendRefused):
            outcome = "refused"
            raise refusal(result.reason, recipient, result.recipient_handle)
        if isinstance(result, SendLimited):
            outcome = "limited"
            raise rate_limited(result.limit, result.retry_after_ms, str(to))
        if store.replica_acks is not None:
            # A retry's original waits too: the attempt that stored it may have
            # died before its ack (WAIT covers all this connection wrote).
            await store.replica_acks.confirm(since, keys.user(recipient), keys.user(sender))
        outcome = "stored" if result.created else "duplicate"
        return result
    except ApiError as exc:
        if outcome == "error":
            outcome = "invalid" if exc.code in ("invalid", "too_long") else "refused"
        raise
    finally:
        metrics.SENDS.labels(outcome).inc()
        if outcome == "stored":
            metrics.SEND_LATENCY.observe(time.perf_counter() - started)


SEND_OPTIONS = ("ref", "quick_reply", "quick_replies")


def send_options(data: dict[str, Any]) -> dict[str, Any] | None:
    """The optional fields of a send body or frame, when any is there."""
    options = {name: data[name] for name in SEND_OPTIONS if data.get(name) is not None}
    return options or None


async def business_fields(
    store: Store, sender: str, recipient: str, options: dict[str, Any]
) -> dict[str, Any] | None:
    """Validate a send's optional fields; the quick-reply ones need both accounts."""
    extra: dict[str, Any] = {"ref": validation.ref(options.get("ref"))}
    replies, pick = options.get("quick_replies"), options.get("quick_reply")
    if replies is not None:
        cleaned = validation.quick_replies(replies)
        row = await store.user(sender)
        if row is None or row.get("kind") != "business":
            raise invalid("Only business accounts can attach quick replies.", "quick_replies")
        extra["quick_replies"] = cleaned
    if pick is not None:
        business = await store.user(recipient)
        if business is None:
            raise unknown_user(recipient)
        offered = (
            await offered_quick_replies(store, business, sender)
            if business.get("kind") == "business"
            else []
        )
        extra["quick_reply"] = validation.quick_reply(pick, offered)
    return extra if any(v is not None for v in extra.values()) else None


async def send_typing(
    store: Store,
    sender: str,
    to: object,
    limit: int = 0,
    agent: str | None = None,
    origin: str = "-",
) -> None:
    """Relay a typing event; past `limit` per 10 s they are dropped. From an agent
    (a team socket), the rest of the team hears it too.

    Only the first dropped one of a window raises (one error frame per window);
    the rest are dropped without a word.
    """
    recipient = peer_key(to)
    if limit > 0:
        count, ttl_ms = await store.count_typing(sender, limits.TYPING_WINDOW_MS)
        verdict = limits.fixed_window(count, ttl_ms, limit)
        if not verdict.verdict.allowed:
            if verdict.first_refusal:
                raise rate_limited(limits.TYPING, verdict.verdict.retry_after_ms)
            metrics.RATE_LIMITED.labels(limits.TYPING).inc()
            return
    pair = await store.pair_facts(sender, recipient)
    require_allowed(pair, recipient)
    if pair.sender_handle is None:
        return
    if agent is not None and pair.recipient is not None:
        # Colleagues see who is answering even before the customer may see typing.
        team_frame = {
            "type": "typing",
            "from": pair.sender_handle,
            "peer": pair.recipient["handle"],
            "agent": agent,
        }
        await store.publish_team_typing(sender, recipient, origin, frames.encode(team_frame))
    # While the sender has not accepted the recipient's request, the recipient
    # must not learn that it is being looked at (PRODUCT.md).
    if pair.a_has_request:
        return
    frame = frames.encode({"type": "typing", "from": pair.sender_handle})
    await store.publish_typing(sender, recipient, frame)


async def mark_read(store: Store, reader: str, peer: object, up_to: object) -> None:
    peer_lc = peer_key(peer)
    message_id = validation.message_id(up_to)
    facts = await store.receipt_facts(reader, peer_lc)
    if facts is None:
        raise unknown_user(str(peer))
    body = frames.encode(
        {
            "type": "read",
            "reader": facts.reader_handle,
            "peer": facts.peer_handle,
            "up_to": message_id,
        }
    )[:-1]
    tell_peer = facts.tells_peer
    moved = await store.mark_read(reader, peer_lc, message_id, body, tell_peer)
    if moved < 0:
        raise ApiError(
            NOT_FOUND,
            f"There is no message {message_id} in your conversation with @{peer}.",
            field="up_to",
        )


def ack_frame(client_id: str | None, message_json: str) -> str:
    cid = frames.encode_value(client_id)
    return f'{{"type":"ack","client_id":{cid},"message":{message_json}}}'


def relationship(pair: PairFacts) -> dict[str, Any]:
    facts = pair.facts
    decision = decide(facts)
    return {
        "following": pair.a_follows_b,
        "followed_by": facts.recipient_follows_sender,
        "blocking": facts.sender_blocks_recipient,
        "blocked_by": facts.recipient_blocks_sender,
        "can_message": decision.allowed,
        "reason": None if decision.allowed else decision.reason.value,
    }


__all__ = [
    "ack_frame",
    "mark_read",
    "peer_key",
    "rate_limited",
    "refusal",
    "relationship",
    "require_allowed",
    "send_message",
    "send_typing",
]
