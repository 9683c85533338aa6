"""An asyncio client for the dmhub API (PROTOCOL.md).

Two people and one conversation, against the server `make run` starts::

    import asyncio
    import secrets

    from chat.client import Client

    URL = "http://127.0.0.1:8000"
    PASSWORD = "correct horse battery"


    async def main() -> None:
        tag = secrets.token_hex(3)  # new handles on every run
        async with Client(URL) as alice, Client(URL) as bob:
            a = (await alice.sign_up(f"alice_{tag}", PASSWORD))["handle"]
            b = (await bob.sign_up(f"bob_{tag}", PASSWORD))["handle"]

            # DMs are closed by default: bob may write to alice once she follows him.
            await alice.follow(b)

            async with alice.socket() as alice_ws, bob.socket() as bob_ws:
                await bob_ws.send(a, "Hi Alice!")  # returns after the server stored it
                event = await alice_ws.next_event()  # pushed to alice at once
                print("alice got:", event["message"]["text"])

                # bob has written to alice, so she may answer him.
                await alice_ws.send(b, "Hello Bob.")
                event = await bob_ws.next_event()
                print("bob got:", event["message"]["text"])

            history = await alice.messages(b)
            print("history:", [m["text"] for m in history["messages"]])


    asyncio.run(main())

It prints::

    alice got: Hi Alice!
    bob got: Hello Bob.
    history: ['Hi Alice!', 'Hello Bob.']

`Client` speaks HTTP with a bearer token; `Socket` speaks the WebSocket. A
socket remembers the cursor of the last event it handed out, so `reconnect()`
(or `send`'s automatic retry) resumes with `?since=` and misses nothing. `send`
retries with the same `client_id` after `unavailable` or a dropped connection,
which the server turns into exactly one stored message.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

DEFAULT_TIMEOUT_S = 10.0
EVENT_QUEUE_SIZE = 10_000
SEND_ATTEMPTS = 5


class ClientError(Exception):
    """The server refused: `status` (HTTP, or 0 on a socket), the contract `code`, `detail`."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        retry_after: float | None = None,
        *,
        error: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        # The whole error object (`reason`, `limit`, `field`...) and, over HTTP,
        # the response headers (`Retry-After`).
        self.error = error or {}
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}

    @property
    def reason(self) -> str | None:
        return self.error.get("reason")

    @property
    def limit(self) -> str | None:
        return self.error.get("limit")

    @property
    def field(self) -> str | None:
        return self.error.get("field")


def _error_from_response(response: httpx.Response) -> ClientError:
    try:
        error = response.json()["error"]
        return ClientError(
            response.status_code,
            error["code"],
            error.get("detail", ""),
            error.get("retry_after"),
            error=error,
            headers=dict(response.headers),
        )
    except (ValueError, KeyError, TypeError):
        return ClientError(response.status_code, "http_error", response.text[:200])


class Client:
    def __init__(
        self, base_url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.user: dict[str, Any] | None = None
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- plumbing ----------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """Call the API; returns the decoded body (None for 204) or raises ClientError."""
        query = {k: v for k, v in params.items() if v is not None}
        response = await self.http.request(
            method, path, json=body, params=query or None, headers=self._headers()
        )
        if response.status_code >= 400:
            raise _error_from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # -- accounts ------------------------------------------------------------------

    async def sign_up(
        self, handle: str, password: str, name: str | None = None, kind: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"handle": handle, "password": password}
        if name is not None:
            body["name"] = name
        if kind is not None:
            body["kind"] = kind
        data = await self.request("POST", "/api/accounts", body)
        self.token, self.user = data["token"], data["user"]
        return data["user"]  # type: ignore[no-any-return]

    async def sign_in(self, handle: str, password: str) -> dict[str, Any]:
        data = await self.request("POST", "/api/sessions", {"handle": handle, "password": password})
        self.token, self.user = data["token"], data["user"]
        return data["user"]  # type: ignore[no-any-return]

    async def sign_out(self) -> None:
        await self.request("DELETE", "/api/sessions/current")
        self.token = None

    async def change_password(self, current: str, new: str) -> None:
        """Ends every other session of the account."""
        body = {"current_password": current, "new_password": new}
        await self.request("PUT", "/api/me/password", body)

    async def sessions(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/api/sessions"))["sessions"]  # type: ignore[no-any-return]

    async def sign_out_everywhere(self) -> None:
        await self.request("DELETE", "/api/sessions")
        self.token = None

    async def export(self) -> dict[str, Any]:
        return await self.request("GET", "/api/me/export")  # type: ignore[no-any-return]

    async def delete_account(self, password: str) -> None:
        await self.request("DELETE", "/api/me", {"password": password})
        self.token = None

    async def me(self) -> dict[str, Any]:
        return await self.request("GET", "/api/me")  # type: ignore[no-any-return]

    async def update_me(self, **fields: Any) -> dict[str, Any]:
        return await self.request("PATCH", "/api/me", fields)  # type: ignore[no-any-return]

    # -- people ----------------------------------------------------------------------

    async def profile(self, handle: str) -> dict[str, Any]:
        return await self.request("GET", f"/api/users/{quote(handle)}")  # type: ignore[no-any-return]

    async def follow(self, handle: str) -> None:
        await self.request("PUT", f"/api/following/{quote(handle)}")

    async def unfollow(self, handle: str) -> None:
        await self.request("DELETE", f"/api/following/{quote(handle)}")

    async def block(self, handle: str) -> None:
        await self.request("PUT", f"/api/blocks/{quote(handle)}")

    async def unblock(self, handle: str) -> None:
        await self.request("DELETE", f"/api/blocks/{quote(handle)}")

    async def report(
        self, handle: str, reason: str = "spam", message_id: str | None = None
    ) -> None:
        """Report an account (which also blocks it); 202 even when reported before."""
        body: dict[str, Any] = {"handle": handle, "reason": reason}
        if message_id is not None:
            body["message_id"] = message_id
        await self.request("POST", "/api/reports", body)

    # -- conversations -------------------------------------------------------------

    async def conversations(
        self, folder: str = "inbox", limit: int | None = None, before: str | None = None
    ) -> dict[str, Any]:
        return await self.request(  # type: ignore[no-any-return]
            "GET", "/api/conversations", folder=folder, limit=limit, before=before
        )

    async def messages(
        self, peer: str, limit: int | None = None, before: str | None = None
    ) -> dict[str, Any]:
        return await self.request(  # type: ignore[no-any-return]
            "GET", f"/api/conversations/{quote(peer)}/messages", limit=limit, before=before
        )

    async def post_message(
        self, peer: str, text: str, client_id: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """`fields`: a send's optional fields (`ref`, `quick_reply`, `quick_replies`)."""
        body: dict[str, Any] = {"text": text, **fields}
        if client_id is not None:
            body["client_id"] = client_id
        data = await self.request("POST", f"/api/conversations/{quote(peer)}/messages", body)
        return data["message"]  # type: ignore[no-any-return]

    async def mark_read(self, peer: str, up_to: str) -> None:
        await self.request("POST", f"/api/conversations/{quote(peer)}/read", {"up_to": up_to})

    async def accept(self, peer: str) -> None:
        await self.request("POST", f"/api/conversations/{quote(peer)}/accept")

    async def hide(self, peer: str) -> None:
        await self.request("DELETE", f"/api/conversations/{quote(peer)}")

    # -- sockets ---------------------------------------------------------------------

    def socket(
        self, peer: str | None = None, since: str | None = None, act_as: str | None = None
    ) -> Socket:
        if self.token is None:
            raise RuntimeError("sign up or sign in before opening a socket")
        return Socket(
            self.base_url, self.token, peer=peer, since=since, timeout=self.timeout, act_as=act_as
        )


class Socket:
    """One WebSocket, with acks matched to sends and events queued in order."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        peer: str | None = None,
        since: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        act_as: str | None = None,
    ) -> None:
        self.ws_url = "ws" + base_url.removeprefix("http") + "/ws"
        # `as=BUSINESS`: a team socket, acting for a business (Teams).
        self.act_as = act_as
        self.token = token
        self.peer = peer
        self.cursor = since
        self.timeout = timeout
        self.ready: dict[str, Any] | None = None
        self.connection: ClientConnection | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.close_code: int | None = None

    async def __aenter__(self) -> Socket:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _url(self) -> str:
        pairs = (("peer", self.peer), ("since", self.cursor), ("as", self.act_as))
        query = {k: v for k, v in pairs if v is not None}
        return self.ws_url + ("?" + urlencode(query) if query else "")

    async def connect(self) -> dict[str, Any]:
        """Open (or reopen from the last cursor); returns the `ready` frame."""
        try:
            self.connection = await connect(
                self._url(),
                additional_headers={"Authorization": f"Bearer {self.token}"},
                open_timeout=self.timeout,
                max_size=None,
                compression=None,
            )
        except InvalidStatus as exc:
            response = exc.response
            try:
                error = json.loads(response.body or b"{}")["error"]
                raise ClientError(
                    response.status_code,
                    error["code"],
                    error["detail"],
                    error.get("retry_after"),
                    error=error,
                    headers=dict(response.headers),
                ) from None
            except (ValueError, KeyError, TypeError):
                raise ClientError(response.status_code, "http_error", str(exc)) from None
        self.close_code = None
        ready = json.loads(await asyncio.wait_for(self.connection.recv(), self.timeout))
        if ready.get("type") != "ready":
            raise ClientError(0, "protocol", f"expected ready, got {ready}")
        self.ready = ready
        self.cursor = ready["cursor"]
        self._reader = asyncio.create_task(self._read_loop(self.connection))
        return ready  # type: ignore[no-any-return]

    async def _read_loop(self, connection: ClientConnection) -> None:
        try:
            async for raw in connection:
                frame = json.loads(raw)
                kind = frame.get("type")
                client_id = frame.get("client_id")
                if kind in ("ack", "error") and client_id in self._acks:
                    waiter = self._acks.pop(client_id)
                    if not waiter.done():
                        waiter.set_result(frame)
                    continue
                await self.events.put(frame)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = connection.close_code
            for waiter in self._acks.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("socket closed before the ack"))
            self._acks.clear()

    async def next_event(self, timeout: float | None = None) -> dict[str, Any]:
        """The next server frame that is not an ack; advances the resume cursor."""
        frame = await asyncio.wait_for(self.events.get(), timeout or self.timeout)
        if "cursor" in frame:
            self.cursor = frame["cursor"]
        return frame

    async def send_frame(self, frame: dict[str, Any]) -> None:
        if self.connection is None:
            raise ConnectionError("not connected")
        await self.connection.send(json.dumps(frame))

    async def send(
        self,
        to: str,
        text: str,
        client_id: str | None = None,
        attempts: int = SEND_ATTEMPTS,
        **fields: Any,
    ) -> dict[str, Any]:
        """Send and wait for the ack; retries with the same client_id, so never twice.

        `fields`: a send's optional fields (`ref`, `quick_reply`, `quick_replies`).
        """
        client_id = client_id or uuid.uuid4().hex
        delay = 0.1
        for attempt in range(attempts):
            try:
                loop = asyncio.get_running_loop()
                waiter: asyncio.Future[dict[str, Any]] = loop.create_future()
                self._acks[client_id] = waiter
                await self.send_frame(
                    {**fields, "type": "send", "to": to, "text": text, "client_id": client_id}
                )
                frame = await asyncio.wait_for(waiter, self.timeout)
            except (ConnectionError, ConnectionClosed, TimeoutError):
                self._acks.pop(client_id, None)
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                await self.reconnect()
                continue
            if frame["type"] == "ack":
                return frame["message"]  # type: ignore[no-any-return]
            if frame["code"] == "unavailable" and attempt < attempts - 1:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            raise ClientError(
                0, frame["code"], frame.get("detail", ""), frame.get("retry_after"), error=frame
            )
        raise AssertionError("unreachable")

    async def typing(self, to: str) -> None:
        await self.send_frame({"type": "typing", "to": to})

    async def read(self, peer: str, up_to: str) -> None:
        await self.send_frame({"type": "read", "peer": peer, "up_to": up_to})

    async def ping(self, nonce: Any = None) -> None:
        await self.send_frame({"type": "ping", "nonce": nonce})

    async def reconnect(self) -> dict[str, Any]:
        """Drop the connection and resume from the last cursor handed out."""
        await self.close()
        # Events not handed out yet come again from the cursor; drop the stale copies.
        while not self.events.empty():
            self.events.get_nowait()
        return await self.connect()

    async def wait_closed(self, timeout: float | None = None) -> int | None:
        if self._reader is not None:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout or self.timeout)
        return self.close_code

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, self.timeout)
            except (TimeoutError, asyncio.CancelledError):
                self._reader.cancel()
        self.connection = None
