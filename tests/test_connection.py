"""The per-socket outbox, without a network: bounded, and never stuck."""

from __future__ import annotations

import asyncio

from chat import metrics
from chat.hub.connection import Connection, Limits
from chat.protocol import closecodes


def make(send_text, closes: list[int], queue_size: int = 1, **limits) -> Connection:  # type: ignore[no-untyped-def]
    async def close(code: int, reason: str) -> None:
        closes.append(code)

    return Connection(
        user="u", session="s", peer=None,
        send_text=send_text, close=close, limits=Limits(queue_frames=queue_size, **limits),
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
        send_text=send_text, close=_no_close, limits=Limits(queue_frames=8), write_now=write_now,
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
        send_text=_never_called, close=_no_close, limits=Limits(queue_frames=8),
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


async def test_the_outbox_is_bounded_in_bytes_not_only_in_frames() -> None:
    never = asyncio.Event()

    async def send_text(frame: str) -> None:
        await never.wait()

    closes: list[int] = []
    conn = make(send_text, closes, queue_size=512, queue_bytes=100_000)
    conn.syncing = False
    big = "x" * 30_000
    for n in range(1, 6):  # the writer holds the first; three fit in 100 kB
        conn.push_event((n, 0), f"{n}-0", big)
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    assert closes == [closecodes.TRY_AGAIN_LATER]
    assert conn.queued_bytes == 0  # what was queued is let go at once


async def test_non_ascii_frames_are_counted_in_encoded_bytes() -> None:
    never = asyncio.Event()

    async def send_text(frame: str) -> None:
        await never.wait()

    closes: list[int] = []
    conn = make(send_text, closes, queue_size=512, queue_bytes=100_000)
    conn.push("first")  # taken by the writer
    await asyncio.sleep(0)
    conn.push("\U0001f600" * 20_000)  # 20,000 characters, 80,000 bytes
    assert conn.queued_bytes == 80_000
    conn.push("\U0001f600" * 6_000)  # 24,000 more bytes: over
    await asyncio.sleep(0.05)
    assert closes == [closecodes.TRY_AGAIN_LATER]


async def test_live_events_held_during_a_replay_are_bounded_in_bytes() -> None:
    closes: list[int] = []
    conn = make(_never_called, closes, queue_size=512, queue_bytes=50_000)
    assert conn.syncing
    conn.push_event((1, 0), "1-0", "x" * 30_000)
    conn.push_event((2, 0), "2-0", "x" * 30_000)
    await asyncio.sleep(0.05)
    assert closes == [closecodes.TRY_AGAIN_LATER] and conn.closed


async def test_a_write_that_waits_past_the_deadline_closes_with_1013_and_aborts() -> None:
    never = asyncio.Event()

    async def send_text(frame: str) -> None:
        await never.wait()

    closes: list[int] = []
    aborted: list[float] = []
    loop = asyncio.get_running_loop()
    conn = make(send_text, closes, queue_size=8, write_deadline_s=0.1, close_deadline_s=0.1)
    conn._abort = lambda: aborted.append(loop.time())
    started = loop.time()
    conn.push("stuck")
    putting = asyncio.create_task(conn.put("a replay frame"))
    await asyncio.wait_for(putting, 2)  # the deadline released the waiting replay too
    await asyncio.sleep(0.3)
    assert closes == [closecodes.TRY_AGAIN_LATER]
    assert len(aborted) == 1 and 0.15 <= aborted[0] - started < 1


async def test_a_close_stuck_behind_unread_frames_goes_out_at_the_deadline() -> None:
    never = asyncio.Event()

    async def send_text(frame: str) -> None:
        await never.wait()

    closes: list[int] = []
    conn = make(send_text, closes, queue_size=8, write_deadline_s=0.1)
    conn.push("stuck")
    conn.close(closecodes.SESSION_ENDED, "session ended")
    await asyncio.sleep(0.3)
    assert closes == [closecodes.SESSION_ENDED]


async def test_a_replay_waits_for_room_by_bytes() -> None:
    gate = asyncio.Event()
    sent: list[int] = []

    async def send_text(frame: str) -> None:
        await gate.wait()
        sent.append(len(frame))

    conn = make(send_text, [], queue_size=512, queue_bytes=50_000)
    for _ in range(3):
        await asyncio.wait_for(conn.put("x" * 20_000), 1)
    putting = asyncio.create_task(conn.put("x" * 20_000))
    await asyncio.sleep(0.05)
    assert not putting.done() and conn.queued_bytes == 40_000
    gate.set()
    await asyncio.wait_for(putting, 1)
    for _ in range(100):
        if conn.writer is None:
            break
        await asyncio.sleep(0.01)
    assert sent == [20_000] * 4 and not conn.closed and conn.queued_bytes == 0
