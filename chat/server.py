"""`dmhub serve`: the embedded Valkey (or REDIS_URL), uvicorn, graceful drain.

On SIGTERM or SIGINT the process stops taking new frames, lets in-flight sends
finish so their acks go out, closes every socket with 1012 (reconnect with your
cursor), and only then lets uvicorn shut down and stops the embedded Valkey.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from dataclasses import replace
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import Any

import uvicorn
from uvicorn._subprocess import get_subprocess

from chat import runtime as runtime_module
from chat.config import Settings
from chat.store import persistence
from chat.store.embedded import EmbeddedValkey, EmbeddedValkeyError
from chat.transport.origins import configuration_warning
from chat.transport.uvicorn_ws import DmhubWebSocketProtocol

log = logging.getLogger("dmhub")

# A dead peer is noticed within PING_INTERVAL_S + PING_TIMEOUT_S.
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0


def websocket_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's WebSocket settings, shared by `dmhub serve` and the tests."""
    return {
        "ws": DmhubWebSocketProtocol,
        "ws_max_size": settings.max_frame_bytes,
        # Deflate costs memory per socket and CPU per frame; frames here are small.
        "ws_per_message_deflate": False,
        "ws_ping_interval": PING_INTERVAL_S,
        "ws_ping_timeout": PING_TIMEOUT_S,
    }


class DrainingServer(uvicorn.Server):
    """uvicorn, with a drain of dmhub's sockets before its own shutdown begins."""

    _drain_started = False
    _loop: asyncio.AbstractEventLoop | None = None
    _drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's runner does not make its loop the thread's current loop, so
        # remember it here for the signal handler.
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        current = runtime_module.current
        loop = self._loop
        if self._drain_started or current is None or loop is None:
            super().handle_exit(sig, frame)
            return
        self._drain_started = True

        def begin() -> None:
            self._drain_task = loop.create_task(self._drain_then_exit(sig, frame))

        loop.call_soon_threadsafe(begin)

    async def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        current = runtime_module.current
        try:
            if current is not None:
                log.info("draining %d sockets before shutdown", len(current.hub.connections))
                await current.hub.drain(current.settings.drain_timeout_s)
        except Exception:
            log.exception("drain failed; shutting down anyway")
        finally:
            super().handle_exit(sig, frame)


def serve(host: str, port: int, workers: int, log_level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = Settings.from_env()
    origin_warning = configuration_warning(settings.public_url, settings.secure_cookies)
    if origin_warning:
        log.warning(origin_warning)
    embedded: EmbeddedValkey | None = None
    gave_up: list[str] = []
    if settings.redis_url is None:
        embedded = EmbeddedValkey(
            settings.data_dir, settings.appendfsync, maxmemory=settings.valkey_maxmemory
        )
        settings = replace(settings, redis_url=embedded.start())
        # Worker processes build their settings from the environment (which,
        # unlike a command line, other local users cannot read).
        os.environ["REDIS_URL"] = settings.redis_url or ""

        def give_up(why: str) -> None:
            # From the watcher thread: stop as SIGTERM would (drain, 1012), then
            # exit non-zero below so the process manager knows.
            gave_up.append(why)
            log.error("%s", why)
            os.kill(os.getpid(), signal.SIGTERM)

        embedded.supervise(give_up)
    # Said for the embedded Valkey too, so that DMHUB_APPENDFSYNC=everysec is a
    # choice made knowingly (a warning says what it can lose).
    assert settings.redis_url is not None
    persistence.check(settings.redis_url)

    # uvicorn re-raises the signal that stopped it once it is done; a Python
    # handler turns that into a normal return so the finally below still runs.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        config = uvicorn.Config(
            "chat.asgi:create",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            **websocket_options(settings),
            timeout_graceful_shutdown=int(settings.drain_timeout_s) + 5,
            lifespan="on",
            proxy_headers=True,
        )
        if workers > 1:
            Supervisor(config, workers, settings.drain_timeout_s).run()
        else:
            DrainingServer(config).run()
    finally:
        if embedded is not None:
            embedded.close()
    if gave_up:
        raise EmbeddedValkeyError(gave_up[0])


class Supervisor:
    """Runs `workers` draining servers on one listening socket and keeps them alive.

    uvicorn's own supervisor builds plain servers, which would skip dmhub's drain;
    this one is small: start, restart what dies, and on SIGTERM/SIGINT pass the
    signal on and wait for every worker to drain.
    """

    def __init__(self, config: uvicorn.Config, workers: int, drain_timeout_s: float) -> None:
        self.config = config
        self.workers = workers
        self.stop_timeout_s = drain_timeout_s + 10
        self.stopping = False

    def _spawn(self, sock: socket.socket) -> SpawnProcess:
        process = get_subprocess(
            self.config, target=DrainingServer(self.config).run, sockets=[sock]
        )
        process.start()
        return process

    def run(self) -> None:
        sock = self.config.bind_socket()
        processes = [self._spawn(sock) for _ in range(self.workers)]
        log.info("started %d workers: %s", self.workers, [p.pid for p in processes])

        def stop(sig: int, frame: FrameType | None) -> None:
            self.stopping = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)
        while not self.stopping:
            for index, process in enumerate(processes):
                if not process.is_alive() and not self.stopping:
                    log.warning(
                        "worker %s exited with %s; starting another", process.pid, process.exitcode
                    )
                    processes[index] = self._spawn(sock)
            time.sleep(0.2)
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for process in processes:
            process.join(max(deadline - time.monotonic(), 0.1))
            if process.is_alive():
                process.kill()
                process.join(5)
        sock.close()
