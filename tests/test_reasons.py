"""Every `not_allowed` says why (`reason`), on HTTP, in error frames, at the
`?peer=` handshake and in `relationship`, without revealing a block."""

from __future__ import annotations

import pytest

from chat.client import Client, ClientError
from tests.support import RunningServer, handle, new_user


async def refusals(sender: Client, to: str) -> list[ClientError]:
    """The same send refused three ways: HTTP, error frame, ?peer= handshake."""
    found = []
    with pytest.raises(ClientError) as http:
        await sender.post_message(to, "hi")
    found.append(http.value)
    async with sender.socket() as socket:
        with pytest.raises(ClientError) as frame:
            await socket.send(to, "hi")
        found.append(frame.value)
    with pytest.raises(ClientError) as handshake:
        await sender.socket(peer=to).connect()
    found.append(handshake.value)
    return found


async def expect(sender: Client, to: str, reason: str) -> list[str]:
    errors = await refusals(sender, to)
    assert [(e.code, e.reason) for e in errors] == [("not_allowed", reason)] * 3
    assert [e.status for e in errors] == [403, 0, 403]
    profile = await sender.profile(to)
    assert profile["relationship"]["can_message"] is False
    assert profile["relationship"]["reason"] == reason
    return [e.detail for e in errors]


async def test_closed_you_blocked_and_cannot_receive(server: RunningServer) -> None:
    alice = await new_user(server.url)
    bob = await new_user(server.url)
    a, b = handle(alice), handle(bob)
    details = await expect(alice, b, "closed")
    assert details[0] == f"@{b} only receives messages from people they follow."
    await bob.update_me(open_dms=True)
    await alice.block(b)
    await expect(alice, b, "you_blocked")
    await alice.unblock(b)
    await bob.block(a)
    details = await expect(alice, b, "cannot_receive")
    assert all("block" not in d for d in details)
    assert details[0] == f"@{b} cannot receive messages from you."


async def test_writing_to_yourself(server: RunningServer) -> None:
    alice = await new_user(server.url)
    errors = await refusals(alice, handle(alice))
    assert [(e.code, e.reason) for e in errors] == [("not_allowed", "self")] * 3


async def test_typing_refusals_carry_the_reason(server: RunningServer) -> None:
    alice = await new_user(server.url)
    bob = await new_user(server.url)
    async with alice.socket() as socket:
        await socket.typing(handle(bob))
        frame = await socket.next_event()
    assert frame["type"] == "error" and frame["reason"] == "closed"
