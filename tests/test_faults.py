"""The fault test: steady load on two nodes while one node, Valkey, then the other fail.

Two dmhub processes share one Valkey (the embedded default: its AOF with
`appendfsync always`). Pairs of users who follow each other write to each
other without pause over three sockets each (one that sends, one listening on
each node). Meanwhile:

1. node A gets SIGKILL, and is started again;
2. Valkey gets SIGKILL, and is started again on the same data folder;
3. node B gets SIGTERM (drain: acks out, sockets closed 1012).

Clients behave as the contract asks: a socket that drops reconnects (to
whichever node answers) with `?since=` its last cursor; a send that fails
(`unavailable`, or the socket dropped before the ack) is retried with the same
`client_id` until it is acked. Afterwards:

- every acknowledged message is in both participants' histories exactly once,
  and histories are in causal order (each sender's messages in the order sent,
  and after every message its sender had received before sending);
- every socket received every message addressed to it, live or by replay,
  once each, in order.

The figures (messages acked, retried, replayed) are printed for the record.
Every process here is started by the test and ended by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from chat.client import Client
from chat.store.embedded import EmbeddedValkey
from tests.faults import eventually, history, open_raw
from tests.support import DmhubProcess, new_user

PAIRS = 8
SEND_INTERVAL_S = 0.25  # per sender: 16 senders, ~50 messages/s in all, while nothing fails
PHASE_S = 3.5  # steady load between faults
ACK_TIMEOUT_S = 5.0
SEND_DEADLINE_S = 45.0  # a send not acked by then fails the test
RECONNECT_PAUSE_S = 0.1


def node_env(valkey: EmbeddedValkey, tmp_path: Path) -> dict[str, str]:
    return {
        "REDIS_URL": valkey.url,
        "DMHUB_DATA_DIR": str(tmp_path),
        "DMHUB_DRAIN_TIMEOUT": "3",
        # The load is the point here, not the limits: turn off the ones it would hit.
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


@pytest.mark.timeout(120)
async def test_kill_9_a_node_and_valkey_then_sigterm_the_other_under_load(
    own_valkey: EmbeddedValkey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    env = node_env(own_valkey, tmp_path)
    node_a = await asyncio.to_thread(DmhubProcess(env).start)
    node_b = await asyncio.to_thread(DmhubProcess(env).start)
    nodes = [node_a, node_b]
    urls = [node_a.url, node_b.url]
    figures = Figures()
    people: list[Person] = []
    stop = asyncio.Event()
    writers: list[asyncio.Task[None]] = []
    try:
        for _ in range(PAIRS):
            first, second = await new_user(urls[0]), await new_user(urls[1])
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
                Device(f"{person.handle}/on-{i}", person.token, urls, i, figures) for i in (0, 1)
            ]
            for device in person.devices:
                device.start()
        for device in (d for p in people for d in p.devices):
            await asyncio.wait_for(device.connected.wait(), 15)

        writers = [asyncio.create_task(write_steadily(p, figures, stop)) for p in people]
        await asyncio.sleep(PHASE_S)

        # 1. SIGKILL node A; its sockets move to B. Then A comes back on its port.
        node_a.kill()
        await asyncio.sleep(PHASE_S / 2)
        node_a = nodes[0] = await asyncio.to_thread(DmhubProcess(env, node_a.port).start)
        await asyncio.sleep(PHASE_S)

        # 2. SIGKILL Valkey; both nodes answer `unavailable` until it is back on its AOF.
        acked_before_valkey_kill = figures.acked
        own_valkey.kill()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(own_valkey.start)
        await asyncio.sleep(PHASE_S)
        assert figures.acked > acked_before_valkey_kill, "no send succeeded after Valkey came back"

        # 3. SIGTERM node B: it drains (acks go out, sockets get 1012) and exits 0.
        code = await asyncio.to_thread(node_b.terminate)
        assert code == 0, node_b.log()
        await asyncio.sleep(PHASE_S)
        stop.set()
        await asyncio.gather(*writers)
        load_s = time.monotonic() - started

        # Every acked message, exactly once, in both histories, in causal order.
        async with Client(node_a.url) as reader:
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
        sockets = sum(len(p.devices) for p in people)
        with capsys.disabled():
            print(
                f"\nfault test: {sockets} sockets, 2 nodes; {figures.acked} messages acked, "
                f"{figures.retried_sends} sends retried ({figures.attempts} attempts in all), "
                f"{figures.reconnects} reconnects, {figures.replayed} messages replayed "
                f"by cursor; every ack in both histories once; load and faults {load_s:.0f}s"
            )
    finally:
        stop.set()
        for task in writers:
            task.cancel()
        for person in people:
            for device in person.devices if person.sender else []:
                await device.stop()
        for node in nodes:
            node.kill()
