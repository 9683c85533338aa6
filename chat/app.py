"""The Starlette application: routes, error rendering, and the process lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from chat import runtime as runtime_module
from chat.collector import Collector
from chat.config import Settings
from chat.errors import NOT_FOUND, ApiError, unavailable
from chat.hub import Hub
from chat.runtime import Runtime
from chat.store import connection, failures
from chat.store.cluster_lane import ClusterLane
from chat.store.connection import REDIS_TIMEOUT_S
from chat.store.lane import Lane
from chat.store.outbox import Reconciler
from chat.store.replicas import ReplicaAcks
from chat.store.store import Store
from chat.store.webhooks import WebhookStore
from chat.transport import (
    acked,
    auth,
    http,
    routes_accounts,
    routes_admin,
    routes_buttons,
    routes_reports,
    routes_team,
    routes_webhooks,
    web,
    ws,
)
from chat.transport.security import SecurityHeaders
from chat.webhooks.dispatcher import Dispatcher

log = logging.getLogger("dmhub")

WEBSOCKET_PATH = "/ws"


async def log_topology(lane: ClusterLane) -> None:
    """Say at start-up which masters serve which slots, with their replicas."""
    try:
        topology = await lane.refresh(force=True)
    except Exception as exc:
        log.warning("Valkey Cluster: could not read its topology yet: %s", exc)
        return
    log.info("Valkey Cluster with %d masters:", len(topology.shards))
    for line in topology.describe():
        log.info("  shard %s", line)
    if not topology.complete:
        log.warning("Valkey Cluster: some slots have no master; cluster_state is not ok")


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"Retry-After": str(int(exc.retry_after + 0.999))} if exc.retry_after else None
    return http.json(exc.body(), exc.status, headers)


async def storage_down(request: Request, exc: Exception) -> Response:
    failures.note(exc, f"{request.method} {request.url.path}")
    error = unavailable()
    return http.json(error.body(), error.status, {"Retry-After": "1"})


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = NOT_FOUND if exc.status_code == 404 else "invalid"
    detail = "No such endpoint." if exc.status_code == 404 else str(exc.detail)
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed here."
    headers = dict(exc.headers) if exc.headers else None
    return http.json({"error": {"code": code, "detail": detail}}, exc.status_code, headers)


async def client_gone(request: Request, exc: Exception) -> Response:
    """The client left mid-body: nobody will read an answer, and nothing broke."""
    return Response(status_code=400)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return http.json({"error": {"code": "internal", "detail": "Something broke on our side."}}, 500)


class DmhubApp(Starlette):
    """Starlette, with /ws handed straight to its endpoint.

    Starlette's error, middleware and routing layers would each keep a frame
    alive for the whole life of every socket, and /ws needs none of them: it
    renders its own refusals and closes.
    """

    def __init__(self, *args: Any, https: bool = False, **kwargs: Any) -> None:
        self.https = https
        super().__init__(*args, **kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        # Outside Starlette's error layer, so that a 500 carries the headers too.
        return SecurityHeaders(super().build_middleware_stack(), https=self.https)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == WEBSOCKET_PATH:
            scope["app"] = self
            await ws.websocket_endpoint(WebSocket(scope, receive, send))
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> Starlette:
    if not settings.redis_url:
        raise ValueError("create_app needs settings.redis_url (dmhub serve starts Valkey first)")
    redis_url = settings.redis_url

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        auth.set_argon2_concurrency(settings.argon2_concurrency)
        # One node or a cluster: asked, not configured (chat/store/connection.py).
        target = await connection.target(redis_url)
        client = target.client(track_writes=settings.ack_replicas > 0)
        lane: Lane | ClusterLane = (
            ClusterLane(target.seeds, timeout_s=REDIS_TIMEOUT_S)
            if target.cluster
            else Lane(redis_url, timeout_s=REDIS_TIMEOUT_S)
        )
        replica_acks = (
            ReplicaAcks(lane, settings.ack_replicas, settings.ack_replica_timeout_ms)
            if settings.ack_replicas > 0
            else None
        )
        store = Store(
            client,
            event_retention=settings.event_retention,
            lane=lane,
            limits=settings.send_limits,
            client_id_ttl_s=settings.client_id_ttl_s,
            replica_acks=replica_acks,
            send_steps=settings.send_steps,
        )
        if isinstance(lane, ClusterLane):
            await log_topology(lane)
        if replica_acks is not None:
            await replica_acks.check()
        hub = Hub(store, redis_url, cluster=target.cluster)
        app.state.runtime = Runtime(settings=settings, redis=client, store=store, hub=hub)
        runtime_module.current = app.state.runtime
        await hub.start()
        webhooks = Dispatcher(
            WebhookStore(client), store, settings.webhooks, redis_url, cluster=target.cluster
        )
        app.state.webhooks = webhooks
        await webhooks.start()
        collector = Collector()
        collector.start()
        reconciler = Reconciler(
            store.outbox,
            interval_s=settings.reconcile_interval_s,
            min_idle_ms=settings.reconcile_min_idle_ms,
        )
        reconciler.start()
        try:
            yield
        finally:
            await reconciler.stop()
            await collector.stop()
            await webhooks.stop()
            await hub.stop()
            await lane.aclose()
            if runtime_module.current is app.state.runtime:
                runtime_module.current = None
            await client.aclose()

    routes = [
        *routes_team.routes,
        *http.routes,
        *routes_accounts.routes,
        *routes_buttons.routes,
        *routes_webhooks.routes,
        *routes_reports.routes,
        *routes_admin.routes,
        *web.routes,
    ]
    return DmhubApp(
        # /ws is served by DmhubApp itself, in front of routing.
        routes=acked.wrap(routes) if settings.ack_replicas > 0 else routes,
        https=settings.secure_cookies,
        exception_handlers={
            ApiError: api_error,
            RedisConnectionError: storage_down,
            RedisTimeoutError: storage_down,
            OutOfMemoryError: storage_down,
            HTTPException: http_error,
            ClientDisconnect: client_gone,
            Exception: internal_error,
        },
        lifespan=lifespan,
    )
