"""RESP over asyncio, for the two connections on dmhub's hot path.

The lane (chat/store/lane.py) and the pub/sub listener (chat/pubsub/broker.py)
each keep one long-lived connection and parse replies with hiredis as bytes
arrive, instead of going through redis-py's connection objects: under load,
redis-py's packer and reader were a fifth of the server's CPU. This module is
what both share: packing a command, where to connect (from a redis URL, as
redis-py reads it), and the commands that authenticate a new connection.
Everything else (admin, HTTP routes) still uses redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

CONNECT_TIMEOUT_S = 2.0


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: an array of bulk strings (str, bytes, int, float;
    anything else, bool included, is a TypeError). hiredis packs in C: a send's
    three script calls carry about 100 arguments, which a Python loop took
    about 80 µs of dmhub's CPU per send to pack (docs/performance.md)."""
    return cast(bytes, hiredis.pack_command(args))


def reply_reader() -> hiredis.Reader:
    """A RESP2 parser: str replies, and error replies as ResponseError objects."""
    return hiredis.Reader(encoding="utf-8", replyError=ResponseError)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect, read from a redis:// rediss:// or unix:// URL."""

    path: str | None = None
    host: str = "localhost"
    port: int = 6379
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        params = parse_url(url)
        return cls(
            path=params.get("path"),
            host=params.get("host", "localhost"),
            port=int(params.get("port", 6379)),
            tls=params.get("connection_class") is SSLConnection,
            username=params.get("username"),
            password=params.get("password"),
            db=int(params.get("db") or 0),
        )

    async def connect(self, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        """Open a connection for the protocol; RedisConnectionError if it cannot."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                if self.path is not None:
                    await loop.create_unix_connection(protocol_factory, self.path)
                else:
                    context = ssl.create_default_context() if self.tls else None
                    await loop.create_connection(
                        protocol_factory, self.host, self.port, ssl=context
                    )
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot reach Redis: {exc}") from exc

    def hello(self, *, select: bool = True) -> list[tuple[Any, ...]]:
        """The commands a new connection sends first: AUTH, then SELECT if asked."""
        commands: list[tuple[Any, ...]] = []
        if self.password is not None:
            if self.username:
                commands.append(("AUTH", self.username, self.password))
            else:
                commands.append(("AUTH", self.password))
        if select and self.db:
            commands.append(("SELECT", self.db))
        return commands
