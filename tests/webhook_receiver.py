"""A real HTTP receiver on 127.0.0.1 for webhook tests: records every request.

`answer(n)` decides the reply to the n-th request (1-based): a status code, or
None to never answer (the connection stays open until the receiver stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    at: float
    status: int | None

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def id(self) -> str:
        return self.headers["dmhub-delivery"]


@dataclass
class Receiver:
    answer: Callable[[int], int | None] = lambda n: 200
    requests: list[Delivery] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._changed = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._stopped = asyncio.Event()

    @property
    def delivered(self) -> list[Delivery]:
        """What was answered 2xx, in arrival order."""
        return [d for d in self.requests if d.status is not None and 200 <= d.status < 300]

    async def start(self, path: str = "/hook") -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}{path}"
        return self.url

    async def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    async def wait_for(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self._changed.clear()
                await self._changed.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                headers: dict[str, str] = {}
                while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = self.answer(len(self.requests) + 1)
                self.requests.append(Delivery(headers, body, time.time(), status))
                self._changed.set()
                if status is None:
                    await self._stopped.wait()  # never answers
                    return
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


@contextlib.asynccontextmanager
async def receiver(answer: Callable[[int], int | None] = lambda n: 200) -> AsyncIterator[Receiver]:
    running = Receiver(answer)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
