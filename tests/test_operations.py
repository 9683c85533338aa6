"""Operator-facing behaviour: persistence warning, readiness, metrics."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from chat.config import DEFAULT_APPENDFSYNC
from chat.store import persistence
from chat.store.embedded import EmbeddedValkey
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
    with caplog.at_level(logging.INFO, logger="dmhub.valkey"):
        assert not persistence.check(valkey_without_aof).safe
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "appendonly no" in record.getMessage()


@pytest.mark.parametrize(
    ("appendfsync", "safe", "says"),
    [
        ("always", True, "none is lost to a crash of Redis or of the machine"),
        ("everysec", False, "can lose up to ~2 s of acknowledged messages"),
        ("no", True, "a crash of the machine can lose the last ~30 s"),
    ],
)
def test_start_up_says_what_the_fsync_policy_guarantees(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, appendfsync: str, safe: bool, says: str
) -> None:
    args = ("--appendonly", "yes", "--appendfsync", appendfsync)
    with plain_valkey(tmp_path, *args) as port, caplog.at_level(logging.INFO, "dmhub.valkey"):
        assert persistence.check(f"redis://127.0.0.1:{port}/0").safe is safe
    [record] = caplog.records
    assert record.levelno == (logging.INFO if safe else logging.WARNING)
    assert f"appendfsync {appendfsync}" in record.getMessage()
    assert says in record.getMessage()


def test_a_redis_that_refuses_config_get_is_judged_by_info(tmp_path: Path) -> None:
    with plain_valkey(tmp_path, "--appendonly", "yes", "--rename-command", "CONFIG", '""') as port:
        found = persistence.check(f"redis://127.0.0.1:{port}/0")
    assert not found.safe and "check the fsync policy" in found.sentence


def test_the_embedded_valkey_fsyncs_before_it_acknowledges(own_valkey: EmbeddedValkey) -> None:
    assert own_valkey.appendfsync == DEFAULT_APPENDFSYNC == "always"
    assert persistence.check(own_valkey.url).safe
    client = redis.Redis.from_url(own_valkey.url, decode_responses=True)
    assert client.config_get("appendfsync") == {"appendfsync": "always"}
    client.close()


async def test_readyz_follows_redis(own_valkey: EmbeddedValkey, tmp_path: Path) -> None:
    async with running_server(settings_for(own_valkey.url, tmp_path)) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/readyz")).status_code == 200
            own_valkey.kill()
            down = await http.get("/readyz")
            alive = await http.get("/healthz")
            own_valkey.start()
            assert down.status_code == 503 and down.json()["status"] == "unavailable"
            # Public: it names no socket path, address or data folder of the server.
            assert str(tmp_path) not in down.text and "own-valkey" not in down.text, down.text
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
