"""Acks that wait for replicas (DMHUB_ACK_REPLICAS, chat/store/replicas.py).

On a real three-master cluster with a replica each: what a WAIT confirmed is on
the replica when the answer arrives (read there with READONLY), a replica that
stops answering makes the wait short and then not asked for a while, a
failover right after a confirmed ack loses nothing, every kind of write
answers once the replicas of each master it wrote have it (one hook,
chat/transport/acked.py), and a connection lost while waiting fails only
idempotent writes. On one Valkey with a replica, writes wait on it too;
without the setting, no route is wrapped. Without the wait, a
failover right after an ack half-loses a send, as docs/architecture.md ("What
a failover can lose") says. On a single Valkey without replicas, acks go out
at once, counted as short.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.routing import Route

from chat.app import create_app
from chat.client import Client, ClientError
from chat.config import WebhookSettings
from chat.hub.actions import send_message
from chat.metrics import ACK_REPLICA_WAITS
from chat.store import keys, written
from chat.store.cluster_lane import ClusterLane
from chat.store.connection import RedisTarget, seed_endpoints
from chat.store.lane import online_replicas
from chat.store.replicas import ReplicaAcks
from chat.store.slots import key_slot
from chat.store.store import SendResult, Store
from chat.transport.acked import READ_METHODS
from tests.cluster_support import (
    ClusterNode,
    ValkeyCluster,
    handles_on_shards,
    read_only,
    until_answers,
    valkey_cluster,
)
from tests.support import (
    PASSWORD,
    handle,
    hot_lane,
    new_user,
    next_of,
    plain_valkey,
    running_server,
    settings_for,
)

# Long enough that a confirmation never times out on a loaded machine; a test
# that must not wait at all would take this long if it did.
WAIT_MS = 2_000
T = TypeVar("T")


def short_acks() -> float:
    return ACK_REPLICA_WAITS.labels("short")._value.get()


def test_replicas_online_are_read_from_info() -> None:
    info = (
        "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n"
        "slave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0\r\n"
        "slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=0\r\n"
        "master_failover_state:no-failover\r\n"
    )
    assert online_replicas(info) == 1
    assert online_replicas("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n") == 0


def test_the_settings_refuse_a_timeout_that_could_hold_a_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chat.config import Settings

    monkeypatch.setenv("DMHUB_ACK_REPLICAS", "1")
    assert Settings.from_env().ack_replicas == 1
    for bad in ("0", "60000"):
        monkeypatch.setenv("DMHUB_ACK_REPLICA_TIMEOUT_MS", bad)
        with pytest.raises(SystemExit):
            Settings.from_env()


@pytest.mark.timeout(30)
async def test_a_valkey_without_replicas_acks_at_once_counted_as_short(
    redis_url: str, layout: str
) -> None:
    client = RedisTarget(redis_url, layout == "cluster").client()
    lane = hot_lane(redis_url)
    try:
        store = Store(
            client, event_retention=100, lane=lane, replica_acks=ReplicaAcks(lane, 1, WAIT_MS)
        )
        for handle in ("Ann", "Bob"):
            await store.create_user(handle, "-", handle, "person")
        await store.follow("bob", "ann")  # Ann may write to Bob
        before = short_acks()
        for n in range(3):
            sent = send_message(store, "ann", "Bob", f"hi {n}", None)
            # A WAIT would hold each send for WAIT_MS: none may be issued.
            assert isinstance(await asyncio.wait_for(sent, WAIT_MS / 2000), SendResult)
        assert short_acks() == before + 3
        stats = await client.info("commandstats")
        assert "cmdstat_wait" not in stats
    finally:
        await lane.aclose()
        await client.aclose()


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    with valkey_cluster(tmp_path_factory.mktemp("acks"), replicas=True) as cluster:
        yield cluster


@pytest.fixture
async def lane(replicated: ValkeyCluster) -> AsyncIterator[ClusterLane]:
    made = ClusterLane(seed_endpoints(replicated.url), timeout_s=5)
    await made.refresh(force=True)
    try:
        yield made
    finally:
        await made.aclose()


@contextlib.contextmanager
def stopped(node: ClusterNode) -> Iterator[None]:
    """SIGSTOP: the replica is there but answers nothing (a stalled link)."""
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(node.process.pid, signal.SIGCONT)


@pytest.mark.timeout(60)
async def test_what_a_wait_confirmed_is_on_the_replica_already(
    lane: ClusterLane, replicated: ValkeyCluster
) -> None:
    handles = handles_on_shards(3)
    since = ReplicaAcks.started()
    # The first waits on a node, all at once: they share its first look at
    # INFO and its WAIT, and none counts as short meanwhile.
    await lane.execute("SET", f"v:{{{handles[0]}}}", "first")
    waits = [lane.wait_replicas(f"v:{{{handles[0]}}}", 1, WAIT_MS, since=since) for _ in range(8)]
    assert await asyncio.gather(*waits) == [1] * 8
    for round_ in range(20):
        await asyncio.gather(*(lane.execute("SET", f"v:{{{lc}}}", round_) for lc in handles))
        counts = await asyncio.gather(
            *(lane.wait_replicas(f"v:{{{lc}}}", 1, WAIT_MS, since=since) for lc in handles)
        )
        assert counts == [1, 1, 1]
        # No wait here: the replica had it when WAIT answered.
        for lc in handles:
            replica = replicated.replica_of(replicated.master_for(f"v:{{{lc}}}"))
            with read_only(replica) as client:
                assert client.get(f"v:{{{lc}}}") == str(round_)


@pytest.mark.timeout(60)
async def test_a_stalled_replica_makes_a_wait_short_then_not_asked(
    lane: ClusterLane, replicated: ValkeyCluster
) -> None:
    lc = handles_on_shards(1)[0]
    key = f"v:{{{lc}}}"
    master = replicated.master_for(key)
    with contextlib.closing(master.client()) as client:
        waits_before = int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
    since = ReplicaAcks.started()
    with stopped(replicated.replica_of(master)):
        await lane.execute("SET", key, "unconfirmed")
        assert await lane.wait_replicas(key, 1, 200, since=since) == 0
        # Known short: answered at once, without holding the node's connection.
        assert await asyncio.wait_for(lane.wait_replicas(key, 1, WAIT_MS, since=since), 1) == 0
    with contextlib.closing(master.client()) as client:
        waits_after = int(client.info("commandstats")["cmdstat_wait"]["calls"])
    assert waits_after == waits_before + 1


@pytest.mark.timeout(60)
async def test_a_lost_connection_cannot_vouch_for_writes_before_it(
    lane: ClusterLane, replicated: ValkeyCluster
) -> None:
    lc = handles_on_shards(1)[0]
    key = f"v:{{{lc}}}"
    since = ReplicaAcks.started()
    await lane.execute("SET", key, "1")
    master = replicated.master_for(key)
    with contextlib.closing(master.client()) as client:
        client.client_kill_filter(_type="normal", skipme=True)
    with contextlib.suppress(RedisConnectionError):
        await lane.execute("PING")  # notices the break
    assert await lane.wait_replicas(key, 1, WAIT_MS, since=since) == 0
    assert await lane.wait_replicas(key, 1, WAIT_MS, since=ReplicaAcks.started()) == 1


async def cold(call: Callable[[], Awaitable[T]]) -> T:
    """`call` again while its connection was to the master that failed."""
    for _ in range(3):
        try:
            return await call()
        except RedisConnectionError:
            await asyncio.sleep(0.5)
    return await call()


@contextlib.contextmanager
def replication_cut(cluster: ValkeyCluster, master: ClusterNode) -> Iterator[None]:
    """The master's replica stopped and its link closed by the master: writes
    from here on are in the master's backlog only (asynchronous replication at
    its worst), and the replica cannot fetch them while stopped."""
    with stopped(cluster.replica_of(master)):
        with contextlib.closing(master.client()) as client:
            client.client_kill_filter(_type="replica")
        yield


# -- a send's two steps on two shards ------------------------------------------


@contextlib.asynccontextmanager
async def two_users(cluster: ValkeyCluster, replicas: int) -> AsyncIterator[tuple[Store, str, str]]:
    """A Store on the cluster (acks waiting for `replicas`, or not when 0) and
    two users on different shards, the second following the first."""
    client = RedisTarget(cluster.url, True).client()
    lane = ClusterLane(seed_endpoints(cluster.url), timeout_s=2)
    await lane.refresh(force=True)
    acks = ReplicaAcks(lane, replicas, WAIT_MS) if replicas else None
    try:
        store = Store(client, event_retention=100, lane=lane, replica_acks=acks)
        ann, bob = handles_on_shards(2)
        for lc in (ann, bob):
            await store.create_user(lc, "-", lc, "person")
        await store.follow(bob, ann)
        await replicated_now(store, ann, bob)
        yield store, ann, bob
    finally:
        await lane.aclose()
        await client.aclose()


async def replicated_now(store: Store, *lcs: str) -> None:
    """What the test set up is on the replicas before it cuts one off."""
    assert isinstance(store.lane, ClusterLane)
    assert await ReplicaAcks(store.lane, 1, WAIT_MS).confirm_written(*lcs)


async def acked(store: Store, sender: str, recipient: str, text: str, cid: str) -> SendResult:
    """A send as a socket makes it: the ack, then the outbox entry removed."""
    result = await send_message(store, sender, recipient, text, cid)
    await store.sends.finish(result)
    return result


def has_event_of(events: object, message_id: str) -> bool:
    """Whether an XRANGE reply of a user's event stream holds the message."""
    return message_id in str(events)


def on_replica(cluster: ValkeyCluster, lc: str, message_id: str) -> bool:
    replica = cluster.replica_of(cluster.master_for(keys.events(lc)))
    with read_only(replica) as client:
        return has_event_of(client.xrange(keys.events(lc)), message_id)


async def after_failover(store: Store, lc: str) -> object:
    assert isinstance(store.lane, ClusterLane)
    return await until_answers(store.lane, "XRANGE", keys.events(lc), "-", "+")


@pytest.mark.timeout(90)
async def test_an_acked_send_is_on_both_replicas_and_survives_a_failover(
    failover_cluster: ValkeyCluster,
) -> None:
    async with two_users(failover_cluster, 1) as (store, ann, bob):
        sent = []
        for n in range(10):
            result = await acked(store, ann, bob, f"hello {n}", f"c{n}")
            # When the ack would go out: on the replica of each user's master.
            assert on_replica(failover_cluster, bob, result.message_id)  # step 2, Bob's slot
            assert on_replica(failover_cluster, ann, result.message_id)  # step 3, Ann's slot
            sent.append(result.message_id)
        # Right after the last ack: Bob's master dies, Ann's replica takes over
        # without syncing with its master first. Nothing acked is lost.
        failover_cluster.master_for(keys.events(bob)).kill()
        takeover = failover_cluster.replica_of(failover_cluster.master_for(keys.events(ann)))
        with contextlib.closing(takeover.client()) as client:
            client.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
        for lc in (bob, ann):
            events = await after_failover(store, lc)
            assert all(has_event_of(events, message_id) for message_id in sent)


@pytest.mark.timeout(90)
async def test_without_the_wait_a_failover_can_half_lose_an_acked_send(
    failover_cluster: ValkeyCluster,
) -> None:
    async with two_users(failover_cluster, 0) as (store, ann, bob):
        kept = await acked(store, ann, bob, "replicated", "c0")
        bobs_master = failover_cluster.master_for(keys.events(bob))
        with replication_cut(failover_cluster, bobs_master):
            lost = await acked(store, ann, bob, "acked, then lost", "c1")
            bobs_master.kill()
        # Step 2 (Bob's slot: his copy, his event, the dedupe record and the
        # outbox entry) is gone with the master; step 3 (Ann's slot) is kept.
        bobs = await after_failover(store, bob)
        assert has_event_of(bobs, kept.message_id)
        assert not has_event_of(bobs, lost.message_id)
        assert has_event_of(await after_failover(store, ann), lost.message_id)
        # No outbox entry says what Bob lacks, and a retry finds Ann's record
        # of the send (step 1) and answers with it: the half stays lost. (The
        # cold-path client learns of the failover from its first error.)
        assert await cold(lambda: store.outbox.reconcile(min_idle_ms=0)) == 0
        retry = await cold(lambda: send_message(store, ann, bob, "acked, then lost", "c1"))
        assert not retry.created and retry.message_id == lost.message_id
        assert not has_event_of(await after_failover(store, bob), lost.message_id)


@pytest.mark.timeout(60)
async def test_a_server_asked_to_wait_on_a_valkey_without_replicas_says_so_and_acks(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(redis_url, tmp_path, ack_replicas=1, ack_replica_timeout_ms=WAIT_MS)
    before = short_acks()
    async with running_server(settings) as server:
        assert "has 0 replica(s) online" in caplog.text
        ann, bob = await new_user(server.url), await new_user(server.url)
        await bob.follow(handle(ann))
        sent = ann.post_message(handle(bob), "hello", client_id="c1")
        assert (await asyncio.wait_for(sent, WAIT_MS / 2000))["text"] == "hello"
        await ann.aclose()
        await bob.aclose()
    assert short_acks() == before + 4  # the two sign-ups, the follow and the send


@pytest.mark.timeout(90)
async def test_each_two_user_request_answers_once_on_both_replicas(
    replicated: ValkeyCluster, tmp_path: Path
) -> None:
    settings = settings_for(
        replicated.url, tmp_path, ack_replicas=1, ack_replica_timeout_ms=WAIT_MS
    )
    confirmed, short = ACK_REPLICA_WAITS.labels("confirmed")._value.get(), short_acks()

    def replica_holds(lc: str, command: str, *args: str) -> object:
        replica = replicated.replica_of(replicated.master_for(keys.user(lc)))
        with read_only(replica) as client:
            return client.execute_command(command, *args)

    async with running_server(settings) as server:
        ann_lc, bob_lc = handles_on_shards(2)
        ann, bob = await new_user(server.url, ann_lc), await new_user(server.url, bob_lc)
        await bob.follow(ann_lc)  # the 204: both halves are on the replicas already
        assert replica_holds(bob_lc, "ZSCORE", keys.following(bob_lc), ann_lc) is not None
        assert replica_holds(ann_lc, "ZSCORE", keys.followers(ann_lc), bob_lc) is not None
        sent = await ann.post_message(bob_lc, "hello", client_id="c1")
        await bob.mark_read(ann_lc, sent["id"])
        assert (
            replica_holds(bob_lc, "HGET", keys.user(bob_lc), keys.read_field(ann_lc)) == sent["id"]
        )
        assert sent["id"] in str(replica_holds(ann_lc, "XRANGE", keys.events(ann_lc), "-", "+"))
        await ann.block(bob_lc)
        assert replica_holds(ann_lc, "ZSCORE", keys.blocking(ann_lc), bob_lc) is not None
        assert replica_holds(bob_lc, "ZSCORE", keys.blocked_by(bob_lc), ann_lc) is not None
        await ann.aclose()
        await bob.aclose()
    # two sign-ups, follow, send, read, block: one confirmation each, none short.
    assert ACK_REPLICA_WAITS.labels("confirmed")._value.get() == confirmed + 6
    assert short_acks() == short


@pytest.mark.timeout(90)
async def test_without_the_wait_a_senders_lost_half_comes_back_with_a_retry_or_the_reply(
    failover_cluster: ValkeyCluster,
) -> None:
    async with two_users(failover_cluster, 0) as (store, ann, bob):
        await store.follow(ann, bob)  # Bob may answer
        await replicated_now(store, ann, bob)
        anns_master = failover_cluster.master_for(keys.events(ann))
        with replication_cut(failover_cluster, anns_master):
            retried = await acked(store, ann, bob, "acked, then half lost", "c1")
            answered = await acked(store, ann, bob, "this one too", "c2")
            anns_master.kill()
        # Step 3 (Ann's slot) is gone with her master; step 2 (Bob's) is kept.
        anns = await after_failover(store, ann)
        bobs = await after_failover(store, bob)
        for lost in (retried, answered):
            assert not has_event_of(anns, lost.message_id)
            assert has_event_of(bobs, lost.message_id)
        # A retry with the same client_id runs step 3 from Bob's view (the
        # same member); Bob's next message to Ann completes what Ann's view
        # lacks of her messages to him (send_decide.lua).
        again = await cold(lambda: send_message(store, ann, bob, "acked, then half lost", "c1"))
        assert (again.created, again.message_id) == (False, retried.message_id)
        assert again.message_json == retried.message_json
        assert has_event_of(await after_failover(store, ann), retried.message_id)
        await cold(lambda: acked(store, bob, ann, "a reply", "r1"))
        assert has_event_of(await after_failover(store, ann), answered.message_id)


def confirmations() -> tuple[float, float]:
    return ACK_REPLICA_WAITS.labels("confirmed")._value.get(), short_acks()


def wait_calls(cluster: ValkeyCluster) -> dict[int, int]:
    """WAITs each master has answered so far, by port."""
    calls = {}
    for master in cluster.masters:
        with contextlib.closing(master.client()) as client:
            stats = client.info("commandstats")
        calls[master.port] = int(stats.get("cmdstat_wait", {}).get("calls", 0))
    return calls


@pytest.mark.timeout(120)
async def test_every_kind_of_write_answers_once_the_replicas_of_what_it_wrote_have_it(
    replicated: ValkeyCluster, tmp_path: Path
) -> None:
    settings = settings_for(
        replicated.url,
        tmp_path,
        ack_replicas=1,
        ack_replica_timeout_ms=WAIT_MS,
        webhooks=replace(WebhookSettings(), allow_private=True),
    )

    def holds(lc: str, command: str, *args: str) -> object:
        """What the replica of lc's master has, read the moment the answer came."""
        replica = replicated.replica_of(replicated.master_for(keys.user(lc)))
        with read_only(replica) as client:
            return client.execute_command(command, *args)

    async def write(request: Awaitable[T], *lcs: str) -> T:
        """The request, which must have waited on the master of each of `lcs`
        (the test's requests come one at a time: no WAIT is shared)."""
        before = wait_calls(replicated)
        answer = await request
        after = wait_calls(replicated)
        for lc in lcs:
            port = replicated.master_for(keys.user(lc)).port
            assert after[port] > before[port], f"no WAIT on {lc}'s master"
        return answer

    ann_lc, bob_lc, shop_lc = handles_on_shards(3)
    before = confirmations()
    async with running_server(settings) as server:
        ann, bob, shop = Client(server.url), Client(server.url), Client(server.url)
        await write(ann.sign_up(ann_lc, PASSWORD), ann_lc)
        assert holds(ann_lc, "HGET", keys.user(ann_lc), "handle") == ann_lc
        assert holds(ann_lc, "ZCARD", keys.session_index(ann_lc)) == 1
        await write(bob.sign_up(bob_lc, PASSWORD), bob_lc)
        await write(shop.sign_up(shop_lc, PASSWORD, kind="business"), shop_lc)
        await write(bob.update_me(open_dms=True, name="Bob B"), bob_lc)
        assert holds(bob_lc, "HGET", keys.user(bob_lc), "name") == "Bob B"

        def follows() -> tuple[object, object]:
            return (
                holds(bob_lc, "ZSCORE", keys.following(bob_lc), ann_lc),
                holds(ann_lc, "ZSCORE", keys.followers(ann_lc), bob_lc),
            )

        await write(bob.follow(ann_lc), bob_lc, ann_lc)
        assert None not in follows()
        await write(bob.unfollow(ann_lc), bob_lc, ann_lc)
        assert follows() == (None, None)
        first = await write(ann.post_message(bob_lc, "hello", client_id="c1"), ann_lc, bob_lc)
        await write(bob.accept(ann_lc), bob_lc)
        assert holds(bob_lc, "ZSCORE", keys.inbox(bob_lc), ann_lc) is not None
        await write(bob.mark_read(ann_lc, first["id"]), bob_lc)
        assert holds(bob_lc, "HGET", keys.user(bob_lc), keys.read_field(ann_lc)) == first["id"]
        second = await ann.post_message(bob_lc, "again", client_id="c2")
        async with bob.socket() as sock:

            async def read_frame() -> None:
                await sock.read(ann_lc, second["id"])
                # Frames are handled in order: the pong comes after the read's wait.
                await sock.ping("after the read")
                await next_of(sock, "pong")

            await write(read_frame(), bob_lc)
            assert holds(bob_lc, "HGET", keys.user(bob_lc), keys.read_field(ann_lc)) == second["id"]
        await write(bob.hide(ann_lc), bob_lc)
        assert holds(bob_lc, "HGET", keys.cleared(bob_lc), ann_lc) is not None
        await write(shop.request("PUT", f"/api/team/{ann_lc}"), shop_lc, ann_lc)
        assert holds(shop_lc, "SISMEMBER", keys.team(shop_lc), ann_lc) == 1
        assert holds(ann_lc, "SISMEMBER", keys.teams_of(ann_lc), shop_lc) == 1
        await write(ann.report(bob_lc), ann_lc, bob_lc)  # and a block
        assert holds(bob_lc, "LLEN", keys.reports(bob_lc)) == 1
        assert holds(bob_lc, "ZSCORE", keys.blocked_by(bob_lc), ann_lc) is not None
        await write(ann.unblock(bob_lc), ann_lc, bob_lc)
        assert holds(ann_lc, "ZSCORE", keys.blocking(ann_lc), bob_lc) is None
        assert holds(bob_lc, "ZSCORE", keys.blocked_by(bob_lc), ann_lc) is None
        hook = {"url": "http://127.0.0.1:9/hook"}
        made = await write(ann.request("POST", "/api/webhooks", hook), ann_lc)
        assert (
            holds(ann_lc, "HGET", keys.webhook(ann_lc, made["webhook"]["id"]), "url") == hook["url"]
        )
        await write(ann.change_password(PASSWORD, PASSWORD + "!"), ann_lc)
        with contextlib.closing(replicated.master_for(keys.user(ann_lc)).client()) as master:
            stored = master.hget(keys.user(ann_lc), "pw")
        assert holds(ann_lc, "HGET", keys.user(ann_lc), "pw") == stored
        await write(bob.delete_account(PASSWORD), bob_lc)
        assert holds(bob_lc, "HGET", keys.user(bob_lc), "handle") is None
        for client in (ann, bob, shop):
            await client.aclose()
    # One confirmation per write, none short: 3 sign-ups, a profile change, a
    # follow and an unfollow, 2 sends, an accept, 2 reads, a hide, a team
    # change, a report, an unblock, a webhook, a password, a deletion.
    assert confirmations() == (before[0] + 18, before[1])


async def kill_blocked_wait(master: ClusterNode) -> None:
    """Once a WAIT blocks on `master`, break the connections it was sent on."""
    with contextlib.closing(master.client()) as client:
        for _ in range(50):
            if int(client.info("clients")["blocked_clients"]) >= 1:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("no WAIT blocked on the master")
        client.client_kill_filter(_type="normal", skipme=True)


@pytest.mark.timeout(60)
async def test_a_connection_lost_while_waiting_fails_an_idempotent_write_only(
    replicated: ValkeyCluster, tmp_path: Path
) -> None:
    settings = settings_for(
        replicated.url, tmp_path, ack_replicas=1, ack_replica_timeout_ms=WAIT_MS
    )
    ann_lc, bob_lc = handles_on_shards(2)
    master = replicated.master_for(keys.user(ann_lc))
    async with running_server(settings) as server:
        ann, bob = await new_user(server.url, ann_lc), await new_user(server.url, bob_lc)
        with stopped(replicated.replica_of(master)):
            # A follow can be asked again to the same effect: `unavailable`.
            follow = asyncio.ensure_future(bob.follow(ann_lc))
            await kill_blocked_wait(master)
            with pytest.raises(ClientError) as refused:
                await follow
            assert (refused.value.status, refused.value.code) == (503, "unavailable")
            # A sign-up asked again would find its handle taken: it stands, counted short.
            short = short_acks()
            cat, cat_lc = Client(server.url), handles_on_shards(1)[0]
            assert replicated.master_for(keys.user(cat_lc)) is master  # as ann's
            signup = asyncio.ensure_future(cat.sign_up(cat_lc, PASSWORD))
            await kill_blocked_wait(master)
            assert await signup
            assert short_acks() == short + 1
        await bob.follow(ann_lc)  # again, once the replica is back
        for client in (ann, bob, cat):
            await client.aclose()


def test_with_the_setting_every_write_route_waits_and_without_it_none_is_wrapped(
    tmp_path: Path,
) -> None:
    def routes(ack_replicas: int) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """(every write route, those behind the hook) of the app."""
        settings = settings_for("redis://127.0.0.1:1", tmp_path, ack_replicas=ack_replicas)
        writes, hooked = set(), set()
        for route in create_app(settings).routes:
            if isinstance(route, Route):
                for method in (route.methods or set()) - READ_METHODS:
                    writes.add((route.path, method))
                    if route.endpoint.__name__ == "endpoint_acked":
                        hooked.add((route.path, method))
        return writes, hooked

    writes, hooked = routes(0)
    assert len(writes) > 20 and not hooked  # no extra call of any kind
    send = ("/api/conversations/{peer}/messages", "POST")  # waits itself, on the lane
    assert routes(1) == (writes, writes - {send})


def test_the_writes_of_an_operation_are_noted_by_their_keys_slot() -> None:
    assert written.written_key(("HSET", "user:{ann}", "name", "Ann")) == "user:{ann}"
    assert written.written_key(("EVALSHA", "f00", 2, "fwing:{ann}", "x", "arg")) == "fwing:{ann}"
    assert written.written_key(("EVALSHA", "f00", 0, "arg")) is None
    assert written.written_key(("XGROUP", "CREATE", "obx:{a}", "g", "$")) == "obx:{a}"
    assert written.written_key(("DEL", b"sess:ab")) == b"sess:ab"
    for read_or_keyless in (("HGETALL", "user:{ann}"), ("ZSCORE", "k", "m"), ("PING",)):
        assert written.written_key(read_or_keyless) is None
    with written.tracking() as slots:
        written.note(("ZADD", "fwing:{ann}", 1, "bob"))
        written.note(("GET", "user:{bob}"))
    written.note(("SET", "user:{cat}", "1"))  # outside any operation
    assert slots == {key_slot("fwing:{ann}")}


@pytest.mark.timeout(60)
async def test_on_one_valkey_with_a_replica_a_write_waits_on_it(tmp_path: Path) -> None:
    (tmp_path / "master").mkdir()
    (tmp_path / "replica").mkdir()
    with (
        plain_valkey(tmp_path / "master", "--repl-diskless-sync-delay", "0") as port,
        plain_valkey(tmp_path / "replica", "--replicaof", "127.0.0.1", str(port)) as replica,
        contextlib.closing(redis.Redis(port=port, decode_responses=True)) as master,
        contextlib.closing(redis.Redis(port=replica, decode_responses=True)) as copy,
    ):
        for _ in range(100):
            if copy.info("replication").get("master_link_status") == "up":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the replica did not sync")
        settings = settings_for(
            f"redis://127.0.0.1:{port}", tmp_path, ack_replicas=1, ack_replica_timeout_ms=WAIT_MS
        )

        def waits() -> int:
            return int(master.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))

        before, confirmed = waits(), confirmations()[0]
        async with running_server(settings) as server:
            ann, bob = await new_user(server.url), await new_user(server.url)
            await bob.update_me(name="Bob B")
            assert copy.hget(keys.user(handle(bob).lower()), "name") == "Bob B"
            await bob.follow(handle(ann))
            lcs = handle(bob).lower(), handle(ann).lower()
            assert copy.zscore(keys.following(lcs[0]), lcs[1]) is not None
            assert copy.zscore(keys.followers(lcs[1]), lcs[0]) is not None
            await ann.aclose()
            await bob.aclose()
        # Two sign-ups, a profile change, a follow: one WAIT each, on the one node.
        assert (waits() - before, confirmations()[0] - confirmed) == (4, 4)
