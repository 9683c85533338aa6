"""Helpers for the fault-tolerance tests: bounded waits, raw sockets, child processes.

Nothing here sleeps to assert: every wait polls a condition until a deadline and
fails with a message saying what never happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from chat.client import Client, Socket
from tests.support import DmhubProcess, new_user

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


# -- steady load on paired people, for the fault and slot-migration tests --------------

# Per sender: with 8 pairs, ~50 messages/s in all while nothing fails.
SEND_INTERVAL_S = 0.25
ACK_TIMEOUT_S = 5.0
SEND_DEADLINE_S = 45.0  # a send not acked by then fails the test
RECONNECT_PAUSE_S = 0.1


def load_env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    """dmhub nodes for a load test: the limits the load would hit are off."""
    return {
        "REDIS_URL": redis_url,
        "DMHUB_DATA_DIR": str(tmp_path),
        "DMHUB_DRAIN_TIMEOUT": "3",
        "DMHUB_LIMIT_MESSAGES_PER_MIN": "0",
        "DMHUB_LIMIT_SIGNUPS_PER_HOUR": "0",
        "DMHUB_LIMIT_NEW_CONVERSATIONS_PER_DAY": "0",
    }


@dataclass
class Figures:
    acked: int = 0
    retried_sends: int = 0  # sends that needed more than one attempt
    attempts: int = 0
    reconnects: int = 0
    replayed: int = 0  # message frames that can only have come by replay
    max_acked_id: int = 0


@dataclass
class Device:
    """One client socket that keeps itself connected and resumes by cursor."""

    name: str
    token: str
    nodes: list[str]
    home: int
    figures: Figures
    received: list[dict[str, Any]] = field(default_factory=list)
    cursor: str | None = None
    resets: int = 0
    connection: ClientConnection | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    acks: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    stopped: bool = False
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"device-{self.name}")

    async def stop(self) -> None:
        self.stopped = True
        if self.connection is not None:
            await self.connection.close()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self.task, 10)

    async def _run(self) -> None:
        turn = self.home
        first = True
        while not self.stopped:
            url = self.nodes[turn % len(self.nodes)]
            query = {"since": self.cursor} if self.cursor else {}
            try:
                connection, ready = await open_raw(url, self.token, query=query)
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed, AssertionError):
                turn += 1  # that node is down or refusing: try the other one
                await asyncio.sleep(RECONNECT_PAUSE_S)
                continue
            if not first:
                self.figures.reconnects += 1
            first = False
            if self.cursor is None:
                self.cursor = ready["cursor"]
            replay_below = self.figures.max_acked_id
            self.connection = connection
            self.connected.set()
            try:
                async for raw in connection:
                    frame = json.loads(raw)
                    kind = frame["type"]
                    if kind == "message":
                        self.received.append(frame["message"])
                        self.cursor = frame["cursor"]
                        if query and int(frame["message"]["id"]) <= replay_below:
                            self.figures.replayed += 1
                    elif kind in ("ack", "error") and frame.get("client_id") in self.acks:
                        waiter = self.acks.pop(frame["client_id"])
                        if not waiter.done():
                            waiter.set_result(frame)
                    elif kind == "reset":
                        self.resets += 1
            except ConnectionClosed:
                pass
            finally:
                self.connected.clear()
                self.connection = None
                for waiter in self.acks.values():
                    if not waiter.done():
                        waiter.set_exception(ConnectionError("socket closed before the ack"))
                self.acks.clear()
            if not self.stopped:
                await asyncio.sleep(RECONNECT_PAUSE_S)

    async def send(self, to: str, text: str, client_id: str) -> dict[str, Any]:
        """Until acked: retry with the same client_id after `unavailable` or a drop."""
        deadline = time.monotonic() + SEND_DEADLINE_S
        attempts = 0
        while time.monotonic() < deadline:
            attempts += 1
            self.figures.attempts += 1
            try:
                await asyncio.wait_for(self.connected.wait(), ACK_TIMEOUT_S)
                connection = self.connection
                assert connection is not None
                waiter = asyncio.get_running_loop().create_future()
                self.acks[client_id] = waiter
                await connection.send(
                    json.dumps({"type": "send", "to": to, "text": text, "client_id": client_id})
                )
                frame = await asyncio.wait_for(waiter, ACK_TIMEOUT_S)
            except (ConnectionError, ConnectionClosed, TimeoutError, AssertionError):
                self.acks.pop(client_id, None)
                await asyncio.sleep(RECONNECT_PAUSE_S)
                continue
            if frame["type"] == "ack":
                if attempts > 1:
                    self.figures.retried_sends += 1
                return frame["message"]  # type: ignore[no-any-return]
            assert frame["code"] == "unavailable", frame
            await asyncio.sleep(RECONNECT_PAUSE_S)
        raise AssertionError(f"{self.name}: {client_id} was never acked")


@dataclass
class Person:
    handle: str
    token: str
    partner: str = ""
    sender: Device | None = None
    listeners: list[Device] = field(default_factory=list)
    sent: list[tuple[dict[str, Any], int]] = field(default_factory=list)  # (message, seen)

    @property
    def devices(self) -> list[Device]:
        assert self.sender is not None
        return [self.sender, *self.listeners]

    def last_seen_from_partner(self) -> int:
        """The newest message id from the partner any of this person's sockets has seen."""
        ids = [int(m["id"]) for d in self.devices for m in d.received if m["from"] == self.partner]
        return max(ids, default=0)


async def write_steadily(person: Person, figures: Figures, stop: asyncio.Event) -> None:
    assert person.sender is not None
    i = 0
    while not stop.is_set():
        seen = person.last_seen_from_partner()
        message = await person.sender.send(person.partner, f"{person.handle} #{i}", f"c-{i}")
        person.sent.append((message, seen))
        figures.acked += 1
        figures.max_acked_id = max(figures.max_acked_id, int(message["id"]))
        i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SEND_INTERVAL_S)


async def paired_people(urls: list[str], pairs: int, figures: Figures) -> list[Person]:
    """`pairs` pairs who follow each other (consecutive sign-ups: on different
    shards of a cluster), each with a sending socket and one listening socket
    per node, all connected."""
    people: list[Person] = []
    for _ in range(pairs):
        first, second = await new_user(urls[0]), await new_user(urls[-1])
        await first.follow(second.user["handle"])  # type: ignore[index]
        await second.follow(first.user["handle"])  # type: ignore[index]
        for client in (first, second):
            assert client.user and client.token
            people.append(Person(client.user["handle"], client.token))
            await client.aclose()
        people[-2].partner, people[-1].partner = people[-1].handle, people[-2].handle
    for n, person in enumerate(people):
        person.sender = Device(f"{person.handle}/send", person.token, urls, n % 2, figures)
        person.listeners = [
            Device(f"{person.handle}/on-{i}", person.token, urls, i, figures)
            for i in range(len(urls))
        ]
        for device in person.devices:
            device.start()
    for device in (d for p in people for d in p.devices):
        await asyncio.wait_for(device.connected.wait(), 15)
    return people


@dataclass
class Load:
    """dmhub nodes carrying steady sends between paired people (`steady_load`)."""

    nodes: list[DmhubProcess]
    figures: Figures = field(default_factory=Figures)
    people: list[Person] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    writers: list[asyncio.Task[None]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    async def finish(self) -> float:
        """Every writer stopped after its send in flight; the seconds under load."""
        self.stop.set()
        await asyncio.gather(*self.writers)
        return time.monotonic() - self.started


@contextlib.asynccontextmanager
async def steady_load(env: dict[str, str], pairs: int, nodes: int = 2) -> AsyncIterator[Load]:
    """`nodes` dmhub processes (started together) and `pairs` pairs of people
    writing to each other through them without pause. Afterwards the writers
    and sockets are stopped and every node in `Load.nodes` killed by its PID."""
    load = Load([DmhubProcess(env) for _ in range(nodes)])
    try:
        started = await asyncio.gather(
            *(asyncio.to_thread(node.start) for node in load.nodes), return_exceptions=True
        )
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        load.people = await paired_people([n.url for n in load.nodes], pairs, load.figures)
        load.writers = [
            asyncio.create_task(write_steadily(p, load.figures, load.stop)) for p in load.people
        ]
        yield load
    finally:
        load.stop.set()
        for task in load.writers:
            task.cancel()
        await stop_people(load.people)
        for node in load.nodes:
            node.kill()


async def stop_people(people: list[Person]) -> None:
    for person in people:
        for device in person.devices if person.sender else []:
            await device.stop()


async def check_delivery(people: list[Person], url: str) -> None:
    """Every acked message is in both histories exactly once, in causal order;
    every socket received every message addressed to it, once, in order."""
    # Every acked message, exactly once, in both histories, in causal order.
    async with Client(url) as reader:
        for person in people:
            reader.token = person.token
            stored = await history(reader, person.partner)
            partner = next(p for p in people if p.handle == person.partner)
            reader.token = partner.token
            assert await history(reader, person.handle) == stored
            ids = [int(m["id"]) for m in stored]
            assert ids == sorted(set(ids)), f"{person.handle}: history out of order or doubled"
            by_id = {m["id"]: m for m in stored}
            for sender in (person, partner):
                sent_ids = [m["id"] for m, _ in sender.sent]
                mine = [m["id"] for m in stored if m["from"] == sender.handle]
                assert mine == sent_ids, f"{sender.handle}: history is not what was acked"
                for message, seen in sender.sent:
                    assert by_id[message["id"]] == message
                    # Causal: after what its sender had seen from the partner.
                    assert seen < int(message["id"])
                    assert seen == 0 or str(seen) in by_id

    # Every socket got every message addressed to it, once, in order.
    for person in people:
        partner = next(p for p in people if p.handle == person.partner)
        conversation = sorted(
            [m for m, _ in person.sent] + [m for m, _ in partner.sent],
            key=lambda m: int(m["id"]),
        )
        to_me = [m for m in conversation if m["from"] == partner.handle]
        for device in person.devices:
            # The sending socket is not sent copies of its own sends (it had
            # the acks); the listening sockets get both sides.
            expected = to_me if device is person.sender else conversation
            expected_ids = {m["id"] for m in expected}

            def complete(device: Device = device, wanted: set[str] = expected_ids) -> bool:
                return wanted <= {m["id"] for m in device.received}

            await eventually(complete, 20, f"{device.name} to receive everything")
            got = [m["id"] for m in device.received]
            assert len(got) == len(set(got)), f"{device.name} received a message twice"
            assert got == sorted(got, key=int), f"{device.name} received out of order"
            assert device.resets == 0, f"{device.name} was told to reset"
