"""Two dmhub processes on one Valkey: fan-out, permission changes and logout across nodes.

Both nodes are real `python -m chat serve` processes with the same REDIS_URL;
nothing is shared between them but Valkey.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chat.client import Client, ClientError, Socket
from tests.faults import history, messages_until, next_message, raw_post
from tests.support import PASSWORD, DmhubProcess, new_user, two_nodes


@pytest.fixture(scope="module")
def nodes(
    layout_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DmhubProcess, DmhubProcess]]:
    """Node A and node B. Each test makes its own users, so no flush is needed."""
    logs = tmp_path_factory.mktemp("multinode")
    env = {
        "REDIS_URL": layout_url,
        "DMHUB_DATA_DIR": str(logs),
        "DMHUB_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    with two_nodes(env) as pair:
        yield pair


ADMIN_TOKEN = "multinode-admin"


def ids(frames: list[dict[str, Any]]) -> list[str]:
    return [f["message"]["id"] for f in frames]


async def on(node: DmhubProcess, client: Client) -> Client:
    """The same account (same token) talking to another node."""
    other = Client(node.url, token=client.token)
    other.user = client.user
    return other


async def test_a_message_sent_on_one_node_reaches_every_socket_on_both(
    nodes: tuple[DmhubProcess, DmhubProcess],
) -> None:
    """Sends from several of alice's sockets on node A. Every socket of bob, on both
    nodes, and every *other* socket of alice, on both nodes, gets each message once,
    in order; a sending socket gets its ack instead. (Several sockets per node, so
    that sockets on the two nodes line up with each other however many sockets
    each process has seen before.)"""
    node_a, node_b = nodes
    alice = await new_user(node_a.url)
    bob = await new_user(node_a.url)
    assert alice.user and bob.user and alice.token and bob.token
    a_h, b_h = alice.user["handle"], bob.user["handle"]
    await bob.follow(a_h)

    alice_a = [Socket(node_a.url, alice.token) for _ in range(3)]
    alice_b = [Socket(node_b.url, alice.token) for _ in range(3)]
    bob_a = [Socket(node_a.url, bob.token) for _ in range(2)]
    bob_b = [Socket(node_b.url, bob.token) for _ in range(2)]
    # Bob may only open a conversation socket on alice once she has written to him.
    bob_peer_on_b = Socket(node_b.url, bob.token, peer=a_h, since="0-0")
    sockets: list[Socket] = []
    for pair in zip(alice_a, alice_b, strict=True):
        for sock in pair:
            await sock.connect()
            sockets.append(sock)
    for sock in (*bob_a, *bob_b):
        await sock.connect()
        sockets.append(sock)
    try:
        sent = []
        for i, sock in enumerate(alice_a):
            message = await sock.send(b_h, f"from node A, socket {i}")
            assert message["from"] == a_h and message["to"] == b_h
            sent.append(message)
        # Replays bob's stream from the start, filtered to alice.
        await bob_peer_on_b.connect()
        sockets.append(bob_peer_on_b)

        for sock in (*bob_a, *bob_b, bob_peer_on_b):
            frames = await messages_until(sock, sent[-1]["id"])
            assert [f["message"] for f in frames] == sent
            assert {f["folder"] for f in frames} == {"inbox"}
        # The sender's other sockets on node B get a copy (to = the peer).
        for sock in alice_b:
            frames = await messages_until(sock, sent[-1]["id"])
            assert [f["message"] for f in frames] == sent

        # A reply from bob on node B closes the round: each of alice's sockets on
        # node A saw the others' sends and the reply, never its own send.
        bob_on_b = await on(node_b, bob)
        reply = await bob_on_b.post_message(a_h, "reply")
        await bob_on_b.aclose()
        for i, sock in enumerate(alice_a):
            expected = [m["id"] for j, m in enumerate(sent) if j != i] + [reply["id"]]
            assert ids(await messages_until(sock, reply["id"])) == expected, f"socket {i}"
        for sock in alice_b:
            assert ids(await messages_until(sock, reply["id"])) == [reply["id"]]
        for sock in (*bob_a, *bob_b, bob_peer_on_b):
            assert ids(await messages_until(sock, reply["id"])) == [reply["id"]]

        stored = await history(await on(node_b, alice), b_h)
        assert [m["id"] for m in stored] == [*(m["id"] for m in sent), reply["id"]]
    finally:
        for sock in sockets:
            await sock.close()
        await alice.aclose()
        await bob.aclose()


async def test_a_permission_change_on_node_b_holds_for_the_next_send_on_node_a(
    nodes: tuple[DmhubProcess, DmhubProcess],
) -> None:
    node_a, node_b = nodes
    alice = await new_user(node_a.url)
    bob = await new_user(node_a.url)
    assert alice.user and bob.user and alice.token and bob.token
    a_h, b_h = alice.user["handle"], bob.user["handle"]
    bob_b = await on(node_b, bob)

    async with alice.socket() as alice_ws:

        async def refused(text: str) -> None:
            """Both transports on node A say not_allowed, and nothing is stored."""
            with pytest.raises(ClientError) as ws_error:
                await alice_ws.send(b_h, text, attempts=1)
            assert ws_error.value.code == "not_allowed"
            response = await raw_post(node_a.url, alice.token or "", b_h, text)
            assert response.status_code == 403, response.text
            assert response.json()["error"]["code"] == "not_allowed"

        async def allowed(text: str) -> dict[str, Any]:
            message = await alice_ws.send(b_h, text, attempts=1)
            assert (await alice.post_message(b_h, text + " (http)"))["text"] == text + " (http)"
            return message

        await refused("nobody let me in")

        # Follow on B, then unfollow on B.
        await bob_b.follow(a_h)
        await allowed("bob follows me")
        await bob_b.unfollow(a_h)
        await refused("bob unfollowed me")

        # Open DMs on B, then close them on B.
        await bob_b.update_me(open_dms=True)
        await allowed("bob opened his DMs")
        await bob_b.update_me(open_dms=False)
        await refused("bob closed his DMs")

        # Follow again on B, then a block on B beats the follow.
        await bob_b.follow(a_h)
        await allowed("bob follows me again")
        await bob_b.block(a_h)
        await refused("bob blocked me")

        # And the ?peer= handshake on node A follows the same state.
        with pytest.raises(ClientError) as handshake:
            await alice.socket(peer=b_h).connect()
        assert handshake.value.status == 403 and handshake.value.code == "not_allowed"
        await bob_b.unblock(a_h)
        # The block ended bob's follow; unblocking does not bring it back.
        await refused("bob unblocked me but no longer follows me")
        await bob_b.follow(a_h)
        async with alice.socket(peer=b_h) as peer_socket:
            assert peer_socket.ready and peer_socket.ready["peer"]["handle"] == b_h
            await peer_socket.send(b_h, "unblocked")

        texts = [m["text"] for m in await history(bob_b, a_h)]
        assert texts == [
            "bob follows me",
            "bob follows me (http)",
            "bob opened his DMs",
            "bob opened his DMs (http)",
            "bob follows me again",
            "bob follows me again (http)",
            "unblocked",
        ]
    await bob_b.aclose()
    await alice.aclose()
    await bob.aclose()


async def test_logout_on_node_a_closes_that_sessions_sockets_on_node_b_with_4401(
    nodes: tuple[DmhubProcess, DmhubProcess],
) -> None:
    node_a, node_b = nodes
    alice = await new_user(node_a.url)
    bob = await new_user(node_a.url)
    assert alice.user and bob.user and alice.token
    a_h, b_h = alice.user["handle"], bob.user["handle"]
    await bob.follow(a_h)
    await alice.follow(b_h)

    # A second session of alice's, signed in on node B.
    second = Client(node_b.url)
    await second.sign_in(a_h, PASSWORD)
    assert second.token and second.token != alice.token
    ended = alice.token

    on_b = Socket(node_b.url, ended)
    on_a = Socket(node_a.url, ended)
    peer_on_b = Socket(node_b.url, ended, peer=b_h)
    other_session_on_b = Socket(node_b.url, second.token)
    sockets = [on_b, on_a, peer_on_b, other_session_on_b]
    for sock in sockets:
        await sock.connect()
    try:
        await alice.sign_out()  # DELETE /api/sessions/current on node A

        for sock in (on_b, on_a, peer_on_b):
            assert await sock.wait_closed(10) == 4401

        # The token is dead at once on both nodes, over HTTP and WebSocket.
        async with httpx.AsyncClient(timeout=5) as http:
            for node in (node_a, node_b):
                response = await http.get(
                    node.url + "/api/me", headers={"Authorization": f"Bearer {ended}"}
                )
                assert response.status_code == 401, response.text
                assert response.json()["error"]["code"] == "unauthenticated"
        for node in (node_a, node_b):
            with pytest.raises(ClientError) as refused:
                await Socket(node.url, ended).connect()
            assert refused.value.status == 401

        # The other session is untouched: its socket on B still gets messages.
        assert other_session_on_b.close_code is None
        reply = await bob.post_message(a_h, "still signed in elsewhere")
        assert (await next_message(other_session_on_b))["message"]["id"] == reply["id"]
        assert (await second.me())["user"]["handle"] == a_h
    finally:
        for sock in sockets:
            await sock.close()
        await second.aclose()
        await alice.aclose()
        await bob.aclose()


async def test_account_controls_on_node_a_close_sockets_on_node_b_with_4401(
    nodes: tuple[DmhubProcess, DmhubProcess],
) -> None:
    """A password change ends the other sessions, sign-out-everywhere ends them all,
    and deleting the account ends it: on every node."""
    node_a, node_b = nodes
    alice = await new_user(node_a.url)
    assert alice.user
    handle = alice.user["handle"]

    async def session_on_b() -> Client:
        other = Client(node_b.url)
        await other.sign_in(handle, password)
        return other

    password = PASSWORD
    laptop = await session_on_b()
    async with laptop.socket() as laptop_ws, (await on(node_b, alice)).socket() as own_ws:
        await alice.change_password(password, "second password")
        password = "second password"
        assert await laptop_ws.wait_closed(5) == 4401
        await own_ws.ping("still here")
        assert (await own_ws.next_event())["type"] == "pong"

    phone = await session_on_b()
    async with phone.socket() as phone_ws, (await on(node_b, alice)).socket() as own_ws:
        await alice.sign_out_everywhere()
        assert await phone_ws.wait_closed(5) == 4401
        assert await own_ws.wait_closed(5) == 4401

    tablet = await session_on_b()
    async with tablet.socket() as tablet_ws:
        await (await on(node_a, tablet)).delete_account(password)
        assert await tablet_ws.wait_closed(5) == 4401
    for client in (alice, laptop, phone, tablet):
        await client.aclose()


async def test_a_suspension_on_node_a_closes_every_socket_on_node_b_with_4401(
    nodes: tuple[DmhubProcess, DmhubProcess],
) -> None:
    node_a, node_b = nodes
    mallory = await new_user(node_b.url)
    assert mallory.user
    phone = Client(node_b.url)
    await phone.sign_in(mallory.user["handle"], PASSWORD)
    sockets = [mallory.socket(), phone.socket(), (await on(node_a, mallory)).socket()]
    for sock in sockets:
        await sock.connect()
    async with httpx.AsyncClient() as http:
        answer = await http.put(
            f"{node_a.url}/api/admin/suspensions/{mallory.user['handle']}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert answer.status_code == 200
    for sock in sockets:
        assert await sock.wait_closed(5) == 4401
    with pytest.raises(ClientError) as raised:
        await Client(node_b.url).sign_in(mallory.user["handle"], PASSWORD)
    assert raised.value.code == "suspended"
    await mallory.aclose()
    await phone.aclose()
