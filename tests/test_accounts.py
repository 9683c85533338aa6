"""Accounts, sessions, cookies and the Origin rule, over real HTTP."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from chat.config import Settings
from tests.support import (
    PASSWORD,
    RunningServer,
    redis_client,
    running_server,
    settings_for,
    unique_handle,
)


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


async def test_sign_up_returns_user_token_and_a_safe_cookie(server: RunningServer) -> None:
    handle = unique_handle("Ada")
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(
            "/api/accounts",
            json={"handle": handle, "password": PASSWORD, "name": "Ada L", "kind": "business"},
        )
    assert response.status_code == 201
    body = response.json()
    assert body["user"] == {
        "handle": handle,
        "name": "Ada L",
        "kind": "business",
        "open_dms": False,
        "greeting": None,
        "quick_replies": [],  # v1.1: every business user object carries them
    }
    assert isinstance(body["token"], str) and len(body["token"]) >= 32
    cookie = response.headers["set-cookie"].lower()
    assert "dmhub_session=" in cookie
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie


async def test_defaults_name_and_kind(server: RunningServer) -> None:
    handle = unique_handle()
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/api/accounts", json={"handle": handle, "password": PASSWORD})
    assert response.json()["user"]["name"] == handle
    assert response.json()["user"]["kind"] == "person"


async def test_handles_are_unique_regardless_of_case(server: RunningServer) -> None:
    handle = unique_handle("Bob")
    async with httpx.AsyncClient(base_url=server.url) as http:
        first = await http.post("/api/accounts", json={"handle": handle, "password": PASSWORD})
        second = await http.post(
            "/api/accounts", json={"handle": handle.upper(), "password": PASSWORD}
        )
    assert first.status_code == 201
    assert second.status_code == 409 and error_code(second) == "handle_taken"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"handle": "bad handle!", "password": PASSWORD}, "handle"),
        ({"handle": "x" * 16, "password": PASSWORD}, "handle"),
        ({"password": PASSWORD}, "handle"),
        ({"handle": "shortpw", "password": "1234567"}, "password"),
        ({"handle": "nokind", "password": PASSWORD, "kind": "robot"}, "kind"),
        ({"handle": "noname", "password": PASSWORD, "name": ""}, "name"),
    ],
)
async def test_sign_up_validation(server: RunningServer, body: dict[str, str], field: str) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/api/accounts", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid"
    assert response.json()["error"]["field"] == field
    assert response.json()["error"]["detail"]


async def test_malformed_json_is_invalid_not_a_crash(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        broken = await http.post("/api/accounts", content=b"{nope")
        array = await http.post("/api/accounts", json=[1, 2])
        health = await http.get("/healthz")
    assert broken.status_code == 422 and error_code(broken) == "invalid"
    assert array.status_code == 422 and error_code(array) == "invalid"
    assert health.status_code == 200


async def test_sign_in_any_case_and_bad_credentials(server: RunningServer) -> None:
    handle = unique_handle("Cy")
    async with httpx.AsyncClient(base_url=server.url) as http:
        await http.post("/api/accounts", json={"handle": handle, "password": PASSWORD})
        ok = await http.post("/api/sessions", json={"handle": handle.lower(), "password": PASSWORD})
        wrong = await http.post("/api/sessions", json={"handle": handle, "password": "nope-nope"})
        nobody = await http.post("/api/sessions", json={"handle": "ghost", "password": PASSWORD})
    assert ok.status_code == 200
    assert ok.json()["user"]["handle"] == handle and ok.json()["token"]
    assert "dmhub_session=" in ok.headers["set-cookie"]
    assert wrong.status_code == 401 and error_code(wrong) == "bad_credentials"
    assert nobody.status_code == 401 and error_code(nobody) == "bad_credentials"


async def test_logout_ends_the_token_at_once(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        made = await http.post(
            "/api/accounts", json={"handle": unique_handle(), "password": PASSWORD}
        )
        auth = {"Authorization": f"Bearer {made.json()['token']}"}
        assert (await http.get("/api/me", headers=auth)).status_code == 200
        out = await http.delete("/api/sessions/current", headers=auth)
        after = await http.get("/api/me", headers=auth)
    assert out.status_code == 204
    assert after.status_code == 401 and error_code(after) == "unauthenticated"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/me"),
        ("PATCH", "/api/me"),
        ("GET", "/api/users/someone"),
        ("PUT", "/api/following/someone"),
        ("GET", "/api/following"),
        ("GET", "/api/followers"),
        ("GET", "/api/blocks"),
        ("PUT", "/api/blocks/someone"),
        ("GET", "/api/conversations"),
        ("GET", "/api/conversations/someone/messages"),
        ("POST", "/api/conversations/someone/messages"),
        ("POST", "/api/conversations/someone/read"),
        ("POST", "/api/conversations/someone/accept"),
        ("DELETE", "/api/conversations/someone"),
        ("DELETE", "/api/sessions/current"),
    ],
)
async def test_every_endpoint_needs_credentials(
    server: RunningServer, method: str, path: str
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        missing = await http.request(method, path, json={})
        bad = await http.request(method, path, json={}, headers={"Authorization": "Bearer nope"})
        basic = await http.request(method, path, json={}, headers={"Authorization": "Basic eDp5"})
    for response in (missing, bad, basic):
        assert response.status_code == 401
        assert error_code(response) == "unauthenticated"


async def test_cookie_writes_need_an_allowed_origin(redis_url: str, tmp_path: Path) -> None:
    settings = settings_for(redis_url, tmp_path, allowed_origins=("https://app.example",))
    async with running_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            made = await http.post(
                "/api/accounts", json={"handle": unique_handle(), "password": PASSWORD}
            )
            assert made.status_code == 201 and http.cookies.get("dmhub_session")
            # Reads with the cookie need no Origin.
            assert (await http.get("/api/me")).status_code == 200
            no_origin = await http.patch("/api/me", json={"name": "X"})
            foreign = await http.patch(
                "/api/me", json={"name": "X"}, headers={"Origin": "https://evil.example"}
            )
            own = await http.patch("/api/me", json={"name": "Own"}, headers={"Origin": server.url})
            listed = await http.patch(
                "/api/me", json={"name": "Listed"}, headers={"Origin": "https://app.example"}
            )
            # A bearer request needs no Origin, even with a foreign one.
            bearer = await http.patch(
                "/api/me",
                json={"name": "Bearer"},
                headers={
                    "Authorization": f"Bearer {made.json()['token']}",
                    "Origin": "https://evil.example",
                },
            )
    assert no_origin.status_code == 403 and error_code(no_origin) == "forbidden_origin"
    assert foreign.status_code == 403 and error_code(foreign) == "forbidden_origin"
    assert own.status_code == 200 and own.json()["user"]["name"] == "Own"
    assert listed.status_code == 200
    assert bearer.status_code == 200


async def test_sign_in_from_a_foreign_page_is_refused(server: RunningServer) -> None:
    handle = unique_handle()
    async with httpx.AsyncClient(base_url=server.url) as http:
        await http.post("/api/accounts", json={"handle": handle, "password": PASSWORD})
        response = await http.post(
            "/api/sessions",
            json={"handle": handle, "password": PASSWORD},
            headers={"Origin": "https://evil.example"},
        )
    assert response.status_code == 403 and error_code(response) == "forbidden_origin"


async def test_secrets_are_stored_hashed(server: RunningServer, settings: Settings) -> None:
    handle = unique_handle()
    async with httpx.AsyncClient(base_url=server.url) as http:
        made = await http.post("/api/accounts", json={"handle": handle, "password": PASSWORD})
    token = made.json()["token"]
    assert settings.redis_url
    client = redis_client(settings.redis_url, decode_responses=True)
    stored = client.hget(f"user:{{{handle.lower()}}}", "pw")
    dump = {key: client.type(key) for key in client.scan_iter()}
    client.close()
    assert isinstance(stored, str) and stored.startswith("$argon2id$") and PASSWORD not in stored
    assert f"sess:{hashlib.sha256(token.encode()).hexdigest()}" in dump
    assert not any(token in key for key in dump)


async def test_unknown_api_routes_are_json_404(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/api/nothing-here")
        wrong_method = await http.put("/api/me")
    assert response.status_code == 404 and error_code(response) == "not_found"
    assert wrong_method.status_code == 405


async def test_health_and_metrics(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
        metrics = await http.get("/metrics")
    assert health.status_code == 200
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    assert metrics.status_code == 200
    for name in (
        "dmhub_sockets",
        "dmhub_sends_total",
        "dmhub_send_seconds",
        "dmhub_pubsub_reconnects_total",
    ):
        assert name in metrics.text
