"""Operator-facing behaviour: persistence warning, readiness, metrics."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat.store.embedded import EmbeddedValkey, warn_without_persistence
from tests.support import (
    RunningServer,
    new_user,
    plain_valkey,
    running_server,
    settings_for,
)


@pytest.fixture
def valkey_without_aof(tmp_path: Path) -> Iterator[str]:
    with plain_valkey(tmp_path, "--appendonly", "no") as port:
        yield f"redis://127.0.0.1:{port}/0"


def test_a_redis_without_an_append_only_file_is_warned_about(
    valkey_without_aof: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dmhub.valkey"):
        warn_without_persistence(valkey_without_aof)
    assert any("appendonly" in r.getMessage() for r in caplog.records)


def test_a_redis_with_an_append_only_file_is_not(
    own_valkey: EmbeddedValkey, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dmhub.valkey"):
        warn_without_persistence(own_valkey.url)
    assert not caplog.records


async def test_readyz_follows_redis(own_valkey: EmbeddedValkey, tmp_path: Path) -> None:
    async with running_server(settings_for(own_valkey.url, tmp_path)) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/readyz")).status_code == 200
            own_valkey.kill()
            down = await http.get("/readyz")
            alive = await http.get("/healthz")
            own_valkey.start()
            assert down.status_code == 503 and down.json()["status"] == "unavailable"
            assert alive.status_code == 200
            for _ in range(100):
                if (await http.get("/readyz")).status_code == 200:
                    break
            else:
                raise AssertionError("readyz never recovered")


def sample(text: str, name: str, default: float | None = None) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    if default is not None:
        return default  # a labelled counter appears once it was first incremented
    raise AssertionError(f"{name} is not exported")


async def test_metrics_count_sockets_and_sends(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    assert bob.user
    async with httpx.AsyncClient(base_url=server.url) as http:
        before = (await http.get("/metrics")).text
        async with alice.socket() as socket:
            await socket.send(bob.user["handle"], "counted")
            during = (await http.get("/metrics")).text
    assert sample(during, "dmhub_sockets") == sample(before, "dmhub_sockets") + 1
    stored = 'dmhub_sends_total{outcome="stored"}'
    assert sample(during, stored) == sample(before, stored, default=0.0) + 1


async def test_metrics_can_require_a_token(redis_url: str, tmp_path: Path) -> None:
    settings = settings_for(redis_url, tmp_path, metrics_token="scrape-me")
    async with running_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            anonymous = await http.get("/metrics")
            wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
            right = await http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert right.status_code == 200 and "dmhub_sockets" in right.text


async def test_startup_objects_are_frozen_out_of_garbage_collection(
    redis_url: str, tmp_path: Path
) -> None:
    gc.unfreeze()
    async with running_server(settings_for(redis_url, tmp_path)):
        # The app, its routes and every imported module: tens of thousands of objects.
        assert gc.get_freeze_count() > 10_000
