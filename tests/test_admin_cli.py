"""`dmhub admin` against the same storage as `dmhub serve`: REDIS_URL, or the
embedded Valkey of a data folder (attached to while serve runs, else started)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chat.client import Client, ClientError
from tests.support import (
    PASSWORD,
    ROOT,
    DmhubProcess,
    handle,
    new_user,
    running_server,
    settings_for,
)


def admin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chat", "admin", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def admin_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = admin(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def test_reports_restrictions_and_clear_with_redis_url(
    redis_url: str, tmp_path: Path
) -> None:
    # The CLI runs in threads: the server under test shares this event loop,
    # and a blocked loop starved it (its shutdown then timed out under load).
    env = {"REDIS_URL": redis_url}
    settings = settings_for(redis_url, tmp_path, reporter_min_age_s=0)
    async with running_server(settings) as server:
        spammer = await new_user(server.url)
        reporters = [await new_user(server.url, open_dms=True) for _ in range(3)]
        for reporter in reporters:
            sent = await spammer.post_message(handle(reporter), "buy now")
            await reporter.report(handle(spammer), "spam", message_id=sent["id"])
        assert (await spammer.me())["restricted"] is True

        # The reads run at once: each is a process of its own, about a second.
        reports, table, one, restrictions = await asyncio.gather(
            asyncio.to_thread(admin_json, env, "reports"),
            asyncio.to_thread(admin, env, "reports"),
            asyncio.to_thread(admin_json, env, "reports", "--handle", handle(spammer)),
            asyncio.to_thread(admin_json, env, "restrictions"),
        )
        assert [(a["handle"], a["reports"], a["restricted"]) for a in reports["accounts"]] == [
            (handle(spammer), 3, True)
        ]
        assert f"@{handle(spammer)}" in table.stdout and "restricted" in table.stdout
        assert {r["reporter"] for r in one["reports"]} == {handle(r) for r in reporters}
        assert [r["handle"] for r in restrictions["restrictions"]] == [handle(spammer)]

        cleared = await asyncio.to_thread(admin, env, "clear", handle(spammer))
        assert cleared.returncode == 0, cleared.stderr
        # The operator sees why it was restricted.
        for reporter in reporters:
            assert f"@{handle(reporter)} " in cleared.stdout
        assert (await spammer.me())["restricted"] is False
        remaining, missing = await asyncio.gather(
            asyncio.to_thread(admin, env, "restrictions"),
            asyncio.to_thread(admin, env, "suspend", "nobody_here_x"),
        )
        assert remaining.stdout.strip() == "No account is restricted."
        assert missing.returncode == 1 and "nobody_here_x" in missing.stderr


@pytest.mark.timeout(90)
async def test_suspend_against_the_embedded_valkey_of_a_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {"DMHUB_DATA_DIR": str(data), "REDIS_URL": ""}
    server = DmhubProcess(env)
    server.start()
    try:
        mallory = await new_user(server.url)
        socket = mallory.socket()
        await socket.connect()
        done = admin_json(env, "suspend", handle(mallory))
        assert done["suspended"] is True
        assert await socket.wait_closed(5) == 4401
        with pytest.raises(ClientError) as raised:
            await Client(server.url).sign_in(handle(mallory), PASSWORD)
        assert raised.value.code == "suspended"
    finally:
        server.terminate()
    # With serve stopped, admin starts the folder's Valkey itself, and the
    # change is there when serve comes back.
    assert admin_json(env, "unsuspend", handle(mallory))["suspended"] is False
    server = DmhubProcess(env, port=server.port)
    server.start()
    try:
        await Client(server.url).sign_in(handle(mallory), PASSWORD)
    finally:
        server.terminate()
