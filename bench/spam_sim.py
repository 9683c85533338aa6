"""The spam simulation: open DMs under a mass-messaging attack, with numbers.

    python bench/spam_sim.py               # full size (make spam-sim)
    python bench/spam_sim.py --small       # the size tests/test_spam_sim.py runs
    python bench/spam_sim.py --json-only   # only the JSON summary

Starts its own Valkey and dmhub on 127.0.0.1 (every safety setting at its
default), fills it with a population, then runs for a bounded time:

- people follow each other (a random graph, about half of the follows
  returned) and talk at human rates: messages to people who follow them,
  replies, and now and then a first message to a stranger with open DMs;
- a share of the people have open DMs; a business with open DMs receives
  customers, accepts each request and answers;
- a few spammers, freshly signed up over the API, each try to message every
  open-DM account; some recipients look in their requests folder and report
  what they got (the business reports every one).

The population (accounts, follows, sessions) is written straight into the
store for speed; everything that happens afterwards goes through the public
HTTP API, as a browser or a bot would. People's accounts are backdated 30
days (the `created` field), so their reports count under the default
DMHUB_REPORTER_MIN_AGE_S; the spammers' accounts are new.

Prints a table per spammer (attempted, stored, landed in an inbox, landed in
requests, refused by limit or reason, reports received, seconds until
restricted) and for the ordinary people and the business (refused, restricted),
then a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import redis.asyncio as aredis

from chat import config
from chat.store import accounts, keys
from chat.store.msgid import IDS_PER_MS
from chat.store.store import Store
from chat.transport.auth import hash_password, new_token, token_hash
from tests.support import DmhubProcess, plain_valkey

PASSWORD = "simulation-password"
BACKDATE_S = 30 * 24 * 3600
SESSION_TTL_S = 3600
# Concurrent HTTP requests in flight from the simulation, all kinds together.
IN_FLIGHT = 48
# How long, after the run, pending reports and replies may take to finish.
SETTLE_S = 15.0
STRANGERS_PER_PERSON = 3
# Each edge with its letter in the owner's hash (ARGV[2]: f in the follower's,
# F in the followee's), as follow.lua and follow_mirror.lua write them
# (chat/store/scripts/pair_flags.lua): a send reads the letters, not the lists.
ZADD_PACKED_LUA = """
for member, score in string.gmatch(ARGV[1], '([^,:]+):(%d+)') do
  redis.call('ZADD', KEYS[1], score, member)
  local was = redis.call('HGET', KEYS[2], 'p:' .. member) or ''
  if not string.find(was, ARGV[2], 1, true) then
    redis.call('HSET', KEYS[2], 'p:' .. member, was .. ARGV[2])
  end
end
return 1
"""
# Store calls in flight while the population is written (within the pool).
STORE_BATCH = 200


@dataclass(frozen=True)
class Size:
    people: int
    spammers: int
    customers: int
    duration_s: float
    chat_per_s: float  # ordinary messages per second, everyone together
    open_share: float = 0.2
    follows_per_person: int = 12
    report_share: float = 0.3
    stranger_share: float = 0.05  # of ordinary sends: a first message to an open-DM stranger
    reply_share: float = 0.3
    seed: int = 7


FULL = Size(people=5000, spammers=5, customers=100, duration_s=60, chat_per_s=40)
SMALL = Size(people=400, spammers=2, customers=20, duration_s=12, chat_per_s=15)


@dataclass
class Tally:
    attempted: int = 0
    stored: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, outcome: str) -> None:
        self.attempted += 1
        if outcome == "stored":
            self.stored += 1
        else:
            self.refused[outcome] += 1


@dataclass
class SpammerStats(Tally):
    handle: str = ""
    started_at: float = 0.0
    recipients: list[str] = field(default_factory=list)


class Sim:
    def __init__(self, size: Size, base: str, store: Store, admin_token: str) -> None:
        self.size = size
        self.base = base
        self.store = store
        self.admin_token = admin_token
        self.rng = random.Random(size.seed)
        self.http = httpx.AsyncClient(
            base_url=base,
            timeout=20,
            limits=httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT),
        )
        self.gate = asyncio.Semaphore(IN_FLIGHT)
        self.tokens: dict[str, str] = {}  # the spammers', from sign-up over the API
        self.sessions: dict[str, asyncio.Future[str]] = {}
        self.handles: list[str] = []
        self.open_dms: list[str] = []
        self.followers: dict[str, list[str]] = {}
        self.follows: set[tuple[str, str]] = set()
        self.business = ""
        self.customers: list[str] = []
        self.people_tally = Tally()
        self.business_tally = Tally()
        self.spammers: list[SpammerStats] = []
        self.reports_sent = collections.Counter[str]()
        self.report_refusals = collections.Counter[str]()
        self.seen_in_inbox_by_reporters = 0
        self.recent: collections.deque[tuple[str, str]] = collections.deque(maxlen=500)
        self.strangers_written = collections.Counter[str]()
        self.tasks: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []
        # Request to response of each send, as the server answered it (not the
        # time spent waiting for one of the IN_FLIGHT slots).
        self.send_seconds: dict[str, list[float]] = {"people": [], "spammers": []}

    # -- population, straight into the store ---------------------------------

    async def populate(self) -> None:
        size, rng = self.size, self.rng
        pw = await hash_password(PASSWORD)
        self.handles = [f"p{i:05d}" for i in range(size.people)]
        self.business = "acme_support"
        created = str(int((time.time() - BACKDATE_S) * 1000))
        everyone = [*self.handles, self.business]
        for chunk in _chunks(everyone, STORE_BATCH):
            await asyncio.gather(
                *(
                    self.store.create_user(h, pw, h, "business" if h == self.business else "person")
                    for h in chunk
                )
            )
        self.open_dms = rng.sample(self.handles, int(size.people * size.open_share))
        opened = {*self.open_dms, self.business}
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for h in everyone:
                fields = {"created": created}
                if h in opened:
                    fields["open_dms"] = "1"
                pipe.hset(keys.user(h), mapping=fields)
            await pipe.execute()

        # Customers do not follow the business: their first message is a request.
        self.customers = rng.sample(self.handles, size.customers)
        for a in self.handles:
            for b in rng.sample(self.handles, size.follows_per_person):
                if a != b:
                    self.follows.add((a, b))
                    if rng.random() < 0.5:
                        self.follows.add((b, a))
        # The follow edges as a follow writes them (scored by clock-based ids, the
        # same score in both lists: chat/store/graph.py), one ZADD per account
        # and direction rather than one per edge.
        edges = sorted(self.follows)
        first = int(time.time() * 1000) * IDS_PER_MS
        following: dict[str, dict[str, int]] = collections.defaultdict(dict)
        followers: dict[str, dict[str, int]] = collections.defaultdict(dict)
        for n, (a, b) in enumerate(edges, start=first):
            following[a][b] = n
            followers[b][a] = n
        # Packed as one string per key: the client's encoding of ~700k separate
        # arguments, not Valkey, would be most of the set-up time.
        add = self.store.redis.register_script(ZADD_PACKED_LUA)
        work = [(keys.following(a), keys.user(a), keys.FOLLOWS, m) for a, m in following.items()]
        work += [
            (keys.followers(b), keys.user(b), keys.FOLLOWED_BY, m) for b, m in followers.items()
        ]
        for chunk in _chunks(work, STORE_BATCH):
            await asyncio.gather(
                *(
                    add(
                        keys=[key, user],
                        args=[",".join(f"{h}:{n}" for h, n in members.items()), letter],
                    )
                    for key, user, letter, members in chunk
                )
            )
        self.followers = {b: list(members) for b, members in followers.items()}

    async def token(self, who: str) -> str:
        """A session for `who`, made in the store the first time it acts (most
        of the population never does, so none is made for them)."""
        if who in self.tokens:
            return self.tokens[who]
        made = self.sessions.get(who)
        if made is None:
            made = self.sessions[who] = asyncio.ensure_future(self.new_session(who))
        return await made

    async def new_session(self, who: str) -> str:
        token = new_token()
        await accounts.start_session(
            self.store, token_hash(token), who, SESSION_TTL_S, "127.0.0.1", "spam-sim"
        )
        return token

    # -- API calls -------------------------------------------------------------

    async def call(
        self, who: str, method: str, path: str, body: Any = None, **params: Any
    ) -> httpx.Response:
        async with self.gate:
            token = await self.token(who)
            return await self.http.request(
                method,
                path,
                json=body,
                params=params or None,
                headers={"Authorization": f"Bearer {token}"},
            )

    async def send(self, who: str, to: str, text: str) -> tuple[str, dict[str, Any] | None]:
        """Outcome ("stored", "limit:NAME", "reason:NAME", "http:NNN") and the message."""
        r = await self.call(
            who,
            "POST",
            f"/api/conversations/{to}/messages",
            {"text": text, "client_id": uuid.uuid4().hex},
        )
        kind = "spammers" if who in self.tokens else "people"
        self.send_seconds[kind].append(r.elapsed.total_seconds())
        if r.status_code in (200, 201):
            return "stored", r.json()["message"]
        err = _error(r)
        if r.status_code == 429:
            return f"limit:{err.get('limit')}", None
        if r.status_code == 403:
            return f"reason:{err.get('reason')}", None
        return f"http:{r.status_code}:{err.get('code')}", None

    def spawn(self, coro: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception as exc:  # reported in the summary, never lost
                self.errors.append(f"{type(exc).__name__}: {exc}")

        task = asyncio.create_task(guarded())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- ordinary people ---------------------------------------------------------

    async def ordinary(self, deadline: float) -> None:
        size, rng = self.size, self.rng
        talkers = [h for h in self.handles if self.followers.get(h)]
        strangers_open = [h for h in self.open_dms]
        n = 0
        # Open loop on a schedule: a late wake-up sends what was due, so the rate
        # holds when the machine is busy.
        due = time.monotonic()
        while time.monotonic() < deadline:
            due += rng.expovariate(size.chat_per_s)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            n += 1
            roll = rng.random()
            if roll < size.reply_share and self.recent:
                a, b = rng.choice(self.recent)
                self.spawn(self.person_send(b, a, f"re: message {n}"))
            elif roll < size.reply_share + size.stranger_share:
                a = rng.choice(self.handles)
                b = rng.choice(strangers_open)
                if (b, a) in self.follows or a == b:
                    continue
                if self.strangers_written[a] >= STRANGERS_PER_PERSON:
                    continue
                self.strangers_written[a] += 1
                self.spawn(self.first_contact(a, b, n))
            else:
                a = rng.choice(talkers)
                b = rng.choice(self.followers[a])
                self.spawn(self.person_send(a, b, f"hello {n}"))

    async def person_send(self, a: str, b: str, text: str) -> None:
        outcome, _ = await self.send(a, b, text)
        self.people_tally.add(outcome)
        if outcome == "stored":
            self.recent.append((a, b))

    async def first_contact(self, a: str, b: str, n: int) -> None:
        outcome, _ = await self.send(a, b, f"hi, we met at the meetup ({n})")
        self.people_tally.add(outcome)
        if outcome != "stored":
            return
        await asyncio.sleep(self.rng.uniform(0.5, 2))
        if self.rng.random() < 0.5:
            r = await self.call(b, "POST", f"/api/conversations/{a}/accept")
            if r.status_code != 204:
                self.errors.append(f"accept {r.status_code}")
            await self.person_send(b, a, "nice to hear from you")

    # -- the business and its customers ------------------------------------------

    async def customer_flow(self, deadline: float) -> None:
        every = (deadline - time.monotonic()) * 0.8 / max(1, len(self.customers))
        for i, c in enumerate(self.customers):
            self.spawn(self.customer(c, i))
            await asyncio.sleep(every)

    async def customer(self, c: str, i: int) -> None:
        outcome, _ = await self.send(c, self.business, f"Hello, where is my order #{1000 + i}?")
        self.people_tally.add(outcome)
        if outcome != "stored":
            return
        await asyncio.sleep(self.rng.uniform(0.3, 1.5))
        r = await self.call(self.business, "POST", f"/api/conversations/{c}/accept")
        if r.status_code != 204:
            self.errors.append(f"business accept {r.status_code}")
        outcome, _ = await self.send(self.business, c, f"Hi! Order #{1000 + i} ships today.")
        self.business_tally.add(outcome)
        if outcome != "stored":
            return
        await asyncio.sleep(self.rng.uniform(0.3, 1.5))
        outcome, _ = await self.send(c, self.business, "Great, thanks!")
        self.people_tally.add(outcome)

    # -- spammers ---------------------------------------------------------------

    async def sign_up_spammers(self) -> None:
        for i in range(self.size.spammers):
            handle = f"deals{i}_{uuid.uuid4().hex[:6]}"
            r = await self.http.post("/api/accounts", json={"handle": handle, "password": PASSWORD})
            if r.status_code != 201:
                raise RuntimeError(f"spammer sign-up refused: {r.status_code} {r.text}")
            self.tokens[handle.lower()] = r.json()["token"]
            self.spammers.append(SpammerStats(handle=handle.lower()))

    async def spam(self, s: SpammerStats, deadline: float) -> None:
        targets = [*self.open_dms, self.business]
        self.rng.shuffle(targets)
        # Paced to cover every target within most of the run: fast enough to be a
        # mass mailing, slow enough that reports can arrive while it goes on.
        every = (deadline - time.monotonic()) * 0.7 / len(targets)
        s.started_at = time.time()
        for n, target in enumerate(targets):
            tick = time.monotonic()
            outcome, msg = await self.send(s.handle, target, f"Limited offer #{n}: cheap watches")
            s.add(outcome)
            if outcome == "stored" and msg:
                s.recipients.append(target)
                self.spawn(self.react(target, s.handle))
            await asyncio.sleep(max(0.0, every - (time.monotonic() - tick)))

    async def react(self, recipient: str, spammer: str) -> None:
        """The recipient looks at their requests a little later; some report."""
        reports = recipient == self.business or self.rng.random() < self.size.report_share
        if not reports:
            return
        await asyncio.sleep(self.rng.uniform(1, 4))
        r = await self.call(recipient, "GET", "/api/conversations", folder="requests", limit=100)
        convs = r.json()["conversations"] if r.status_code == 200 else []
        found = next((c for c in convs if c["peer"]["handle"].lower() == spammer), None)
        if found is None:
            r = await self.call(recipient, "GET", "/api/conversations", folder="inbox", limit=100)
            inbox = r.json()["conversations"] if r.status_code == 200 else []
            if any(c["peer"]["handle"].lower() == spammer for c in inbox):
                self.seen_in_inbox_by_reporters += 1
            return
        body: dict[str, Any] = {"handle": spammer, "reason": "spam"}
        if found.get("last_message"):
            body["message_id"] = found["last_message"]["id"]
        r = await self.call(recipient, "POST", "/api/reports", body)
        if r.status_code == 202:
            self.reports_sent[spammer] += 1
        else:
            self.report_refusals[f"{r.status_code}:{_error(r).get('code')}"] += 1

    # -- the run -----------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        await self.populate()
        await self.sign_up_spammers()
        populated_s = time.monotonic() - t0
        deadline = time.monotonic() + self.size.duration_s
        spam_start = self.size.duration_s * 0.1
        await asyncio.gather(
            self.ordinary(deadline),
            self.customer_flow(deadline),
            *(self.delayed(spam_start, lambda s=s: self.spam(s, deadline)) for s in self.spammers),
        )
        settle_until = time.monotonic() + SETTLE_S
        # Tasks start tasks (a stored spam starts its recipient's reaction): wait in rounds.
        while self.tasks and time.monotonic() < settle_until:
            await asyncio.wait(set(self.tasks), timeout=settle_until - time.monotonic())
        unfinished = len(self.tasks)
        for task in list(self.tasks):
            task.cancel()
        return await self.summary(populated_s, time.monotonic() - t0, unfinished)

    @staticmethod
    async def delayed(seconds: float, start: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(seconds)
        await start()

    async def admin(self, path: str, **params: Any) -> Any:
        r = await self.http.get(
            path, params=params or None, headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        r.raise_for_status()
        return r.json()

    async def summary(self, populated_s: float, total_s: float, unfinished: int) -> dict[str, Any]:
        restrictions = (await self.admin("/api/admin/restrictions"))["restrictions"]
        restricted_at = {r["handle"].lower(): _epoch(r["restricted_at"]) for r in restrictions}
        spammer_rows = []
        for s in self.spammers:
            async with self.store.redis.pipeline(transaction=False) as pipe:
                for r in s.recipients:
                    pipe.zscore(keys.inbox(r), s.handle)
                in_inbox = sum(1 for score in await pipe.execute() if score is not None)
            log = await self.admin("/api/admin/reports", handle=s.handle)
            reporters = {e["reporter"].lower() for e in log["reports"]}
            at = restricted_at.get(s.handle)
            spammer_rows.append(
                {
                    "handle": s.handle,
                    "attempted": s.attempted,
                    "stored": s.stored,
                    "landed_inbox": in_inbox,
                    "landed_requests": s.stored - in_inbox,
                    "refused": dict(sorted(s.refused.items())),
                    "reports_received": len(reporters),
                    "restricted": at is not None,
                    "seconds_until_restricted": (
                        round(at - s.started_at, 1) if at is not None else None
                    ),
                }
            )
        spam_handles = {s.handle for s in self.spammers}
        size = self.size
        return {
            "size": asdict(size),
            "settings": {
                "DMHUB_LIMIT_MESSAGES_PER_MIN": config.DEFAULT_LIMIT_MESSAGES_PER_MIN,
                "DMHUB_LIMIT_NEW_CONVERSATIONS_PER_DAY": (
                    config.DEFAULT_LIMIT_NEW_CONVERSATIONS_PER_DAY
                ),
                "DMHUB_LIMIT_REQUESTS_PER_HOUR": config.DEFAULT_LIMIT_REQUESTS_PER_HOUR,
                "DMHUB_LIMIT_REPORTS_PER_HOUR": config.DEFAULT_LIMIT_REPORTS_PER_HOUR,
                "DMHUB_RESTRICT_REPORTERS": config.DEFAULT_RESTRICT_REPORTERS,
                "DMHUB_RESTRICT_WINDOW_S": config.DEFAULT_RESTRICT_WINDOW_S,
                "DMHUB_REPORTER_MIN_AGE_S": config.DEFAULT_REPORTER_MIN_AGE_S,
                "reporter_age": "people's accounts backdated 30 days (created field)",
            },
            "population": {
                "people": size.people,
                "open_dms": len(self.open_dms),
                "follows": len(self.follows),
                "customers": len(self.customers),
                "business": self.business,
                "populated_in_s": round(populated_s, 1),
            },
            "spammers": spammer_rows,
            "people": {
                "attempted": self.people_tally.attempted,
                "stored": self.people_tally.stored,
                "refused": sum(self.people_tally.refused.values()),
                "refused_by": dict(self.people_tally.refused),
                "restricted": sorted(set(restricted_at) - spam_handles - {self.business}),
            },
            "business": {
                "attempted": self.business_tally.attempted,
                "stored": self.business_tally.stored,
                "refused": sum(self.business_tally.refused.values()),
                "refused_by": dict(self.business_tally.refused),
                "restricted": self.business in restricted_at,
            },
            "reports": {
                "accepted": sum(self.reports_sent.values()),
                "refused": dict(self.report_refusals),
                "spam_found_in_inbox_by_reporters": self.seen_in_inbox_by_reporters,
            },
            "send_ms": {kind: _percentiles(v) for kind, v in self.send_seconds.items()},
            "unfinished_tasks": unfinished,
            "errors": self.errors[:20],
            "seconds": round(total_s, 1),
        }

    async def aclose(self) -> None:
        await self.http.aclose()


def _chunks(items: list[Any], n: int) -> list[list[Any]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def _error(r: httpx.Response) -> dict[str, Any]:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        err: dict[str, Any] = r.json()["error"]
        return err
    return {}


def _percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1] * 1000, 1)}


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def simulate(size: Size) -> dict[str, Any]:
    """Start Valkey and dmhub on 127.0.0.1, run the scenario, stop both; the summary."""
    admin_token = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="dmhub-spam-sim-") as tmp:
        with plain_valkey(Path(tmp), "--appendonly", "no") as port:
            url = f"redis://127.0.0.1:{port}"
            server = DmhubProcess(
                {
                    "REDIS_URL": url,
                    "DMHUB_DATA_DIR": tmp,
                    "DMHUB_ADMIN_TOKEN": admin_token,
                    # Every safety setting at its default, sign-ups included.
                    "DMHUB_LIMIT_SIGNUPS_PER_HOUR": str(config.DEFAULT_LIMIT_SIGNUPS_PER_HOUR),
                }
            ).start()
            # Everything after start() inside the try: the server is ours to end.
            try:
                client = aredis.Redis.from_url(
                    url, decode_responses=True, max_connections=STORE_BATCH
                )
                store = Store(client, event_retention=config.DEFAULT_EVENT_RETENTION)
                sim = Sim(size, server.url, store, admin_token)
                try:
                    return await asyncio.wait_for(sim.run(), size.duration_s + 240)
                finally:
                    await sim.aclose()
                    await client.aclose()
            finally:
                server.terminate()


def table(summary: dict[str, Any]) -> str:
    head = ("spammer", "attempted", "stored", "inbox", "requests", "refused (by)", "reports",
            "restricted after")  # fmt: skip
    rows = [head]
    for s in summary["spammers"]:
        by = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in s["refused"].items()) or "-"
        after = f"{s['seconds_until_restricted']} s" if s["restricted"] else "not restricted"
        rows.append((s["handle"], str(s["attempted"]), str(s["stored"]), str(s["landed_inbox"]),
                     str(s["landed_requests"]), by, str(s["reports_received"]), after))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    p, b = summary["people"], summary["business"]
    pop = summary["population"]
    lines += [
        "",
        f"people ({pop['people']}, {pop['open_dms']} with open DMs, {pop['follows']} follows, "
        f"{pop['customers']} of them customers): {p['attempted']} sends, {p['stored']} stored, "
        f"{p['refused']} refused, {len(p['restricted'])} restricted",
        f"business @{pop['business']}: {b['attempted']} replies, {b['stored']} stored, "
        f"{b['refused']} refused, restricted: {'yes' if b['restricted'] else 'no'}",
        "sends answered in (ms): "
        + "; ".join(
            f"{kind} p50 {v.get('p50')} / p99 {v.get('p99')} / max {v.get('max')}"
            for kind, v in summary["send_ms"].items()
        ),
        f"reports accepted: {summary['reports']['accepted']}; "
        f"reporters: {summary['settings']['reporter_age']}; "
        f"run {summary['seconds']} s (population written in {pop['populated_in_s']} s)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="the size the test suite runs")
    parser.add_argument("--people", type=int, help="override the number of people")
    parser.add_argument("--spammers", type=int, help="override the number of spammers")
    parser.add_argument("--seconds", type=float, help="override the run time")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    size = SMALL if args.small else FULL
    overrides = {
        k: v
        for k, v in {
            "people": args.people,
            "spammers": args.spammers,
            "duration_s": args.seconds,
        }.items()
        if v is not None
    }
    size = Size(**{**asdict(size), **overrides})
    summary = asyncio.run(simulate(size))
    if not args.json_only:
        print(table(summary))
        print()
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
