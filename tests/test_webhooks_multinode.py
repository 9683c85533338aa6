"""Two `dmhub serve` processes on one Valkey share the webhooks through leases:
each event goes out once, and killing the holder loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.client import Client
from chat.store import keys
from tests.support import DmhubProcess, new_user, redis_client, two_nodes
from tests.webhook_receiver import Delivery, receiver

ENV = {
    "DMHUB_WEBHOOK_ALLOW_PRIVATE": "1",
    "DMHUB_WEBHOOK_LEASE_S": "1",
    "DMHUB_WEBHOOK_POLL_S": "0.2",
    "DMHUB_WEBHOOK_BACKOFF_FIRST_S": "0.05",
    "DMHUB_WEBHOOK_BACKOFF_MAX_S": "0.2",
    "DMHUB_WEBHOOK_TIMEOUT_S": "2",
}


@pytest.fixture
def nodes(redis_url: str, tmp_path: Path) -> Iterator[tuple[DmhubProcess, DmhubProcess]]:
    env = {"REDIS_URL": redis_url, "DMHUB_DATA_DIR": str(tmp_path), **ENV}
    with two_nodes(env) as pair:
        yield pair


def first_arrivals(deliveries: list[Delivery]) -> list[str]:
    seen: list[str] = []
    for delivery in deliveries:
        if delivery.id not in seen:
            seen.append(delivery.id)
    return seen


def message_id(delivery: Delivery) -> str:
    message: dict[str, str] = delivery.json["event"]["message"]
    return message["id"]


async def test_each_event_once_and_a_killed_lease_holder_loses_nothing(
    nodes: tuple[DmhubProcess, DmhubProcess], redis_url: str
) -> None:
    node_a, node_b = nodes
    alice = await new_user(node_a.url)
    bob = await new_user(node_a.url)
    assert alice.user and bob.user
    await bob.follow(alice.user["handle"])
    on_b = Client(node_b.url, token=alice.token)
    async with receiver() as hooks:
        created = await bob.request("POST", "/api/webhooks", {"url": hooks.url})
        hook_id = created["webhook"]["id"]
        sent = []
        for i in range(10):  # from both nodes
            sender = alice if i % 2 else on_b
            sent.append((await sender.post_message(bob.user["handle"], f"a{i}"))["id"])
        await hooks.wait_for(lambda: len(hooks.delivered) >= 10)
        await asyncio.sleep(0.5)  # time for a duplicate to show up, if there were one
        ids = [d.id for d in hooks.requests]
        assert len(ids) == len(set(ids)) == 10, "each event exactly once"
        assert [message_id(d) for d in hooks.delivered] == sent

        lease = redis_client(redis_url, decode_responses=True)
        holder = lease.get(keys.webhook_lease(bob.user["handle"].lower(), hook_id))
        assert holder is not None
        pid = int(holder.split("-")[0])
        assert node_a.process and node_b.process
        victim, survivor = (node_a, node_b) if node_a.process.pid == pid else (node_b, node_a)
        assert survivor.process and survivor.process.pid != pid
        victim.kill()  # SIGKILL: no release, the lease has to expire

        writer = Client(survivor.url, token=alice.token)
        for i in range(10):
            sent.append((await writer.post_message(bob.user["handle"], f"b{i}"))["id"])
        await hooks.wait_for(lambda: len({d.id for d in hooks.delivered}) >= 20, timeout=15)
        in_order = [message_id(d) for d in hooks.delivered]
        unique = list(dict.fromkeys(in_order))
        assert unique == sent, "no loss, in order"
        assert first_arrivals(hooks.delivered) == sorted(
            first_arrivals(hooks.delivered), key=lambda c: tuple(map(int, c.split("-")))
        )
        new_holder = lease.get(keys.webhook_lease(bob.user["handle"].lower(), hook_id))
        assert new_holder is not None and int(new_holder.split("-")[0]) == survivor.process.pid
        lease.close()
    for client in (alice, bob, on_b, writer):
        await client.aclose()
