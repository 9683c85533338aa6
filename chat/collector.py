"""Keep Python's garbage collector from pausing every socket at once.

A full collection walks every container object the process holds. An open
socket holds about 65 of them (coroutines, the protocol's state, websockets'
parser), so at 10,000 sockets one full pass took about half a second on the
reference machine, and Python starts one whenever the objects that survived
since the last pass reach a quarter of the total: after any wave of new
sockets.

Most of those objects live as long as their socket, and a closed socket is
freed by reference counting (its cycles are broken when it closes, see
chat/transport/uvicorn_ws.py). So once a second this runs a young pass
(generations 0 and 1: milliseconds) and freezes what survives, taking it out
of every later pass; Python's own young passes have already looked at
anything older, a little at a time as it arrived. A cycle that was alive when
frozen and dies later would stay, so every `FULL_EVERY` rounds everything is
unfrozen for one full pass. tests/test_collector.py checks that sockets and
requests leave next to nothing for that pass on uvloop, which `dmhub serve`
runs on. (On asyncio's own loop a closed socket's transport does end in a
cycle, kept until the next full pass.)

Measured at 10,000 open sockets: a full pass over what is not frozen took
10 ms, against 506 ms over everything before.

Python's own young passes start every 700 container allocations (net of
deallocations, and a dying old object counts as one), and each walks every young
object still alive: under load, the sends and frames in flight. At 2,000 msg/s
that was about 20 such passes a second of several milliseconds each, about 4% of
the server's CPU (docs/performance.md). Sends leave no cycles behind, and the
round above walks the young objects once a second anyway, so the threshold is
raised (`YOUNG_THRESHOLD`): Python's passes then run only on bursts of new
long-lived objects (a wave of sockets), which still bounds what a burst of
cycles could hold between rounds.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from chat.tasks import cancel_and_wait

log = logging.getLogger("dmhub.gc")

FREEZE_INTERVAL_S = 1.0
# One full pass over everything an hour, at the default interval: the one
# long pause left (about half a second at 10,000 sockets).
FULL_EVERY = 3600
# A pass slower than this is logged, so an operator can see the pauses.
SLOW_PASS_S = 0.1
# Net container allocations between two of Python's own young passes (its
# default: 700). The older generations' thresholds stay Python's.
YOUNG_THRESHOLD = 10_000


class Collector:
    def __init__(self, interval_s: float = FREEZE_INTERVAL_S, full_every: int = FULL_EVERY) -> None:
        self.interval_s = interval_s
        self.full_every = full_every
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None
        self._threshold: tuple[int, int, int] | None = None

    def start(self) -> None:
        # What exists at start-up (modules, routes, the app) lives as long as
        # the process: out of every pass from the first round on.
        gc.collect()
        gc.freeze()
        self._threshold = gc.get_threshold()
        _, older, oldest = self._threshold
        gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
        self._task = asyncio.create_task(self._run(), name="dmhub-collector")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self._threshold is not None:
            gc.set_threshold(*self._threshold)
            self._threshold = None

    def round(self) -> int:
        """Collect what is not frozen, then freeze the survivors; returns what was freed."""
        self.rounds += 1
        full = self.rounds % self.full_every == 0
        if full:
            gc.unfreeze()
        started = time.perf_counter()
        # A young pass: what is older has been through Python's own young
        # passes already, a few milliseconds at a time, as it arrived.
        freed = gc.collect() if full else gc.collect(1)
        gc.freeze()
        took = time.perf_counter() - started
        if took > SLOW_PASS_S:
            log.info(
                "garbage collection paused the process %.0f ms (%s pass, %d freed)",
                took * 1000,
                "full" if full else "young",
                freed,
            )
        return freed

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.round()
            except Exception:  # never let the collector take the process down
                log.exception("garbage collection round failed")
