"""Sending over HTTP, folders, history paging, reads, authorization."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from chat.client import ClientError
from tests.support import RunningServer, handle, new_user


async def test_closed_dms_refuse_strangers_with_a_reason(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    with pytest.raises(ClientError) as raised:
        await alice.post_message(handle(bob), "hi")
    assert raised.value.status == 403 and raised.value.code == "not_allowed"
    assert f"@{handle(bob)}" in raised.value.detail
    with pytest.raises(ClientError) as unknown:
        await alice.post_message("ghost_user", "hi")
    assert unknown.value.status == 404 and unknown.value.code == "unknown_user"
    with pytest.raises(ClientError) as self_message:
        await alice.post_message(handle(alice), "hi")
    assert self_message.value.status == 403


async def test_text_validation_over_http(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    for text, code in (("   ", "invalid"), ("x" * 10_001, "too_long")):
        with pytest.raises(ClientError) as raised:
            await alice.post_message(handle(bob), text)
        assert raised.value.status == 422 and raised.value.code == code
    with pytest.raises(ClientError) as missing:
        await alice.request("POST", f"/api/conversations/{handle(bob)}/messages", {})
    assert missing.value.code == "invalid"
    with pytest.raises(ClientError) as bad_id:
        await alice.post_message(handle(bob), "hi", client_id="x" * 65)
    assert bad_id.value.code == "invalid"


async def test_message_shape_and_idempotent_retry(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    async with httpx.AsyncClient(base_url=server.url) as http:
        auth = {"Authorization": f"Bearer {alice.token}"}
        path = f"/api/conversations/{handle(bob).upper()}/messages"
        first = await http.post(
            path, json={"text": "  hi there ", "client_id": "c-1"}, headers=auth
        )
        again = await http.post(path, json={"text": "different", "client_id": "c-1"}, headers=auth)
    assert first.status_code == 201 and again.status_code == 200
    message = first.json()["message"]
    assert again.json()["message"] == message
    assert set(message) == {"id", "from", "to", "text", "sent_at", "client_id"}
    assert message["from"] == handle(alice) and message["to"] == handle(bob)
    assert message["text"] == "hi there" and message["client_id"] == "c-1"
    assert message["sent_at"].endswith("Z") and len(message["sent_at"]) == 24
    history = await bob.messages(handle(alice))
    assert history["messages"] == [message]


async def test_a_retry_after_the_rule_changed_still_returns_the_original(
    server: RunningServer,
) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    original = await alice.post_message(handle(bob), "hi", client_id="r-1")
    await bob.update_me(open_dms=False)
    assert await alice.post_message(handle(bob), "hi", client_id="r-1") == original
    with pytest.raises(ClientError):
        await alice.post_message(handle(bob), "hi", client_id="r-2")


async def test_a_retry_after_a_block_still_returns_the_original(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    await bob.follow(handle(alice))
    original = await alice.post_message(handle(bob), "hi", client_id="b-1")
    await bob.block(handle(alice))
    assert await alice.post_message(handle(bob), "again", client_id="b-1") == original
    with pytest.raises(ClientError) as raised:
        await alice.post_message(handle(bob), "hi", client_id="b-2")
    assert raised.value.code == "not_allowed"
    assert [m["text"] for m in (await bob.messages(handle(alice)))["messages"]] == ["hi"]


async def test_folders_follow_the_rule(server: RunningServer) -> None:
    shop = await new_user(server.url, open_dms=True, kind="business")
    fan, friend = await new_user(server.url), await new_user(server.url)
    await shop.follow(handle(friend))
    await fan.post_message(handle(shop), "a stranger's question")
    await friend.post_message(handle(shop), "a friend's note")
    inbox = await shop.conversations("inbox")
    requests = await shop.conversations("requests")
    assert [c["peer"]["handle"] for c in inbox["conversations"]] == [handle(friend)]
    assert [c["peer"]["handle"] for c in requests["conversations"]] == [handle(fan)]
    request = requests["conversations"][0]
    assert request["folder"] == "requests" and request["unread"] == 1
    assert request["last_message"]["text"] == "a stranger's question"
    # The sender sees their own side in the inbox.
    assert (await fan.conversations("inbox"))["conversations"][0]["folder"] == "inbox"
    # The shop replies: the reply rule lets the fan answer even with closed DMs.
    await shop.post_message(handle(fan), "how can we help?")
    assert (await shop.conversations("requests"))["conversations"] == []
    await fan.post_message(handle(shop), "thanks")
    assert [c["peer"]["handle"] for c in (await shop.conversations("inbox"))["conversations"]] == [
        handle(fan),
        handle(friend),
    ]


async def test_accept_moves_a_request_to_the_inbox(server: RunningServer) -> None:
    bob, alice = await new_user(server.url, open_dms=True), await new_user(server.url)
    await alice.post_message(handle(bob), "hello?")
    await bob.accept(handle(alice))
    await bob.accept(handle(alice))  # idempotent
    assert (await bob.conversations("requests"))["conversations"] == []
    await alice.post_message(handle(bob), "still there?")
    inbox = await bob.conversations("inbox")
    assert [c["peer"]["handle"] for c in inbox["conversations"]] == [handle(alice)]
    assert inbox["conversations"][0]["unread"] == 2
    with pytest.raises(ClientError) as raised:
        await bob.accept("nobody_at_all")
    assert raised.value.code == "unknown_user"


async def test_a_conversation_is_in_one_folder_at_a_time(server: RunningServer) -> None:
    # The send takes a request back only when the peer is new to the inbox
    # (send_parts.lua, send_side.lua): every way in and out of the folders
    # keeps a peer in one of them at most.
    bob = await new_user(server.url, open_dms=True)
    alice, carol = await new_user(server.url), await new_user(server.url)

    async def folders(user: Any, peer: Any) -> list[str]:
        found = []
        for folder in ("inbox", "requests"):
            listed = (await user.conversations(folder))["conversations"]
            if handle(peer) in [c["peer"]["handle"] for c in listed]:
                found.append(folder)
        return found

    await alice.post_message(handle(bob), "hello?")
    await alice.post_message(handle(bob), "anyone?")
    assert await folders(bob, alice) == ["requests"]
    assert await folders(alice, bob) == ["inbox"]
    await bob.hide(handle(alice))
    assert await folders(bob, alice) == []
    await alice.post_message(handle(bob), "again")
    assert await folders(bob, alice) == ["requests"]
    await bob.accept(handle(alice))
    await alice.post_message(handle(bob), "thanks")
    assert await folders(bob, alice) == ["inbox"]
    await bob.post_message(handle(alice), "welcome")
    assert await folders(bob, alice) == ["inbox"] and await folders(alice, bob) == ["inbox"]
    await bob.hide(handle(alice))
    await alice.post_message(handle(bob), "a reply to your welcome")
    assert await folders(bob, alice) == ["inbox"]
    # A reply from the recipient takes its request back (the sender's side).
    await carol.post_message(handle(bob), "hi bob")
    assert await folders(bob, carol) == ["requests"]
    await bob.post_message(handle(carol), "hi carol")
    assert await folders(bob, carol) == ["inbox"]
    # A request whose sender the recipient follows since moves on its next message.
    dave = await new_user(server.url)
    await dave.post_message(handle(bob), "hey")
    await bob.follow(handle(dave))
    await dave.post_message(handle(bob), "thanks for the follow")
    assert await folders(bob, dave) == ["inbox"]
    listed = (await bob.conversations())["conversations"]
    unread = {c["peer"]["handle"]: c["unread"] for c in listed}
    assert unread == {handle(dave): 2, handle(carol): 0, handle(alice): 1}


async def test_conversation_list_pages_by_latest_activity(server: RunningServer) -> None:
    me = await new_user(server.url, open_dms=True)
    writers = [await new_user(server.url) for _ in range(4)]
    for writer in writers:
        await me.follow(handle(writer))
        await writer.post_message(handle(me), "hi")
    await writers[0].post_message(handle(me), "bump")
    order = [handle(w) for w in (writers[0], writers[3], writers[2], writers[1])]
    page1 = await me.conversations(limit=2)
    page2 = await me.conversations(limit=2, before=page1["next"])
    assert [c["peer"]["handle"] for c in page1["conversations"]] == order[:2]
    assert [c["peer"]["handle"] for c in page2["conversations"]] == order[2:]
    assert page2["next"] is None
    with pytest.raises(ClientError) as bad_folder:
        await me.conversations("spam")
    assert bad_folder.value.code == "invalid"


async def test_history_pages_backwards_in_chronological_pages(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    sent = [await alice.post_message(handle(bob), f"m{i}") for i in range(7)]
    newest = await bob.messages(handle(alice), limit=3)
    assert [m["text"] for m in newest["messages"]] == ["m4", "m5", "m6"]
    older = await bob.messages(handle(alice), limit=3, before=newest["next"])
    assert [m["text"] for m in older["messages"]] == ["m1", "m2", "m3"]
    oldest = await bob.messages(handle(alice), limit=3, before=older["next"])
    assert [m["text"] for m in oldest["messages"]] == ["m0"] and oldest["next"] is None
    assert [m["id"] for m in (await alice.messages(handle(bob)))["messages"]] == [
        m["id"] for m in sent
    ]


async def test_nobody_reads_a_conversation_they_are_not_in(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    carol = await new_user(server.url)
    secret = await alice.post_message(handle(bob), "secret")
    with pytest.raises(ClientError) as raised:
        await carol.messages(handle(bob))
    assert raised.value.status == 404 and raised.value.code == "not_found"
    # Even naming a message id from the other conversation reveals nothing.
    with pytest.raises(ClientError) as by_id:
        await carol.messages(handle(alice), before=str(int(secret["id"]) + 1))
    assert by_id.value.code == "not_found"
    with pytest.raises(ClientError) as read_other:
        await carol.mark_read(handle(alice), secret["id"])
    assert read_other.value.code == "not_found"
    with pytest.raises(ClientError) as self_talk:
        await alice.messages(handle(alice))
    assert self_talk.value.code == "not_found"


async def test_read_clears_unread(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    await bob.follow(handle(alice))
    first = await alice.post_message(handle(bob), "one")
    await alice.post_message(handle(bob), "two")
    await bob.mark_read(handle(alice), first["id"])
    assert (await bob.conversations())["conversations"][0]["unread"] == 1
    last = (await bob.messages(handle(alice)))["messages"][-1]
    await bob.mark_read(handle(alice), last["id"])
    assert (await bob.conversations())["conversations"][0]["unread"] == 0
    with pytest.raises(ClientError) as raised:
        await bob.mark_read(handle(alice), "not-an-id")
    assert raised.value.status == 422


async def test_hiding_a_conversation_is_for_the_caller_only(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url, open_dms=True)
    await bob.follow(handle(alice))
    await alice.post_message(handle(bob), "old news")
    await bob.hide(handle(alice))
    assert (await bob.conversations())["conversations"] == []
    assert (await bob.messages(handle(alice)))["messages"] == []
    assert [m["text"] for m in (await alice.messages(handle(bob)))["messages"]] == ["old news"]
    await alice.post_message(handle(bob), "fresh")
    assert [m["text"] for m in (await bob.messages(handle(alice)))["messages"]] == ["fresh"]
    assert (await bob.conversations())["conversations"][0]["unread"] == 1


async def test_block_stops_messages_both_ways_but_keeps_history(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    await bob.follow(handle(alice))
    await alice.follow(handle(bob))
    await alice.post_message(handle(bob), "before")
    await bob.block(handle(alice))
    for sender, recipient in ((alice, bob), (bob, alice)):
        with pytest.raises(ClientError) as raised:
            await sender.post_message(handle(recipient), "after")
        assert raised.value.code == "not_allowed"
    assert [m["text"] for m in (await alice.messages(handle(bob)))["messages"]] == ["before"]
    assert [m["text"] for m in (await bob.messages(handle(alice)))["messages"]] == ["before"]
    await bob.unblock(handle(alice))
    await bob.follow(handle(alice))  # the block ended bob's follow
    await alice.post_message(handle(bob), "after unblock")


async def test_unfollow_applies_to_the_very_next_send(server: RunningServer) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    await bob.follow(handle(alice))
    await alice.post_message(handle(bob), "while followed")
    await bob.unfollow(handle(alice))
    with pytest.raises(ClientError) as raised:
        await alice.post_message(handle(bob), "after unfollow")
    assert raised.value.code == "not_allowed"


async def test_history_says_how_far_the_peer_has_read_when_receipts_allow(
    server: RunningServer,
) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    await bob.follow(handle(alice))
    first = await alice.post_message(handle(bob), "one")
    assert (await alice.messages(handle(bob)))["peer_read_up_to"] is None
    await bob.mark_read(handle(alice), first["id"])
    assert (await alice.messages(handle(bob)))["peer_read_up_to"] == first["id"]
    await bob.update_me(read_receipts=False)
    assert (await alice.messages(handle(bob)))["peer_read_up_to"] is None


async def test_replying_marks_the_conversation_read_for_the_replier(
    server: RunningServer,
) -> None:
    alice, bob = await new_user(server.url), await new_user(server.url)
    await bob.follow(handle(alice))
    await alice.post_message(handle(bob), "one")
    await alice.post_message(handle(bob), "two")
    assert (await bob.conversations())["conversations"][0]["unread"] == 2
    await bob.post_message(handle(alice), "replying")
    assert (await bob.conversations())["conversations"][0]["unread"] == 0
