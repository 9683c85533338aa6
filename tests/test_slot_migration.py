"""Slots move between masters under load: nothing lost, nothing doubled, no socket dropped.

Two `dmhub serve` processes on a three-master Valkey Cluster carry steady sends
between pairs of users (the pairs' users on different shards). Meanwhile the
slots of half of the users (senders and recipients alike: every key of a user,
their outbox and their pub/sub channel included, is in their slot) move to
another master with Valkey's atomic slot migration (`CLUSTER MIGRATESLOTS`,
Valkey 9), twice. The hot lane meets MOVED (and TRYAGAIN while a slot
finishes), the pub/sub connection gets `sunsubscribe` for the moving channels
and resubscribes on the new owner, and the sockets of those users resync by
cursor inside dmhub. Afterwards every acked message is in both histories
exactly once and in causal order, and every socket received every message
addressed to it once, in order, without being dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from chat.store import keys
from chat.store.slots import key_slot
from tests.cluster_support import (
    ClusterNode,
    ValkeyCluster,
    slot_owner,
    slot_owner_seen_by,
    valkey_cluster,
)
from tests.faults import check_delivery, load_env, steady_load
from tests.support import DmhubProcess

PAIRS = 6
MOVING_PAIRS = 3  # both users of each: senders' and recipients' slots move
PHASE_S = 3.0
MIGRATION_TIMEOUT_S = 20.0
POLL_S = 0.05


def migrate_slot(cluster: ValkeyCluster, slot: int, target: ClusterNode) -> None:
    """Move `slot` to `target` atomically (the source streams the slot's keys
    and then its writes, and hands the slot over), and wait until every master
    agrees on the new owner."""
    source = slot_owner(cluster, slot)
    with contextlib.closing(source.client()) as client:
        client.execute_command(
            "CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", slot, slot, "NODE", target.node_id
        )
        deadline = time.monotonic() + MIGRATION_TIMEOUT_S
        while True:
            jobs = [
                job
                for job in client.execute_command("CLUSTER", "GETSLOTMIGRATIONS")
                if job["slot_ranges"] == f"{slot}-{slot}" and job["operation"] == "EXPORT"
            ]
            states = {job["state"] for job in jobs}
            assert "failed" not in states and "cancelled" not in states, jobs
            agreed = all(slot_owner_seen_by(n, slot) == target.port for n in cluster.masters)
            if agreed and states <= {"success"}:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"slot {slot} did not move to {target.address}: {jobs}")
            time.sleep(POLL_S)


async def pubsub_reconnects(nodes: list[DmhubProcess]) -> float:
    """dmhub_pubsub_reconnects_total summed over the nodes: each channel a slot
    move took away from its master and that was subscribed again counts."""
    total = 0.0
    async with httpx.AsyncClient(timeout=10) as http:
        for node in nodes:
            text = (await http.get(node.url + "/metrics")).text
            for line in text.splitlines():
                if line.startswith("dmhub_pubsub_reconnects_total "):
                    total += float(line.split()[1])
    return total


def elsewhere(cluster: ValkeyCluster, slot: int) -> ClusterNode:
    """The next master after the slot's owner, round the three."""
    owner = slot_owner(cluster, slot)
    return cluster.masters[(cluster.masters.index(owner) + 1) % len(cluster.masters)]


@pytest.mark.timeout(120)
async def test_slots_moving_under_load_lose_and_double_nothing(
    tmp_path: Path, record_figures: Callable[[str], None]
) -> None:
    with valkey_cluster(tmp_path / "cluster") as cluster:
        async with steady_load(load_env(cluster.url, tmp_path), PAIRS) as load:
            nodes, figures = load.nodes, load.figures
            moving = load.people[: 2 * MOVING_PAIRS]
            slots = sorted({key_slot(keys.user(p.handle.lower())) for p in moving})
            await asyncio.sleep(PHASE_S)
            resubscribed_before = await pubsub_reconnects(nodes)

            moved = 0
            for _ in range(2):  # away, and on again: every slot changes owner twice
                acked_before = figures.acked
                for slot in slots:
                    await asyncio.to_thread(migrate_slot, cluster, slot, elsewhere(cluster, slot))
                    moved += 1
                await asyncio.sleep(PHASE_S)
                assert figures.acked > acked_before, "no send was acked after the slots moved"
            load_s = await load.finish()

            await check_delivery(load.people, nodes[0].url)
            # The moves happened under dmhub, not under its clients: no socket was
            # dropped, while the nodes did lose the moving channels and take them
            # up again on their new masters (every node has sockets of every user).
            assert figures.reconnects == 0, f"{figures.reconnects} sockets had to reconnect"
            resubscribed = await pubsub_reconnects(nodes) - resubscribed_before
            assert resubscribed >= len(nodes) * moved, f"{resubscribed} channels resubscribed"
            record_figures(
                f"slot migration: {moved} slot moves of {len(moving)} users' slots under "
                f"load, {figures.acked} messages acked, {figures.retried_sends} sends "
                f"retried, {resubscribed:.0f} channels resubscribed, no socket dropped; "
                f"every ack in both histories once; {load_s:.0f}s"
            )
