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
    before = metrics.SLOW_CLOSES._value.get()
    conn.set_position("1-0")
    conn.syncing = False
    for n in range(2, 6):
        conn.push_event((n, 0), f"{n}-0", f"frame {n}")
    await asyncio.sleep(0.05)
    assert closes == [closecodes.TRY_AGAIN_LATER]
    assert metrics.SLOW_CLOSES._value.get() == before + 1
    assert conn.closed


async def test_direct_writes_keep_order_behind_frames_that_had_to_wait() -> None:
    wire: list[str] = []
    room = {"open": False}

    def write_now(frame: str) -> bool:
        if room["open"]:
            wire.append(f"direct {frame}")
        return room["open"]

    async def send_text(frame: str) -> None:
        await asyncio.sleep(0.01)  # the socket drains slowly
        room["open"] = True
        wire.append(f"queued {frame}")

    conn = Connection(
        user="u", session="s", peer=None,
        send_text=send_text, close=_no_close, queue_size=8, write_now=write_now,
    )  # fmt: skip
    conn.push("1")  # no room: queued, and a writer starts
    conn.push("2")  # room now or not, "1" is still waiting: queued behind it
    assert conn.writer is not None
    await asyncio.wait_for(conn.writer, 2)
    assert conn.writer is None or conn.writer.done()
    conn.push("3")  # caught up: straight to the socket, no task
    assert wire == ["queued 1", "queued 2", "direct 3"]
    assert conn.writer is None


async def test_an_idle_socket_with_a_direct_write_carries_no_task_or_queue() -> None:
    sent: list[str] = []
    conn = Connection(
        user="u", session="s", peer=None,
        send_text=_never_called, close=_no_close, queue_size=8,
        write_now=lambda frame: sent.append(frame) is None,
    )  # fmt: skip
    await conn.put("ready")
    conn.push("live")
    assert sent == ["ready", "live"]
    assert conn.writer is None and conn.queue is None


async def _no_close(code: int, reason: str) -> None:
    return None


async def _never_called(frame: str) -> None:
    raise AssertionError("frames should have gone out directly")
