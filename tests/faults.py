"""Helpers for the fault-tolerance tests: bounded waits, raw sockets, child processes.

Nothing here sleeps to assert: every wait polls a condition until a deadline and
fails with a message saying what never happened.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chat.client import Client, Socket

Condition = Callable[[], Any] | Callable[[], Awaitable[Any]]


async def eventually(
    condition: Condition, timeout: float = 10.0, what: str = "condition", interval: float = 0.05
) -> Any:
    """Poll `condition` (sync or async) until it returns something truthy, or fail."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            last_error = None
        except Exception as exc:  # keep polling; report the last error on timeout
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}"
                + (f" (last error: {last_error!r})" if last_error else "")
            )
        await asyncio.sleep(interval)


# -- HTTP and WebSocket -------------------------------------------------------------


async def history(client: Client, peer: str) -> list[dict[str, Any]]:
    """The whole conversation with `peer`, oldest first, following every `next`."""
    pages: list[list[dict[str, Any]]] = []
    before: str | None = None
    for _ in range(1000):
        page = await client.messages(peer, limit=200, before=before)
        pages.append(page["messages"])
        before = page["next"]
        if before is None:
            break
    return [m for page in reversed(pages) for m in page]


async def raw_post(
    url: str, token: str, peer: str, text: str, client_id: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"text": text}
    if client_id is not None:
        body["client_id"] = client_id
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return await http.post(
            f"/api/conversations/{peer}/messages",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )


def ws_url(base_url: str, **query: str) -> str:
    url = "ws" + base_url.removeprefix("http") + "/ws"
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return url


async def open_raw(
    base_url: str, token: str, **kwargs: Any
) -> tuple[ClientConnection, dict[str, Any]]:
    """A plain websockets connection (no client-side retries); returns it and `ready`."""
    query = kwargs.pop("query", {})
    connection = await connect(
        ws_url(base_url, **query),
        additional_headers={"Authorization": f"Bearer {token}"},
        open_timeout=10,
        max_size=None,
        compression=None,
        ping_interval=None,
        proxy=None,
        **kwargs,
    )
    ready = json.loads(await asyncio.wait_for(connection.recv(), 10))
    assert ready["type"] == "ready", ready
    return connection, ready


async def recv_json(connection: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(connection.recv(), timeout))
    return frame


async def recv_until_closed(
    connection: ClientConnection, timeout: float = 15.0
) -> tuple[list[dict[str, Any]], int | None]:
    """Every frame until the server closes the connection, and the close code."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the server did not close the socket within {timeout:.0f}s")
            frames.append(json.loads(await asyncio.wait_for(connection.recv(), remaining)))
    except ConnectionClosed:
        pass
    return frames, connection.close_code


async def next_message(sock: Socket, timeout: float = 10.0) -> dict[str, Any]:
    """The next `message` frame of a client Socket, failing on anything unexpected."""
    event = await sock.next_event(timeout)
    assert event["type"] == "message", event
    return event


async def messages_until(
    sock: Socket, sentinel_id: str, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """Message frames up to and including the one with id `sentinel_id`."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"message {sentinel_id} never arrived; got {[e['message']['id'] for e in got]}"
            )
        event = await sock.next_event(remaining)
        if event["type"] != "message":
            continue
        got.append(event)
        if event["message"]["id"] == sentinel_id:
            return got


# -- processes ------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting to be reaped."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def pids_with_arg(needle: str) -> list[int]:
    """Processes whose command line has an argument containing `needle`."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(needle.encode() in arg for arg in args):
            found.append(int(entry))
    return found


def valkey_child(parent_pid: int, data_dir: Path) -> int:
    """The embedded valkey-server that `parent_pid` (a dmhub we started) runs on data_dir."""
    config = str(data_dir.resolve() / "valkey.conf")
    children = [
        pid
        for pid in pids_with_arg(config)
        if (stat := proc_stat(pid)) is not None and stat[1] == parent_pid and alive(pid)
    ]
    assert len(children) == 1, f"expected one valkey-server child of {parent_pid}, found {children}"
    return children[0]


def tcp_socket_with_small_buffer(rcvbuf: int = 4096) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    return sock


async def recv_reply(connection: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    """The next `ack` or `error` frame, passing over events (messages, typing...)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no ack or error frame within {timeout:.0f}s")
        frame = await recv_json(connection, remaining)
        if frame["type"] in ("ack", "error"):
            return frame
