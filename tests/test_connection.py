"""The per-socket outbox, without a network: bounded, and never stuck."""

from __future__ import annotations

import asyncio

from chat import metrics
from chat.hub.connection import Connection
from chat.protocol import closecodes


def make(send_text, closes: list[int], queue_size: int = 1) -> Connection:  # type: ignore[no-untyped-def]
    async def close(code: int, reason: str) -> None:
        closes.append(code)

    return Connection(
        user="u", session="s", peer=None,
        send_text=send_text, close=close, queue_size=queue_size,
    )  # fmt: skip


async def test_a_replay_stops_waiting_when_the_client_is_gone() -> None:
    gate = asyncio.Event()

    async def send_text(frame: str) -> None:
        await gate.wait()
        raise ConnectionError("the client went away")

    conn = make(send_text, [])
    conn.start_writer()
    await conn.put("a")  # taken by the writer, which is now stuck sending
    await asyncio.sleep(0)
    await conn.put("b")  # fills the queue
    putting = asyncio.create_task(conn.put("c"))
    await asyncio.sleep(0.05)
    assert not putting.done()
    gate.set()  # the send fails and the writer ends: nothing will make room
    await asyncio.wait_for(putting, 2)
    assert conn.closed


async def test_a_full_outbox_closes_with_1013_and_is_counted() -> None:
    never = asyncio.Event()

    async def send_text(frame: str) -> None:
        await never.wait()

    closes: list[int] = []
    conn = make(send_text, closes, queue_size=2)
    conn.start_writer()
    before = metrics.SLOW_CLOSES._value.get()
    conn.set_position("1-0")
    conn.syncing = False
    for n in range(2, 6):
        conn.push_event((n, 0), f"{n}-0", f"frame {n}")
    await asyncio.sleep(0.05)
    assert closes == [closecodes.TRY_AGAIN_LATER]
    assert metrics.SLOW_CLOSES._value.get() == before + 1
    assert conn.closed
