"""dmhub on a three-master cluster while both users' slots migrate under sends:
nothing acked is lost or repeated, in the views or on the sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from chat import metrics
from chat.client import ClientError
from chat.store import keys
from chat.store.slots import key_slot
from tests.cluster_support import ValkeyCluster, handles_on_shards, move_slot, slot_owner
from tests.faults import history, messages_until
from tests.support import new_user, running_server, settings_for

RETRY_PAUSE_S = 0.05


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] if "id" in item else item["message"]["id"] for item in items]


@pytest.mark.timeout(90)
async def test_slots_migrating_under_sends_lose_and_repeat_nothing(
    cluster_url: str, valkey_cluster: ValkeyCluster, tmp_path: Path
) -> None:
    # The messages limit would refuse a sender that never pauses (429): off here.
    settings = settings_for(cluster_url, tmp_path, limit_messages_per_min=0)
    async with running_server(settings) as srv:
        a, b = handles_on_shards(2)
        ann = await new_user(srv.url, a, open_dms=True)
        bob = await new_user(srv.url, b, open_dms=True)
        acked: list[dict[str, Any]] = []
        unavailable = 0
        sending = True

        async def send_until_acked(n: int) -> None:
            nonlocal unavailable
            while True:
                try:
                    acked.append(await ann.post_message(b, f"m{n}", client_id=f"c{n}"))
                    return
                except ClientError as exc:
                    # Mid-migration a step may be refused for a moment; the
                    # retry with the same client_id is the same send.
                    assert exc.status == 503, exc
                    unavailable += 1
                    await asyncio.sleep(RETRY_PAUSE_S)

        async def produce() -> None:
            n = 0
            while sending or n < 20:
                n += 1
                await send_until_acked(n)

        async with ann.socket() as ann_other, bob.socket() as bob_sock:
            losses_before = metrics.PUBSUB_RECONNECTS._value.get()
            producer = asyncio.create_task(produce())
            moves: list[tuple[int, Any]] = []
            try:
                await asyncio.sleep(0.3)
                for lc in (b, a):  # the recipient's slot, then the sender's
                    slot = key_slot(keys.user(lc))
                    home = slot_owner(valkey_cluster, slot)
                    away = next(m for m in valkey_cluster.masters if m is not home)
                    await asyncio.to_thread(move_slot, valkey_cluster, slot, away)
                    moves.append((slot, home))
                    await asyncio.sleep(0.3)
            finally:
                for slot, home in reversed(moves):
                    await asyncio.to_thread(move_slot, valkey_cluster, slot, home)
                sending = False
                await asyncio.wait_for(producer, 30)
            sentinel = await ann.post_message(b, "after the moves")
            expected = [*ids(acked), sentinel["id"]]
            print(f"{len(acked)} sends acked, {unavailable} answered 503 and retried")
            assert len(set(expected)) == len(expected)
            # Each move took a subscribed channel away from its old master.
            assert metrics.PUBSUB_RECONNECTS._value.get() - losses_before >= len(moves) * 2
            # Every acked message reached both sockets once, in order...
            assert ids(await messages_until(bob_sock, sentinel["id"], timeout=20)) == expected
            assert ids(await messages_until(ann_other, sentinel["id"], timeout=20)) == expected
        # ...and is in both views, once.
        assert ids(await history(bob, a)) == expected
        assert ids(await history(ann, b)) == expected
