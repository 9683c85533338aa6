"""The fault test: steady load on two nodes while one node, Valkey, then the other fail.

Two dmhub processes share one Valkey (the embedded default: its AOF with
`appendfsync always`). Pairs of users who follow each other write to each
other without pause over three sockets each (one that sends, one listening on
each node). Meanwhile:

1. node A gets SIGKILL, and is started again;
2. Valkey gets SIGKILL, and is started again on the same data folder;
3. node B gets SIGTERM (drain: acks out, sockets closed 1012).

Clients behave as the contract asks: a socket that drops reconnects (to
whichever node answers) with `?since=` its last cursor; a send that fails
(`unavailable`, or the socket dropped before the ack) is retried with the same
`client_id` until it is acked. Afterwards:

- every acknowledged message is in both participants' histories exactly once,
  and histories are in causal order (each sender's messages in the order sent,
  and after every message its sender had received before sending);
- every socket received every message addressed to it, live or by replay,
  once each, in order.

The figures (messages acked, retried, replayed) are recorded (`record_figures`).
Every process here is started by the test and ended by its PID.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from chat.store.embedded import EmbeddedValkey
from tests.cluster_support import FAILOVER_S, promoted, valkey_cluster
from tests.faults import check_delivery, eventually, load_env, steady_load
from tests.support import DmhubProcess

PAIRS = 8
PHASE_S = 3.5  # steady load between faults


async def under_load_three_faults(
    env: dict[str, str], second_fault: Callable[[], Awaitable[None]], what: str
) -> str:
    """Two nodes under steady load: SIGKILL node A (and restart it),
    `second_fault` (the storage), SIGTERM node B; then every check. Returns the
    figures as a sentence."""
    async with steady_load(env, PAIRS) as load:
        node_a, node_b = load.nodes
        figures = load.figures
        await asyncio.sleep(PHASE_S)

        # 1. SIGKILL node A; its sockets move to B. Then A comes back on its port.
        node_a.kill()
        await asyncio.sleep(PHASE_S / 2)
        node_a = load.nodes[0] = await asyncio.to_thread(DmhubProcess(env, node_a.port).start)
        await asyncio.sleep(PHASE_S)

        # 2. The storage fails; both nodes answer `unavailable` (for its keys) until it is back.
        acked_before = figures.acked
        await second_fault()
        await asyncio.sleep(PHASE_S)
        assert figures.acked > acked_before, f"no send succeeded after {what}"

        # 3. SIGTERM node B: it drains (acks go out, sockets get 1012) and exits 0.
        code = await asyncio.to_thread(node_b.terminate)
        assert code == 0, node_b.log()
        await asyncio.sleep(PHASE_S)
        load_s = await load.finish()

        await check_delivery(load.people, node_a.url)
        sockets = sum(len(p.devices) for p in load.people)
        return (
            f"{sockets} sockets, 2 nodes, {what}; {figures.acked} messages acked, "
            f"{figures.retried_sends} sends retried ({figures.attempts} attempts in all), "
            f"{figures.reconnects} reconnects, {figures.replayed} messages replayed "
            f"by cursor; every ack in both histories once; load and faults {load_s:.0f}s"
        )


@pytest.mark.timeout(120)
async def test_kill_9_a_node_and_valkey_then_sigterm_the_other_under_load(
    own_valkey: EmbeddedValkey, tmp_path: Path, record_figures: Callable[[str], None]
) -> None:
    async def kill_valkey() -> None:
        # Back on the same data folder: its AOF (`always`) has every acked write.
        own_valkey.kill()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(own_valkey.start)

    figures = await under_load_three_faults(
        load_env(own_valkey.url, tmp_path), kill_valkey, "Valkey killed and restarted"
    )
    record_figures(f"fault test: {figures}")


@pytest.mark.timeout(150)
async def test_kill_9_a_node_and_a_master_then_sigterm_the_other_on_a_cluster(
    tmp_path: Path, record_figures: Callable[[str], None]
) -> None:
    """The same on a three-master cluster with a replica each. The storage
    fault is a kill -9 of a master: its replica takes over (failover after the
    node timeout), the lane and the pub/sub follow it, and the senders whose
    keys are on that shard retry until it answers. Acks wait for a replica
    (DMHUB_ACK_REPLICAS=1), so the promoted replica has every acked write: the
    check that no acked message is lost is the documented outcome (without the
    WAIT, asynchronous replication may lose the last acks)."""
    with valkey_cluster(tmp_path / "cluster", replicas=True) as cluster:
        victim = cluster.masters[0]
        heir = cluster.replica_of(victim)

        async def kill_a_master() -> None:
            victim.kill()
            await eventually(lambda: promoted(heir), FAILOVER_S, "the replica to take over")

        env = {**load_env(cluster.url, tmp_path), "DMHUB_ACK_REPLICAS": "1"}
        figures = await under_load_three_faults(
            env, kill_a_master, "a master killed, its replica promoted"
        )
    record_figures(f"fault test on a cluster: {figures}")
