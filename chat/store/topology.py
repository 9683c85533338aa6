"""A Valkey Cluster's shape: which master owns which slots, read from CLUSTER SHARDS.

Pure: parsing a reply and looking a slot up. The lane (chat/store/cluster_lane.py)
and the pub/sub broker route by it and ask for a new one when a node answers
MOVED, pushes `sunsubscribe`, or goes away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chat.store.slots import SLOTS, key_slot


class TopologyError(ValueError):
    """A CLUSTER SHARDS reply that says no master owns anything."""


@dataclass(frozen=True, slots=True)
class Shard:
    master: str  # host:port
    ranges: tuple[tuple[int, int], ...]
    replicas: tuple[str, ...] = ()

    def describe(self) -> str:
        slots = ",".join(f"{a}-{b}" for a, b in self.ranges)
        replicas = ", ".join(self.replicas) or "none"
        return f"{self.master} slots {slots} replicas {replicas}"


def _fields(flat: Any) -> dict[str, Any]:
    """A RESP2 map (a flat list of names and values) as a dict; RESP3 maps pass."""
    if isinstance(flat, dict):
        return {str(k): v for k, v in flat.items()}
    items = list(flat)
    return {str(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def _address(node: dict[str, Any], tls: bool) -> str:
    host = node.get("endpoint")
    if not host or host == "?":  # "?" means unknown endpoint: use the IP
        host = node.get("ip")
    port = node.get("tls-port") if tls and node.get("tls-port") else node.get("port")
    return f"{host}:{int(port or 0)}"


@dataclass(frozen=True)
class Topology:
    shards: tuple[Shard, ...]
    _owner: tuple[int, ...] = field(repr=False, compare=False, default=())

    @classmethod
    def of(cls, shards: Sequence[Shard]) -> Topology:
        owner = [-1] * SLOTS
        for index, shard in enumerate(shards):
            for first, last in shard.ranges:
                for slot in range(first, last + 1):
                    owner[slot] = index
        return cls(tuple(shards), tuple(owner))

    @classmethod
    def from_cluster_shards(cls, reply: Any, *, tls: bool = False) -> Topology:
        """From a CLUSTER SHARDS reply (RESP2 flat lists or RESP3 maps)."""
        shards: list[Shard] = []
        for raw in reply:
            shard = _fields(raw)
            bounds = [int(b) for b in shard.get("slots", [])]
            ranges = tuple((bounds[i], bounds[i + 1]) for i in range(0, len(bounds) - 1, 2))
            nodes = [_fields(n) for n in shard.get("nodes", [])]
            masters = [n for n in nodes if n.get("role") == "master"]
            if not ranges or not masters:
                continue
            # After a failover the old master may still be listed, failed.
            masters.sort(key=lambda n: n.get("health") != "online")
            replicas = tuple(
                _address(n, tls)
                for n in nodes
                if n.get("role") != "master" and n.get("health") == "online"
            )
            shards.append(Shard(_address(masters[0], tls), ranges, replicas))
        if not shards:
            raise TopologyError("CLUSTER SHARDS names no master with slots")
        shards.sort(key=lambda s: s.ranges[0])
        return cls.of(shards)

    @property
    def masters(self) -> list[str]:
        return [shard.master for shard in self.shards]

    @property
    def nodes(self) -> list[str]:
        """Masters first, then replicas: whom to ask for the next map."""
        return [*self.masters, *(r for shard in self.shards for r in shard.replicas)]

    def owner_of_slot(self, slot: int) -> str | None:
        index = self._owner[slot]
        return self.shards[index].master if index >= 0 else None

    def owner(self, key: str | bytes) -> str | None:
        """The master that owns `key`'s slot, or None when no master does."""
        return self.owner_of_slot(key_slot(key))

    @property
    def complete(self) -> bool:
        """Every slot has a master."""
        return all(index >= 0 for index in self._owner)

    def describe(self) -> list[str]:
        return [shard.describe() for shard in self.shards]
