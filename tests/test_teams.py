"""Teams over the API and sockets: membership, acting as the business (`as=`),
status and assignment, internal notes, and the one authorization check, route
by route."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from chat.client import Client, ClientError, Socket
from chat.store import keys, safety
from chat.store.store import cursor_key
from tests.support import (
    PASSWORD,
    RunningServer,
    async_redis_client,
    handle,
    new_user,
    next_of,
    running_server,
    settings_for,
)


async def call(
    client: Client, method: str, path: str, body: Any = None, **params: str
) -> tuple[int, dict[str, Any]]:
    response = await client.http.request(
        method, path, json=body, params=params or None, headers=client._headers()
    )
    return response.status_code, response.json() if response.content else {}


async def team_of(server: RunningServer, agents: int = 2) -> tuple[Client, list[Client], Client]:
    """A business with open DMs, its agents, and a customer who wrote to it."""
    shop = await new_user(server.url, open_dms=True, kind="business")
    team = [await new_user(server.url) for _ in range(agents)]
    for agent in team:
        status, _ = await call(shop, "PUT", f"/api/team/{handle(agent)}")
        assert status == 204
    customer = await new_user(server.url)
    await customer.post_message(handle(shop), "hello, my order is late")
    return shop, team, customer


async def drain(sock: Socket, settle: float = 0.3) -> list[dict[str, Any]]:
    """Every frame that arrives within `settle` seconds of the last one."""
    got: list[dict[str, Any]] = []
    while True:
        try:
            got.append(await sock.next_event(settle))
        except TimeoutError:
            return got


# -- membership ----------------------------------------------------------------


async def test_a_business_adds_and_removes_agents_and_agents_see_their_teams(
    server: RunningServer,
) -> None:
    shop, (ann, bob), _ = await team_of(server)
    status, body = await call(shop, "GET", "/api/team")
    assert status == 200
    assert sorted(u["handle"] for u in body["users"]) == sorted([handle(ann), handle(bob)])
    assert (await ann.me())["teams"] == [handle(shop)]
    assert (await shop.me())["teams"] == []
    # Idempotent, and any case of the handle.
    assert (await call(shop, "PUT", f"/api/team/{handle(ann).upper()}"))[0] == 204
    assert (await call(shop, "DELETE", f"/api/team/{handle(ann)}"))[0] == 204
    assert (await call(shop, "DELETE", f"/api/team/{handle(ann)}"))[0] == 204
    assert (await ann.me())["teams"] == []
    status, body = await call(shop, "GET", "/api/team")
    assert [u["handle"] for u in body["users"]] == [handle(bob)]


async def test_team_changes_are_refused_with_the_right_codes(server: RunningServer) -> None:
    shop, (ann,), _ = await team_of(server, agents=1)
    person = await new_user(server.url)
    status, body = await call(person, "PUT", f"/api/team/{handle(ann)}")
    assert (status, body["error"]["code"]) == (403, "not_allowed")
    # An agent cannot grow the team it is in.
    status, body = await call(ann, "PUT", f"/api/team/{handle(person)}")
    assert (status, body["error"]["code"]) == (403, "not_allowed")
    status, body = await call(shop, "PUT", "/api/team/nobody_here_x")
    assert (status, body["error"]["code"]) == (404, "unknown_user")
    status, body = await call(shop, "PUT", f"/api/team/{handle(shop)}")
    assert (status, body["error"]["code"], body["error"]["field"]) == (422, "invalid", "handle")
    anonymous = await httpx.AsyncClient(base_url=server.url).put(f"/api/team/{handle(ann)}")
    assert anonymous.status_code == 401


async def test_team_size_is_bounded(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from chat.store import teams

    monkeypatch.setattr(teams, "MAX_TEAM_SIZE", 2)
    shop, _, _ = await team_of(server, agents=2)
    third = await new_user(server.url)
    status, body = await call(shop, "PUT", f"/api/team/{handle(third)}")
    assert (status, body["error"]["code"], body["error"]["field"]) == (422, "invalid", "handle")


# -- acting as the business ------------------------------------------------------------


async def test_an_agent_reply_reaches_the_customer_as_the_business_and_the_team_with_agent(
    server: RunningServer,
) -> None:
    shop, (ann, bob), customer = await team_of(server)
    b, c = handle(shop), handle(customer)
    assert ann.token and bob.token and customer.token and shop.token
    async with (
        Socket(server.url, bob.token, act_as=b) as bob_sock,
        Socket(server.url, shop.token) as shop_sock,
        Socket(server.url, customer.token) as customer_sock,
        Socket(server.url, ann.token, act_as=b) as ann_sock,
    ):
        assert ann_sock.ready and ann_sock.ready["user"]["handle"] == b
        sent = await ann_sock.send(c, "On its way!")
        assert sent["from"] == b and sent["to"] == c and sent["agent"] == handle(ann)
        for sock in (bob_sock, shop_sock):
            frame = await next_of(sock, "message")
            assert frame["message"] == sent
        frame = await next_of(customer_sock, "message")
        assert frame["message"]["from"] == b and "agent" not in frame["message"]
        assert frame["message"]["id"] == sent["id"]
        # Over HTTP too.
        status, body = await call(
            bob, "POST", f"/api/conversations/{c}/messages", {"text": "Anything else?"}, **{"as": b}
        )
        assert status == 201 and body["message"]["agent"] == handle(bob)
        frame = await next_of(customer_sock, "message")
        assert "agent" not in frame["message"]
        assert (await next_of(ann_sock, "message"))["message"]["agent"] == handle(bob)

    # History: the customer never sees `agent`; the team (and the business) do.
    mine = (await customer.messages(b))["messages"]
    assert [m.get("agent") for m in mine] == [None, None, None]
    assert all("agent" not in m for m in mine)
    status, theirs = await call(ann, "GET", f"/api/conversations/{c}/messages", **{"as": b})
    assert status == 200
    assert [m.get("agent") for m in theirs["messages"]] == [None, handle(ann), handle(bob)]
    assert [m.get("agent") for m in (await shop.messages(c))["messages"]] == [
        None, handle(ann), handle(bob)
    ]  # fmt: skip
    # Resume: the customer's replay carries no `agent` either.
    async with Socket(server.url, customer.token, since="0-0") as replay:
        frames = [f for f in await drain(replay) if f["type"] == "message"]
        assert len(frames) == 3 and all("agent" not in f["message"] for f in frames)
    # The conversation list of the customer: last message without agent.
    listed = (await customer.conversations())["conversations"]
    assert listed[0]["last_message"]["text"] == "Anything else?"
    assert "agent" not in listed[0]["last_message"]


async def test_the_rule_limits_and_folders_are_the_business_s(server: RunningServer) -> None:
    """An agent writing as the business to someone who never wrote to it is
    refused as the business would be, with the business's reason."""
    shop, (ann,), _ = await team_of(server, agents=1)
    stranger = await new_user(server.url)
    status, body = await call(
        ann, "POST", f"/api/conversations/{handle(stranger)}/messages", {"text": "hi"},
        **{"as": handle(shop)},
    )  # fmt: skip
    assert (status, body["error"]["code"]) == (403, "not_allowed")
    # The customer's first message sits in the business's requests; the team sees it there.
    status, listed = await call(ann, "GET", "/api/conversations", **{"as": handle(shop)})
    assert status == 200
    assert [(c["folder"], c["status"], c["assignee"]) for c in listed["conversations"]] == [
        ("requests", "open", None)
    ]


# -- status and assignment -------------------------------------------------------------


async def test_status_and_assignment_reach_every_team_socket_and_filter_the_list(
    server: RunningServer,
) -> None:
    shop, (ann, bob), customer = await team_of(server)
    other = await new_user(server.url)
    await other.post_message(handle(shop), "me too")
    b, c = handle(shop), handle(customer)
    assert ann.token and bob.token and shop.token and customer.token
    async with (
        Socket(server.url, bob.token, act_as=b) as bob_sock,
        Socket(server.url, shop.token) as shop_sock,
        Socket(server.url, customer.token) as customer_sock,
    ):
        status, body = await call(
            ann, "PATCH", f"/api/conversations/{c}", {"assignee": handle(ann)}, **{"as": b}
        )
        assert status == 200
        conv = body["conversation"]
        assert conv["peer"]["handle"] == c
        assert (conv["status"], conv["assignee"]) == ("open", handle(ann))
        for sock in (bob_sock, shop_sock):
            frame = await next_of(sock, "conversation")
            assert (frame["peer"], frame["status"], frame["assignee"]) == (c, "open", handle(ann))
            assert frame["by"] == handle(ann) and frame["cursor"]
        status, body = await call(
            bob, "PATCH", f"/api/conversations/{c}", {"status": "pending"}, **{"as": b}
        )
        assert body["conversation"]["status"] == "pending"
        assert body["conversation"]["assignee"] == handle(ann)
        assert (await next_of(shop_sock, "conversation"))["status"] == "pending"

        async def listed(**params: str) -> list[str]:
            status, body = await call(ann, "GET", "/api/conversations", **{"as": b, **params})
            assert status == 200, body
            return [conv["peer"]["handle"] for conv in body["conversations"]]

        assert await listed() == [handle(other), c]  # newest activity first
        assert await listed(status="pending") == [c]
        assert await listed(status="open") == [handle(other)]
        assert await listed(assignee="me") == [c]
        assert await listed(assignee=handle(ann).upper()) == [c]
        assert await listed(assignee="none") == [handle(other)]
        assert await listed(assignee=handle(bob)) == []
        assert await listed(status="resolved") == []
        # Unassign with null; the business itself may be the assignee.
        status, body = await call(
            ann, "PATCH", f"/api/conversations/{c}", {"assignee": None}, **{"as": b}
        )
        assert body["conversation"]["assignee"] is None
        status, body = await call(
            ann, "PATCH", f"/api/conversations/{c}", {"assignee": b.upper()}, **{"as": b}
        )
        assert body["conversation"]["assignee"] == b
        # None of it reaches the customer.
        await customer.post_message(b, "sentinel")
        frames = await drain(customer_sock)
        assert [f["type"] for f in frames] == ["message"]


async def test_patch_refuses_bad_values(server: RunningServer) -> None:
    shop, (ann,), customer = await team_of(server, agents=1)
    outsider = await new_user(server.url)
    path, b = f"/api/conversations/{handle(customer)}", handle(shop)
    for body, field in (
        ({"status": "closed"}, "status"),
        ({"assignee": handle(outsider)}, "assignee"),
        ({"assignee": "no such one"}, "assignee"),
        ({"color": "red"}, "color"),
    ):
        status, answer = await call(ann, "PATCH", path, body, **{"as": b})
        assert (status, answer["error"]["code"], answer["error"].get("field")) == (
            422, "invalid", field
        ), body  # fmt: skip
    status, answer = await call(ann, "PATCH", path, {}, **{"as": b})
    assert (status, answer["error"]["code"]) == (422, "invalid")
    status, answer = await call(
        ann, "PATCH", f"/api/conversations/{handle(outsider)}", {"status": "open"}, **{"as": b}
    )
    assert (status, answer["error"]["code"]) == (404, "not_found")
    status, answer = await call(ann, "GET", "/api/conversations", status="done", **{"as": b})
    assert (status, answer["error"]["field"]) == (422, "status")


async def test_a_customer_message_reopens_a_resolved_conversation(server: RunningServer) -> None:
    shop, (ann,), customer = await team_of(server, agents=1)
    b, c = handle(shop), handle(customer)
    assert ann.token
    await call(
        ann,
        "PATCH",
        f"/api/conversations/{c}",
        {"status": "resolved", "assignee": handle(ann)},
        **{"as": b},
    )
    async with Socket(server.url, ann.token, act_as=b) as sock:
        await customer.post_message(b, "actually, one more thing")
        message = await next_of(sock, "message")
        reopened = await next_of(sock, "conversation")
        assert (reopened["peer"], reopened["status"], reopened["assignee"]) == (
            c, "open", handle(ann)
        )  # fmt: skip
        assert reopened["by"] is None
        assert cursor_key(reopened["cursor"]) > cursor_key(message["cursor"])
    _status, body = await call(ann, "GET", "/api/conversations", status="open", **{"as": b})
    assert [conv["peer"]["handle"] for conv in body["conversations"]] == [c]
    # The business's own reply does not reopen anything it resolved.
    await call(ann, "PATCH", f"/api/conversations/{c}", {"status": "resolved"}, **{"as": b})
    await call(ann, "POST", f"/api/conversations/{c}/messages", {"text": "bye"}, **{"as": b})
    _, body = await call(ann, "GET", "/api/conversations", status="resolved", **{"as": b})
    assert [conv["peer"]["handle"] for conv in body["conversations"]] == [c]


# -- notes ------------------------------------------------------------------------------


async def test_notes_reach_the_team_and_never_the_customer(server: RunningServer) -> None:
    shop, (ann, bob), customer = await team_of(server)
    b, c = handle(shop), handle(customer)
    assert bob.token and customer.token
    async with (
        Socket(server.url, bob.token, act_as=b) as bob_sock,
        Socket(server.url, customer.token) as customer_sock,
    ):
        status, body = await call(
            ann, "POST", f"/api/conversations/{c}/notes", {"text": " VIP, refund ok "}, **{"as": b}
        )
        assert status == 201
        note = body["note"]
        assert note["text"] == "VIP, refund ok" and note["author"] == handle(ann)
        assert note["peer"] == c and note["id"] and note["created_at"].endswith("Z")
        frame = await next_of(bob_sock, "note")
        assert frame["note"] == note and frame["peer"] == c and frame["cursor"]
        await call(
            ann, "POST", f"/api/conversations/{c}/messages", {"text": "Refunded."}, **{"as": b}
        )
        frames = await drain(customer_sock)
        assert [f["type"] for f in frames] == ["message"]
        assert "VIP" not in str(frames)
    status, body = await call(bob, "GET", f"/api/conversations/{c}/notes", **{"as": b})
    assert status == 200 and body["notes"] == [note] and body["next"] is None
    # Not in the customer's history, nor their replay; the team's replay has it.
    assert "VIP" not in str(await customer.messages(b))
    assert customer.token and ann.token
    async with Socket(server.url, customer.token, since="0-0") as replay:
        assert "VIP" not in str(await drain(replay))
    async with Socket(server.url, ann.token, act_as=b, since="0-0") as replay:
        assert note in [f.get("note") for f in await drain(replay)]
    # The customer cannot read the business's notes about them.
    status, body = await call(customer, "GET", f"/api/conversations/{b}/notes", **{"as": b})
    assert (status, body["error"]["code"]) == (403, "not_allowed")
    status, body = await call(customer, "GET", f"/api/conversations/{b}/notes")
    assert status == 200 and body["notes"] == []
    # Bad notes.
    status, body = await call(
        ann, "POST", f"/api/conversations/{c}/notes", {"text": "  "}, **{"as": b}
    )
    assert (status, body["error"]["code"]) == (422, "invalid")
    status, body = await call(
        ann, "POST", f"/api/conversations/{c}/notes", {"text": "x" * 10_001}, **{"as": b}
    )
    assert (status, body["error"]["code"]) == (422, "too_long")


async def test_notes_page_oldest_first(server: RunningServer) -> None:
    shop, (ann,), customer = await team_of(server, agents=1)
    b, c = handle(shop), handle(customer)
    for i in range(5):
        await call(ann, "POST", f"/api/conversations/{c}/notes", {"text": f"n{i}"}, **{"as": b})
    _, page = await call(ann, "GET", f"/api/conversations/{c}/notes", limit="2", **{"as": b})
    assert [n["text"] for n in page["notes"]] == ["n3", "n4"]
    _, older = await call(
        ann, "GET", f"/api/conversations/{c}/notes", limit="3", before=page["next"], **{"as": b}
    )
    assert [n["text"] for n in older["notes"]] == ["n0", "n1", "n2"] and older["next"] is None


# -- typing among the team ---------------------------------------------------------------


async def test_typing_of_an_agent_reaches_the_customer_as_the_business_and_the_team_with_agent(
    server: RunningServer,
) -> None:
    shop, (ann, bob), customer = await team_of(server)
    b, c = handle(shop), handle(customer)
    assert ann.token and bob.token and customer.token
    async with (
        Socket(server.url, ann.token, act_as=b) as ann_sock,
        Socket(server.url, bob.token, act_as=b) as bob_sock,
        Socket(server.url, customer.token) as customer_sock,
    ):
        # Before the business answers, the customer's conversation is a request:
        # the customer sees no typing, the team does.
        await ann_sock.typing(c)
        team = await next_of(bob_sock, "typing")
        assert team == {"type": "typing", "from": b, "peer": c, "agent": handle(ann)}
        await ann_sock.send(c, "Hello!")
        await ann_sock.typing(c)
        seen = await next_of(customer_sock, "typing")
        assert seen == {"type": "typing", "from": b}
        team = await next_of(bob_sock, "typing")
        assert team == {"type": "typing", "from": b, "peer": c, "agent": handle(ann)}
        # The typing agent's own socket does not hear itself.
        assert [f for f in await drain(ann_sock) if f["type"] == "typing"] == []


# -- the one authorization check, route by route -------------------------------------------


AS_ROUTES = [
    ("GET", "/api/conversations", None),
    ("GET", "/api/conversations/{peer}/messages", None),
    ("POST", "/api/conversations/{peer}/messages", {"text": "hi"}),
    ("POST", "/api/conversations/{peer}/read", {"up_to": "1"}),
    ("POST", "/api/conversations/{peer}/accept", None),
    ("DELETE", "/api/conversations/{peer}", None),
    ("PATCH", "/api/conversations/{peer}", {"status": "resolved"}),
    ("POST", "/api/conversations/{peer}/notes", {"text": "internal"}),
    ("GET", "/api/conversations/{peer}/notes", None),
    ("GET", "/api/team", None),
]


@pytest.mark.parametrize(("method", "path", "body"), AS_ROUTES)
async def test_every_as_route_refuses_anyone_outside_the_team(
    server: RunningServer, method: str, path: str, body: Any
) -> None:
    shop, (ann,), customer = await team_of(server, agents=1)
    outsider = await new_user(server.url)
    b, c = handle(shop), handle(customer)
    url = path.format(peer=quote(c))
    # An outsider, the customer, a removed agent: 403, whatever the route.
    await call(shop, "DELETE", f"/api/team/{handle(ann)}")
    for who in (outsider, customer, ann):
        status, answer = await call(who, method, url, body, **{"as": b})
        assert (status, answer["error"]["code"]) == (403, "not_allowed"), handle(who)
    # `as=` never reaches a person's account, not even one's own, nor a missing one.
    for target in (c, handle(outsider), "nobody_here_x", "bad handle!"):
        status, answer = await call(outsider, method, url, body, **{"as": target})
        assert (status, answer["error"]["code"]) == (403, "not_allowed"), target
    # Nothing was written by any of those attempts.
    assert len((await customer.messages(b))["messages"]) == 1
    status, notes = await call(shop, "GET", f"/api/conversations/{c}/notes")
    assert notes["notes"] == []


@pytest.mark.parametrize("target", ["business", "customer", "self", "missing"])
async def test_the_ws_handshake_refuses_anyone_outside_the_team(
    server: RunningServer, target: str
) -> None:
    shop, (ann,), customer = await team_of(server, agents=1)
    outsider = await new_user(server.url)
    assert outsider.token and ann.token
    act_as = {
        "business": handle(shop),
        "customer": handle(customer),
        "self": handle(outsider),
        "missing": "nobody_here_x",
    }[target]
    with pytest.raises(ClientError) as refused:
        await Socket(server.url, outsider.token, act_as=act_as).connect()
    assert (refused.value.status, refused.value.code) == (403, "not_allowed")
    # A member gets in, with `peer=` too, and the socket is the business's.
    async with Socket(server.url, ann.token, act_as=handle(shop), peer=handle(customer)) as ok:
        assert ok.ready and ok.ready["user"]["handle"] == handle(shop)
        assert ok.ready["peer"]["handle"] == handle(customer)


async def test_the_business_itself_may_use_as_and_see_team_fields(server: RunningServer) -> None:
    shop, _, customer = await team_of(server, agents=0)
    status, body = await call(shop, "GET", "/api/conversations", **{"as": handle(shop)})
    assert status == 200 and body["conversations"][0]["status"] == "open"
    # Its plain v1 listing (inbox by default) carries the team fields too.
    await shop.accept(handle(customer))
    listed = (await shop.conversations())["conversations"]
    assert (listed[0]["status"], listed[0]["assignee"]) == ("open", None)


# -- accounts that go away ------------------------------------------------------------------


async def test_deleting_a_business_or_an_agent_takes_the_team_with_it(
    server: RunningServer,
) -> None:
    shop, (ann, bob), customer = await team_of(server)
    b, c = handle(shop), handle(customer)
    await call(ann, "POST", f"/api/conversations/{c}/notes", {"text": "x"}, **{"as": b})
    await call(ann, "PATCH", f"/api/conversations/{c}", {"status": "pending"}, **{"as": b})
    # An agent deletes its account: it leaves the team.
    assert (await call(bob, "DELETE", "/api/me", {"password": PASSWORD}))[0] == 204
    _, body = await call(shop, "GET", "/api/team")
    assert [u["handle"] for u in body["users"]] == [handle(ann)]
    # The business deletes its account: its team state and notes go, and its
    # agents no longer list it.
    assert (await call(shop, "DELETE", "/api/me", {"password": PASSWORD}))[0] == 204
    assert (await ann.me())["teams"] == []
    status, answer = await call(ann, "GET", "/api/conversations", **{"as": b})
    assert (status, answer["error"]["code"]) == (403, "not_allowed")
    redis = async_redis_client(server.app.state.runtime.settings.redis_url)
    try:
        lc = b.lower()
        for key in (keys.team(lc), keys.team_conversations(lc), keys.notes(lc, c.lower())):
            assert not await redis.exists(key), key
        assert not await redis.exists(keys.teams_of(handle(ann).lower()))
    finally:
        await redis.aclose()


async def test_nobody_acts_for_a_suspended_business(server: RunningServer) -> None:
    shop, (ann,), _ = await team_of(server, agents=1)
    await safety.suspend(
        server.app.state.runtime.store, handle(shop).lower(), int(time.time() * 1000)
    )
    status, answer = await call(ann, "GET", "/api/conversations", **{"as": handle(shop)})
    assert (status, answer["error"]["code"]) == (403, "not_allowed")


async def test_team_sockets_count_against_the_agent_who_opened_them(
    redis_url: str, tmp_path: Path
) -> None:
    async with running_server(settings_for(redis_url, tmp_path, limit_sockets_per_user=2)) as srv:
        shop, (ann,), _ = await team_of(srv, agents=1)
        assert ann.token and shop.token
        b = handle(shop)
        async with (
            Socket(srv.url, ann.token, act_as=b),
            Socket(srv.url, ann.token, act_as=b),
            Socket(srv.url, shop.token),
            Socket(srv.url, shop.token),
        ):
            with pytest.raises(ClientError) as refused:
                await Socket(srv.url, ann.token).connect()
            assert (refused.value.status, refused.value.code) == (429, "rate_limited")
            with pytest.raises(ClientError) as refused:
                await Socket(srv.url, shop.token).connect()
            assert refused.value.status == 429


async def test_a_team_socket_for_one_conversation_hears_only_its_team_events(
    server: RunningServer,
) -> None:
    shop, (ann,), customer = await team_of(server, agents=1)
    other = await new_user(server.url)
    await other.post_message(handle(shop), "me too")
    b, c, o = handle(shop), handle(customer), handle(other)
    assert ann.token
    async with Socket(server.url, ann.token, act_as=b, peer=c) as sock:
        await call(ann, "POST", f"/api/conversations/{o}/notes", {"text": "other"}, **{"as": b})
        await call(ann, "PATCH", f"/api/conversations/{o}", {"status": "pending"}, **{"as": b})
        await call(ann, "POST", f"/api/conversations/{c}/notes", {"text": "mine"}, **{"as": b})
        frames = await drain(sock)
        assert [(f["type"], f.get("note", {}).get("text")) for f in frames] == [("note", "mine")]


async def test_an_agent_can_leave_a_team_and_remove_no_one_else(server: RunningServer) -> None:
    shop, (ann, bea), _ = await team_of(server, agents=2)
    b = handle(shop)
    # Only itself: not a colleague, not the business, and not without being in it.
    for who, target in ((ann, handle(bea)), (ann, b), (shop, handle(ann))):
        status, answer = await call(who, "DELETE", f"/api/team/{target}", **{"as": b})
        assert (status, answer["error"]["code"], answer["error"]["reason"]) == (
            403,
            "not_allowed",
            "cannot_receive",
        ), (handle(who), target)
    assert await call(ann, "DELETE", f"/api/team/{handle(ann)}", **{"as": b}) == (204, {})
    assert (await ann.me())["teams"] == []
    status, answer = await call(ann, "GET", "/api/conversations", **{"as": b})
    assert (status, answer["error"]["code"]) == (403, "not_allowed")
    status, answer = await call(ann, "DELETE", f"/api/team/{handle(ann)}", **{"as": b})
    assert (status, answer["error"]["code"]) == (403, "not_allowed")
    assert [u["handle"] for u in (await call(shop, "GET", "/api/team"))[1]["users"]] == [
        handle(bea)
    ]
