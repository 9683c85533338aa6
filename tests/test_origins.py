"""The Origin rule (scheme, host and port against the server's own origin and the
allow-list) and the headers every API answer carries."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from websockets.asyncio.client import connect

from chat.client import Client
from chat.config import Settings
from chat.transport import http as http_routes
from chat.transport.origins import (
    Origin,
    OriginPolicy,
    configuration_warning,
    parse_origin,
    refusal_detail,
    served_origins,
)
from chat.transport.security import CONTENT_SECURITY_POLICY
from tests.support import PASSWORD, RunningServer, new_user, running_server, settings_for
from tests.test_websocket import recv, refused

LOOPBACK = ("127.0.0.1", 8000)


# -- the pure rule ---------------------------------------------------------------


def test_an_origin_is_scheme_host_and_port_with_default_ports_filled_in() -> None:
    assert parse_origin("http://127.0.0.1:8000") == Origin("http", "127.0.0.1", 8000)
    assert parse_origin("HTTPS://Chat.Example.COM") == Origin("https", "chat.example.com", 443)
    assert parse_origin("https://chat.example.com/dmhub/") == Origin(
        "https", "chat.example.com", 443
    )
    assert parse_origin("http://[::1]:8000") == Origin("http", "::1", 8000)
    assert str(Origin("https", "chat.example.com", 443)) == "https://chat.example.com"
    assert str(Origin("http", "::1", 8000)) == "http://[::1]:8000"


@pytest.mark.parametrize(
    "text", ["null", "", "file:///etc", "ws://127.0.0.1:8000", "http://", "http://a:99999",
             "http://a:port", "http://user:pw@127.0.0.1:8000"],
)  # fmt: skip
def test_what_is_not_an_http_origin_names_none(text: str) -> None:
    assert parse_origin(text) is None


def test_by_default_the_served_address_is_the_origin_and_localhost_is_loopback() -> None:
    policy = OriginPolicy.from_urls(None, [])
    assert policy.allows("http://127.0.0.1:8000", LOOPBACK)
    assert policy.allows("http://localhost:8000", LOOPBACK)
    assert policy.allows("http://localhost:8000", ("::1", 8000))
    assert policy.allows("http://10.0.0.5:8000", ("10.0.0.5", 8000))
    # Scheme, host and port each count.
    assert not policy.allows("https://127.0.0.1:8000", LOOPBACK)
    assert not policy.allows("http://127.0.0.1:8001", LOOPBACK)
    assert not policy.allows("http://127.0.0.1", LOOPBACK)
    assert not policy.allows("http://localhost:8000", ("10.0.0.5", 8000))
    # A rebinding page names its own domain, whatever Host says.
    assert not policy.allows("http://rebind.evil:8000", LOOPBACK)
    assert not policy.allows("null", LOOPBACK)
    assert not policy.allows(None, LOOPBACK)
    # A dual-stack socket reports IPv4 clients as IPv4-mapped IPv6 addresses.
    assert policy.allows("http://127.0.0.1:8000", ("::ffff:127.0.0.1", 8000))
    assert policy.allows("http://localhost:8000", ("::ffff:127.0.0.1", 8000))
    assert policy.allows("http://10.0.0.5:8000", ("::ffff:10.0.0.5", 8000))
    # A unix socket has no address a browser could name.
    assert served_origins(("/run/dmhub.sock", None)) == ()


def test_a_public_url_replaces_the_served_address_and_the_list_adds_to_it() -> None:
    policy = OriginPolicy.from_urls(
        "https://chat.example.com/", ["https://app.example", "http://localhost:3000"]
    )
    assert policy.allows("https://chat.example.com", LOOPBACK)
    assert policy.allows("https://chat.example.com:443", LOOPBACK)
    assert policy.allows("https://app.example", LOOPBACK)
    assert policy.allows("http://localhost:3000", LOOPBACK)
    assert not policy.allows("http://chat.example.com", LOOPBACK)
    assert not policy.allows("https://chat.example.com:8443", LOOPBACK)
    # Behind a proxy the direct address is no page's origin.
    assert not policy.allows("http://127.0.0.1:8000", LOOPBACK)


def test_a_refusal_names_the_origin_and_the_settings_that_allow_one() -> None:
    assert "Origin header" in refusal_detail(None)
    detail = refusal_detail("https://127.0.0.1:8000")
    assert "https://127.0.0.1:8000" in detail and "DMHUB_PUBLIC_URL" in detail
    assert len(refusal_detail("http://" + "a" * 10_000)) < 300


def test_secure_cookies_without_a_public_url_are_warned_about() -> None:
    warning = configuration_warning(None, secure_cookies=True)
    assert warning is not None and "DMHUB_PUBLIC_URL" in warning
    assert configuration_warning("https://chat.example.com", secure_cookies=True) is None
    assert configuration_warning(None, secure_cookies=False) is None


def test_settings_refuse_a_public_url_or_origin_that_is_not_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DMHUB_PUBLIC_URL", "chat.example.com")
    with pytest.raises(SystemExit, match="DMHUB_PUBLIC_URL"):
        Settings.from_env()
    monkeypatch.setenv("DMHUB_PUBLIC_URL", "https://chat.example.com")
    monkeypatch.setenv("DMHUB_ALLOWED_ORIGINS", "https://a.example, ftp://b.example")
    with pytest.raises(SystemExit, match=r"ftp://b\.example"):
        Settings.from_env()
    monkeypatch.setenv("DMHUB_ALLOWED_ORIGINS", "https://a.example, https://b.example/")
    settings = Settings.from_env()
    assert settings.public_url == "https://chat.example.com"
    assert settings.allowed_origins == ("https://a.example", "https://b.example/")


# -- over real HTTP and WebSocket ----------------------------------------------------


def port_of(server: RunningServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def cookie_patch(server: RunningServer, user: Client, headers: dict[str, str]) -> int:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.patch(
            "/api/me",
            json={"name": "Changed"},
            headers={"Cookie": f"dmhub_session={user.token}", **headers},
        )
    if response.status_code == 403:
        assert response.json()["error"]["code"] == "forbidden_origin"
    return response.status_code


async def test_cookie_writes_check_scheme_host_and_port(server: RunningServer) -> None:
    alice = await new_user(server.url)
    port = port_of(server)
    assert await cookie_patch(server, alice, {"Origin": f"https://127.0.0.1:{port}"}) == 403
    assert await cookie_patch(server, alice, {"Origin": f"http://127.0.0.1:{port + 1}"}) == 403
    rebind = {"Origin": "http://rebind.evil", "Host": "rebind.evil"}
    assert await cookie_patch(server, alice, rebind) == 403
    rebind_port = {"Origin": f"http://rebind.evil:{port}", "Host": f"rebind.evil:{port}"}
    assert await cookie_patch(server, alice, rebind_port) == 403
    assert await cookie_patch(server, alice, {"Origin": server.url}) == 200
    assert await cookie_patch(server, alice, {"Origin": f"http://localhost:{port}"}) == 200


async def test_a_refused_write_says_which_origin_was_refused(server: RunningServer) -> None:
    alice = await new_user(server.url)
    cookie = {"Cookie": f"dmhub_session={alice.token}"}
    async with httpx.AsyncClient(base_url=server.url) as http:
        foreign = await http.patch(
            "/api/me", json={}, headers={**cookie, "Origin": "https://evil.example"}
        )
        bare = await http.patch("/api/me", json={}, headers=cookie)
    assert foreign.json()["error"]["detail"] == refusal_detail("https://evil.example")
    assert bare.json()["error"]["detail"] == refusal_detail(None)
    await alice.aclose()


async def test_cookie_handshakes_check_scheme_host_and_port(server: RunningServer) -> None:
    alice = await new_user(server.url)
    port = port_of(server)
    cookie = {"Cookie": f"dmhub_session={alice.token}"}
    for origin in (f"https://127.0.0.1:{port}", f"http://rebind.evil:{port}"):
        status, body = await refused(server.ws_url, {**cookie, "Origin": origin})
        assert status == 403 and body["error"]["code"] == "forbidden_origin"
    status, body = await refused(
        server.ws_url, {**cookie, "Origin": "http://rebind.evil", "Host": "rebind.evil"}
    )
    assert status == 403 and body["error"]["code"] == "forbidden_origin"
    ws = await connect(
        server.ws_url, additional_headers={**cookie, "Origin": f"http://localhost:{port}"}
    )
    assert (await recv(ws))["type"] == "ready"
    await ws.close()


async def test_with_a_public_url_only_it_and_the_list_may_use_the_cookie(
    redis_url: str, tmp_path: Path
) -> None:
    settings = settings_for(
        redis_url,
        tmp_path,
        public_url="https://chat.example.com",
        allowed_origins=("https://app.example",),
    )
    async with running_server(settings) as server:
        alice = await new_user(server.url)
        assert await cookie_patch(server, alice, {"Origin": "https://chat.example.com"}) == 200
        assert await cookie_patch(server, alice, {"Origin": "https://app.example"}) == 200
        assert await cookie_patch(server, alice, {"Origin": "http://chat.example.com"}) == 403
        assert await cookie_patch(server, alice, {"Origin": server.url}) == 403
        cookie = {"Cookie": f"dmhub_session={alice.token}"}
        ws = await connect(
            server.ws_url, additional_headers={**cookie, "Origin": "https://app.example"}
        )
        assert (await recv(ws))["type"] == "ready"
        await ws.close()
        status, _ = await refused(server.ws_url, {**cookie, "Origin": server.url})
        assert status == 403
        assert alice.user is not None
        async with httpx.AsyncClient(base_url=server.url) as http:
            # Sign-in sets the cookie: the same rule keeps foreign pages from it.
            sign_in = await http.post(
                "/api/sessions",
                json={"handle": alice.user["handle"], "password": PASSWORD},
                headers={"Origin": server.url},
            )
        assert sign_in.status_code == 403 and sign_in.json()["error"]["code"] == "forbidden_origin"
        await alice.aclose()


async def test_button_snippets_point_at_the_public_origin(redis_url: str, tmp_path: Path) -> None:
    settings = settings_for(redis_url, tmp_path, public_url="HTTPS://Chat.Example.com:443/dm/")
    async with running_server(settings) as server:
        shop = await new_user(server.url, open_dms=True, kind="business")
        assert shop.user is not None
        async with httpx.AsyncClient(base_url=server.url) as http:
            answer = await http.get("/api/buttons", params={"handle": shop.user["handle"]})
        await shop.aclose()
    assert answer.status_code == 200, answer.text
    assert answer.json()["compose_url"].startswith("https://chat.example.com/messages/compose?")
    assert 'src="https://chat.example.com/button.js' in answer.json()["snippet"]


# -- headers -------------------------------------------------------------------------


async def test_api_answers_are_never_stored_and_pages_are_revalidated(
    server: RunningServer,
) -> None:
    alice = await new_user(server.url)
    async with httpx.AsyncClient(base_url=server.url) as http:
        auth = {"Authorization": f"Bearer {alice.token}"}
        answers = [
            await http.get("/api/me", headers=auth),
            await http.get("/api/me"),  # 401
            await http.get("/api/no-such-endpoint"),  # 404
            await http.post("/api/sessions", json={}),  # 422
        ]
        page = await http.get("/")
    for response in answers:
        assert response.headers["cache-control"] == "no-store", response.request.url
        assert "strict-transport-security" not in response.headers
    assert page.headers["cache-control"] == "no-cache"
    await alice.aclose()


async def test_hsts_is_sent_when_cookies_are_secure(redis_url: str, tmp_path: Path) -> None:
    async with running_server(settings_for(redis_url, tmp_path, secure_cookies=True)) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            for path in ("/", "/api/me", "/healthz"):
                hsts = (await http.get(path)).headers.get("strict-transport-security")
                assert hsts == "max-age=31536000", path
            signed_up = await http.post(
                "/api/accounts", json={"handle": "secure_one", "password": PASSWORD}
            )
            assert "; secure" in signed_up.headers["set-cookie"].lower()


async def test_even_an_unexpected_500_carries_the_headers(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    monkeypatch.setattr(http_routes, "routes", [*http_routes.routes, Route("/api/broken", broken)])
    async with running_server(settings_for(redis_url, tmp_path, secure_cookies=True)) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.get("/api/broken")
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["strict-transport-security"] == "max-age=31536000"
