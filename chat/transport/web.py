"""Pages and operational endpoints: the chat page, static files, health, metrics."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from chat import metrics
from chat.errors import UNAUTHENTICATED, ApiError
from chat.runtime import Runtime
from chat.store import failures
from chat.store.cluster_lane import ClusterLane, shard_health
from chat.transport.auth import bearer_is
from chat.transport.http import json

WEB_DIR = Path(__file__).resolve().parent.parent.parent / "web"


async def chat_page(request: Request) -> Response:
    index = WEB_DIR / "index.html"
    if not index.exists():
        return PlainTextResponse("The chat page is not installed (web/index.html is missing).", 404)
    return FileResponse(index, headers={"Cache-Control": "no-cache"})


async def healthz(request: Request) -> Response:
    return json({"status": "ok"})


async def readyz(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    lane = rt.store.lane
    if isinstance(lane, ClusterLane):
        return await cluster_readyz(rt, lane)
    try:
        await rt.store.ping()
    except Exception as exc:
        # The error's words name the socket path or address: the log gets them
        # (rate-limited), the public answer only the kind of failure.
        failures.note(exc, "GET /readyz")
        return json({"status": "unavailable", "redis": type(exc).__name__}, 503)
    if rt.hub.draining:
        return json({"status": "draining"}, 503)
    return json({"status": "ok", "pubsub": rt.hub.broker.connected})


async def cluster_readyz(rt: Runtime, lane: ClusterLane) -> Response:
    """Ready when every master answers and says cluster_state:ok; each shard reported."""
    try:
        health = await shard_health(lane)
    except Exception as exc:
        failures.note(exc, "GET /readyz")
        return json({"status": "unavailable", "redis": type(exc).__name__}, 503)
    pubsub = rt.hub.broker.shards
    shards = [{**h.public(), "pubsub": pubsub.get(h.shard.master, False)} for h in health]
    if not all(h.ok for h in health):
        return json({"status": "unavailable", "redis": "cluster", "shards": shards}, 503)
    if rt.hub.draining:
        return json({"status": "draining", "shards": shards}, 503)
    return json({"status": "ok", "pubsub": rt.hub.broker.connected, "shards": shards})


async def metrics_endpoint(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    expected = rt.settings.metrics_token
    if expected:
        if not bearer_is(request.headers.get("authorization"), expected):
            raise ApiError(UNAUTHENTICATED, "The metrics endpoint needs DMHUB_METRICS_TOKEN.")
    try:
        memory = await rt.store.memory()
        metrics.REDIS_USED_MEMORY.set(memory[0])
        metrics.REDIS_MAXMEMORY.set(memory[1])
    except failures.STORAGE_UNAVAILABLE:
        pass  # the process's own metrics are still worth a scrape
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/", chat_page, methods=["GET", "HEAD"]),
    Route("/messages/compose", chat_page, methods=["GET", "HEAD"]),
    Route("/healthz", healthz, methods=["GET", "HEAD"]),
    Route("/readyz", readyz, methods=["GET", "HEAD"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=str(WEB_DIR), check_dir=False), name="static"),
]
