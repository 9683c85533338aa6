"""Delivery: every `dmhub serve` process runs one dispatcher.

Each webhook is served by exactly one process at a time, the holder of its
lease (`whl:{lc}:{id}`, SET NX PX, renewed with a compare-and-set script,
released on shutdown). A process that dies stops renewing; the lease expires
and another process's next scan takes the webhook over. The lease is checked
again in the same script that moves `delivered_up_to`, so a process that lost
it (paused, cut off) cannot move the cursor of a webhook someone else serves.

A served webhook has a worker task that reads the account's event stream from
its position and POSTs one event at a time, in order; the position moves only
after a 2xx. Failures are retried with exponential backoff and jitter; past
the deadline the webhook is deactivated. Workers wake when an event is
published on the account's channel (the dispatcher's own pub/sub connection
listens on the channels of the accounts it serves), or when the API asks
(`whwake:{lc}`: a ping, a replay, a delete). One semaphore bounds the requests
in flight across all webhooks; each request has its own timeout, so a slow
receiver holds one slot and delays nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import time
from dataclasses import dataclass

import httpx
from redis.exceptions import RedisError

from chat import metrics
from chat.config import WebhookSettings
from chat.pubsub import Broker
from chat.store import keys
from chat.store.store import Store, cursor_key
from chat.store.webhooks import WebhookStore
from chat.webhooks import policy
from chat.webhooks.guard import BlockedAddress, GuardedTransport
from chat.webhooks.signing import DELIVERY_HEADER, SIGNATURE_HEADER, signature_header

log = logging.getLogger("dmhub.webhooks")

EVENT_BATCH = 100
# What one worker holds in memory at most (at least one event): a page of
# 10,000-character messages would otherwise be megabytes per webhook.
MAX_BATCH_BYTES = 256 * 1024
# Wake-ups come from pub/sub; this re-check only covers one lost in a reconnect.
IDLE_RECHECK_S = 15.0
REDIS_RETRY_S = 1.0
SUPERVISOR_BACKOFF_MAX_S = 10.0
RELEASE_TIMEOUT_S = 2.0
MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "dmhub-webhooks/1"
WAKE_PREFIX = keys.webhook_wake("")[:-1]  # "whwake:{"
# Updates to a webhook: 1 applied, 0 it is gone, -1 lease lost, -2 replayed meanwhile.
APPLIED, GONE, LEASE_LOST, REPLAYED = 1, 0, -1, -2


async def end_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel until done. A cancellation can be lost inside a library (a Redis
    client that turns it into its own timeout error, caught and retried), so
    the loops also check `stopping`, and this asks again until they end."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)


def keep_serving(result: int) -> bool:
    """Gone or lease lost: this worker stops. Replayed: it starts over."""
    return result in (APPLIED, REPLAYED)


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    label: str  # the metrics outcome
    error: str | None = None


class Dispatcher:
    def __init__(
        self,
        store: WebhookStore,
        users: Store,
        settings: WebhookSettings,
        redis_url: str,
        *,
        cluster: bool = False,
    ) -> None:
        self.store = store
        self.users = users
        self.settings = settings
        self.owner = f"{os.getpid()}-{secrets.token_hex(6)}"
        self.lease_ms = max(int(settings.lease_s * 1000), 100)
        self.workers: dict[tuple[str, str], Worker] = {}
        self.by_account: dict[str, set[Worker]] = {}
        self.broker = Broker(
            redis_url, on_message=self._heard, on_resubscribed=self._wake_all, cluster=cluster
        )
        self.http = httpx.AsyncClient(
            transport=GuardedTransport(
                allow_private=settings.allow_private, max_connections=settings.concurrency
            ),
            timeout=settings.timeout_s,
            follow_redirects=False,
            trust_env=False,
        )
        self.slots = asyncio.Semaphore(settings.concurrency)
        self._kick = asyncio.Event()
        self._nudged: set[str] = set()
        self._renewed_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self.stopping = False
        metrics.WEBHOOKS_SERVED.set_function(lambda: len(self.workers))
        metrics.WEBHOOKS_FAILING.set_function(
            lambda: sum(1 for w in self.workers.values() if w.failing)
        )

    # -- life cycle ----------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start()
        self._task = asyncio.create_task(self._supervise(), name="dmhub-webhooks")

    async def stop(self) -> None:
        self.stopping = True
        held = list(self.workers)
        tasks = [w.task for w in self.workers.values()]
        if self._task is not None:
            tasks.append(self._task)
        await end_tasks(tasks)
        # Hand the leases back so another process takes over at its next scan
        # rather than after they expire. An in-flight delivery was cut short: its
        # event is delivered again by the next holder (at least once).
        with contextlib.suppress(Exception):
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                for lc, webhook_id in held:
                    await self.store.release(lc, webhook_id, self.owner)
        await self.broker.stop()
        await self.http.aclose()

    def nudge(self, lc: str) -> None:
        """Look at this account's webhooks now (one was created or changed here)."""
        self._nudged.add(lc)
        self._kick.set()
        for worker in self.by_account.get(lc, ()):
            worker.notify(control=True)

    def lease_fresh(self) -> bool:
        """False when renewals have failed for most of a lease: stop sending."""
        elapsed = asyncio.get_running_loop().time() - self._renewed_at
        return elapsed < self.settings.lease_s * 0.8

    # -- the supervised loop: renew, scan, claim -------------------------------------

    async def _supervise(self) -> None:
        delay = 0.5
        while not self.stopping:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except RedisError as exc:
                log.warning("webhook dispatcher: Redis error %s; retrying", exc)
            except Exception:
                log.exception("webhook dispatcher failed; restarting it")
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, SUPERVISOR_BACKOFF_MAX_S)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        renew_every = self.settings.lease_s / 3
        next_renew = next_scan = 0.0
        while not self.stopping:
            now = loop.time()
            nudged, self._nudged = self._nudged, set()
            if now >= next_renew:
                await self._renew()
                next_renew = now + renew_every
            if now >= next_scan:
                await self._scan()
                next_scan = now + self.settings.poll_s
            else:
                for lc in nudged:
                    await self._claim(lc)
            self._kick.clear()
            if self._nudged:
                continue
            timeout = max(min(next_renew, next_scan) - loop.time(), 0.0)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that lands as the wait ends, and stop() would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._kick.wait()

    async def _renew(self) -> None:
        held = list(self.workers)
        try:
            results = await self.store.renew(held, self.owner, self.lease_ms)
        except (RedisError, OSError) as exc:
            log.warning("could not renew %d webhook leases: %s", len(held), exc)
            return
        self._renewed_at = asyncio.get_running_loop().time()
        for key, kept in zip(held, results, strict=True):
            worker = self.workers.get(key)
            if not kept and worker is not None:
                log.warning("lost the lease of webhook %s of @%s", key[1], key[0])
                worker.task.cancel()

    async def _scan(self) -> None:
        async for lc in self.store.accounts():
            await self._claim(lc)

    async def _claim(self, lc: str) -> None:
        for webhook_id in await self.store.ids(lc):
            if (lc, webhook_id) in self.workers:
                continue
            if await self.store.acquire(lc, webhook_id, self.owner, self.lease_ms):
                if not self.workers:
                    self._renewed_at = asyncio.get_running_loop().time()
                worker = Worker(self, lc, webhook_id)
                self.workers[(lc, webhook_id)] = worker
                self.by_account.setdefault(lc, set()).add(worker)

    # -- wake-ups --------------------------------------------------------------------

    async def listen(self, lc: str) -> None:
        await self.broker.subscribe(keys.channel(lc))
        await self.broker.subscribe(keys.webhook_wake(lc))

    async def forget(self, worker: Worker) -> None:
        key = (worker.lc, worker.webhook_id)
        if self.workers.get(key) is worker:
            del self.workers[key]
        workers = self.by_account.get(worker.lc)
        if workers is not None:
            workers.discard(worker)
            if not workers:
                del self.by_account[worker.lc]
                await self.broker.unsubscribe(keys.channel(worker.lc))
                await self.broker.unsubscribe(keys.webhook_wake(worker.lc))

    def _heard(self, channel: str, payload: str) -> None:
        if channel.startswith(WAKE_PREFIX):
            for worker in self.by_account.get(channel[len(WAKE_PREFIX) : -1], ()):
                if payload in ("*", worker.webhook_id):
                    worker.notify(control=True)
        elif channel.startswith(keys.CHANNEL_PREFIX):
            # Typing and session ends are not in the stream: nothing to deliver.
            if payload.startswith(("t ", "x ")):
                return
            for worker in self.by_account.get(keys.channel_user(channel), ()):
                worker.notify(control=False)

    async def _wake_all(self, channels: frozenset[str] = frozenset()) -> None:
        for worker in list(self.workers.values()):
            worker.notify(control=True)

    # -- one request ------------------------------------------------------------------

    async def post(self, url: str, secret: str, delivery_id: str, body: bytes) -> Outcome:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            DELIVERY_HEADER: delivery_id,
        }
        async with self.slots:
            # Signed when it goes out, so the time in it is the sending time.
            headers[SIGNATURE_HEADER] = signature_header(secret, int(time.time()), body)
            outcome = await self._request(url, headers, body)
        metrics.WEBHOOK_DELIVERIES.labels(outcome.label).inc()
        return outcome

    async def _request(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        limit = self.settings.timeout_s
        try:
            async with asyncio.timeout(limit):
                async with self.http.stream("POST", url, content=body, headers=headers) as reply:
                    size = 0
                    async for chunk in reply.aiter_raw():
                        size += len(chunk)
                        if size > MAX_RESPONSE_BYTES:
                            break
                    status = reply.status_code
        except (TimeoutError, httpx.TimeoutException):
            return Outcome(False, "timeout", f"No answer within {limit:g} s.")
        except BlockedAddress as exc:
            return Outcome(False, "blocked", f"Refused to connect: {exc}")
        except httpx.HTTPError as exc:
            return Outcome(False, "network", f"Could not reach the receiver: {exc}")
        except Exception as exc:  # a URL httpx cannot use, and the like: say so, go on
            return Outcome(False, "network", f"Could not deliver: {exc}")
        if 200 <= status < 300:
            return Outcome(True, "delivered")
        if 300 <= status < 400:
            return Outcome(False, "http_error", f"HTTP {status}: redirects are not followed.")
        return Outcome(False, "http_error", f"HTTP {status}.")


class Worker:
    """Serves one webhook while this process holds its lease."""

    def __init__(self, dispatcher: Dispatcher, lc: str, webhook_id: str) -> None:
        self.d = dispatcher
        self.lc = lc
        self.webhook_id = webhook_id
        self.failing = False
        self._wakeup = asyncio.Event()
        self._control = False
        self._new = False
        self._account: str | None = None
        self._gen: str | None = None
        self._batch: list[tuple[str, str, str]] = []  # (cursor, type, frame)
        self._attempt = 0
        self._retry_at = 0.0
        self.task = asyncio.create_task(self._run(), name=f"dmhub-webhook-{webhook_id}")

    def notify(self, *, control: bool) -> None:
        if control:
            self._control = True
        else:
            self._new = True
        self._wakeup.set()

    async def _run(self) -> None:
        try:
            try:
                await self.d.listen(self.lc)
            except (RedisError, OSError, TimeoutError) as exc:
                # The broker subscribes again by itself; until then the idle
                # re-check stands in for wake-ups.
                log.warning("webhook %s: could not listen for events yet: %s", self.webhook_id, exc)
            while not self.d.stopping:
                try:
                    if not await self._step():
                        return
                except (RedisError, OSError) as exc:
                    log.warning("webhook %s: Redis error %s; retrying", self.webhook_id, exc)
                    await asyncio.sleep(REDIS_RETRY_S * (0.5 + random.random()))
                except Exception:
                    log.exception("webhook %s: worker step failed; retrying", self.webhook_id)
                    await asyncio.sleep(REDIS_RETRY_S)
        finally:
            await self.d.forget(self)

    async def _wait(self, timeout: float, *, control_only: bool) -> None:
        """Sleep until `timeout`, or until the API asks (and, unless
        `control_only`, until a new event arrives)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._control:
                self._control = False
                return
            if self._new and not control_only:
                self._new = False
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    async def _step(self) -> bool:
        """One thing: a ping, one delivery attempt, or a wait. False: stop serving."""
        store, lc, webhook_id = self.d.store, self.lc, self.webhook_id
        row = await store.get(lc, webhook_id)
        if row is None:
            return False
        if self._account is None:
            user = await self.d.users.user(lc)
            self._account = user["handle"] if user else lc
        gen = row.get("gen", "0")
        if gen != self._gen:  # a replay (or the first look): start over from the position
            self._gen, self._batch, self._attempt, self._retry_at = gen, [], 0, 0.0
        active = row.get("active", "1") != "0"
        self.failing = bool(row.get("failing")) or not active
        ping = row.get("ping")
        if ping:
            return await self._ping(ping, row)
        if not active:
            await self._wait(IDLE_RECHECK_S, control_only=False)
            return True
        loop = asyncio.get_running_loop()
        if loop.time() < self._retry_at:
            await self._wait(self._retry_at - loop.time(), control_only=True)
            return True
        if not self._batch:
            keep = await self._fetch(row, gen)
            if not self._batch:
                return keep
            # Events were there: deliver the first now, on the state just read.
        wanted = row.get("events", "").split(",")
        skipped: str | None = None
        while self._batch and self._batch[0][1] not in wanted:
            skipped = self._batch.pop(0)[0]
        if not self._batch:
            # Only events this webhook does not want: move past them.
            return skipped is None or keep_serving(await self._advance(row, gen, skipped))
        if not self.d.lease_fresh():
            await asyncio.sleep(REDIS_RETRY_S)
            return True
        cursor, kind, frame = self._batch[0]
        body = policy.delivery_body(cursor, kind, self._account, frame)
        outcome = await self.d.post(row["url"], row["secret"], cursor, body)
        if outcome.ok:
            stored_ms = cursor_key(cursor)[0]
            metrics.WEBHOOK_LATENCY.observe(max(time.time() - stored_ms / 1000, 0.0))
            result = await self._advance(row, gen, cursor)
            if result == APPLIED:
                self._batch.pop(0)
                self._attempt, self._retry_at = 0, 0.0
            return keep_serving(result)
        self._attempt += 1
        # A failing receiver may stay down for hours: hold only the event it owes.
        del self._batch[1:]
        delay = policy.backoff_delay(
            self._attempt, self.d.settings.backoff_first_s, self.d.settings.backoff_max_s,
            random.random(),
        )  # fmt: skip
        self._retry_at = loop.time() + delay
        return keep_serving(await self._failed(row, gen, outcome))

    async def _fetch(self, row: dict[str, str], gen: str) -> bool:
        store, lc = self.d.store, self.lc
        position = row.get("cursor") or row.get("start") or "0-0"
        self._new = False  # before the read: an event published after it wakes us
        page = await store.events_after(lc, position, EVENT_BATCH)
        resume_at = policy.cursor_before(page.floor) if page.floor != "0-0" else "0-0"
        if cursor_key(position) < cursor_key(resume_at):
            # Retention trimmed events this webhook had not had: say so, and go
            # on from the oldest event kept (the position moves to just before it).
            note = (
                f"Events after {position} and before {page.floor} had left the event "
                "stream's retention (DMHUB_EVENT_RETENTION) before they could be "
                f"delivered; delivery resumed from {page.floor}, the oldest event kept."
            )
            log.warning("webhook %s of @%s: %s", self.webhook_id, lc, note)
            result = await store.update(
                lc, self.webhook_id, owner=self.d.owner, gen=gen,
                set_fields={"cursor": resume_at, "error": note,
                            "errkind": policy.ERROR_GAP},
            )  # fmt: skip
            return keep_serving(result)
        if not page.events:
            await self._wait(IDLE_RECHECK_S, control_only=False)
            return True
        size = 0
        for cursor, frame in page.events:
            size += len(frame)
            if self._batch and size > MAX_BATCH_BYTES:
                break
            self._batch.append((cursor, policy.event_type(frame), frame))
        return True

    async def _advance(self, row: dict[str, str], gen: str, cursor: str) -> int:
        cleared: tuple[str, ...] = ("failing",)
        if row.get("errkind") == policy.ERROR_FAILING:
            cleared += ("error", "errkind")
        return await self.d.store.update(
            self.lc, self.webhook_id, owner=self.d.owner, gen=gen,
            set_fields={"cursor": cursor}, delete_fields=cleared,
        )  # fmt: skip

    async def _failed(self, row: dict[str, str], gen: str, outcome: Outcome) -> int:
        now_ms = int(time.time() * 1000)
        failing = int(row.get("failing") or now_ms)
        error = outcome.error or "Delivery failed."
        fields = {"failing": str(failing), "error": error, "errkind": policy.ERROR_FAILING}
        deadline = self.d.settings.deactivate_after_s
        if policy.past_deadline(failing, now_ms, deadline):
            fields["active"] = "0"
            fields["error"] = f"{error} Deactivated after failing for {deadline:g} s."
            log.warning("webhook %s of @%s deactivated: %s", self.webhook_id, self.lc, error)
        return await self.d.store.update(
            self.lc, self.webhook_id, owner=self.d.owner, gen=gen, set_fields=fields
        )

    async def _ping(self, ping_id: str, row: dict[str, str]) -> bool:
        assert self._account is not None
        body = policy.delivery_body(
            ping_id, policy.PING, self._account, policy.ping_frame(self.webhook_id)
        )
        outcome = await self.d.post(row["url"], row["secret"], ping_id, body)
        if outcome.ok:
            # A receiver that answers is back: reactivate, and retry now.
            result = await self.d.store.update(
                self.lc, self.webhook_id, owner=self.d.owner, clear_ping=ping_id,
                set_fields={"active": "1"}, delete_fields=("failing", "error", "errkind"),
            )  # fmt: skip
            self._attempt, self._retry_at = 0, 0.0
        else:
            result = await self.d.store.update(
                self.lc, self.webhook_id, owner=self.d.owner, clear_ping=ping_id,
                set_fields={"error": f"Ping failed: {outcome.error}",
                            "errkind": policy.ERROR_FAILING},
            )  # fmt: skip
        return keep_serving(result)
