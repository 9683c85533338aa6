"""`POST /api/reports`: report an account (PROTOCOL.md v1.1, Reports and restriction).

A report blocks the account (as `PUT /api/blocks`, which also takes it out of
the reporter's requests), is logged for operators and counted once per
reporter; when enough reporters in good standing have reported it within the
window, the account is restricted (chat/reports.py weighs).
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat import limits, reports
from chat.errors import invalid, unknown_user
from chat.hub import actions
from chat.protocol import validation
from chat.store import keys, safety, views
from chat.store.store import public_user
from chat.transport import http
from chat.transport.http import body, runtime, signed_in

log = logging.getLogger("dmhub.reports")


def report_reason(value: object) -> str:
    if value not in reports.REASONS:
        raise invalid(f"reason is one of {', '.join(reports.REASONS)}.", "reason")
    return str(value)


async def create_report(request: Request) -> Response:
    principal = await signed_in(request)
    data = await body(request)
    reason = report_reason(data.get("reason"))
    handle = data.get("handle")
    if not isinstance(handle, str):
        raise invalid("handle is required.", "handle")
    rt = runtime(request)
    store = rt.store
    target = actions.peer_key(handle)
    me = principal.user
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.hmget(keys.user(target), ["handle"])
        pipe.hmget(keys.user(me), ["handle"])
        (target_handle,), (my_handle,) = await pipe.execute()
    if target_handle is None:
        raise unknown_user(handle)
    if target == me:
        raise invalid("You cannot report yourself.", "handle")
    message_id = data.get("message_id")
    if message_id is not None:
        message_id = validation.message_id(message_id, "message_id")
        found = await views.find(store.redis, me, target, message_id)
        if found is None or found[0] != target:
            raise invalid(
                f"message_id is not a message from @{target_handle} to you.", "message_id"
            )
    settings = rt.settings
    if settings.limit_reports_per_hour > 0:
        count, ttl_ms = await store.count_in_window(keys.report_count(me), limits.HOUR_MS)
        verdict = limits.fixed_window(count, ttl_ms, settings.limit_reports_per_hour)
        if not verdict.verdict.allowed:
            raise actions.rate_limited(limits.REPORTS, verdict.verdict.retry_after_ms)
    await store.block(me, target)
    now = safety.now_ms()
    window_ms = settings.restrict_window_s * 1000
    counted = await safety.record_report(
        store, me, my_handle or me, target, reason, message_id, now, window_ms
    )
    if counted and settings.restrict_reporters > 0:
        weighing = await safety.weigh_reports(
            store,
            target,
            at_ms=now,
            threshold=settings.restrict_reporters,
            window_ms=window_ms,
            min_age_ms=settings.reporter_min_age_s * 1000,
        )
        if weighing.restrict and await safety.restrict(store, target, now, weighing.counted):
            log.warning(
                "@%s is restricted: reported by %d accounts in good standing",
                target_handle,
                len(weighing.counted),
            )
    # The reported account as the reporter now sees it (blocking: true), the
    # body of `GET /api/users/{handle}`: a client can redraw without asking.
    pair = await store.pair_facts(me, target)
    assert pair.recipient is not None
    return http.json(
        {"user": public_user(pair.recipient), "relationship": actions.relationship(pair)}, 202
    )


routes = [Route("/api/reports", create_report, methods=["POST"])]
