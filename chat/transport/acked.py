"""DMHUB_ACK_REPLICAS for every HTTP write: one hook around each endpoint.

With the setting on, every route that changes state (any method but GET and
HEAD) answers a success only once the masters it wrote have that many replicas
confirm it, or once they are counted short (chat/store/replicas.py). The hook
notes the slots the request writes over the cold path (chat/store/written.py)
and, after a success, marks and waits on each of their masters. Routes never
call it themselves, so a new write route is covered by being registered.

A WebSocket `read` frame goes through the same hook (`frame`). A send
(`POST .../messages`, a `send` frame) is not wrapped: its writes go over the lane and
`actions.send_message` waits on that connection itself, before the ack of
either transport. With the setting at 0 no route is wrapped at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from chat.store import written
from chat.store.store import Store
from chat.transport.http import runtime

Endpoint = Callable[[Request], Awaitable[Response]]

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes whose own code waits for replicas, before the ack (send_message).
CONFIRMED_BY_THEMSELVES = frozenset({("/api/conversations/{peer}/messages", "POST")})
# POSTs whose repetition changes nothing more (a read pointer, a folder move):
# a connection lost while waiting answers `unavailable`, as for PUT, PATCH and
# DELETE. Any other POST made something a retry would make again (an account,
# a session, a report, a note, a webhook, a ping), so it is acked, counted short.
IDEMPOTENT_POSTS = frozenset(
    {
        "/api/conversations/{peer}/read",
        "/api/conversations/{peer}/accept",
        "/api/webhooks/{webhook_id}/replay",
    }
)


def idempotent(path: str, method: str) -> bool:
    return method != "POST" or path in IDEMPOTENT_POSTS


def waits_for_replicas(route: Route) -> bool:
    methods = (route.methods or set()) - READ_METHODS
    return any((route.path, method) not in CONFIRMED_BY_THEMSELVES for method in methods)


def acked(endpoint: Endpoint, path: str) -> Endpoint:
    async def endpoint_acked(request: Request) -> Response:
        if request.method in READ_METHODS:
            return await endpoint(request)
        with written.tracking() as slots:
            response = await endpoint(request)
        acks = runtime(request).store.replica_acks
        if acks is not None and response.status_code < 400:
            await acks.confirm_slots(slots, idempotent=idempotent(path, request.method))
        return response

    return endpoint_acked


def wrap(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """The routes, each write route's endpoint behind the hook."""
    wrapped: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, Route) and waits_for_replicas(route):
            route = Route(
                route.path,
                acked(route.endpoint, route.path),
                methods=sorted(route.methods or ()),
                name=route.name,
                include_in_schema=route.include_in_schema,
            )
        wrapped.append(route)
    return wrapped


async def frame(store: Store, write: Awaitable[Any]) -> None:
    """The hook for a WebSocket frame that writes, when the setting is on: a
    `read` (a `send` waits on the lane itself). Idempotent: a connection lost
    while waiting answers `unavailable`."""
    with written.tracking() as slots:
        await write
    if store.replica_acks is not None:
        await store.replica_acks.confirm_slots(slots)
