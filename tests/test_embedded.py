"""The embedded default: `dmhub serve` with no REDIS_URL owns a valkey-server.

Every dmhub here is a child of the test, and every valkey-server is that child's
child; a test ends only those, by PID.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat.client import Client, Socket
from chat.config import VALKEY_RESTART_BUDGET
from tests.faults import alive, eventually, history, messages_until, next_message, valkey_child
from tests.support import PASSWORD, ROOT, DmhubProcess, free_port, handle, new_user


def embedded_env(data_dir: Path) -> dict[str, str]:
    # REDIS_URL empty means "not set" (Settings.from_env), whatever the outer environment says.
    return {"DMHUB_DATA_DIR": str(data_dir), "REDIS_URL": ""}


@pytest.fixture
def cleanup() -> Iterator[list[tuple[DmhubProcess | None, int | None, Path]]]:
    """Processes to end after the test if it failed half-way: (dmhub, valkey pid, data dir)."""
    started: list[tuple[DmhubProcess | None, int | None, Path]] = []
    yield started
    for node, valkey_pid, data_dir in started:
        if node is not None:
            node.kill()
        if valkey_pid is not None and alive(valkey_pid) and _is_our_valkey(valkey_pid, data_dir):
            os.kill(valkey_pid, signal.SIGKILL)


def _is_our_valkey(pid: int, data_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(data_dir.resolve()).encode() in cmdline


def start(
    data_dir: Path, log_dir: Path, cleanup: list[tuple[DmhubProcess | None, int | None, Path]]
) -> tuple[DmhubProcess, int]:
    """`dmhub serve` on the folder, and its valkey-server's PID; both are ended
    after the test if it stops half-way."""
    node = DmhubProcess(embedded_env(data_dir))
    node.log_path = log_dir / f"dmhub-{node.port}.log"
    node.start()
    cleanup.append((node, None, data_dir))
    valkey_pid = our_valkey(node, data_dir)
    cleanup.append((None, valkey_pid, data_dir))
    return node, valkey_pid


def our_valkey(node: DmhubProcess, data_dir: Path) -> int:
    assert node.process is not None
    return valkey_child(node.process.pid, data_dir)


async def alice_and_bob(url: str) -> tuple[Client, Client, str, str]:
    """Two people and their handles; bob follows alice, so she may write to him."""
    alice, bob = await new_user(url), await new_user(url)
    a_h, b_h = handle(alice), handle(bob)
    await bob.follow(a_h)
    return alice, bob, a_h, b_h


@pytest.mark.timeout(50)
async def test_sigterm_then_restart_keeps_accounts_history_and_cursors(
    tmp_path: Path, cleanup: list[tuple[DmhubProcess | None, int | None, Path]]
) -> None:
    data_dir = tmp_path / "d"
    node, valkey_pid = start(data_dir, tmp_path, cleanup)

    alice, bob, a_h, b_h = await alice_and_bob(node.url)
    assert bob.token

    async with alice.socket() as alice_sock:
        bob_sock = Socket(node.url, bob.token)
        await bob_sock.connect()
        sent = [await alice_sock.send(b_h, f"before restart {i}") for i in range(5)]
        received = await messages_until(bob_sock, sent[-1]["id"])
        assert [e["message"] for e in received] == sent
        old_cursor = received[2]["cursor"]  # bob has seen up to the third message
        reply = await bob_sock.send(a_h, "a reply before the restart")
        assert (await next_message(alice_sock))["message"] == reply

        assert node.process is not None
        code = await asyncio.to_thread(node.terminate)  # the loop keeps serving the sockets
        assert code == 0, f"dmhub exited with {code}:\n{node.log()}"
        # The drain closed both sockets with 1012 (reconnect with your cursor).
        assert await bob_sock.wait_closed(10) == 1012
        assert await alice_sock.wait_closed(10) == 1012
    await eventually(lambda: not alive(valkey_pid), 10, "the embedded valkey-server to exit")

    restarted, new_valkey = start(data_dir, tmp_path, cleanup)
    assert new_valkey != valkey_pid

    # Same password, new session; and the old session survived the restart too.
    again = Client(restarted.url)
    assert (await again.sign_in(a_h, PASSWORD))["handle"] == a_h
    old_bob = Client(restarted.url, token=bob.token)
    assert (await old_bob.me())["user"]["handle"] == b_h

    stored = await history(again, b_h)
    assert stored == [*sent, reply]
    assert await history(old_bob, a_h) == stored

    after = await again.post_message(b_h, "after restart")
    # Resume from the old cursor: exactly the events after it, in order, then live.
    async with old_bob.socket(since=old_cursor) as resumed:
        replay = await messages_until(resumed, after["id"], timeout=15)
        assert [e["message"] for e in replay] == [*sent[3:], reply, after]
        live = await again.post_message(b_h, "live after resume")
        assert (await next_message(resumed))["message"] == live

    for client in (alice, bob, again, old_bob):
        await client.aclose()
    assert restarted.terminate() == 0
    await eventually(lambda: not alive(new_valkey), 10, "the embedded valkey-server to exit")


@pytest.mark.timeout(40)
async def test_serve_creates_its_data_dir_and_a_second_serve_on_it_fails_fast(
    tmp_path: Path, cleanup: list[tuple[DmhubProcess | None, int | None, Path]]
) -> None:
    data_dir = tmp_path / "fresh" / "d"
    assert not data_dir.exists()
    node, valkey_pid = start(data_dir, tmp_path, cleanup)

    assert data_dir.is_dir()
    aof = data_dir / "appendonlydir"
    assert aof.is_dir(), sorted(p.name for p in data_dir.iterdir())
    assert any(p.name.endswith(".manifest") for p in aof.iterdir()), sorted(aof.iterdir())

    # A second dmhub on the same folder: refused, quickly, saying why.
    second_port = free_port()
    try:
        second = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "chat", "serve", "--port", str(second_port)],
            env={**os.environ, **embedded_env(data_dir)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed it by now
        raise AssertionError(f"a second dmhub on {data_dir} kept running") from exc
    assert second.returncode != 0
    assert str(data_dir.resolve()) in second.stderr, second.stderr
    assert "Another dmhub is already using the data folder" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr, second.stderr

    # The first one did not notice: same Valkey, still serving.
    assert alive(valkey_pid) and our_valkey(node, data_dir) == valkey_pid
    client = await new_user(node.url)
    assert client.user is not None
    async with httpx.AsyncClient(timeout=5) as http:
        assert (await http.get(node.url + "/readyz")).status_code == 200
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{second_port}/healthz")
    await client.aclose()
    assert node.terminate() == 0


@pytest.mark.timeout(40)
async def test_sigkill_of_dmhub_takes_its_valkey_down_and_the_folder_is_reusable(
    tmp_path: Path, cleanup: list[tuple[DmhubProcess | None, int | None, Path]]
) -> None:
    data_dir = tmp_path / "d"
    node, valkey_pid = start(data_dir, tmp_path, cleanup)

    alice = await new_user(node.url)
    bob = await new_user(node.url, open_dms=True)
    assert alice.user and bob.user
    message = await alice.post_message(bob.user["handle"], "acked before the crash")

    node.kill()  # SIGKILL: no drain, no chance to stop Valkey itself
    assert node.process is not None and node.process.returncode == -signal.SIGKILL
    # PR_SET_PDEATHSIG: the kernel tells valkey-server its parent died.
    await eventually(
        lambda: not alive(valkey_pid), 10, "valkey-server to exit after dmhub's SIGKILL"
    )

    # The lock died with the process: a new dmhub can take the folder, and the
    # acknowledged message is there.
    restarted, _ = start(data_dir, tmp_path, cleanup)
    again = Client(restarted.url)
    await again.sign_in(bob.user["handle"], PASSWORD)
    assert await history(again, alice.user["handle"]) == [message]
    for client in (alice, bob, again):
        await client.aclose()
    assert restarted.terminate() == 0


@pytest.mark.timeout(60)
async def test_a_valkey_killed_under_serve_is_restarted_on_the_same_data_and_sockets_resume(
    tmp_path: Path, cleanup: list[tuple[DmhubProcess | None, int | None, Path]]
) -> None:
    data_dir = tmp_path / "d"
    node, valkey_pid = start(data_dir, tmp_path, cleanup)

    alice, bob, a_h, b_h = await alice_and_bob(node.url)
    async with alice.socket() as alice_sock, bob.socket() as bob_sock:
        bob_phone = bob.socket()
        await bob_phone.connect()
        before = [await alice_sock.send(b_h, f"before {i}", f"b-{i}") for i in range(5)]
        assert [e["message"] for e in await messages_until(bob_sock, before[-1]["id"])] == before
        # Bob's phone saw the first three, then lost its connection.
        seen = [await next_message(bob_phone) for _ in range(3)]
        await bob_phone.close()

        os.kill(valkey_pid, signal.SIGKILL)
        replacement = await eventually(
            lambda: _new_valkey(node, data_dir, valkey_pid), 20, "dmhub to start Valkey again"
        )
        cleanup.append((None, replacement, data_dir))

        # The socket was never closed: a send retried by client_id goes through,
        # and the other side gets it live, after everything from before.
        after = await alice_sock.send(b_h, "after the restart", "a-0")
        assert (await next_message(bob_sock, 20))["message"] == after
        assert alice_sock.close_code is None and bob_sock.close_code is None
        # The phone resumes by cursor: exactly what it missed, across the restart.
        await bob_phone.reconnect()
        missed = await messages_until(bob_phone, after["id"])
        assert [e["message"] for e in seen + missed] == [*before, after]
        await bob_phone.close()
    assert await history(bob, a_h) == [*before, after]
    assert node.process is not None and node.process.poll() is None
    assert "starting it again" in node.log()
    for client in (alice, bob):
        await client.aclose()
    assert node.terminate() == 0
    await eventually(lambda: not alive(replacement), 10, "the restarted valkey-server to exit")


def _new_valkey(node: DmhubProcess, data_dir: Path, old: int) -> int | None:
    try:
        pid = our_valkey(node, data_dir)
    except AssertionError:
        return None
    return pid if pid != old else None


@pytest.mark.timeout(60)
async def test_a_valkey_that_keeps_dying_makes_serve_exit_non_zero(
    tmp_path: Path, cleanup: list[tuple[DmhubProcess | None, int | None, Path]]
) -> None:
    data_dir = tmp_path / "d"
    node, pid = start(data_dir, tmp_path, cleanup)
    assert node.process is not None
    kills = 0
    while node.process.poll() is None and kills < VALKEY_RESTART_BUDGET + 1:
        os.kill(pid, signal.SIGKILL)
        kills += 1
        if kills <= VALKEY_RESTART_BUDGET:
            pid = await eventually(
                lambda old=pid: _new_valkey(node, data_dir, old), 20, f"restart {kills}"
            )
            cleanup.append((None, pid, data_dir))
    code = await eventually(lambda: node.process.poll(), 30, "dmhub to give up and exit")  # type: ignore[union-attr]
    assert code == 1, node.log()
    assert "giving up" in node.log()
    assert "Traceback" not in node.log(), node.log()


@pytest.mark.timeout(40)
async def test_choosing_everysec_for_the_embedded_valkey_is_warned_about(
    tmp_path: Path, cleanup: list[tuple[DmhubProcess | None, int | None, Path]]
) -> None:
    data_dir = tmp_path / "d"
    node = DmhubProcess({**embedded_env(data_dir), "DMHUB_APPENDFSYNC": "everysec"})
    node.log_path = tmp_path / "dmhub.log"
    node.start()
    cleanup.append((node, our_valkey(node, data_dir), data_dir))
    assert "appendfsync everysec: a crash of Redis or of the machine can lose" in node.log()
    assert node.terminate() == 0
