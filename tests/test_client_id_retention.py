"""The client_id map is bounded: a retry is honoured for DMHUB_CLIENT_ID_TTL, then forgotten.

Issue 8: `cid:{lc}` grew with every message that had a client_id, forever.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from chat.config import DEFAULT_CLIENT_ID_TTL_S, SEND_STEPS_ALWAYS, Settings
from chat.store import keys
from tests.faults import eventually, history, raw_post
from tests.support import async_redis_client, new_user, plain_valkey, running_server, settings_for


def test_a_retry_is_honoured_for_a_day_by_default() -> None:
    assert DEFAULT_CLIENT_ID_TTL_S == 24 * 3600


@pytest.mark.parametrize("value", ["0", "-1", "59"])
def test_the_map_cannot_be_kept_forever(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMHUB_CLIENT_ID_TTL", value)
    with pytest.raises(SystemExit, match="DMHUB_CLIENT_ID_TTL"):
        Settings.from_env()


async def test_each_client_id_expires_on_its_own(redis_url: str, tmp_path: Path) -> None:
    async with running_server(settings_for(redis_url, tmp_path)) as srv:
        alice, bob = await new_user(srv.url), await new_user(srv.url, open_dms=True)
        assert alice.user and bob.user and alice.token
        b_h = bob.user["handle"]
        await alice.post_message(b_h, "first", "c-1")
        await alice.post_message(b_h, "second", "c-2")
        admin = async_redis_client(redis_url, decode_responses=True)
        cid_key = keys.client_ids(alice.user["handle"].lower())
        ttls = await admin.execute_command("HTTL", cid_key, "FIELDS", 2, "c-1", "c-2")
        assert all(DEFAULT_CLIENT_ID_TTL_S - 5 <= t <= DEFAULT_CLIENT_ID_TTL_S for t in ttls), ttls
        # The map itself has no TTL: an entry lives its day whatever comes after it.
        assert await admin.ttl(cid_key) == -1
        await admin.aclose()
        await alice.aclose()
        await bob.aclose()


@pytest.mark.timeout(30)
async def test_after_the_retention_a_client_id_is_new_again(redis_url: str, tmp_path: Path) -> None:
    async with running_server(settings_for(redis_url, tmp_path, client_id_ttl_s=1)) as srv:
        alice, bob = await new_user(srv.url), await new_user(srv.url, open_dms=True)
        assert alice.user and bob.user and alice.token
        b_h = bob.user["handle"]
        first = await raw_post(srv.url, alice.token, b_h, "hello", "c-1")
        again = await raw_post(srv.url, alice.token, b_h, "hello", "c-1")
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["message"] == first.json()["message"]
        a_lc, b_lc = alice.user["handle"].lower(), b_h.lower()
        admin = async_redis_client(redis_url, decode_responses=True)

        async def forgotten() -> bool:
            # The sender's record and the recipient's dedupe record, both past 1 s.
            return not (
                await admin.hexists(keys.client_ids(a_lc), "c-1")
                or await admin.hexists(keys.client_ids_in(b_lc), f"{a_lc}:c-1")
            )

        try:
            await eventually(forgotten, timeout=10, what="the client_id's records to expire")
        finally:
            await admin.aclose()
        late = await raw_post(srv.url, alice.token, b_h, "hello", "c-1")
        assert late.status_code == 201, "a client_id past its retention was still remembered"
        assert len(await history(alice, b_h)) == 2
        await alice.aclose()
        await bob.aclose()


async def test_without_hsetex_each_client_id_still_expires_on_its_own(tmp_path: Path) -> None:
    """Redis 7.4 has HEXPIRE but not HSETEX (Valkey 9, Redis 8): HSET then HEXPIRE.
    Sends in steps, which write both records (the one-script send of one Valkey
    writes the sender's alone, through the same function)."""
    no_hsetex = ("--appendonly", "yes", "--rename-command", "HSETEX", '""')
    with plain_valkey(tmp_path, *no_hsetex) as port:
        url = f"redis://127.0.0.1:{port}/0"
        settings = settings_for(url, tmp_path, send_steps=SEND_STEPS_ALWAYS)
        async with running_server(settings) as srv:
            alice, bob = await new_user(srv.url), await new_user(srv.url, open_dms=True)
            assert alice.user and bob.user and alice.token
            a_lc, b_lc = alice.user["handle"].lower(), bob.user["handle"].lower()
            # The second record: the library has learnt there is no HSETEX.
            await alice.post_message(bob.user["handle"], "first", "c-1")
            await alice.post_message(bob.user["handle"], "second", "c-2")
            admin = aioredis.Redis.from_url(url, decode_responses=True)
            ttls = [
                *await admin.execute_command(
                    "HTTL", keys.client_ids(a_lc), "FIELDS", 2, "c-1", "c-2"
                ),
                *await admin.execute_command(
                    "HTTL", keys.client_ids_in(b_lc), "FIELDS", 2, f"{a_lc}:c-1", f"{a_lc}:c-2"
                ),
            ]
            assert len(ttls) == 4
            assert all(DEFAULT_CLIENT_ID_TTL_S - 5 <= t <= DEFAULT_CLIENT_ID_TTL_S for t in ttls)
            assert await admin.ttl(keys.client_ids(a_lc)) == -1
            await admin.aclose()
            await alice.aclose()
            await bob.aclose()


async def test_without_field_expiry_the_whole_map_expires(tmp_path: Path) -> None:
    """Redis before 7.4 has no HEXPIRE (nor HSETEX): the map then expires as a whole."""
    no_hexpire = (
        "--appendonly", "yes",
        "--rename-command", "HEXPIRE", '""',
        # Another name: two commands cannot both be renamed to '""'.
        "--rename-command", "HSETEX", "hsetex-not-here",
    )  # fmt: skip
    with plain_valkey(tmp_path, *no_hexpire) as port:
        url = f"redis://127.0.0.1:{port}/0"
        async with running_server(settings_for(url, tmp_path)) as srv:
            alice, bob = await new_user(srv.url), await new_user(srv.url, open_dms=True)
            assert alice.user and bob.user and alice.token
            message = await alice.post_message(bob.user["handle"], "first", "c-1")
            again = await raw_post(srv.url, alice.token, bob.user["handle"], "first", "c-1")
            assert again.status_code == 200 and again.json()["message"] == message
            admin = aioredis.Redis.from_url(url, decode_responses=True)
            ttl = await admin.ttl(keys.client_ids(alice.user["handle"].lower()))
            assert DEFAULT_CLIENT_ID_TTL_S - 5 <= ttl <= DEFAULT_CLIENT_ID_TTL_S
            await admin.aclose()
            await alice.aclose()
            await bob.aclose()
