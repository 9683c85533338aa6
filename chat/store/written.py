"""Which hash slots an acknowledged operation wrote over the cold path
(DMHUB_ACK_REPLICAS, chat/store/replicas.py).

`WAIT` vouches only for what its own connection wrote. Most writes other than
a send go through redis-py's pooled connections, so before their ack dmhub
writes a mark on the lane's connection to each master they wrote and waits
there (`ReplicaAcks.confirm_slots`). On a cluster it has to know which masters:
redis-py's cluster client works out the slot of every command it routes, plain,
pipelined or in a transaction, in one method, and `TrackingCluster` notes there
the slot of each command that is not a read, in the set of the operation under
way. A context variable holds that set, so concurrent requests keep theirs
apart and tasks an operation starts add to its set.

One Valkey needs none of this: every write is on its one node. And with
DMHUB_ACK_REPLICAS=0 the plain client is used, with nothing added to any command.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.commands.cluster import READ_COMMANDS

from chat.store.slots import key_slot

_written: ContextVar[set[int] | None] = ContextVar("dmhub_written_slots", default=None)


@contextlib.contextmanager
def tracking() -> Iterator[set[int]]:
    """The slots that the cold path writes inside the block (on a cluster)."""
    slots: set[int] = set()
    token = _written.set(slots)
    try:
        yield slots
    finally:
        _written.reset(token)


# Commands that carry no key, or whose first argument is not one, or that
# change no data (a publish is not replicated state).
UNKEYED = frozenset(
    {"PING", "INFO", "SCRIPT", "CLUSTER", "CLIENT", "READONLY", "ASKING", "COMMAND"}
    | {"FUNCTION", "PUBLISH", "SPUBLISH", "WAIT", "MULTI", "EXEC", "DISCARD"}
)
SCRIPT_CALLS = frozenset({"EVAL", "EVALSHA", "FCALL"})
# `XGROUP CREATE key ...`: the key after a subcommand.
SUBCOMMANDS = frozenset({"XGROUP", "XINFO", "OBJECT", "MEMORY"})


def written_key(args: tuple[Any, ...]) -> str | bytes | None:
    """The key of a command that may write, by the rule the lane routes by
    (chat/store/cluster_lane.py): KEYS[1] of a script, else the first argument;
    None for reads and for commands without a key."""
    name = str(args[0]).upper()
    if name in READ_COMMANDS or name in UNKEYED:
        return None
    if name in SCRIPT_CALLS:
        at = 3 if len(args) > 3 and int(args[2]) > 0 else 0
    else:
        at = 2 if name in SUBCOMMANDS else 1
    if not 0 < at < len(args):
        return None
    key = args[at]
    return key if isinstance(key, (str, bytes)) else str(key)


def note(args: tuple[Any, ...]) -> None:
    slots = _written.get()
    if slots is not None:
        key = written_key(args)
        if key is not None:
            slots.add(key_slot(key))


class TrackingCluster(RedisCluster):
    """RedisCluster that notes the slot of each write made inside `tracking()`,
    plain or pipelined (each command where it is queued, in the caller's
    context: a transaction's commands are routed on another thread)."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        note(args)
        return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused there
        return TrackingPipeline(self, transaction)  # type: ignore[abstract]


class TrackingPipeline(ClusterPipeline):
    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        note(args)
        return super().execute_command(*args, **kwargs)
