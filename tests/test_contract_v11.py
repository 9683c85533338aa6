"""PROTOCOL.md v1.1 as an outside suite would hold it, where no other test does:
the environment variables by their contract names and defaults, `reason` on every
`not_allowed`, the admin routes' 404/401, cookie writes without Origin on the
v1.1 routes, the `202` of a report, and the objects' exact fields."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from chat.config import Settings
from chat.errors import ApiError
from chat.protocol.frames import parse_client_frame
from tests.support import PASSWORD, RunningServer, running_server, settings_for, unique_handle

ADMIN_TOKEN = "contract-admin-token"
REASONS = {"self", "you_blocked", "closed", "restricted", "suspended", "cannot_receive"}

# The Limits table, plus restriction: variable, Settings field, contract default.
LIMIT_VARIABLES = [
    ("DMHUB_LIMIT_MESSAGES_PER_MIN", "limit_messages_per_min", 120),
    ("DMHUB_LIMIT_NEW_CONVERSATIONS_PER_DAY", "limit_new_conversations_per_day", 50),
    ("DMHUB_LIMIT_REQUESTS_PER_HOUR", "limit_requests_per_hour", 200),
    ("DMHUB_LIMIT_TYPING_PER_10S", "limit_typing_per_10s", 20),
    ("DMHUB_LIMIT_SIGNUPS_PER_HOUR", "limit_signups_per_hour", 20),
    ("DMHUB_LIMIT_LOGIN_FAILURES", "limit_login_failures", 50),
    ("DMHUB_LIMIT_SOCKETS_PER_USER", "limit_sockets_per_user", 20),
    ("DMHUB_LIMIT_REPORTS_PER_HOUR", "limit_reports_per_hour", 30),
    ("DMHUB_RESTRICT_REPORTERS", "restrict_reporters", 3),
    ("DMHUB_RESTRICT_WINDOW_S", "restrict_window_s", 86400),
    ("DMHUB_REPORTER_MIN_AGE_S", "reporter_min_age_s", 86400),
]


@pytest.mark.parametrize(("variable", "attribute", "default"), LIMIT_VARIABLES)
def test_each_limit_has_its_contract_variable_and_default_and_zero_is_kept(
    monkeypatch: pytest.MonkeyPatch, variable: str, attribute: str, default: int
) -> None:
    monkeypatch.delenv(variable, raising=False)
    assert getattr(Settings.from_env(), attribute) == default
    for value in (7, 0):
        monkeypatch.setenv(variable, str(value))
        assert getattr(Settings.from_env(), attribute) == value
    monkeypatch.setenv(variable, "-1")
    with pytest.raises(SystemExit, match=variable):
        Settings.from_env()


def test_the_admin_token_and_private_webhooks_have_their_contract_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DMHUB_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("DMHUB_WEBHOOK_ALLOW_PRIVATE", raising=False)
    plain = Settings.from_env()
    assert plain.admin_token is None and plain.webhooks.allow_private is False
    monkeypatch.setenv("DMHUB_ADMIN_TOKEN", "t0k")
    monkeypatch.setenv("DMHUB_WEBHOOK_ALLOW_PRIVATE", "1")
    set_ = Settings.from_env()
    assert set_.admin_token == "t0k" and set_.webhooks.allow_private is True


# -- a real server, as a black-box suite sets it up ------------------------------


@pytest.fixture
async def black_box(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningServer]:
    """Settings from the environment, as `dmhub serve` reads them: an outside suite
    cannot backdate accounts, so it sets DMHUB_REPORTER_MIN_AGE_S=0."""
    monkeypatch.setenv("DMHUB_REPORTER_MIN_AGE_S", "0")
    monkeypatch.setenv("DMHUB_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("DMHUB_LIMIT_SIGNUPS_PER_HOUR", "0")
    base = settings_for(redis_url, tmp_path)
    settings = replace(Settings.from_env(), redis_url=base.redis_url, data_dir=base.data_dir)
    async with running_server(settings) as server:
        yield server


class Account:
    def __init__(self, http: httpx.AsyncClient, handle: str, token: str) -> None:
        self.http, self.handle, self.token = http, handle, token
        self.auth = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return await self.http.request(method, path, json=body, headers=self.auth)


async def sign_up(http: httpx.AsyncClient, kind: str = "person", **me: Any) -> Account:
    made = await http.post(
        "/api/accounts", json={"handle": unique_handle("c"), "password": PASSWORD, "kind": kind}
    )
    assert made.status_code == 201, made.text
    http.cookies.clear()
    account = Account(http, made.json()["user"]["handle"], made.json()["token"])
    if me:
        assert (await account.call("PATCH", "/api/me", me)).status_code == 200
    return account


def error_of(response: httpx.Response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    return response.status_code, error["code"], error.get("reason")


async def test_every_not_allowed_carries_a_reason_from_the_list(black_box: RunningServer) -> None:
    """Sends, follows, `as=` and team changes alike: `reason` is one of the six."""
    async with httpx.AsyncClient(base_url=black_box.url) as http:
        alice, bob, shop = await sign_up(http), await sign_up(http), await sign_up(http, "business")
        blocker = await sign_up(http, open_dms=True)
        await blocker.call("PUT", f"/api/blocks/{alice.handle}")
        await alice.call("PUT", f"/api/blocks/{bob.handle}")
        cases = {
            "send to self": await alice.call(
                "POST", f"/api/conversations/{alice.handle}/messages", {"text": "hi"}
            ),
            "send, DMs closed": await shop.call(
                "POST", f"/api/conversations/{bob.handle}/messages", {"text": "hi"}
            ),
            "send, you block": await alice.call(
                "POST", f"/api/conversations/{bob.handle}/messages", {"text": "hi"}
            ),
            "send, they block": await alice.call(
                "POST", f"/api/conversations/{blocker.handle}/messages", {"text": "hi"}
            ),
            "follow, you block": await alice.call("PUT", f"/api/following/{bob.handle}"),
            "follow, they block": await alice.call("PUT", f"/api/following/{blocker.handle}"),
            "as= outside the team": await bob.call("GET", f"/api/conversations?as={shop.handle}"),
            "as= a person": await bob.call("GET", f"/api/conversations?as={alice.handle}"),
            "team of a person": await alice.call("PUT", f"/api/team/{bob.handle}"),
        }
        try:
            await websockets.connect(
                f"{black_box.ws_url}?as={shop.handle}", additional_headers=bob.auth
            )
            handshake: tuple[int, str, str | None] = (101, "", None)
        except websockets.InvalidStatus as refused:
            handshake = error_of(
                httpx.Response(refused.response.status_code, content=bytes(refused.response.body))
            )
    seen = {name: error_of(response) for name, response in cases.items()}
    seen["ws ?as= outside the team"] = handshake
    assert seen == {
        "send to self": (403, "not_allowed", "self"),
        "send, DMs closed": (403, "not_allowed", "closed"),
        "send, you block": (403, "not_allowed", "you_blocked"),
        "send, they block": (403, "not_allowed", "cannot_receive"),
        "follow, you block": (403, "not_allowed", "you_blocked"),
        "follow, they block": (403, "not_allowed", "cannot_receive"),
        "as= outside the team": (403, "not_allowed", "cannot_receive"),
        "as= a person": (403, "not_allowed", "cannot_receive"),
        "team of a person": (403, "not_allowed", "cannot_receive"),
        "ws ?as= outside the team": (403, "not_allowed", "cannot_receive"),
    }
    assert {reason for _, _, reason in seen.values()} <= REASONS


async def test_restriction_with_fresh_accounts_and_the_report_answer(
    black_box: RunningServer,
) -> None:
    """Three fresh reporters restrict (with DMHUB_REPORTER_MIN_AGE_S=0); each report
    answers `202` with the reported account as the reporter now sees it."""
    async with httpx.AsyncClient(base_url=black_box.url) as http:
        spammer, stranger = await sign_up(http), await sign_up(http, open_dms=True)
        reporters = [await sign_up(http, open_dms=True) for _ in range(3)]
        answers, sent = [], []
        for reporter in reporters:
            message = await spammer.call(
                "POST", f"/api/conversations/{reporter.handle}/messages", {"text": "buy"}
            )
            sent.append(message.json()["message"]["id"])
            body = {"handle": spammer.handle.upper(), "reason": "spam"}
            answers.append(await reporter.call("POST", "/api/reports", body))
        again = await reporters[0].call(
            "POST",
            "/api/reports",
            {
                "handle": spammer.handle,
                "reason": "abuse",
                "message_id": sent[0],
            },
        )
        me = (await spammer.call("GET", "/api/me")).json()
        refused = await spammer.call(
            "POST", f"/api/conversations/{stranger.handle}/messages", {"text": "buy"}
        )
        listed = await http.get(
            "/api/admin/reports", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    assert [a.status_code for a in [*answers, again]] == [202] * 4
    first = answers[0].json()
    assert set(first) == {"user", "relationship"}
    assert first["user"]["handle"] == spammer.handle
    assert first["relationship"]["blocking"] is True
    assert first["relationship"]["reason"] == "you_blocked"
    assert me["restricted"] is True
    assert error_of(refused) == (403, "not_allowed", "restricted")
    (row,) = listed.json()["accounts"]
    assert (row["handle"], row["reports"], row["restricted"]) == (spammer.handle, 3, True)


ADMIN_ROUTES = [
    ("GET", "/api/admin/reports"),
    ("GET", "/api/admin/reports?handle={h}"),
    ("GET", "/api/admin/restrictions"),
    ("DELETE", "/api/admin/restrictions/{h}"),
    ("PUT", "/api/admin/suspensions/{h}"),
    ("DELETE", "/api/admin/suspensions/{h}"),
]


async def test_admin_routes_are_404_without_the_setting_and_401_without_its_bearer(
    black_box: RunningServer, redis_url: str, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=black_box.url) as http:
        user = await sign_up(http)
        bearers = {"none": {}, "wrong": {"Authorization": "Bearer nope"}, "a user's": user.auth}
        seen = {}
        for method, path in ADMIN_ROUTES:
            url = path.format(h=user.handle)
            for name, headers in bearers.items():
                answer = await http.request(method, url, headers=headers)
                seen[(method, path, name)] = (answer.status_code, answer.json()["error"]["code"])
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            seen[(method, path, "admin")] = (
                (await http.request(method, url, headers=admin)).status_code,
                "",
            )
    expected: dict[tuple[str, str, str], tuple[int, str]] = {}
    for method, path in ADMIN_ROUTES:
        for name in ("none", "wrong", "a user's"):
            expected[(method, path, name)] = (401, "unauthenticated")
        expected[(method, path, "admin")] = (200, "")
    assert seen == expected
    async with running_server(settings_for(redis_url, tmp_path)) as plain:
        async with httpx.AsyncClient(base_url=plain.url) as http:
            statuses = {
                (m, p): (
                    await http.request(
                        m, p.format(h="someone"), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
                    )
                ).status_code
                for m, p in ADMIN_ROUTES
            }
    assert statuses == {route: 404 for route in ADMIN_ROUTES}


async def test_cookie_writes_of_the_v11_routes_need_an_origin_and_bearer_ones_do_not(
    black_box: RunningServer,
) -> None:
    async with httpx.AsyncClient(base_url=black_box.url) as http:
        shop = await sign_up(http, "business", open_dms=True)
        agent, other = await sign_up(http), await sign_up(http)
        await shop.call("PUT", f"/api/team/{agent.handle}")
        await other.call("POST", f"/api/conversations/{shop.handle}/messages", {"text": "hi"})
        signed_in = await http.post(
            "/api/sessions", json={"handle": shop.handle, "password": PASSWORD}
        )
        cookie = {"Cookie": f"dmhub_session={signed_in.cookies['dmhub_session']}"}
        http.cookies.clear()
        writes: list[tuple[str, str, Any]] = [
            ("POST", "/api/reports", {"handle": agent.handle, "reason": "spam"}),
            ("POST", "/api/webhooks", {"url": "https://1.1.1.1/hook"}),
            ("PUT", f"/api/team/{other.handle}", None),
            ("DELETE", f"/api/team/{other.handle}", None),
            ("PATCH", f"/api/conversations/{other.handle}?as={shop.handle}", {"status": "pending"}),
            ("POST", f"/api/conversations/{other.handle}/notes?as={shop.handle}", {"text": "n"}),
            ("PATCH", "/api/me", {"quick_replies": [{"label": "Hi", "metadata": "hi"}]}),
        ]
        refused, allowed = {}, {}
        for method, path, body in writes:
            answer = await http.request(method, path, json=body, headers=cookie)
            refused[path] = (answer.status_code, answer.json()["error"]["code"])
            answer = await http.request(method, path, json=body, headers=shop.auth)
            allowed[path] = answer.status_code
    assert refused == {path: (403, "forbidden_origin") for _, path, _ in writes}
    assert allowed == {
        "/api/reports": 202,
        "/api/webhooks": 201,
        f"/api/team/{other.handle}": 204,
        f"/api/conversations/{other.handle}?as={shop.handle}": 200,
        f"/api/conversations/{other.handle}/notes?as={shop.handle}": 201,
        "/api/me": 200,
    }


async def test_objects_carry_exactly_the_named_fields(black_box: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=black_box.url) as http:
        shop = await sign_up(http, "business", open_dms=True, greeting="Welcome")
        carol, ann = await sign_up(http), await sign_up(http)
        await shop.call("PUT", f"/api/team/{ann.handle}")
        await carol.call(
            "POST", f"/api/conversations/{shop.handle}/messages", {"text": "hi", "ref": "ad-1"}
        )
        bodies = {
            "me of a person": (await carol.call("GET", "/api/me")).json(),
            "me of an agent": (await ann.call("GET", "/api/me")).json(),
            "profile of a business": (await carol.call("GET", f"/api/users/{shop.handle}")).json(),
            "team list": (await ann.call("GET", f"/api/conversations?as={shop.handle}")).json(),
            "customer list": (await carol.call("GET", "/api/conversations")).json(),
            "webhook": (
                await shop.call("POST", "/api/webhooks", {"url": "https://1.1.1.1/h"})
            ).json(),
        }
    person = {"handle", "name", "kind", "open_dms", "greeting"}
    assert set(bodies["me of a person"]) == {"user", "settings", "restricted", "teams"}
    assert set(bodies["me of a person"]["user"]) == person
    assert bodies["me of an agent"]["teams"] == [shop.handle]
    profile = bodies["profile of a business"]
    assert set(profile["user"]) == person | {"quick_replies"}
    assert set(profile["relationship"]) == {
        "following", "followed_by", "blocking", "blocked_by", "can_message", "reason",
    }  # fmt: skip
    assert profile["relationship"]["reason"] is None
    (seen_by_team,) = bodies["team list"]["conversations"]
    assert {"peer", "last_message", "unread", "folder", "status", "assignee"} <= set(seen_by_team)
    assert (seen_by_team["status"], seen_by_team["assignee"]) == ("open", None)
    (seen_by_customer,) = bodies["customer list"]["conversations"]
    assert set(seen_by_customer["last_message"]) == {
        "id", "from", "to", "text", "sent_at", "client_id", "ref",
    }  # fmt: skip
    assert set(bodies["webhook"]) == {"webhook", "secret"}
    assert set(bodies["webhook"]["webhook"]) == {
        "id", "url", "events", "created_at", "delivered_up_to", "failing_since",
        "last_error", "active",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ('{"type":"send","to":"bob"}', "text"),
        ('{"type":"send","to":5,"text":"hi"}', "to"),
        ('{"type":"read","peer":"bob"}', "up_to"),
        ('{"type":"typing"}', "to"),
        ('{"type":"bogus"}', None),
        ("[1]", None),
    ],
)
def test_an_invalid_frame_names_the_field_at_fault(frame: str, field: str | None) -> None:
    """As over HTTP: `invalid` carries `field` when one field is at fault."""
    with pytest.raises(ApiError) as refused:
        parse_client_frame(frame)
    assert (refused.value.code, refused.value.field) == ("invalid", field)


@pytest.fixture
async def limits_off(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningServer]:
    for variable, _, _ in LIMIT_VARIABLES[:8]:
        monkeypatch.setenv(variable, "0")
    base = settings_for(redis_url, tmp_path)
    settings = replace(Settings.from_env(), redis_url=base.redis_url, data_dir=base.data_dir)
    async with running_server(settings) as server:
        yield server


async def test_zero_turns_every_limit_off(limits_off: RunningServer) -> None:
    """Each limit at 0 through its variable: what a limit would count goes through
    (the sign-in backoff too: six failures on one account, then the password)."""
    async with httpx.AsyncClient(base_url=limits_off.url) as http:
        alice = await sign_up(http)
        inbox = await sign_up(http, open_dms=True)
        strangers = [await sign_up(http, open_dms=True) for _ in range(3)]
        sent = [
            (await alice.call("POST", f"/api/conversations/{who.handle}/messages", {"text": "hi"}))
            for who in [*strangers, inbox, inbox]
        ]
        sent += [
            await who.call("POST", f"/api/conversations/{inbox.handle}/messages", {"text": "hi"})
            for who in strangers
        ]
        reports = [
            await alice.call("POST", "/api/reports", {"handle": who.handle, "reason": "spam"})
            for who in strangers
        ]
        failures = [
            await http.post("/api/sessions", json={"handle": inbox.handle, "password": "wrong!!!"})
            for _ in range(6)
        ]
        signed_in = await http.post(
            "/api/sessions", json={"handle": inbox.handle, "password": PASSWORD}
        )
        sockets = [
            await websockets.connect(limits_off.ws_url, additional_headers=inbox.auth)
            for _ in range(3)
        ]
        try:
            for socket in sockets:
                await socket.recv()
            for _ in range(3):
                await sockets[0].send(f'{{"type":"typing","to":"{alice.handle}"}}')
            await sockets[0].send('{"type":"ping","nonce":1}')
            after_typing = await sockets[0].recv()
        finally:
            for socket in sockets:
                await socket.close()
    assert [r.status_code for r in sent] == [201] * 8
    assert [r.status_code for r in reports] == [202] * 3
    assert [r.status_code for r in failures] == [401] * 6
    assert signed_in.status_code == 200
    assert after_typing == '{"type":"pong","nonce":1}'
