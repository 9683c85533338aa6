"""Me, profiles with `relationship`, follows and blocks."""

from __future__ import annotations

import pytest

from chat.client import ClientError
from tests.support import RunningServer, new_user


async def test_me_and_settings(server: RunningServer) -> None:
    alice = await new_user(server.url)
    me = await alice.me()
    assert me["settings"] == {"read_receipts": True}
    assert me["user"]["open_dms"] is False
    changed = await alice.update_me(name="Alice A", open_dms=True, read_receipts=False)
    assert changed["user"]["name"] == "Alice A"
    assert changed["user"]["open_dms"] is True
    assert changed["settings"] == {"read_receipts": False}
    assert (await alice.me()) == changed


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"open_dms": "yes"}, "open_dms"),
        ({"read_receipts": 1}, "read_receipts"),
        ({"name": 5}, "name"),
    ],
)
async def test_patch_me_validation(
    server: RunningServer, body: dict[str, object], field: str
) -> None:
    alice = await new_user(server.url)
    with pytest.raises(ClientError) as raised:
        await alice.update_me(**body)
    assert raised.value.status == 422 and raised.value.code == "invalid"


async def test_only_businesses_set_a_greeting(server: RunningServer) -> None:
    shop = await new_user(server.url, kind="business")
    person = await new_user(server.url)
    greeted = await shop.update_me(greeting="Hi! How can we help?")
    assert greeted["user"]["greeting"] == "Hi! How can we help?"
    cleared = await shop.update_me(greeting=None)
    assert cleared["user"]["greeting"] is None
    with pytest.raises(ClientError) as raised:
        await person.update_me(greeting="hello")
    assert raised.value.code == "invalid"


async def test_profile_and_relationship_both_ways(server: RunningServer) -> None:
    alice = await new_user(server.url)
    bob = await new_user(server.url)
    assert alice.user and bob.user
    a, b = alice.user["handle"], bob.user["handle"]
    seen = await alice.profile(b.upper())
    assert seen["user"] == bob.user
    assert seen["relationship"] == {
        "following": False,
        "followed_by": False,
        "blocking": False,
        "blocked_by": False,
        "can_message": False,
        "reason": "closed",
    }
    await bob.follow(a)
    assert (await alice.profile(b))["relationship"]["followed_by"] is True
    assert (await alice.profile(b))["relationship"]["can_message"] is True
    assert (await alice.profile(b))["relationship"]["reason"] is None
    assert (await bob.profile(a))["relationship"]["following"] is True
    assert (await bob.profile(a))["relationship"]["can_message"] is False
    await alice.block(b)
    after = (await alice.profile(b))["relationship"]
    assert after["blocking"] is True and after["can_message"] is False
    assert after["reason"] == "you_blocked"
    # The blocked side learns only that it cannot write.
    theirs = (await bob.profile(a))["relationship"]
    assert theirs["blocked_by"] is True and theirs["reason"] == "cannot_receive"


async def test_unknown_users_are_404(server: RunningServer) -> None:
    alice = await new_user(server.url)
    for call in (alice.profile, alice.follow, alice.block, alice.unfollow):
        with pytest.raises(ClientError) as raised:
            await call("nobody_here")
        assert raised.value.status == 404 and raised.value.code == "unknown_user"
    with pytest.raises(ClientError) as malformed:
        await alice.profile("not-a-handle")
    assert malformed.value.code == "unknown_user"


async def test_follow_is_idempotent_and_listed_newest_first(server: RunningServer) -> None:
    me = await new_user(server.url)
    others = [await new_user(server.url) for _ in range(5)]
    for other in others:
        assert other.user
        await me.follow(other.user["handle"])
        await me.follow(other.user["handle"])  # idempotent
    handles = [o.user["handle"] for o in others if o.user]
    page1 = await me.request("GET", "/api/following", limit=3)
    assert [u["handle"] for u in page1["users"]] == handles[::-1][:3]
    assert page1["next"]
    page2 = await me.request("GET", "/api/following", limit=3, before=page1["next"])
    assert [u["handle"] for u in page2["users"]] == handles[::-1][3:]
    assert page2["next"] is None
    assert me.user
    followers = await others[0].request("GET", "/api/followers")
    assert [u["handle"] for u in followers["users"]] == [me.user["handle"]]
    await me.unfollow(handles[0])
    await me.unfollow(handles[0])
    remaining = await me.request("GET", "/api/following")
    assert handles[0] not in [u["handle"] for u in remaining["users"]]


async def test_blocks_list_and_unblock(server: RunningServer) -> None:
    me = await new_user(server.url)
    pest = await new_user(server.url)
    assert pest.user
    await me.block(pest.user["handle"])
    listed = await me.request("GET", "/api/blocks")
    assert [u["handle"] for u in listed["users"]] == [pest.user["handle"]]
    await me.unblock(pest.user["handle"])
    assert (await me.request("GET", "/api/blocks"))["users"] == []


async def test_cannot_follow_or_block_yourself(server: RunningServer) -> None:
    me = await new_user(server.url)
    assert me.user
    for call in (me.follow, me.block):
        with pytest.raises(ClientError) as raised:
            await call(me.user["handle"])
        assert raised.value.status == 422
