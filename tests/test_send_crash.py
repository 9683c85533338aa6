"""A dmhub process killed between the decision of a send and the sender's side
of it (the crash point `send:after_decide`): another process's reconciler
completes the send, once, and a retry with the same client_id gets the same
message."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat.client import Client, ClientError
from chat.store import keys
from chat.store.crashpoints import CRASH_EXIT_CODE
from tests.faults import history, raw_post
from tests.support import DmhubProcess, handle, new_user, redis_client


async def history_or_none(client: Client, peer: str) -> list[dict[str, Any]]:
    """The conversation, or [] while the caller's side of it does not exist yet."""
    try:
        return await history(client, peer)
    except ClientError as error:
        assert error.status == 404
        return []


async def test_a_send_cut_after_its_decision_is_completed_by_the_reconciler_once(
    redis_url: str, tmp_path: Path
) -> None:
    env = {"REDIS_URL": redis_url, "DMHUB_DATA_DIR": str(tmp_path)}
    crashing = DmhubProcess({**env, "DMHUB_CRASH_AT": "send:after_decide"})
    healthy = DmhubProcess(
        {**env, "DMHUB_RECONCILE_INTERVAL": "0.2", "DMHUB_RECONCILE_MIN_IDLE_MS": "300"}
    )
    try:
        crashing.start()
        healthy.start()
        alice, bob = await new_user(healthy.url), await new_user(healthy.url)
        assert alice.token is not None
        await bob.follow(handle(alice))
        with pytest.raises(httpx.HTTPError):
            await raw_post(crashing.url, alice.token, handle(bob), "half way", "k-1")
        assert crashing.process is not None and crashing.process.wait(10) == CRASH_EXIT_CODE

        # Step 2 had stored it for bob; alice's side is the reconciler's to finish.
        received = await history(bob, handle(alice))
        assert [m["text"] for m in received] == ["half way"]
        seen: list[dict[str, Any]] = []
        for _ in range(100):
            seen = await history_or_none(alice, handle(bob))
            if seen:
                break
            await asyncio.sleep(0.1)
        assert seen == received
        await asyncio.sleep(1.5)  # more sweeps: nothing is applied twice
        assert await history(alice, handle(bob)) == received
        check = redis_client(redis_url, decode_responses=True)
        try:
            assert check.xlen(keys.outbox(handle(bob).lower())) == 0
            events = check.xrange(keys.events(handle(alice).lower()))
            assert sum('"type":"message"' in fields["f"] for _, fields in events) == 1
        finally:
            check.close()

        retried = await raw_post(healthy.url, alice.token, handle(bob), "half way", "k-1")
        assert retried.status_code == 200
        assert retried.json()["message"] == received[0]
        assert await history(bob, handle(alice)) == received
    finally:
        crashing.kill()
        healthy.kill()


async def test_a_retry_completes_a_send_cut_after_its_decision(
    redis_url: str, tmp_path: Path
) -> None:
    env = {"REDIS_URL": redis_url, "DMHUB_DATA_DIR": str(tmp_path)}
    crashing = DmhubProcess({**env, "DMHUB_CRASH_AT": "send:after_decide"})
    # A reconciler that would wait a minute: the retry has to do it.
    healthy = DmhubProcess({**env, "DMHUB_RECONCILE_MIN_IDLE_MS": "60000"})
    try:
        crashing.start()
        healthy.start()
        alice, bob = await new_user(healthy.url), await new_user(healthy.url)
        assert alice.token is not None
        await bob.follow(handle(alice))
        with pytest.raises(httpx.HTTPError):
            await raw_post(crashing.url, alice.token, handle(bob), "again", "k-2")
        assert await history_or_none(alice, handle(bob)) == []
        retried = await raw_post(healthy.url, alice.token, handle(bob), "again", "k-2")
        assert retried.status_code == 200
        message = retried.json()["message"]
        assert await history(alice, handle(bob)) == [message]
        assert await history(bob, handle(alice)) == [message]
        check = redis_client(redis_url, decode_responses=True)
        try:
            assert check.xlen(keys.outbox(handle(bob).lower())) == 0
        finally:
            check.close()
    finally:
        crashing.kill()
        healthy.kill()
