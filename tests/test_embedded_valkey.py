"""The embedded Valkey is reachable only by dmhub, and its files only by dmhub's user.

Found in issue 8: with a long data-folder path the socket did not fit and Valkey
listened on TCP without a password (a local user forged a session); the data
folder was 0755 and the AOF 0644 (any local user could read every message).
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
import redis

from chat.config import DEFAULT_VALKEY_MAXMEMORY
from chat.store.embedded import MAX_SOCKET_PATH, EmbeddedValkey


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
