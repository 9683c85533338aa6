"""Every route and the socket, classified and checked: who may call it at all.

The table below names the authentication of every (method, path) the app
serves. A route that is not in it fails `test_every_route_is_classified`, so
a new route cannot ship without someone saying who may call it; the checks
after it then run against that route on a real server and real Valkey.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.routing import Mount, Route
from websockets.asyncio.client import connect

from chat.app import WEBSOCKET_PATH, create_app
from chat.client import Client
from chat.config import WebhookSettings
from tests.support import (
    PASSWORD,
    RunningServer,
    flush_all,
    handle,
    new_user,
    redis_client,
    running_server,
    settings_for,
)
from tests.test_websocket import recv, refused

# Every async test shares the module's event loop, the one its server runs in.
module_loop = pytest.mark.asyncio(loop_scope="module")

ADMIN_TOKEN = "admin-token-for-route-security"
METRICS_TOKEN = "metrics-token-for-route-security"
FOREIGN_ORIGIN = "https://evil.example"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Access(enum.Enum):
    PUBLIC = "public"
    ADMIN = "admin token"
    METRICS = "metrics token"
    USER = "signed in"


# Path parameters are filled with real values (see World.fill) so that each
# check reaches the route's own handler, not a 404 before authentication.
ROUTES: dict[tuple[str, str], Access] = {
    # Signing up and in, the page's "who am I", pages and operations.
    ("POST", "/api/accounts"): Access.PUBLIC,
    ("POST", "/api/sessions"): Access.PUBLIC,
    ("GET", "/api/sessions/current"): Access.PUBLIC,
    ("GET", "/api/buttons"): Access.PUBLIC,
    ("GET", "/button.js"): Access.PUBLIC,
    ("GET", "/buttons"): Access.PUBLIC,
    ("GET", "/"): Access.PUBLIC,
    ("GET", "/messages/compose"): Access.PUBLIC,
    ("GET", "/healthz"): Access.PUBLIC,
    ("GET", "/readyz"): Access.PUBLIC,
    ("GET", "/static"): Access.PUBLIC,
    ("GET", "/metrics"): Access.METRICS,
    # Operators.
    ("GET", "/api/admin/reports"): Access.ADMIN,
    ("GET", "/api/admin/restrictions"): Access.ADMIN,
    ("DELETE", "/api/admin/restrictions/{handle}"): Access.ADMIN,
    ("PUT", "/api/admin/suspensions/{handle}"): Access.ADMIN,
    ("DELETE", "/api/admin/suspensions/{handle}"): Access.ADMIN,
    # Everything a signed-in account does.
    ("DELETE", "/api/sessions/current"): Access.USER,
    ("GET", "/api/sessions"): Access.USER,
    ("DELETE", "/api/sessions"): Access.USER,
    ("DELETE", "/api/sessions/{id}"): Access.USER,
    ("GET", "/api/me"): Access.USER,
    ("PATCH", "/api/me"): Access.USER,
    ("DELETE", "/api/me"): Access.USER,
    ("PUT", "/api/me/password"): Access.USER,
    ("GET", "/api/me/export"): Access.USER,
    ("GET", "/api/users/{handle}"): Access.USER,
    ("GET", "/api/following"): Access.USER,
    ("GET", "/api/followers"): Access.USER,
    ("PUT", "/api/following/{handle}"): Access.USER,
    ("DELETE", "/api/following/{handle}"): Access.USER,
    ("GET", "/api/blocks"): Access.USER,
    ("PUT", "/api/blocks/{handle}"): Access.USER,
    ("DELETE", "/api/blocks/{handle}"): Access.USER,
    ("POST", "/api/reports"): Access.USER,
    ("GET", "/api/conversations"): Access.USER,
    ("GET", "/api/conversations/{peer}/messages"): Access.USER,
    ("POST", "/api/conversations/{peer}/messages"): Access.USER,
    ("POST", "/api/conversations/{peer}/read"): Access.USER,
    ("POST", "/api/conversations/{peer}/accept"): Access.USER,
    ("DELETE", "/api/conversations/{peer}"): Access.USER,
    ("PATCH", "/api/conversations/{peer}"): Access.USER,
    ("GET", "/api/conversations/{peer}/notes"): Access.USER,
    ("POST", "/api/conversations/{peer}/notes"): Access.USER,
    ("GET", "/api/team"): Access.USER,
    ("PUT", "/api/team/{handle}"): Access.USER,
    ("DELETE", "/api/team/{handle}"): Access.USER,
    ("GET", "/api/webhooks"): Access.USER,
    ("POST", "/api/webhooks"): Access.USER,
    ("GET", "/api/webhooks/{webhook_id}"): Access.USER,
    ("DELETE", "/api/webhooks/{webhook_id}"): Access.USER,
    ("POST", "/api/webhooks/{webhook_id}/ping"): Access.USER,
    ("POST", "/api/webhooks/{webhook_id}/replay"): Access.USER,
    # The socket; its handshake is a GET.
    ("GET", WEBSOCKET_PATH): Access.USER,
}

USER_ROUTES = sorted(key for key, access in ROUTES.items() if access is Access.USER)
HTTP_USER_ROUTES = [key for key in USER_ROUTES if key[1] != WEBSOCKET_PATH]
WRITES = [key for key in HTTP_USER_ROUTES if key[0] in STATE_CHANGING]
ADMIN_ROUTES = sorted(key for key, access in ROUTES.items() if access is Access.ADMIN)
PUBLIC_GETS = sorted(
    path for (method, path), access in ROUTES.items() if access is Access.PUBLIC and method == "GET"
)


def served_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route; HEAD is GET's twin, a mount counts as a GET."""
    served = {("GET", WEBSOCKET_PATH)}
    for route in app.routes:
        if isinstance(route, Route):
            served |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
        elif isinstance(route, Mount):
            served.add(("GET", route.path))
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}")
    return served


def test_every_route_is_classified(tmp_path: Path) -> None:
    app = create_app(settings_for("redis://127.0.0.1:1/0", tmp_path))
    served = served_routes(app)
    assert sorted(served - ROUTES.keys()) == [], "classify these routes in ROUTES"
    assert sorted(ROUTES.keys() - served) == [], "ROUTES names routes that are gone"


# -- one server and one set of accounts for the module ----------------------------------------


@dataclass
class World:
    server: RunningServer
    http: httpx.AsyncClient  # one connection pool for every check; it keeps no cookies
    owner: Client  # a business, the caller of every check
    agent: Client  # in the owner's team
    customer: Client  # wrote to the owner
    outsider: Client  # nobody's anything
    webhook_id: str
    session_id: str

    def fill(self, path: str) -> str:
        return path.format(
            handle=handle(self.agent),
            peer=handle(self.customer),
            webhook_id=self.webhook_id,
            id=self.session_id,
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(layout_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    flush_all(layout_url)
    settings = replace(
        settings_for(layout_url, tmp_path_factory.mktemp("route-security")),
        admin_token=ADMIN_TOKEN,
        metrics_token=METRICS_TOKEN,
        # Only so that the webhook below can name a closed local port: nothing
        # here may reach the network.
        webhooks=replace(WebhookSettings(), allow_private=True),
    )
    async with running_server(settings) as server:
        owner = await new_user(server.url, open_dms=True, kind="business")
        agent, customer, outsider = [await new_user(server.url) for _ in range(3)]
        await owner.request("PUT", f"/api/team/{handle(agent)}")
        await customer.post_message(handle(owner), "hello")
        hook = await owner.request("POST", "/api/webhooks", {"url": "http://127.0.0.1:1/hook"})
        sessions = await owner.request("GET", "/api/sessions")
        world = World(
            server=server,
            http=httpx.AsyncClient(base_url=server.url),
            owner=owner,
            agent=agent,
            customer=customer,
            outsider=outsider,
            webhook_id=hook["webhook"]["id"],
            session_id=sessions["sessions"][0]["id"],
        )
        yield world
        await world.http.aclose()
        for client in (owner, agent, customer, outsider):
            await client.aclose()


async def call(
    world: World, method: str, path: str, headers: dict[str, Any], body: Any = None
) -> tuple[int, str | None]:
    """(status, error code or None) of one request."""
    # A cookie a sign-up set must not ride along on the next check.
    world.http.cookies.clear()
    answer = await world.http.request(method, world.fill(path), json=body, headers=headers)
    code = None
    if answer.status_code >= 400 and answer.headers.get("content-type") == "application/json":
        code = answer.json()["error"]["code"]
    return answer.status_code, code


def own_origin(world: World) -> str:
    return world.server.url


# -- every signed-in route: credentials first, then the Origin rule for cookies ---------------


@module_loop
@pytest.mark.parametrize(("method", "path"), HTTP_USER_ROUTES)
async def test_a_signed_in_route_refuses_no_or_bad_credentials(
    world: World, method: str, path: str
) -> None:
    # No body at all: a route that read its body before authenticating would
    # answer 422 here, and tell an anonymous caller about its fields.
    answers = {
        "none": await call(world, method, path, {}),
        "bad bearer": await call(world, method, path, {"Authorization": "Bearer nope"}),
        "bare scheme": await call(world, method, path, {"Authorization": "Bearer"}),
        "basic": await call(world, method, path, {"Authorization": "Basic b3duZXI6cHc="}),
        "bad cookie": await call(
            world, method, path, {"Cookie": "dmhub_session=nope", "Origin": own_origin(world)}
        ),
        "admin token": await call(world, method, path, {"Authorization": f"Bearer {ADMIN_TOKEN}"}),
    }
    assert answers == {name: (401, "unauthenticated") for name in answers}


@module_loop
@pytest.mark.parametrize(("method", "path"), WRITES)
async def test_a_cookie_write_needs_the_servers_own_origin(
    world: World, method: str, path: str
) -> None:
    cookie = f"dmhub_session={world.owner.token}"
    answers = {
        "no origin": await call(world, method, path, {"Cookie": cookie}),
        "foreign": await call(world, method, path, {"Cookie": cookie, "Origin": FOREIGN_ORIGIN}),
        "null": await call(world, method, path, {"Cookie": cookie, "Origin": "null"}),
    }
    assert answers == {name: (403, "forbidden_origin") for name in answers}


@module_loop
@pytest.mark.parametrize(("method", "path"), WRITES)
async def test_a_bearer_write_needs_no_origin_and_a_cookie_with_the_own_origin_passes(
    world: World, method: str, path: str
) -> None:
    # A fresh account per route: some of these writes end sessions or delete
    # the account. Its answer may be any refusal of the route's own (404 for
    # the owner's webhook id, 422 without a password), never the auth layer's.
    fresh = await new_user(world.server.url, kind="business")
    bearer = await call(world, method, path, {"Authorization": f"Bearer {fresh.token}"})
    fresh_cookie = await new_user(world.server.url, kind="business")
    cookie = await call(
        world,
        method,
        path,
        {"Cookie": f"dmhub_session={fresh_cookie.token}", "Origin": own_origin(world)},
    )
    for status, code in (bearer, cookie):
        assert status < 500
        assert code not in ("unauthenticated", "forbidden_origin"), (status, code)
    await fresh.aclose()
    await fresh_cookie.aclose()


@module_loop
async def test_the_socket_handshake_needs_credentials_and_the_own_origin_for_a_cookie(
    world: World,
) -> None:
    url = world.server.ws_url
    cookie = {"Cookie": f"dmhub_session={world.owner.token}"}
    answers = {
        "none": await refused(url, {}),
        "bad bearer": await refused(url, {"Authorization": "Bearer nope"}),
        "bad cookie": await refused(
            url, {"Cookie": "dmhub_session=nope", "Origin": own_origin(world)}
        ),
        "cookie, no origin": await refused(url, cookie),
        "cookie, foreign": await refused(url, {**cookie, "Origin": FOREIGN_ORIGIN}),
    }
    assert {name: (status, body["error"]["code"]) for name, (status, body) in answers.items()} == {
        "none": (401, "unauthenticated"),
        "bad bearer": (401, "unauthenticated"),
        "bad cookie": (401, "unauthenticated"),
        "cookie, no origin": (403, "forbidden_origin"),
        "cookie, foreign": (403, "forbidden_origin"),
    }
    for headers in (
        {"Authorization": f"Bearer {world.owner.token}"},
        {**cookie, "Origin": own_origin(world)},
    ):
        ws = await connect(url, additional_headers=headers)
        assert (await recv(ws))["type"] == "ready"
        await ws.close()


# -- the operators' and the scraper's tokens -------------------------------------------------


@module_loop
@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_an_admin_route_takes_only_the_admin_token(
    world: World, method: str, path: str
) -> None:
    user = world.outsider.token
    answers = {
        "none": await call(world, method, path, {}),
        "a user's bearer": await call(world, method, path, {"Authorization": f"Bearer {user}"}),
        "a user's cookie": await call(
            world, method, path, {"Cookie": f"dmhub_session={user}", "Origin": own_origin(world)}
        ),
        "the metrics token": await call(
            world, method, path, {"Authorization": f"Bearer {METRICS_TOKEN}"}
        ),
        "no scheme": await call(world, method, path, {"Authorization": ADMIN_TOKEN}),
    }
    assert answers == {name: (401, "unauthenticated") for name in answers}
    # Reads only: the writes would suspend the agent the other checks use.
    if method == "GET":
        assert await call(world, method, path, {"Authorization": f"Bearer {ADMIN_TOKEN}"}) == (
            200,
            None,
        )


@module_loop
async def test_metrics_take_only_the_metrics_token(world: World) -> None:
    user = world.outsider.token
    answers = {
        "none": await call(world, "GET", "/metrics", {}),
        "a user's bearer": await call(
            world, "GET", "/metrics", {"Authorization": f"Bearer {user}"}
        ),
        "the admin token": await call(
            world, "GET", "/metrics", {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ),
        "not ascii": await call(
            world, "GET", "/metrics", {"Authorization": "Bearer \u00e9t\u00e9".encode("latin-1")}
        ),
    }
    assert answers == {name: (401, "unauthenticated") for name in answers}
    status, _ = await call(world, "GET", "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200


@module_loop
@pytest.mark.parametrize("path", PUBLIC_GETS)
async def test_a_public_page_answers_without_credentials(world: World, path: str) -> None:
    concrete = {
        "/api/buttons": f"/api/buttons?handle={handle(world.owner)}",
        "/static": "/static/app.js",
    }.get(path, path)
    status, code = await call(world, "GET", concrete, {})
    assert (status, code) == (200, None)


@module_loop
async def test_public_writes_answer_without_credentials(world: World) -> None:
    status, code = await call(
        world, "POST", "/api/sessions", {"Content-Type": "application/json"}, body={}
    )
    assert (status, code) == (422, "invalid")
    status, _ = await call(
        world, "POST", "/api/sessions", {}, body={"handle": "x", "password": PASSWORD}
    )
    assert status == 401
    status, _ = await call(
        world,
        "POST",
        "/api/accounts",
        {},
        body={"handle": "fresh_public", "password": PASSWORD},
    )
    assert status == 201
    # They set the cookie: a foreign page may not sign someone in (login CSRF).
    for path, fields in (
        ("/api/sessions", {"handle": handle(world.outsider), "password": PASSWORD}),
        ("/api/accounts", {"handle": "fresh_csrf", "password": PASSWORD}),
    ):
        refused = await call(world, "POST", path, {"Origin": FOREIGN_ORIGIN}, body=fields)
        assert refused == (403, "forbidden_origin"), path


# -- authorization on reads, where tests/test_teams.py, test_webhooks.py and
# test_conversations.py do not already check it ------------------------------------------


@module_loop
async def test_another_accounts_session_cannot_be_listed_or_ended(world: World) -> None:
    outsider = {"Authorization": f"Bearer {world.outsider.token}"}
    path = "/api/sessions/{id}"  # the owner's session id, filled in by World.fill
    assert await call(world, "DELETE", path, outsider) == (404, "not_found")
    listed = await world.http.get("/api/sessions", headers=outsider)
    assert world.session_id not in {row["id"] for row in listed.json()["sessions"]}
    assert (await world.owner.me())["user"]["handle"] == handle(world.owner)


@module_loop
async def test_a_teams_notes_and_listing_stay_in_the_team(world: World) -> None:
    owner, peer = handle(world.owner), handle(world.customer)
    note = {"text": "internal: refund approved"}
    notes_path = f"/api/conversations/{peer}/notes"
    assert (await world.owner.request("POST", notes_path, note))["note"]["text"] == note["text"]
    as_owner = {"as": owner}
    for outsider in (world.outsider, world.customer):
        headers = {"Authorization": f"Bearer {outsider.token}"}
        for path in (notes_path, "/api/conversations", "/api/team"):
            answer = await world.http.get(path, params=as_owner, headers=headers)
            error = answer.json()["error"]
            assert (answer.status_code, error["code"], error["reason"]) == (
                403,
                "not_allowed",
                "cannot_receive",
            ), path
    # Without `as=` everyone reads only their own: an agent, the customer and
    # an outsider see none of the business's notes.
    for client in (world.agent, world.customer, world.outsider):
        mine = await world.http.get(
            f"/api/conversations/{owner if client is world.customer else peer}/notes",
            headers={"Authorization": f"Bearer {client.token}"},
        )
        assert mine.status_code in (200, 404)
        if mine.status_code == 200:
            assert mine.json()["notes"] == []
    # The team sees it.
    agent_view = await world.http.get(
        notes_path, params=as_owner, headers={"Authorization": f"Bearer {world.agent.token}"}
    )
    assert [n["text"] for n in agent_view.json()["notes"]] == [note["text"]]


@module_loop
async def test_a_third_party_reads_no_message_of_a_conversation_by_any_route(
    world: World,
) -> None:
    outsider = {"Authorization": f"Bearer {world.outsider.token}"}
    # The owner's conversation with the customer, from the outsider's side.
    for peer in (handle(world.owner), handle(world.customer)):
        answer = await world.http.get(f"/api/conversations/{peer}/messages", headers=outsider)
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found")
    exported = await world.http.get("/api/me/export", headers=outsider)
    assert exported.json()["conversations"] == [] and "hello" not in exported.text
    listed = await world.http.get("/api/conversations", headers=outsider)
    assert listed.json()["conversations"] == []


@module_loop
async def test_redis_holds_no_token_or_password_as_given(world: World) -> None:
    """Sessions are kept by the token's SHA-256, passwords as argon2id."""
    client = redis_client(world.server.app.state.runtime.settings.redis_url)
    try:
        token = world.owner.token
        assert token
        found = [key for key in client.scan_iter(count=1000) if token.encode() in key]
        values = [
            key
            for key in client.scan_iter(count=1000)
            if client.type(key) == b"string" and token.encode() in (client.get(key) or b"")
        ]
        assert (found, values) == ([], [])
        assert client.exists(f"sess:{hashlib.sha256(token.encode()).hexdigest()}")
        stored = client.hget(f"user:{{{handle(world.owner).lower()}}}", "pw")
        assert stored and stored.decode().startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert PASSWORD.encode() not in stored
    finally:
        client.close()
