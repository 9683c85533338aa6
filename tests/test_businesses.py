"""Businesses over the API: quick replies, `ref`, the welcome in `ready`, and
GET /api/buttons with each error naming its field."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from chat.client import Client
from chat.store import safety
from tests.support import RunningServer, handle, new_user

REPLIES = [
    {"label": "Track my order", "metadata": "intent:track"},
    {"label": "Talk to a person", "metadata": "intent:human"},
]


async def call(
    client: Client, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    response = await client.http.request(method, path, json=body, headers=client._headers())
    return response.status_code, response.json() if response.content else {}


async def shop_with_replies(server: RunningServer, **settings: Any) -> Client:
    shop = await new_user(server.url, open_dms=True, kind="business")
    await shop.update_me(quick_replies=REPLIES, **settings)
    return shop


async def send(client: Client, to: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return await call(client, "POST", f"/api/conversations/{to}/messages", body)


# -- quick replies on the profile ------------------------------------------------


async def test_business_sets_quick_replies_and_user_objects_carry_them(
    server: RunningServer,
) -> None:
    shop = await shop_with_replies(server)
    me = await shop.me()
    assert me["user"]["quick_replies"] == REPLIES
    fan = await new_user(server.url)
    seen = await fan.profile(handle(shop))
    assert seen["user"]["quick_replies"] == REPLIES
    # People carry no quick_replies at all; clearing leaves an empty list.
    assert "quick_replies" not in (await fan.me())["user"]
    cleared = await shop.update_me(quick_replies=[])
    assert cleared["user"]["quick_replies"] == []


@pytest.mark.parametrize(
    "replies",
    [
        "not a list",
        [{"label": "x"}],
        [{"label": "", "metadata": "m"}],
        [{"label": "x" * 37, "metadata": "m"}],
        [{"label": "x", "metadata": ""}],
        [{"label": "x", "metadata": "m" * 201}],
        [{"label": "x", "metadata": 5}],
        [{"label": "x", "metadata": "m", "extra": 1}],
        [{"label": f"l{i}", "metadata": f"m{i}"} for i in range(11)],
    ],
)
async def test_bad_quick_replies_are_refused_with_their_field(
    server: RunningServer, replies: object
) -> None:
    shop = await new_user(server.url, kind="business")
    status, body = await call(shop, "PATCH", "/api/me", {"quick_replies": replies})
    assert status == 422
    assert body["error"]["code"] == "invalid" and body["error"]["field"] == "quick_replies"


async def test_quick_reply_bounds_are_inclusive_and_people_cannot_set_them(
    server: RunningServer,
) -> None:
    shop = await new_user(server.url, kind="business")
    most = [{"label": "x" * 36, "metadata": f"{i}" + "m" * 199} for i in range(10)]
    assert (await shop.update_me(quick_replies=most))["user"]["quick_replies"] == [
        {"label": "x" * 36, "metadata": f"{i}" + "m" * 199} for i in range(10)
    ]
    person = await new_user(server.url)
    status, body = await call(person, "PATCH", "/api/me", {"quick_replies": REPLIES})
    assert status == 422 and body["error"]["field"] == "quick_replies"


async def test_patch_me_refuses_unknown_fields(server: RunningServer) -> None:
    alice = await new_user(server.url)
    status, body = await call(alice, "PATCH", "/api/me", {"open_dm": True})
    assert status == 422 and body["error"]["field"] == "open_dm"
    assert (await alice.me())["user"]["open_dms"] is False


# -- sends: ref, quick_reply, quick_replies --------------------------------------------


async def test_ref_is_carried_stored_and_only_when_sent(server: RunningServer) -> None:
    shop = await shop_with_replies(server)
    fan = await new_user(server.url)
    status, body = await send(fan, handle(shop), {"text": "hi", "ref": "pricing-page"})
    assert status == 201 and body["message"]["ref"] == "pricing-page"
    status, body = await send(fan, handle(shop), {"text": "again"})
    assert status == 201
    assert {"ref", "quick_reply", "quick_replies"}.isdisjoint(body["message"])
    history = (await shop.messages(handle(fan)))["messages"]
    assert history[0]["ref"] == "pricing-page" and "ref" not in history[1]


@pytest.mark.parametrize("ref", ["", "a" * 65, "has space", "slash/no", 7])
async def test_bad_ref_is_invalid_with_field(server: RunningServer, ref: object) -> None:
    shop = await shop_with_replies(server)
    fan = await new_user(server.url)
    status, body = await send(fan, handle(shop), {"text": "hi", "ref": ref})
    assert status == 422 and body["error"]["field"] == "ref"
    assert (await shop.conversations("requests"))["conversations"] == []


async def test_quick_reply_must_match_one_of_the_business_replies(
    server: RunningServer,
) -> None:
    shop = await shop_with_replies(server)
    fan = await new_user(server.url)
    status, body = await send(
        fan, handle(shop), {"text": "Track my order", "quick_reply": "intent:track"}
    )
    assert status == 201 and body["message"]["quick_reply"] == "intent:track"
    for wrong in ("intent:nope", 3, ["intent:track"]):
        status, body = await send(fan, handle(shop), {"text": "x", "quick_reply": wrong})
        assert status == 422
        assert body["error"]["code"] == "invalid" and body["error"]["field"] == "quick_reply"
    # A person has no quick replies to match.
    friend = await new_user(server.url, open_dms=True)
    status, body = await send(fan, handle(friend), {"text": "x", "quick_reply": "intent:track"})
    assert status == 422 and body["error"]["field"] == "quick_reply"
    status, body = await send(fan, "nobody_here_x", {"text": "x", "quick_reply": "a"})
    assert status == 404 and body["error"]["code"] == "unknown_user"


async def test_business_attaches_quick_replies_and_the_customer_picks_one(
    server: RunningServer,
) -> None:
    shop = await shop_with_replies(server)
    fan = await new_user(server.url)
    await fan.post_message(handle(shop), "my bike is broken")
    offer = [{"label": "Yes, book it", "metadata": "book:yes"}]
    status, body = await send(shop, handle(fan), {"text": "Book a repair?", "quick_replies": offer})
    assert status == 201 and body["message"]["quick_replies"] == offer
    # The offer on the business's latest message is answerable, as is the profile's.
    status, body = await send(
        fan, handle(shop), {"text": "Yes, book it", "quick_reply": "book:yes"}
    )
    assert status == 201 and body["message"]["quick_reply"] == "book:yes"
    # People cannot attach quick replies; bad ones name their field.
    status, body = await send(fan, handle(shop), {"text": "x", "quick_replies": offer})
    assert status == 422 and body["error"]["field"] == "quick_replies"
    status, body = await send(shop, handle(fan), {"text": "x", "quick_replies": [{"label": ""}]})
    assert status == 422 and body["error"]["field"] == "quick_replies"


async def test_websocket_send_carries_the_same_fields(server: RunningServer) -> None:
    shop = await shop_with_replies(server)
    fan = await new_user(server.url)
    async with connect(
        server.ws_url, additional_headers={"Authorization": f"Bearer {fan.token}"}
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        frame = {"type": "send", "to": handle(shop), "text": "Talk to a person",
                 "client_id": "c1", "ref": "footer", "quick_reply": "intent:human"}  # fmt: skip
        await ws.send(json.dumps(frame))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert ack["type"] == "ack"
        assert ack["message"]["ref"] == "footer"
        assert ack["message"]["quick_reply"] == "intent:human"
        await ws.send(json.dumps({**frame, "client_id": "c2", "quick_reply": "bad"}))
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["type"] == "error" and error["code"] == "invalid"
        assert error["field"] == "quick_reply" and error["client_id"] == "c2"


# -- the welcome in `ready` -------------------------------------------------------------


async def test_ready_carries_greeting_and_quick_replies_for_a_new_conversation_only(
    server: RunningServer,
) -> None:
    shop = await shop_with_replies(server, greeting="Hi! How can we help?")
    fan = await new_user(server.url)
    headers = {"Authorization": f"Bearer {fan.token}"}
    async with connect(f"{server.ws_url}?peer={handle(shop)}", additional_headers=headers) as ws:
        ready = json.loads(await ws.recv())
    assert ready["greeting"] == "Hi! How can we help?"
    assert ready["quick_replies"] == REPLIES
    assert ready["peer"]["quick_replies"] == REPLIES
    await fan.post_message(handle(shop), "hello")
    async with connect(f"{server.ws_url}?peer={handle(shop)}", additional_headers=headers) as ws:
        ready = json.loads(await ws.recv())
    assert "greeting" not in ready and "quick_replies" not in ready
    # A socket without a peer gets no welcome either.
    async with connect(server.ws_url, additional_headers=headers) as ws:
        ready = json.loads(await ws.recv())
    assert "greeting" not in ready and "quick_replies" not in ready


# -- GET /api/buttons ---------------------------------------------------------------------


async def buttons(server: RunningServer, **params: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/api/buttons", params=params)
    return response.status_code, response.json()


async def test_buttons_returns_user_compose_url_and_snippet(server: RunningServer) -> None:
    shop = await shop_with_replies(server)
    status, body = await buttons(
        server, handle=handle(shop).upper(), text=" Where is my order? ", label="Chat with us",
        size="small", ref="pricing-page",
    )  # fmt: skip
    assert status == 200, body
    assert body["user"]["handle"] == handle(shop)
    url = httpx.URL(body["compose_url"])
    assert url.path == "/messages/compose" and str(url).startswith(server.url)
    assert url.params["recipient"] == handle(shop)
    assert url.params["text"] == "Where is my order?"
    assert url.params["ref"] == "pricing-page"
    link, script = body["snippet"].split("\n")
    assert link.startswith('<a class="dmhub-message-button" ') and 'data-size="small"' in link
    assert link.endswith(">Chat with us</a>")
    assert body["compose_url"].replace("&", "&amp;") in link
    assert script == f'<script async src="{server.url}/button.js"></script>'
    status, body = await buttons(server, handle=handle(shop))
    assert status == 200 and f">Message @{handle(shop)}</a>" in body["snippet"]
    assert "text=" not in body["compose_url"] and "ref=" not in body["compose_url"]


@pytest.mark.parametrize(
    ("params", "status", "code", "field"),
    [
        ({}, 422, "invalid", "handle"),
        ({"handle": "bad handle!"}, 422, "invalid", "handle"),
        ({"handle": "nobody_here_b"}, 404, "unknown_user", "handle"),
        ({"handle": "SHOP", "size": "huge"}, 422, "invalid", "size"),
        ({"handle": "SHOP", "label": "x" * 61}, 422, "invalid", "label"),
        ({"handle": "SHOP", "ref": "no spaces"}, 422, "invalid", "ref"),
        ({"handle": "SHOP", "text": "x" * 10_001}, 422, "too_long", "text"),
        ({"handle": "CLOSED"}, 422, "dms_closed", "handle"),
    ],
)
async def test_buttons_errors_name_their_field(
    server: RunningServer, params: dict[str, str], status: int, code: str, field: str
) -> None:
    shop = await shop_with_replies(server)
    closed = await new_user(server.url, kind="business")
    names = {"SHOP": handle(shop), "CLOSED": handle(closed)}
    query = {k: names.get(v, v) for k, v in params.items()}
    got, body = await buttons(server, **query)
    assert got == status, body
    assert body["error"]["code"] == code and body["error"]["field"] == field
    assert body["error"]["detail"]


async def test_buttons_text_limit_counts_after_trimming(server: RunningServer) -> None:
    shop = await shop_with_replies(server)
    status, _ = await buttons(server, handle=handle(shop), text="  " + "x" * 10_000 + "  ")
    assert status == 200


async def test_button_js_is_small_and_cacheable(server: RunningServer) -> None:
    shop = await shop_with_replies(server)
    _, body = await buttons(server, handle=handle(shop))
    src = body["snippet"].split('src="')[1].split('"')[0]
    async with httpx.AsyncClient() as http:
        bare = await http.get(src)
        again = await http.get(src, headers={"If-None-Match": bare.headers["etag"]})
        version = bare.headers["etag"].strip('"')
        pinned = await http.get(f"{src}?v={version}")
    assert bare.status_code == 200 and len(bare.content) < 8 * 1024
    assert bare.headers["content-type"].startswith("text/javascript")
    assert "max-age=300" in bare.headers["cache-control"]
    assert again.status_code == 304 and not again.content
    assert pinned.content == bare.content and "immutable" in pinned.headers["cache-control"]


async def test_the_python_client_sends_the_business_fields(server: RunningServer) -> None:
    shop = await shop_with_replies(server)
    fan = await new_user(server.url)
    sent = await fan.post_message(handle(shop), "Track my order", quick_reply="intent:track")
    assert sent["quick_reply"] == "intent:track"
    offer = [{"label": "Yes", "metadata": "yes"}]
    async with shop.socket() as socket:
        reply = await socket.send(handle(fan), "Anything else?", quick_replies=offer, ref="bot")
    assert reply["quick_replies"] == offer and reply["ref"] == "bot"


async def test_optional_fields_are_the_same_bytes_in_ack_delivery_and_history(
    server: RunningServer,
) -> None:
    shop = await shop_with_replies(server)
    fan = await new_user(server.url)
    headers = {"Authorization": f"Bearer {shop.token}"}
    async with (
        connect(server.ws_url, additional_headers={"Authorization": f"Bearer {fan.token}"}) as a,
        connect(server.ws_url, additional_headers=headers) as b,
    ):
        await a.recv(), await b.recv()
        frame = {"type": "send", "to": handle(shop), "text": "Track my order", "client_id": "c1"}
        await a.send(json.dumps({**frame, "ref": "pricing-page", "quick_reply": "intent:track"}))
        ack, delivery = str(await a.recv()), str(await b.recv())
    in_ack = ack[ack.index('"message":') + len('"message":') : -1]
    in_delivery = delivery[len('{"type":"message","message":') : delivery.rindex(',"folder":')]
    response = await shop.http.get(f"/api/conversations/{handle(fan)}/messages", headers=headers)
    in_history = response.text[len('{"messages":[') : response.text.index('],"next":')]
    assert in_ack == in_delivery == in_history
    # After the v1 fields, in the order the send gave them a place.
    assert in_ack.endswith(',"client_id":"c1","ref":"pricing-page","quick_reply":"intent:track"}')


async def test_buttons_of_a_suspended_account_say_strangers_cannot_write(
    server: RunningServer,
) -> None:
    shop = await shop_with_replies(server)
    await safety.suspend(server.app.state.runtime.store, handle(shop).lower(), 1)
    status, body = await buttons(server, handle=handle(shop))
    assert status == 422 and body["error"]["code"] == "dms_closed"
    assert body["error"]["field"] == "handle" and "suspend" not in body["error"]["detail"]
