"""Acks that wait for replicas (DMHUB_ACK_REPLICAS): WAIT before the ack.

Valkey replicates asynchronously: a master answers a write before any replica
has it, so a failover right after an ack can lose that write (docs/architecture.md,
"What a failover can lose"). With DMHUB_ACK_REPLICAS = n > 0, a send is acked
only after `WAIT n timeout` on the node of each slot it wrote, over the very
connection that carried the writes (the lane's one connection per node), since
WAIT covers exactly what its own connection wrote before it. Concurrent sends on
one node share one WAIT (chat/store/lane.py). Every other acknowledged write
waits too, through one hook around the routes (chat/transport/acked.py) that
marks and waits on each master the request wrote (`confirm_slots`).

When fewer than n replicas confirm within the timeout, the ack still goes out,
counted in `dmhub_ack_replica_waits_total{outcome="short"}` and logged. The
message is on the master, already in the recipient's stream and published to
their sockets: refusing the send would not undo it, only make the client retry
into the same stored message; and one replica down would stop every send of its
shard, when a replica is there to add availability, not take it away. A lost
connection while waiting is different: the write's fate is unknown, so the send
fails as `unavailable` and a retry with the same client_id is deduplicated.

A node without enough replicas online (a single Valkey without any, the embedded
one) is found by INFO, which does not block, before the first WAIT, and again
every REPLICA_RECHECK_S: its acks go out at once, counted as short; they never
wait for a replica that is not there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection

from chat.metrics import ACK_REPLICA_WAITS
from chat.store import failures, keys
from chat.store.cluster_lane import ClusterLane
from chat.store.lane import REPLICA_RECHECK_S, Lane, online_replicas
from chat.store.slots import key_slot

log = logging.getLogger("dmhub.store")

# The mark only has to outlive its WAIT (at most MAX_ACK_REPLICA_TIMEOUT_MS).
ACK_MARK_TTL_MS = 5_000


class ReplicaAcks:
    def __init__(self, lane: Lane | ClusterLane, replicas: int, timeout_ms: int) -> None:
        if replicas < 1 or timeout_ms < 1:
            raise ValueError("ReplicaAcks needs at least one replica and a timeout")
        self.lane = lane
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self._warned_at = -1e9

    @staticmethod
    def started() -> float:
        """Taken before an operation's first write; `confirm` checks against it."""
        return time.monotonic()

    async def confirm(self, since: float, *route_keys: str) -> bool:
        """WAIT on the node of each key (at once); True when every node had
        enough replicas confirm. Raises the lane's ConnectionError as a send does."""
        counts = await asyncio.gather(
            *(
                self.lane.wait_replicas(key, self.replicas, self.timeout_ms, since=since)
                for key in route_keys
            )
        )
        return self._counted(min(counts))

    def _counted(self, count: int) -> bool:
        confirmed = count >= self.replicas
        ACK_REPLICA_WAITS.labels("confirmed" if confirmed else "short").inc()
        if not confirmed and time.monotonic() - self._warned_at > REPLICA_RECHECK_S:
            self._warned_at = time.monotonic()
            log.warning(
                "an ack went out with %d of %d replicas confirming (DMHUB_ACK_REPLICAS): "
                "a failover now could lose it; see dmhub_ack_replica_waits_total",
                count,
                self.replicas,
            )
        return confirmed

    async def confirm_slots(self, slots: Collection[int], *, idempotent: bool = True) -> bool:
        """`confirm` for an operation whose writes went over other connections
        than the lane's (the cold path: every write but a send), in `slots`
        (chat/store/written.py; on one Valkey its one node, whatever `slots`).
        A master replicates in one ordered stream, so a mark written on the
        lane's connection after those writes returned comes after them in it,
        and a WAIT on that connection that covers the mark covers them too:
        one mark and one WAIT per master written, none when none was.

        A connection lost on the way raises (the caller answers `unavailable`)
        when the operation is idempotent, as a retry then does no harm. Else
        the write is on the master and a retry would make it twice (an account,
        a webhook, a note): the ack goes out, counted short."""
        if isinstance(self.lane, ClusterLane):
            if not slots:
                return True
            marks = self._marks(self.lane, slots)
        else:
            marks = [keys.ack_mark(0)]
        since = self.started()
        try:
            await asyncio.gather(
                *(self.lane.execute("SET", mark, "1", "PX", ACK_MARK_TTL_MS) for mark in marks)
            )
            return await self.confirm(since, *marks)
        except failures.STORAGE_UNAVAILABLE as exc:
            if idempotent:
                raise
            failures.note(exc, "waiting for replicas")
            return self._counted(0)

    @staticmethod
    def _marks(lane: ClusterLane, slots: Collection[int]) -> list[str]:
        """One mark per master, in one of the slots it was written in."""
        topology = lane.topology
        chosen: dict[str, int] = {}
        for slot in sorted(slots):
            owner = topology.owner_of_slot(slot) if topology is not None else None
            chosen.setdefault(owner or f"slot {slot}", slot)
        return [keys.ack_mark(slot) for slot in chosen.values()]

    async def confirm_written(self, *lcs: str) -> bool:
        """`confirm_slots` for what was written in these users' slots."""
        return await self.confirm_slots({key_slot(keys.user(lc)) for lc in lcs})

    async def check(self) -> dict[str, int]:
        """At start-up: the replicas online on each master, logged, with a warning
        for each master that has fewer than asked (its acks will not wait)."""
        if isinstance(self.lane, ClusterLane):
            topology = await self.lane.refresh(force=True)
            nodes = {address: self.lane.lane(address) for address in topology.masters}
        else:
            end = self.lane.endpoint
            nodes = {end.path or f"{end.host}:{end.port}": self.lane}
        online = {
            address: online_replicas(str(await node.execute("INFO", "replication")))
            for address, node in nodes.items()
        }
        for address, count in online.items():
            if count < self.replicas:
                log.warning(
                    "DMHUB_ACK_REPLICAS=%d but %s has %d replica(s) online: its acks go "
                    "out without waiting, counted as short, until enough are online",
                    self.replicas,
                    address,
                    count,
                )
            else:
                log.info("acks wait for %d of %d replica(s) of %s", self.replicas, count, address)
        return online
