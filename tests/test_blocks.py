"""A block means what PRODUCT.md says: no messages, no typing, no receipts either
way; it ends follows both ways, answers a request, and stands in the way of a follow."""

from __future__ import annotations

import pytest

from chat.client import Client, ClientError
from chat.store import keys
from tests.support import RunningServer, new_user, redis_client


def h(client: Client) -> str:
    assert client.user is not None
    handle: str = client.user["handle"]
    return handle


async def test_a_block_ends_follows_both_ways(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    await alice.follow(h(bob))
    await bob.follow(h(alice))
    await bob.block(h(alice))
    relationship = (await alice.profile(h(bob)))["relationship"]
    assert relationship["following"] is False and relationship["followed_by"] is False
    assert (await alice.request("GET", "/api/following"))["users"] == []
    assert (await alice.request("GET", "/api/followers"))["users"] == []
    assert (await bob.request("GET", "/api/following"))["users"] == []
    assert (await bob.request("GET", "/api/followers"))["users"] == []


async def test_no_follow_across_a_block_in_either_direction(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    await bob.block(h(alice))
    with pytest.raises(ClientError) as blocked:
        await alice.follow(h(bob))
    # The blocked side is not told that it is blocked.
    assert (blocked.value.status, blocked.value.code) == (403, "not_allowed")
    assert "block" not in blocked.value.detail.lower()
    with pytest.raises(ClientError) as blocker:
        await bob.follow(h(alice))
    assert (blocker.value.status, blocker.value.code) == (403, "not_allowed")
    assert (await bob.request("GET", "/api/followers"))["users"] == []
    await bob.unblock(h(alice))
    await alice.follow(h(bob))
    assert [u["handle"] for u in (await bob.request("GET", "/api/followers"))["users"]] == [
        h(alice)
    ]


async def test_follow_refusals_carry_the_v1_1_reason(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    await bob.block(h(alice))
    blocked = await alice.http.put(f"/api/following/{h(bob)}", headers=alice._headers())
    blocker = await bob.http.put(f"/api/following/{h(alice)}", headers=bob._headers())
    assert blocked.json()["error"]["reason"] == "cannot_receive"
    assert blocker.json()["error"]["reason"] == "you_blocked"


async def test_a_block_takes_the_request_out_of_requests_with_its_unread(
    server: RunningServer, redis_url: str
) -> None:
    spammer, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    await spammer.post_message(h(bob), "buy now")
    await spammer.post_message(h(bob), "buy now!!")
    requests = (await bob.conversations(folder="requests"))["conversations"]
    assert [c["unread"] for c in requests] == [2]
    await bob.block(h(spammer))
    assert (await bob.conversations(folder="requests"))["conversations"] == []
    assert (await bob.conversations(folder="inbox"))["conversations"] == []
    client = redis_client(redis_url, decode_responses=True)
    assert client.hget(keys.user(h(bob).lower()), keys.unread_field(h(spammer).lower())) is None
    client.close()
    # The history stays readable for the one who blocked.
    assert len((await bob.messages(h(spammer)))["messages"]) == 2


@pytest.mark.parametrize("blocker", ["reader", "writer"])
async def test_no_receipts_either_way_across_a_block(server: RunningServer, blocker: str) -> None:
    """Alice wrote last, bob reads it after the block, whichever of them blocked."""
    alice, bob, carol = [await new_user(server.url) for _ in range(3)]
    for a, b in ((alice, bob), (bob, alice), (alice, carol), (bob, carol)):
        await a.follow(h(b))
    first = await bob.post_message(h(alice), "hello alice")
    to_bob = await alice.post_message(h(bob), "hello bob")
    # Before the block, history tells alice how far bob has read.
    assert (await alice.messages(h(bob)))["peer_read_up_to"] == first["id"]

    async with alice.socket() as alice_ws, bob.socket() as bob_ws:
        if blocker == "reader":
            await bob.block(h(alice))
        else:
            await alice.block(h(bob))
        assert (await alice.messages(h(bob)))["peer_read_up_to"] is None
        assert (await bob.messages(h(alice)))["peer_read_up_to"] is None

        await bob_ws.read(h(alice), to_bob["id"])
        own = await bob_ws.next_event()
        assert (own["type"], own["reader"], own["up_to"]) == ("read", h(bob), to_bob["id"])
        # Anything published for alice after bob's read comes after it on her
        # channel: the next thing she hears is carol, not bob's receipt.
        await carol.post_message(h(alice), "marker")
        after = await alice_ws.next_event()
        assert after["type"] == "message" and after["message"]["text"] == "marker"
    assert (await alice.messages(h(bob)))["peer_read_up_to"] is None
