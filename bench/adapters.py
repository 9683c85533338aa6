"""Load-generator adapters for the peers (see chat/loadtest/adapters.py).

    dmhub loadtest --adapter bench.adapters:SocketIOAdapter --url http://127.0.0.1:PORT ...

The peers have no accounts, no acknowledgements and no resume: a socket names
its user in the query string, and a message counts as due at every socket of
its recipient as soon as it has been sent. `DmhubBenchAdapter` is dmhub's own
adapter made fit for several runs on the same accounts (see its docstring).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec
from websockets.asyncio.client import ClientConnection

from chat.loadtest.adapters import Account, DmhubAdapter, Incoming

_encode = msgspec.json.Encoder().encode


class _Message(msgspec.Struct):
    id: str | None = None
    text: str | None = None
    # `from` is a keyword in Python.
    sender: str | None = msgspec.field(default=None, name="from")


class _Frame(msgspec.Struct):
    type: str
    message: _Message | None = None


_decode_frame = msgspec.json.Decoder(_Frame).decode
_decode_event = msgspec.json.Decoder(tuple[str, _Message]).decode

OTHER = Incoming("other")


def _ws(url: str) -> str:
    return "ws" + url.removeprefix("http")


class _NoAccounts:
    """Users are names in the query string: nothing to create, nothing to allow."""

    supports_resume = False
    acks = False

    async def aclose(self) -> None:
        return None

    async def create_accounts(self, url: str, handles: list[str]) -> list[Account]:
        return [Account(handle, token="") for handle in handles]

    async def allow(self, url: str, recipient: Account, sender: Account) -> None:
        return None


class BareRelayAdapter(_NoAccounts):
    """bench/peers/bare_relay.py: dmhub's frame shapes, without ready, ack or cursor."""

    name = "bare-relay"
    path = "/ws"

    def socket(self, url: str, account: Account, since: str | None) -> tuple[str, dict[str, str]]:
        return f"{_ws(url)}{self.path}?{urlencode({'user': account.handle})}", {}

    async def opened(self, connection: ClientConnection) -> str | None:
        return None

    def send_frame(self, to: Account, text: str, client_id: str) -> str:
        frame = {"type": "send", "to": to.handle, "text": text, "client_id": client_id}
        return _encode(frame).decode()

    def parse(self, raw: str | bytes) -> Incoming:
        try:
            frame = _decode_frame(raw)
        except msgspec.DecodeError:
            return OTHER
        message = frame.message
        if frame.type != "message" or message is None:
            return OTHER
        return Incoming("message", message_id=message.id, text=message.text, sender=message.sender)


class ChannelsAdapter(BareRelayAdapter):
    """bench/peers/channels_peer: the same frames as the bare relay."""

    name = "channels"


class SocketIOAdapter(_NoAccounts):
    """Socket.IO v5 over Engine.IO v4, websocket transport only (Node's and Python's).

    Opening: the server sends the Engine.IO open packet `0{...}`, we connect to
    the default namespace with `40`, it answers `40{"sid":...}`. Then events are
    `42["message",{...}]` in and `42["send",{...}]` out, and each Engine.IO ping
    `2` gets its pong `3`.
    """

    name = "socket.io"
    OPEN_TIMEOUT_S = 30.0

    def socket(self, url: str, account: Account, since: str | None) -> tuple[str, dict[str, str]]:
        query = urlencode({"EIO": "4", "transport": "websocket", "user": account.handle})
        return f"{_ws(url)}/socket.io/?{query}", {}

    async def opened(self, connection: ClientConnection) -> str | None:
        async def expect(prefix: str) -> str:
            while True:
                raw = await connection.recv()
                text = raw if isinstance(raw, str) else raw.decode()
                if text == "2":  # a ping this early is possible, if unlikely
                    await connection.send("3")
                    continue
                if text.startswith(prefix):
                    return text
                raise ConnectionError(f"socket.io opening: expected {prefix!r}, got {text[:80]!r}")

        async def opening() -> None:
            await expect("0{")
            await connection.send("40")
            await expect("40")

        await asyncio.wait_for(opening(), self.OPEN_TIMEOUT_S)
        return None

    def send_frame(self, to: Account, text: str, client_id: str) -> str:
        data = {"to": to.handle, "text": text, "client_id": client_id}
        return "42" + _encode(["send", data]).decode()

    def parse(self, raw: str | bytes) -> Incoming:
        text = raw if isinstance(raw, str) else raw.decode()
        if text == "2":
            return Incoming("other", reply="3")
        if not text.startswith('42["message"'):
            return OTHER
        try:
            _, message = _decode_event(text[2:])
        except msgspec.DecodeError:
            return OTHER
        return Incoming("message", message_id=message.id, text=message.text, sender=message.sender)


class DmhubBenchAdapter(DmhubAdapter):
    """dmhub's own adapter, for runs that reuse accounts (`--prefix`) in one store.

    - Accounts already in the JSON file $BENCH_TOKEN_CACHE ({handle: token}) are
      not signed up again: argon2 is set-up cost, not what is measured. The
      harness keeps one file per store, so a cached token names a live session.
    """

    name = "dmhub"

    async def create_accounts(self, url: str, handles: list[str]) -> list[Account]:
        path_name = os.environ.get("BENCH_TOKEN_CACHE")
        if not path_name:
            return await super().create_accounts(url, handles)
        cache = _load(Path(path_name))
        missing = [h for h in handles if h not in cache]
        if missing:
            for account in await super().create_accounts(url, missing):
                cache[account.handle] = account.token
            _save(Path(path_name), cache)
        return [Account(h, str(cache[h])) for h in handles]


def _load(path: Path) -> dict[str, Any]:
    # A small file, read once per run in the set-up step: blocking is harmless.
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _save(path: Path, cache: dict[str, Any]) -> None:
    path.write_text(json.dumps(cache))


__all__ = ["BareRelayAdapter", "ChannelsAdapter", "DmhubBenchAdapter", "SocketIOAdapter"]
