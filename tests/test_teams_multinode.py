"""Teams across two dmhub processes on one Valkey: two agents and a customer on
different nodes; a removal or a logout on one node ends team sockets on the other."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from chat.client import Client, ClientError, Socket
from tests.support import DmhubProcess, handle, new_user, next_of, two_nodes


@pytest.fixture(scope="module")
def nodes(
    layout_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DmhubProcess, DmhubProcess]]:
    logs = tmp_path_factory.mktemp("teams-multinode")
    with two_nodes({"REDIS_URL": layout_url, "DMHUB_DATA_DIR": str(logs)}) as pair:
        yield pair


def token(client: Client) -> str:
    assert client.token
    return client.token


async def a_team(node: DmhubProcess) -> tuple[Client, Client, Client, Client]:
    shop = await new_user(node.url, open_dms=True, kind="business")
    ann, bob, customer = [await new_user(node.url) for _ in range(3)]
    for agent in (ann, bob):
        await shop.request("PUT", f"/api/team/{handle(agent)}")
    await customer.post_message(handle(shop), "help")
    return shop, ann, bob, customer


async def test_two_agents_and_a_customer_on_two_nodes(
    nodes: tuple[DmhubProcess, DmhubProcess],
) -> None:
    node_a, node_b = nodes
    shop, ann, bob, customer = await a_team(node_a)
    b, c = handle(shop), handle(customer)
    async with (
        Socket(node_a.url, token(ann), act_as=b) as ann_sock,
        Socket(node_b.url, token(bob), act_as=b) as bob_sock,
        Socket(node_b.url, token(customer)) as customer_sock,
    ):
        sent = await ann_sock.send(c, "Looking into it")
        assert sent["agent"] == handle(ann)
        assert (await next_of(bob_sock, "message"))["message"] == sent
        got = (await next_of(customer_sock, "message"))["message"]
        assert got["from"] == b and "agent" not in got

        started = time.perf_counter()
        await ann.request(
            "PATCH", f"/api/conversations/{c}", {"assignee": handle(bob)}, **{"as": b}
        )
        frame = await next_of(bob_sock, "conversation")
        assert frame["assignee"] == handle(bob) and frame["by"] == handle(ann)
        assert time.perf_counter() - started < 5

        await bob.request("POST", f"/api/conversations/{c}/notes", {"text": "mine"}, **{"as": b})
        assert (await next_of(ann_sock, "note"))["note"]["text"] == "mine"
        await bob.request("PATCH", f"/api/conversations/{c}", {"status": "resolved"}, **{"as": b})
        assert (await next_of(ann_sock, "conversation"))["status"] == "resolved"

        # The customer writes on node B: both agents see the message and the reopening.
        customer_b = Client(node_b.url, token=token(customer))
        await customer_b.post_message(b, "still broken")
        await customer_b.aclose()
        for sock in (ann_sock, bob_sock):
            assert (await next_of(sock, "message"))["message"]["text"] == "still broken"
            assert (await next_of(sock, "conversation"))["status"] == "open"
        # The customer heard nothing but messages.
        await ann_sock.send(c, "fixed")
        while True:
            event = await customer_sock.next_event(10)
            assert event["type"] == "message", event
            if event["message"]["text"] == "fixed":
                break


async def test_a_removed_agent_loses_access_at_once_on_the_other_node(
    nodes: tuple[DmhubProcess, DmhubProcess],
) -> None:
    node_a, node_b = nodes
    shop, ann, bob, customer = await a_team(node_a)
    b, c = handle(shop), handle(customer)
    ann_team = Socket(node_b.url, token(ann), act_as=b)
    ann_own = Socket(node_b.url, token(ann))
    bob_team = Socket(node_b.url, token(bob), act_as=b)
    for sock in (ann_team, ann_own, bob_team):
        await sock.connect()
    try:
        await shop.request("DELETE", f"/api/team/{handle(ann)}")  # on node A
        assert await ann_team.wait_closed(10) == 4401
        # Her own socket and her colleague's team socket stay open.
        await ann_own.ping("still here")
        assert (await next_of(ann_own, "pong"))["nonce"] == "still here"
        await bob_team.ping(1)
        assert (await next_of(bob_team, "pong"))["nonce"] == 1
        ann_b = Client(node_b.url, token=token(ann))
        with pytest.raises(ClientError) as refused:
            await ann_b.request("GET", f"/api/conversations/{c}/messages", **{"as": b})
        assert (refused.value.status, refused.value.code) == (403, "not_allowed")
        with pytest.raises(ClientError) as refused:
            await Socket(node_a.url, token(ann), act_as=b).connect()
        assert refused.value.status == 403
        await ann_b.aclose()
    finally:
        for sock in (ann_team, ann_own, bob_team):
            await sock.close()


async def test_an_agent_signing_out_closes_its_team_sockets_on_every_node(
    nodes: tuple[DmhubProcess, DmhubProcess],
) -> None:
    node_a, node_b = nodes
    shop, ann, _, _ = await a_team(node_a)
    team_sock = Socket(node_b.url, token(ann), act_as=handle(shop))
    await team_sock.connect()
    try:
        await ann.sign_out()  # on node A
        assert await team_sock.wait_closed(10) == 4401
    finally:
        await team_sock.close()
