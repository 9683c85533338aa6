"""The operators' API (PROTOCOL.md v1.1, Operators), behind DMHUB_ADMIN_TOKEN.

Without the setting these routes do not exist (404, as for any unknown path);
with it, every call needs `Authorization: Bearer ADMIN_TOKEN` (else 401).
`dmhub admin` (chat/admin.py) does the same from the command line; both call
chat/admin.py's operations, so they answer alike.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat import admin
from chat.errors import UNAUTHENTICATED, ApiError
from chat.hub import actions
from chat.transport.auth import bearer_is
from chat.transport.http import json, runtime


def require_admin(request: Request) -> None:
    expected = runtime(request).settings.admin_token
    if not expected:
        raise HTTPException(404)
    if not bearer_is(request.headers.get("authorization"), expected):
        raise ApiError(UNAUTHENTICATED, "The admin API needs the bearer DMHUB_ADMIN_TOKEN.")


def target(request: Request) -> str:
    return actions.peer_key(request.path_params["handle"])


async def list_reports(request: Request) -> Response:
    require_admin(request)
    rt = runtime(request)
    handle = request.query_params.get("handle")
    lc = actions.peer_key(handle) if handle else None
    return json(await admin.reports(rt.store, rt.settings, lc))


async def list_restrictions(request: Request) -> Response:
    require_admin(request)
    return json(await admin.restrictions(runtime(request).store))


async def clear_restriction(request: Request) -> Response:
    require_admin(request)
    return json(await admin.clear(runtime(request).store, target(request)))


async def suspension(request: Request) -> Response:
    require_admin(request)
    store = runtime(request).store
    if request.method == "PUT":
        return json(await admin.suspend(store, target(request)))
    return json(await admin.unsuspend(store, target(request)))


routes = [
    Route("/api/admin/reports", list_reports, methods=["GET"]),
    Route("/api/admin/restrictions", list_restrictions, methods=["GET"]),
    Route("/api/admin/restrictions/{handle}", clear_restriction, methods=["DELETE"]),
    Route("/api/admin/suspensions/{handle}", suspension, methods=["PUT", "DELETE"]),
]
