"""The shortest path through the product: two people, one message, live."""

from __future__ import annotations

from tests.support import RunningServer, new_user


async def test_follow_then_chat_live(server: RunningServer) -> None:
    alice = await new_user(server.url)
    bob = await new_user(server.url)
    assert alice.user and bob.user
    await bob.follow(alice.user["handle"])
    async with alice.socket() as a, bob.socket() as b:
        message = await a.send(bob.user["handle"], "hello")
        event = await b.next_event()
        assert event["type"] == "message"
        assert event["message"] == message
        assert event["folder"] == "inbox"
    await alice.aclose()
    await bob.aclose()
