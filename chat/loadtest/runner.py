"""The `dmhub loadtest` command: set up, run generator processes, show, summarize."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import queue
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import psutil
import uvloop
from rich.console import Console
from rich.live import Live
from rich.table import Table

from chat.loadtest.adapters import Account, load_adapter, run_prefix
from chat.loadtest.generator import Generator, Plan
from chat.loadtest.stats import Tally, summary_ms

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
STARTUP_TIMEOUT_S = 120.0
EXIT_LOST = 1
EXIT_FAILED = 2


@dataclass
class Options:
    urls: list[str]
    connections: int = 100
    pairs: int = 50
    rate: float = 100.0
    duration: float = 10.0
    drain: float = 5.0
    ramp: float = 500.0
    procs: int = 1
    json: bool = False
    slow_readers: float = 0.0
    reconnect_churn: float = 0.0
    text_size: int = 32
    adapter: str = "dmhub"
    server_pids: list[int] = field(default_factory=list)
    prefix: str | None = None

    def validate(self) -> None:
        if not self.urls:
            raise SystemExit("dmhub loadtest: give at least one --url")
        for url in self.urls:
            host = urlsplit(url).hostname or ""
            if host not in LOOPBACK and not host.startswith("127."):
                # Load is for servers you run; refuse to point it elsewhere by mistake.
                raise SystemExit(f"dmhub loadtest: {url} is not a loopback address")
        if self.pairs < 1 or self.connections < 2 * self.pairs:
            raise SystemExit("dmhub loadtest: --connections must be at least 2 x --pairs")
        if self.rate <= 0 or self.duration <= 0 or self.procs < 1:
            raise SystemExit("dmhub loadtest: --rate, --duration and --procs must be positive")
        if not 0 <= self.slow_readers < 1:
            raise SystemExit("dmhub loadtest: --slow-readers is a fraction from 0 to below 1")
        if self.duration > 3600 or self.rate * self.duration > 10_000_000:
            raise SystemExit("dmhub loadtest: keep runs under an hour and 10 million messages")


# -- set-up through the public API ----------------------------------------------


async def prepare(options: Options) -> list[tuple[Account, Account]]:
    adapter = load_adapter(options.adapter)
    prefix = options.prefix or run_prefix()
    handles = [f"{prefix}{i}" for i in range(2 * options.pairs)]
    url = options.urls[0]
    try:
        accounts = await adapter.create_accounts(url, handles)
        pairs = [(accounts[2 * i], accounts[2 * i + 1]) for i in range(options.pairs)]
        gate = asyncio.Semaphore(16)

        async def allow(sender: Account, recipient: Account) -> None:
            async with gate:
                await adapter.allow(url, recipient, sender)

        await asyncio.gather(*(allow(s, r) for s, r in pairs))
        return pairs
    finally:
        await adapter.aclose()


def sockets_per_user(options: Options, pairs: list[tuple[Account, Account]]) -> dict[str, int]:
    users = [a.handle for pair in pairs for a in pair]
    counts = dict.fromkeys(users, 0)
    for i in range(options.connections):
        counts[users[i % len(users)]] += 1
    return counts


def make_plans(options: Options, pairs: list[tuple[Account, Account]]) -> list[Plan]:
    counts = sockets_per_user(options, pairs)
    run_id = uuid.uuid4().hex[:8]
    procs = min(options.procs, len(pairs))
    plans = []
    for index in range(procs):
        share = pairs[index::procs]
        plans.append(
            Plan(
                index=index,
                adapter=options.adapter,
                urls=options.urls,
                pairs=share,
                sockets={a.handle: counts[a.handle] for pair in share for a in pair},
                rate=options.rate * len(share) / len(pairs),
                duration=options.duration,
                drain=options.drain,
                ramp=options.ramp / procs,
                slow_fraction=options.slow_readers,
                churn_rate=options.reconnect_churn / procs,
                text_size=options.text_size,
                seed=index,
                run_id=run_id,
            )
        )
    return plans


# -- generator processes -----------------------------------------------------------


def _generator_main(plan: Plan, reports: Any, go: Any) -> None:
    def report(phase: str, wire: dict[str, Any]) -> None:
        reports.put((plan.index, phase, wire))

    async def wait_go() -> None:
        await asyncio.get_running_loop().run_in_executor(None, go.wait)

    try:
        # uvloop: the generator shares the machine with the server it measures,
        # so every bit of its own CPU it saves is contention the server is spared.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(Generator(plan, report).run(wait_go))
    except KeyboardInterrupt:
        pass
    except BaseException as exc:  # the parent must hear about it, not hang
        reports.put((plan.index, "failed", {"error": repr(exc)}))
        raise


# -- the server's footprint, when it runs here -------------------------------------


class ServerWatch:
    """RSS and CPU of the dmhub processes behind loopback URLs (Valkey separately)."""

    def __init__(self, urls: list[str], pids: list[int]) -> None:
        self.processes = self._find(urls, pids)
        self._cpu_start = 0.0
        self._wall_start = 0.0
        self.rss_idle = 0
        self.rss_connected = 0
        self.rss_peak = 0

    @staticmethod
    def _find(urls: list[str], pids: list[int]) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        wanted = set(pids)
        ports = {urlsplit(u).port for u in urls}
        if not wanted:
            try:
                for conn in psutil.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.pid:
                        if conn.laddr.port in ports:
                            wanted.add(conn.pid)
            except (psutil.AccessDenied, PermissionError):
                return []
        for pid in wanted:
            try:
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    found[proc.pid] = proc
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def _split(self) -> tuple[list[psutil.Process], list[psutil.Process]]:
        valkey: list[psutil.Process] = []
        dmhub: list[psutil.Process] = []
        for proc in self.processes:
            try:
                (valkey if "valkey" in proc.name() else dmhub).append(proc)
            except psutil.NoSuchProcess:
                continue
        return dmhub, valkey

    @staticmethod
    def _rss(procs: list[psutil.Process]) -> int:
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    @staticmethod
    def _cpu(procs: list[psutil.Process]) -> float:
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        return total

    def mark_idle(self) -> None:
        self.rss_idle = self._rss(self._split()[0])

    def mark_connected(self) -> None:
        self.rss_connected = self._rss(self._split()[0])
        self._cpu_start = self._cpu(self._split()[0])
        self._wall_start = time.monotonic()

    def sample(self) -> None:
        self.rss_peak = max(self.rss_peak, self._rss(self._split()[0]))

    def result(self, sockets: int) -> dict[str, Any] | None:
        if not self.processes:
            return None
        dmhub, valkey = self._split()
        wall = max(time.monotonic() - self._wall_start, 1e-9)
        per_socket = (self.rss_connected - self.rss_idle) / sockets if sockets else 0
        return {
            "pids": [p.pid for p in dmhub],
            "rss_mb": round(self._rss(dmhub) / 2**20, 1),
            "rss_peak_mb": round(self.rss_peak / 2**20, 1),
            "rss_per_socket_kb": round(per_socket / 1024, 1),
            "cpu_percent": round(100 * (self._cpu(dmhub) - self._cpu_start) / wall, 1),
            # The same as seconds: divided by the messages, the server's CPU per message.
            "cpu_s": round(self._cpu(dmhub) - self._cpu_start, 3),
            "valkey_rss_mb": round(self._rss(valkey) / 2**20, 1) if valkey else None,
        }


# -- the run -------------------------------------------------------------------------


def _table(phase: str, elapsed: float, totals: Tally, options: Options) -> Table:
    delivery, ack = summary_ms(totals.delivery), summary_ms(totals.ack)
    table = Table(title=f"dmhub loadtest: {phase}", show_header=False, min_width=60)
    table.add_column(style="bold")
    table.add_column(justify="right")
    running = max(elapsed, 1e-9)
    table.add_row("elapsed", f"{elapsed:6.1f} s of {options.duration:g} s")
    table.add_row(
        "sockets",
        f"{totals.connected} / {options.connections}"
        + (f"  ({totals.connect_failures} failed)" if totals.connect_failures else ""),
    )
    table.add_row("sent", f"{totals.sent:,}  ({totals.sent / running:,.0f}/s)")
    table.add_row("delivered", f"{totals.delivered:,}  ({totals.delivered / running:,.0f}/s)")
    table.add_row("delivery p50 / p99", f"{_ms(delivery['p50'])} / {_ms(delivery['p99'])}")
    table.add_row("ack p50 / p99", f"{_ms(ack['p50'])} / {_ms(ack['p99'])}")
    errors = ", ".join(f"{k} {v}" for k, v in sorted(totals.errors.items())) or "none"
    table.add_row("errors", errors)
    return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def run(options: Options) -> int:
    options.validate()
    console = Console(stderr=True)
    watch = ServerWatch(options.urls, options.server_pids)
    try:
        pairs = asyncio.run(prepare(options))
    except Exception as exc:
        console.print(f"[red]set-up failed:[/red] {exc}")
        return EXIT_FAILED
    # After set-up: sign-ups hash passwords, and argon2's buffers are not sockets.
    watch.mark_idle()
    plans = make_plans(options, pairs)
    context = multiprocessing.get_context("spawn")
    reports = context.Queue()
    go = context.Event()
    processes = [
        context.Process(target=_generator_main, args=(p, reports, go), daemon=True) for p in plans
    ]
    for process in processes:
        process.start()

    totals = Tally()
    phases = {p.index: "starting" for p in plans}
    started_at: float | None = None
    deadline = time.monotonic() + STARTUP_TIMEOUT_S + options.duration + options.drain + 30
    live = Live(console=console, refresh_per_second=4, transient=False)
    show = not options.json and console.is_terminal
    failed: list[str] = []
    if show:
        live.start()
    try:
        while any(phase != "done" for phase in phases.values()):
            if time.monotonic() > deadline or failed:
                break
            try:
                index, phase, wire = reports.get(timeout=0.25)
            except queue.Empty:
                if not any(p.is_alive() for p in processes):
                    failed.append("a generator process exited early")
                continue
            if phase == "failed":
                failed.append(wire["error"])
                continue
            phases[index] = phase
            totals.add_wire(wire)
            if not go.is_set() and all(p in ("connected", "running") for p in phases.values()):
                watch.mark_connected()
                started_at = time.monotonic()
                go.set()
            watch.sample()
            if show:
                elapsed = time.monotonic() - started_at if started_at else 0.0
                label = min(
                    phases.values(),
                    key=[
                        "starting",
                        "connecting",
                        "connected",
                        "running",
                        "draining",
                        "done",
                    ].index,
                )
                live.update(_table(label, elapsed, totals, options))
    finally:
        if show:
            live.stop()
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    if failed:
        console.print(f"[red]generator failed:[/red] {failed[0]}")
        return EXIT_FAILED

    result = summarize(options, totals, watch)
    if options.json:
        print(json.dumps(result))
    else:
        print_summary(result, Console())
    return EXIT_LOST if result["lost"] > 0 else 0


def summarize(options: Options, totals: Tally, watch: ServerWatch) -> dict[str, Any]:
    duration = options.duration
    return {
        "connections": totals.connected,
        "connect_failures": totals.connect_failures,
        "sent": totals.sent,
        "acked": totals.acked,
        "delivered": totals.delivered,
        "expected": totals.expected,
        "lost": max(totals.expected - totals.delivered, 0),
        "duplicates": totals.duplicates,
        "errors": dict(totals.errors),
        "reconnects": totals.reconnects,
        "slow_readers_closed": totals.slow_closed,
        "duration_s": duration,
        "offered_rate": options.rate,
        "send_rate": round(totals.sent / duration, 1),
        "delivered_rate": round(totals.delivered / duration, 1),
        "latency_ms": summary_ms(totals.delivery),
        "ack_latency_ms": summary_ms(totals.ack),
        "connect_ms": summary_ms(totals.connect),
        "server": watch.result(totals.connected),
    }


def print_summary(result: dict[str, Any], console: Console) -> None:
    table = Table(title="dmhub loadtest summary", show_header=True)
    table.add_column("measure", style="bold")
    table.add_column("value", justify="right")
    lost_style = "red" if result["lost"] else "green"
    rows = [
        ("sockets", f"{result['connections']:,}"),
        ("sent / acked", f"{result['sent']:,} / {result['acked']:,}"),
        ("delivered / expected", f"{result['delivered']:,} / {result['expected']:,}"),
        ("lost", f"[{lost_style}]{result['lost']:,}[/{lost_style}]"),
        ("duplicates", f"{result['duplicates']:,}"),
        ("send rate", f"{result['send_rate']:,.0f}/s (offered {result['offered_rate']:,.0f}/s)"),
        ("delivery rate", f"{result['delivered_rate']:,.0f}/s"),
    ]
    for label, key in (
        ("delivery", "latency_ms"),
        ("ack", "ack_latency_ms"),
        ("connect", "connect_ms"),
    ):
        s = result[key]
        rows.append(
            (
                f"{label} p50 / p90 / p99 / max",
                " / ".join(_ms(s[q]) for q in ("p50", "p90", "p99", "max")),
            )
        )
    if result["reconnects"]:
        rows.append(("reconnects (resumed by cursor)", f"{result['reconnects']:,}"))
    if result["slow_readers_closed"]:
        rows.append(("slow readers closed by server", f"{result['slow_readers_closed']:,}"))
    errors = ", ".join(f"{k} {v}" for k, v in sorted(result["errors"].items())) or "none"
    rows.append(("errors", errors))
    if result["errors"].get("rate_limited"):
        # The server's limits (PROTOCOL.md v1.1) stay on under load; a test
        # meant to measure throughput sets them above its per-sender rate.
        rows.append(
            (
                "rate_limited?",
                "the server refused sends by its limits: start it with "
                "DMHUB_LIMIT_MESSAGES_PER_MIN above each sender's rate per minute",
            )
        )
    server = result["server"]
    if server:
        rows.append(("server RSS (peak)", f"{server['rss_mb']} MB ({server['rss_peak_mb']} MB)"))
        rows.append(("server RSS per socket", f"{server['rss_per_socket_kb']} KB"))
        rows.append(("server CPU", f"{server['cpu_percent']}%"))
        if server["valkey_rss_mb"] is not None:
            rows.append(("valkey RSS", f"{server['valkey_rss_mb']} MB"))
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)


def main_from_args(args: Any) -> int:
    options = Options(
        urls=args.url,
        connections=args.connections,
        pairs=args.pairs,
        rate=args.rate,
        duration=args.duration,
        drain=args.drain,
        ramp=args.ramp,
        procs=args.procs,
        json=args.json,
        slow_readers=args.slow_readers,
        reconnect_churn=args.reconnect_churn,
        text_size=args.size,
        server_pids=args.server_pid or [],
        adapter=args.adapter,
        prefix=args.prefix,
    )
    try:
        return run(options)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILED
