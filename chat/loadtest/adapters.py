"""How the generator speaks to a system under test.

The generator only needs: accounts with credentials, a graph in which each
sender may write to its recipient, a WebSocket URL per user, a way to frame a
send, and a way to classify incoming frames. `DmhubAdapter` speaks PROTOCOL.md;
bench/ adds adapters for the engines dmhub is compared with.
"""

from __future__ import annotations

import asyncio
import importlib
import uuid
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection

SETUP_CONCURRENCY = 16
SETUP_PASSWORD = "loadtest-password"


@dataclass(frozen=True, slots=True)
class Account:
    handle: str
    token: str


@dataclass(frozen=True, slots=True)
class Incoming:
    """One frame from the server, classified."""

    kind: str  # "ack" | "message" | "error" | "ready" | "reset" | "other"
    client_id: str | None = None
    message_id: str | None = None
    text: str | None = None
    sender: str | None = None
    cursor: str | None = None
    code: str | None = None
    # A frame the protocol requires us to send back at once (an Engine.IO pong).
    reply: str | None = None


class Adapter(Protocol):
    name: str
    supports_resume: bool
    # Systems without acks: a message counts as due at its recipients once sent.
    acks: bool

    async def aclose(self) -> None: ...

    async def create_accounts(self, url: str, handles: list[str]) -> list[Account]: ...

    async def allow(self, url: str, recipient: Account, sender: Account) -> None:
        """Make it so that `sender` may write to `recipient`."""

    def socket(self, url: str, account: Account, since: str | None) -> tuple[str, dict[str, str]]:
        """WebSocket URL and headers for one socket of `account`."""

    async def opened(self, connection: ClientConnection) -> str | None:
        """Finish the protocol's opening (read `ready`...); returns a cursor if any."""

    def send_frame(self, to: Account, text: str, client_id: str) -> str: ...

    def parse(self, raw: str | bytes) -> Incoming: ...


class _Frame(msgspec.Struct):
    type: str
    client_id: str | None = None
    message: dict[str, Any] | None = None
    cursor: str | None = None
    code: str | None = None


_decode = msgspec.json.Decoder(_Frame).decode
_encode = msgspec.json.Encoder().encode


async def _bounded(calls: list[Any]) -> list[Any]:
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(call: Any) -> Any:
        async with gate:
            return await call

    return await asyncio.gather(*(one(c) for c in calls))


class DmhubAdapter:
    name = "dmhub"
    supports_resume = True
    acks = True

    def __init__(self) -> None:
        self._http: dict[str, httpx.AsyncClient] = {}

    def _client(self, url: str) -> httpx.AsyncClient:
        if url not in self._http:
            limits = httpx.Limits(max_connections=SETUP_CONCURRENCY)
            self._http[url] = httpx.AsyncClient(base_url=url, timeout=60, limits=limits)
        return self._http[url]

    async def aclose(self) -> None:
        for client in self._http.values():
            await client.aclose()

    async def create_accounts(self, url: str, handles: list[str]) -> list[Account]:
        http = self._client(url)

        async def create(handle: str) -> Account:
            body = {"handle": handle, "password": SETUP_PASSWORD}
            response = await http.post("/api/accounts", json=body)
            if response.status_code == 409:  # a reused run: sign in instead
                response = await http.post("/api/sessions", json=body)
            if response.status_code == 429:
                # Every load-test account signs up from this machine's IP;
                # `dmhub loadtest` prints this as "set-up failed: ...".
                raise RuntimeError(
                    "the server refused sign-ups from this IP (limit "
                    f"{response.json().get('error', {}).get('limit')!r}); raise "
                    "DMHUB_LIMIT_SIGNUPS_PER_HOUR (and DMHUB_LIMIT_LOGIN_FAILURES) "
                    "on the server for the load test"
                )
            response.raise_for_status()
            return Account(handle, response.json()["token"])

        return await _bounded([create(h) for h in handles])

    async def allow(self, url: str, recipient: Account, sender: Account) -> None:
        response = await self._client(url).put(
            f"/api/following/{sender.handle}",
            headers={"Authorization": f"Bearer {recipient.token}"},
        )
        response.raise_for_status()

    def socket(self, url: str, account: Account, since: str | None) -> tuple[str, dict[str, str]]:
        ws_url = "ws" + url.removeprefix("http") + "/ws"
        if since:
            ws_url += "?" + urlencode({"since": since})
        return ws_url, {"Authorization": f"Bearer {account.token}"}

    async def opened(self, connection: ClientConnection) -> str | None:
        ready = self.parse(await connection.recv())
        if ready.kind != "ready":
            raise ConnectionError(f"expected ready, got {ready.kind}")
        return ready.cursor

    def send_frame(self, to: Account, text: str, client_id: str) -> str:
        frame = {"type": "send", "to": to.handle, "text": text, "client_id": client_id}
        return _encode(frame).decode()

    def parse(self, raw: str | bytes) -> Incoming:
        try:
            frame = _decode(raw)
        except msgspec.DecodeError:
            return Incoming("other")
        if frame.type == "message" and frame.message is not None:
            return Incoming(
                "message",
                message_id=frame.message.get("id"),
                text=frame.message.get("text"),
                sender=frame.message.get("from"),
                cursor=frame.cursor,
            )
        if frame.type == "ack":
            return Incoming("ack", client_id=frame.client_id)
        if frame.type == "error":
            return Incoming("error", client_id=frame.client_id, code=frame.code)
        if frame.type in ("ready", "reset", "read"):
            return Incoming(frame.type, cursor=frame.cursor)
        return Incoming("other")


def run_prefix() -> str:
    """A short random prefix, so every run's handles are new (15 characters at most)."""
    return "lt" + uuid.uuid4().hex[:5]


ADAPTERS: dict[str, type] = {"dmhub": DmhubAdapter}


def load_adapter(name: str) -> Adapter:
    """`dmhub`, or `package.module:Class` for another system (bench/ uses this)."""
    if name in ADAPTERS:
        adapter: Adapter = ADAPTERS[name]()
        return adapter
    module_name, _, class_name = name.partition(":")
    if not class_name:
        raise SystemExit(f"unknown adapter {name!r}: use 'dmhub' or 'module:Class'")
    module = importlib.import_module(module_name)
    loaded: Adapter = getattr(module, class_name)()
    return loaded
