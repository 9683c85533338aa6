"""A dmhub process dies between the steps of a two-user operation, as a kill -9
would leave it (chat/store/crashpoints.py), and another process's reconciler
completes the operation, once.

Each case runs two real `dmhub serve` processes on one layout (a single Valkey,
or the three-master cluster with the two users on different shards): node A is
armed to die at the named point, node B is healthy and sweeps the outboxes
often. Every kind of split operation is cut by a real process death: a send
after its decision (completed by the reconciler, or by the sender's retry), a
follow and an unfollow after the follower's step, a block
and an unblock after the blocker's step, a read receipt after the reader's step.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat.client import Client, ClientError, Socket
from chat.config import SEND_STEPS_ALWAYS
from chat.store import keys
from chat.store.crashpoints import CRASH_EXIT_CODE
from tests.faults import eventually, history, raw_post
from tests.support import DmhubProcess, handle, new_user, redis_client

pytestmark = pytest.mark.timeout(90)

# The healthy node claims what the dead one left after half a second, and
# sweeps three times a second, so each case finishes in a few seconds. Sends
# run as the three steps on one Valkey too (not as one script): the steps are
# what a crash can cut.
RECONCILE_ENV = {
    "DMHUB_SEND_STEPS": SEND_STEPS_ALWAYS,
    "DMHUB_DRAIN_TIMEOUT": "2",
    "DMHUB_RECONCILE_INTERVAL": "0.3",
    "DMHUB_RECONCILE_MIN_IDLE_MS": "500",
}
# Long enough for several more sweeps after the completion: a second
# application would show within it.
SETTLE_S = 1.5


def node_env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "DMHUB_DATA_DIR": str(tmp_path), **RECONCILE_ENV}


@pytest.fixture(scope="module")
def healthy(layout_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DmhubProcess]:
    """Node B, shared by the module's cases of one layout (each makes its own users)."""
    node = DmhubProcess(node_env(layout_url, tmp_path_factory.mktemp("reconcile-healthy")))
    try:
        yield node.start()
    finally:
        node.kill()


@pytest.fixture
def doomed(
    layout_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[DmhubProcess]:
    """Node A, armed to die at the crash point the test is parametrized with."""
    node = DmhubProcess({**node_env(layout_url, tmp_path), "DMHUB_CRASH_AT": request.param})
    try:
        yield node.start()
    finally:
        node.kill()


def died_at_the_crash_point(node: DmhubProcess) -> bool:
    assert node.process is not None
    return node.process.poll() == CRASH_EXIT_CODE


async def cut_short(
    doomed: DmhubProcess, client: Client, method: str, path: str, body: Any = None
) -> None:
    """`client`'s request to node A, which dies at its crash point instead of answering."""
    assert client.token is not None
    async with httpx.AsyncClient(base_url=doomed.url, timeout=10) as http:
        with pytest.raises(httpx.HTTPError):
            await http.request(
                method, path, headers={"Authorization": f"Bearer {client.token}"}, json=body
            )
    await eventually(lambda: died_at_the_crash_point(doomed), what="node A dying there")


async def users_of(client: Client, path: str) -> list[str]:
    listed = await client.request("GET", path, limit=200)
    return [user["handle"] for user in listed["users"]]


def member(url: str, key: str, value: str) -> bool:
    with contextlib.closing(redis_client(url, decode_responses=True)) as check:
        return check.zscore(key, value) is not None


def outbox_empty(url: str, lc: str) -> bool:
    """The operation's outbox entry (in `lc`'s slot) is done and gone."""
    with contextlib.closing(redis_client(url, decode_responses=True)) as check:
        return int(check.xlen(keys.outbox(lc))) == 0


async def history_or_none(client: Client, peer: str) -> list[dict[str, Any]]:
    """The conversation, or [] while the caller's side of it does not exist yet."""
    try:
        return await history(client, peer)
    except ClientError as error:
        assert error.status == 404
        return []


def message_events(url: str, lc: str) -> int:
    """How many message events `lc`'s event stream holds."""
    with contextlib.closing(redis_client(url, decode_responses=True)) as check:
        events = check.xrange(keys.events(lc))
    return sum('"type":"message"' in fields["f"] for _, fields in events)


async def settled() -> None:
    """Several more sweeps of the reconciler, so a second application would show."""
    await asyncio.sleep(SETTLE_S)


async def next_receipt(sock: Socket, timeout: float) -> dict[str, Any]:
    event = await sock.next_event(timeout)
    while event["type"] != "read":
        event = await sock.next_event(timeout)
    return event


@pytest.mark.parametrize("doomed", ["send:after_decide"], indirect=True)
async def test_a_send_cut_after_its_decision_is_completed_once(
    doomed: DmhubProcess, healthy: DmhubProcess, layout_url: str
) -> None:
    alice = await new_user(healthy.url)
    bob = await new_user(healthy.url, open_dms=True)
    async with alice, bob:
        a, b = handle(alice), handle(bob)
        async with bob.socket() as bob_socket:
            with pytest.raises(httpx.HTTPError):
                await raw_post(doomed.url, alice.token or "", b, "cut short", client_id="c-1")
            await eventually(lambda: died_at_the_crash_point(doomed), what="node A dying there")

            # The decision was made and recorded: Bob has the message already.
            delivered = await bob_socket.next_event(10)
            assert delivered["type"] == "message", delivered
            message_id = delivered["message"]["id"]

            # Alice's side is the reconciler's to finish, on node B.
            async def in_alices_view() -> bool:
                return [m["id"] for m in await history(alice, b)] == [message_id]

            await eventually(in_alices_view, timeout=15, what="the reconciler completing the send")
            await eventually(
                lambda: outbox_empty(layout_url, b.lower()), what="the outbox entry done"
            )
            completed = await history(alice, b)
            await settled()
            # Applied once: nothing more in her view, one message event for her.
            assert await history(alice, b) == completed
            assert message_events(layout_url, a.lower()) == 1

            # Her retry with the same client_id is the same message, not a second one.
            again = await alice.post_message(b, "cut short", client_id="c-1")
            assert again == completed[0]
            assert [m["id"] for m in await history(bob, a)] == [message_id]
            assert await history(alice, b) == completed
            conversations = (await alice.conversations())["conversations"]
            assert [c["peer"]["handle"] for c in conversations] == [b]


@pytest.fixture
def patient(layout_url: str, tmp_path: Path) -> Iterator[DmhubProcess]:
    """A healthy node whose reconciler would wait a minute: what it completes
    in a test, a request did."""
    env = {**node_env(layout_url, tmp_path), "DMHUB_RECONCILE_MIN_IDLE_MS": "60000"}
    node = DmhubProcess(env)
    try:
        yield node.start()
    finally:
        node.kill()


@pytest.mark.parametrize("doomed", ["send:after_decide"], indirect=True)
async def test_a_retry_completes_a_send_cut_after_its_decision(
    doomed: DmhubProcess, patient: DmhubProcess, layout_url: str
) -> None:
    alice = await new_user(patient.url)
    bob = await new_user(patient.url, open_dms=True)
    async with alice, bob:
        a, b = handle(alice), handle(bob)
        with pytest.raises(httpx.HTTPError):
            await raw_post(doomed.url, alice.token or "", b, "again", client_id="k-2")
        await eventually(lambda: died_at_the_crash_point(doomed), what="node A dying there")
        assert [m["text"] for m in await history(bob, a)] == ["again"]
        assert await history_or_none(alice, b) == []

        # No reconciler will come for a minute: the retry runs the sender's step.
        again = await alice.post_message(b, "again", client_id="k-2")
        assert await history(alice, b) == [again]
        assert await history(bob, a) == [again]
        assert outbox_empty(layout_url, b.lower())


@pytest.mark.parametrize("doomed", ["follow:after_first"], indirect=True)
async def test_a_follow_cut_after_the_followers_step_is_completed_once(
    doomed: DmhubProcess, healthy: DmhubProcess, layout_url: str
) -> None:
    alice, bob = await new_user(healthy.url), await new_user(healthy.url)
    async with alice, bob:
        a, b = handle(alice).lower(), handle(bob).lower()
        await cut_short(doomed, alice, "PUT", f"/api/following/{b}")
        # Step 1 decided it: alice follows bob. Bob's mirror is the reconciler's.
        assert await users_of(alice, "/api/following") == [handle(bob)]

        async def bob_has_a_follower() -> bool:
            return await users_of(bob, "/api/followers") == [handle(alice)]

        await eventually(bob_has_a_follower, timeout=15, what="the reconciler's follower mirror")
        assert member(layout_url, keys.followers(b), a)
        await eventually(lambda: outbox_empty(layout_url, a), what="the outbox entry done")
        await settled()
        assert await users_of(bob, "/api/followers") == [handle(alice)]
        assert (await bob.profile(handle(alice)))["relationship"]["followed_by"] is True


@pytest.mark.parametrize("doomed", ["follow:after_first"], indirect=True)
async def test_an_unfollow_cut_after_the_followers_step_is_completed(
    doomed: DmhubProcess, healthy: DmhubProcess, layout_url: str
) -> None:
    alice, bob = await new_user(healthy.url), await new_user(healthy.url)
    async with alice, bob:
        a, b = handle(alice).lower(), handle(bob).lower()
        await alice.follow(b)
        assert await users_of(bob, "/api/followers") == [handle(alice)]
        await cut_short(doomed, alice, "DELETE", f"/api/following/{b}")
        assert await users_of(alice, "/api/following") == []

        async def bob_has_no_follower() -> bool:
            return await users_of(bob, "/api/followers") == []

        await eventually(bob_has_no_follower, timeout=15, what="the reconciler's unfollow mirror")
        assert not member(layout_url, keys.followers(b), a)
        await eventually(lambda: outbox_empty(layout_url, a), what="the outbox entry done")


@pytest.mark.parametrize("doomed", ["block:after_first"], indirect=True)
async def test_a_block_cut_after_the_blockers_step_is_completed_once(
    doomed: DmhubProcess, healthy: DmhubProcess, layout_url: str
) -> None:
    alice, bob = await new_user(healthy.url), await new_user(healthy.url)
    async with alice, bob:
        a, b = handle(alice).lower(), handle(bob).lower()
        await bob.follow(a)  # the block must end it, on bob's side too
        await alice.follow(b)
        await cut_short(doomed, alice, "PUT", f"/api/blocks/{b}")
        assert await users_of(alice, "/api/blocks") == [handle(bob)]
        assert await users_of(alice, "/api/following") == []

        async def bobs_side_done() -> bool:
            return (
                member(layout_url, keys.blocked_by(b), a)
                and await users_of(bob, "/api/following") == []
            )

        await eventually(bobs_side_done, timeout=15, what="the reconciler's side of the block")
        assert await users_of(bob, "/api/followers") == []
        await eventually(lambda: outbox_empty(layout_url, a), what="the outbox entry done")
        await settled()
        relationship = (await bob.profile(handle(alice)))["relationship"]
        assert relationship["blocked_by"] is True
        assert relationship["can_message"] is False


@pytest.mark.parametrize("doomed", ["block:after_first"], indirect=True)
async def test_an_unblock_cut_after_the_blockers_step_is_completed(
    doomed: DmhubProcess, healthy: DmhubProcess, layout_url: str
) -> None:
    alice = await new_user(healthy.url)
    bob = await new_user(healthy.url, open_dms=True)
    async with alice, bob:
        a, b = handle(alice).lower(), handle(bob).lower()
        await alice.block(b)
        assert member(layout_url, keys.blocked_by(b), a)
        await cut_short(doomed, alice, "DELETE", f"/api/blocks/{b}")
        assert await users_of(alice, "/api/blocks") == []

        await eventually(
            lambda: not member(layout_url, keys.blocked_by(b), a),
            timeout=15,
            what="the reconciler's side of the unblock",
        )
        await eventually(lambda: outbox_empty(layout_url, a), what="the outbox entry done")
        relationship = (await bob.profile(handle(alice)))["relationship"]
        assert relationship["blocked_by"] is False
        # Alice may write to bob (open DMs) again: the block is gone on both sides.
        await alice.post_message(b, "hello again")


@pytest.mark.parametrize("doomed", ["read:after_first"], indirect=True)
async def test_a_read_receipt_cut_after_the_readers_step_is_delivered_once(
    doomed: DmhubProcess, healthy: DmhubProcess, layout_url: str
) -> None:
    alice, bob = await new_user(healthy.url), await new_user(healthy.url)
    async with alice, bob:
        a, b = handle(alice).lower(), handle(bob).lower()
        await bob.follow(a)  # a conversation, not a request: its receipts go out
        sent = await alice.post_message(b, "read me")
        async with alice.socket() as alice_socket:
            body = {"up_to": sent["id"]}
            await cut_short(doomed, bob, "POST", f"/api/conversations/{a}/read", body)
            receipts = [await next_receipt(alice_socket, 15)]
            assert receipts[0]["reader"] == handle(bob) and receipts[0]["up_to"] == sent["id"]
            await eventually(lambda: outbox_empty(layout_url, b), what="the outbox entry done")
            # Nothing more: the reconciler delivered it once.
            with contextlib.suppress(TimeoutError):  # asyncio.wait_for's
                receipts.append(await next_receipt(alice_socket, SETTLE_S))
            assert len(receipts) == 1, receipts
        conversations = (await bob.conversations())["conversations"]
        assert [c["unread"] for c in conversations] == [0]
