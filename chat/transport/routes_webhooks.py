"""`/api/webhooks`: an account's webhooks (PROTOCOL.md v1.1, docs/webhooks.md).

Every route authenticates, and reaches a webhook only through `owned`, which
looks it up under the caller's own account: another account's webhook id is
`404 not_found`, exactly as an id that never existed.
"""

from __future__ import annotations

import secrets
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat.errors import NOT_FOUND, ApiError, invalid
from chat.store.store import cursor_key
from chat.transport import http
from chat.webhooks import policy
from chat.webhooks.dispatcher import Dispatcher
from chat.webhooks.guard import check_url

SECRET_PREFIX = "whsec_"
PING_PREFIX = "ping-"


def dispatcher(request: Request) -> Dispatcher:
    found: Dispatcher = request.app.state.webhooks
    return found


async def owned(request: Request, lc: str) -> tuple[str, dict[str, str]]:
    """The caller's webhook named in the path, or 404 not_found."""
    webhook_id = request.path_params["webhook_id"]
    row = None
    if policy.is_webhook_id(webhook_id):
        row = await dispatcher(request).store.get(lc, webhook_id)
    if row is None:
        raise ApiError(NOT_FOUND, "You have no webhook with that id.")
    return webhook_id, row


async def create_webhook(request: Request) -> Response:
    principal = await http.signed_in(request)
    data = await http.body(request)
    policy.known_fields(data, policy.CREATE_FIELDS)
    events = policy.events(data.get("events"))
    settings = http.runtime(request).settings.webhooks
    url = await check_url(data.get("url"), allow_private=settings.allow_private)
    d = dispatcher(request)
    lc = principal.user
    webhook_id = secrets.token_hex(policy.WEBHOOK_ID_LENGTH // 2)
    # The secret is kept as it is, not hashed: signing needs the key itself
    # (docs/webhooks.md). It is returned here and never again.
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    fields = {
        "url": url,
        "events": ",".join(events),
        "created": str(int(time.time() * 1000)),
        "secret": secret,
        # Deliveries start after the newest event at creation.
        "start": await d.store.newest_event(lc),
        "gen": "0",
        "active": "1",
    }
    most = policy.MAX_WEBHOOKS_PER_ACCOUNT
    if not await d.store.create(lc, webhook_id, fields, most):
        raise invalid(f"An account has at most {most} webhooks; delete one first.")
    d.nudge(lc)
    return http.json({"webhook": policy.view(webhook_id, fields), "secret": secret}, 201)


async def list_webhooks(request: Request) -> Response:
    principal = await http.signed_in(request)
    rows = await dispatcher(request).store.all(principal.user)
    return http.json({"webhooks": [policy.view(i, row) for i, row in rows]})


async def get_webhook(request: Request) -> Response:
    principal = await http.signed_in(request)
    webhook_id, row = await owned(request, principal.user)
    return http.json({"webhook": policy.view(webhook_id, row)})


async def delete_webhook(request: Request) -> Response:
    principal = await http.signed_in(request)
    webhook_id, _ = await owned(request, principal.user)
    store = dispatcher(request).store
    await store.delete(principal.user, webhook_id)
    await store.wake(principal.user, webhook_id)
    return http.no_content()


async def ping_webhook(request: Request) -> Response:
    principal = await http.signed_in(request)
    webhook_id, _ = await owned(request, principal.user)
    d = dispatcher(request)
    ping_id = PING_PREFIX + secrets.token_hex(8)
    if not await d.store.update(principal.user, webhook_id, set_fields={"ping": ping_id}):
        raise ApiError(NOT_FOUND, "You have no webhook with that id.")
    await _wake(d, principal.user, webhook_id)
    row = await d.store.get(principal.user, webhook_id) or {}
    return http.json({"webhook": policy.view(webhook_id, row), "delivery": ping_id}, 202)


async def replay_webhook(request: Request) -> Response:
    principal = await http.signed_in(request)
    webhook_id, _ = await owned(request, principal.user)
    data = await http.body(request)
    policy.known_fields(data, policy.REPLAY_FIELDS)
    since = policy.replay_cursor(data.get("since"))
    d = dispatcher(request)
    if cursor_key(since) > cursor_key(await d.store.newest_event(principal.user)):
        raise invalid("since is after your newest event.", "since")
    # A replay is the integration saying "send from here": a new generation,
    # active again, and the failure clock starts over.
    applied = await d.store.update(
        principal.user, webhook_id, new_generation=True,
        set_fields={"cursor": since, "active": "1"},
        delete_fields=("failing", "error", "errkind"),
    )  # fmt: skip
    if not applied:
        raise ApiError(NOT_FOUND, "You have no webhook with that id.")
    await _wake(d, principal.user, webhook_id)
    row = await d.store.get(principal.user, webhook_id) or {}
    return http.json({"webhook": policy.view(webhook_id, row)}, 202)


async def _wake(d: Dispatcher, lc: str, webhook_id: str) -> None:
    d.nudge(lc)  # when this process holds the lease
    await d.store.wake(lc, webhook_id)  # when another one does


routes = [
    Route("/api/webhooks", create_webhook, methods=["POST"]),
    Route("/api/webhooks", list_webhooks, methods=["GET"]),
    Route("/api/webhooks/{webhook_id}", get_webhook, methods=["GET"]),
    Route("/api/webhooks/{webhook_id}", delete_webhook, methods=["DELETE"]),
    Route("/api/webhooks/{webhook_id}/ping", ping_webhook, methods=["POST"]),
    Route("/api/webhooks/{webhook_id}/replay", replay_webhook, methods=["POST"]),
]
