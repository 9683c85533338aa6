"""dmhub on a real three-master Valkey Cluster: REDIS_URL seeds, detection, the
cold-path client, /readyz per shard, sockets and their events on every shard."""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

import httpx
import pytest

from chat import admin
from chat.client import Client
from chat.store import keys, persistence
from chat.store.connection import (
    RedisTarget,
    RedisUrlError,
    detect_cluster,
    seed_endpoints,
    seed_urls,
)
from chat.store.embedded import EmbeddedValkey
from chat.store.safety import scan_accounts
from chat.store.store import Store
from tests.cluster_support import ValkeyCluster, handles_on_shards, valkey_cluster
from tests.support import (
    PASSWORD,
    handle,
    new_user,
    running_server,
    settings_for,
    two_nodes,
)


def test_seeds_share_the_scheme_credentials_database_and_options() -> None:
    assert seed_urls("redis://h:6379/0") == ["redis://h:6379/0"]
    assert seed_urls("unix:///run/v.sock?db=2") == ["unix:///run/v.sock?db=2"]
    assert seed_urls("redis://a:1,b:2, c:3") == ["redis://a:1", "redis://b:2", "redis://c:3"]
    assert seed_urls("rediss://user:p%40ss@a:1,b:2/0?ssl_cert_reqs=none") == [
        "rediss://user:p%40ss@a:1/0?ssl_cert_reqs=none",
        "rediss://user:p%40ss@b:2/0?ssl_cert_reqs=none",
    ]
    tls = seed_endpoints("rediss://:pw@a:7000,b:7001")
    assert [(e.host, e.port, e.tls, e.password) for e in tls] == [
        ("a", 7000, True, "pw"),
        ("b", 7001, True, "pw"),
    ]
    with pytest.raises(RedisUrlError):
        seed_urls("redis://a:1,,b:2")
    with pytest.raises(RedisUrlError):
        seed_urls("unix:///a.sock,/b.sock")


async def test_a_cluster_is_detected_and_a_single_node_is_not(
    cluster_url: str, shared_valkey: EmbeddedValkey
) -> None:
    assert await detect_cluster(cluster_url)
    assert await detect_cluster(cluster_url.split(",")[0])  # one seed is enough
    assert not await detect_cluster(shared_valkey.url)


async def test_cold_path_scripts_run_on_every_master_even_after_a_flush(
    cluster_url: str, valkey_cluster: ValkeyCluster
) -> None:
    client = RedisTarget(cluster_url, cluster=True).client()
    try:
        script = client.register_script("return redis.call('INCR', KEYS[1])")
        handles = handles_on_shards(3)
        assert [await script(keys=[keys.user(lc)]) for lc in handles] == [1, 1, 1]
        for node in valkey_cluster.masters:  # a restart, or a promoted replica
            with contextlib.closing(node.client()) as direct:
                direct.script_flush()
        assert [await script(keys=[keys.user(lc)]) for lc in handles] == [2, 2, 2]
    finally:
        await client.aclose()


async def test_operator_scans_cover_every_master(cluster_url: str) -> None:
    client = RedisTarget(cluster_url, cluster=True).client()
    try:
        store = Store(client, event_retention=100)
        handles = handles_on_shards(6)
        for lc in handles:
            await client.lpush(keys.reports(lc), "{}")
        found = [lc async for lc in scan_accounts(store, keys.reports)]
        assert sorted(found) == sorted(handles)
    finally:
        await client.aclose()


async def test_memory_reports_the_master_nearest_its_ceiling(
    cluster_url: str, valkey_cluster: ValkeyCluster
) -> None:
    fullest = valkey_cluster.masters[1]
    with contextlib.closing(fullest.client()) as node:
        node.config_set("maxmemory", 512 * 1024 * 1024)
        try:
            client = RedisTarget(cluster_url, cluster=True).client()
            try:
                used, ceiling = await Store(client, event_retention=100).memory()
            finally:
                await client.aclose()
            assert ceiling == 512 * 1024 * 1024
            assert used > 0
        finally:
            node.config_set("maxmemory", 0)


async def test_the_admin_listing_and_the_persistence_check_speak_cluster(
    cluster_url: str, tmp_path: Path
) -> None:
    handles = handles_on_shards(3)
    seed = RedisTarget(cluster_url, cluster=True).client()
    try:
        for lc in handles:
            await seed.hset(keys.user(lc), mapping={"handle": lc.upper(), "restricted": "1"})
            await seed.lpush(keys.reports(lc), '{"at": 1}')
    finally:
        await seed.aclose()
    args = argparse.Namespace(admin_command="reports", handle=None)
    listing = await admin.run(cluster_url, settings_for(cluster_url, tmp_path), args)
    assert sorted(a["handle"] for a in listing["accounts"]) == sorted(h.upper() for h in handles)
    # Every seed asked: the test cluster's everysec is the weakest answer.
    assert "everysec" in persistence.check(cluster_url).sentence


async def test_readyz_reports_every_shard(
    cluster_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dmhub")
    async with running_server(settings_for(cluster_url, tmp_path)) as srv:
        # Start-up said which master serves which slots.
        logged = caplog.text
        assert "Valkey Cluster with 3 masters" in logged
        for master in cluster_url.removeprefix("redis://").split(","):
            assert f"shard {master} slots" in logged
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(srv.url + "/readyz")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ok"
        assert [s["slots"] for s in body["shards"]] == ["0-5460", "5461-10922", "10923-16383"]
        assert all(s["ok"] and s["cluster_state"] == "ok" for s in body["shards"])
        # The public answer names no host.
        assert "127.0.0.1" not in response.text


async def test_readyz_is_503_when_a_master_is_down(tmp_path: Path) -> None:
    with valkey_cluster(tmp_path / "cluster") as cluster:
        async with running_server(settings_for(cluster.url, tmp_path)) as srv:
            cluster.masters[2].stop()
            async with httpx.AsyncClient(timeout=15) as http:
                response = await http.get(srv.url + "/readyz")
            assert response.status_code == 503, response.text
            shards = response.json()["shards"]
            assert [s["ok"] for s in shards] == [True, True, False]


async def test_users_on_every_shard_get_their_events(cluster_url: str, tmp_path: Path) -> None:
    """Sign-up, sessions on the lane, and `sign out everywhere` delivered over each
    user's shard's pub/sub connection."""
    async with running_server(settings_for(cluster_url, tmp_path)) as srv:
        users = [await new_user(srv.url, lc) for lc in handles_on_shards(3)]
        async with contextlib.AsyncExitStack() as stack:
            sockets = [await stack.enter_async_context(u.socket()) for u in users]
            for user, sock in zip(users, sockets, strict=True):
                await user.sign_out_everywhere()
                assert await sock.wait_closed(5) == 4401
        again = await new_user(srv.url)
        await again.sign_out()
        await again.sign_in(handle(again), PASSWORD)


@pytest.mark.timeout(90)
async def test_two_dmhub_processes_on_the_cluster_hear_each_other(
    cluster_url: str, tmp_path: Path
) -> None:
    """`dmhub serve` with seeds in REDIS_URL: a socket on one process is closed by
    a sign-out made through the other, for users on every shard."""
    env = {"REDIS_URL": cluster_url, "DMHUB_DATA_DIR": str(tmp_path)}
    with two_nodes(env) as (a, b):
        async with httpx.AsyncClient(timeout=10) as http:
            ready = (await http.get(a.url + "/readyz")).json()
        assert ready["status"] == "ok" and len(ready["shards"]) == 3
        for lc in handles_on_shards(3):
            on_a = await new_user(a.url, lc)
            on_b = Client(b.url)
            await on_b.sign_in(lc, PASSWORD)
            async with on_a.socket() as sock:
                await on_b.sign_out_everywhere()
                assert await sock.wait_closed(5) == 4401
