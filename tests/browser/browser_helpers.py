"""Shared steps for the browser tests: people made over the public API, and
the few page gestures every test repeats."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import httpx
from playwright.sync_api import Page, expect

PASSWORD = "correct-horse-7"

expect.set_options(timeout=15_000)


def new_handle(prefix: str = "u") -> str:
    """Unique per run; handles are at most 15 characters."""
    return f"{prefix[:7]}{uuid4().hex[:8]}"


class ApiPerson:
    """A person driven over the HTTP API with a bearer token (test setup only)."""

    def __init__(
        self, base: str, handle: str | None = None, name: str | None = None, kind: str | None = None
    ) -> None:
        self.base = base
        self.handle = handle or new_handle()
        body: dict[str, Any] = {"handle": self.handle, "password": PASSWORD}
        if name:
            body["name"] = name
        if kind:
            body["kind"] = kind
        r = httpx.post(f"{base}/api/accounts", json=body, headers={"Origin": base}, timeout=10)
        assert r.status_code == 201, r.text
        self.user = r.json()["user"]
        self.client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {r.json()['token']}"}, timeout=10
        )

    def follow(self, other: str) -> None:
        r = self.client.put(f"/api/following/{other}")
        assert r.status_code == 204, r.text

    def settings(self, **patch: Any) -> dict[str, Any]:
        r = self.client.patch("/api/me", json=patch)
        assert r.status_code == 200, r.text
        return r.json()

    def send(self, to: str, text: str, client_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"text": text}
        if client_id:
            body["client_id"] = client_id
        r = self.client.post(f"/api/conversations/{to}/messages", json=body)
        assert r.status_code in (200, 201), r.text
        return r.json()["message"]

    def history(self, peer: str, limit: int = 100) -> list[dict[str, Any]]:
        r = self.client.get(f"/api/conversations/{peer}/messages", params={"limit": limit})
        if r.status_code == 404:
            return []
        assert r.status_code == 200, r.text
        return r.json()["messages"]


def friends(
    base: str, name_a: str | None = None, name_b: str | None = None
) -> tuple[ApiPerson, ApiPerson]:
    """Two people who follow each other, so either can write to the other."""
    a = ApiPerson(base, new_handle("a"), name_a)
    b = ApiPerson(base, new_handle("b"), name_b)
    a.follow(b.handle)
    b.follow(a.handle)
    return a, b


def sign_up(page: Page, handle: str, name: str | None = None, *, goto: str | None = "/") -> None:
    if goto is not None:
        page.goto(goto)
    page.get_by_role("button", name="Create an account").click()
    page.get_by_label("Handle").fill(handle)
    if name:
        page.get_by_label("Display name (optional)").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    signed_in(page)


def sign_in(page: Page, handle: str, *, goto: str | None = "/") -> None:
    if goto is not None:
        page.goto(goto)
    page.get_by_label("Handle").fill(handle)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    signed_in(page)


def signed_in(page: Page) -> None:
    """Wait until the app replaced the sign-in form (the cookie is set by then,
    so a following goto() can't race the sign-in request)."""
    expect(page.locator("#auth-root")).to_be_hidden()
    expect(page.locator("#app")).to_be_visible()


# The front page itself, no path and no fragment: where a signed-out page lands.
FRONT_PAGE = re.compile(r"^https?://[^/]+/$")


def lands_signed_out(page: Page, act: Callable[[], None]) -> None:
    """`act` ends the session: the page must load the front page afresh (so nothing
    of the old session's state survives) and show the sign-in screen. Waiting for
    that load also keeps a test from ending mid-navigation: closing a context
    then can hang Chromium until the test times out."""
    with page.expect_navigation(url=FRONT_PAGE):
        act()
    expect(page.locator("#auth-root")).to_be_visible()


def wait_inbox(page: Page) -> None:
    expect(page.locator("#conv-list.is-loaded")).to_be_attached()


def open_conversation(page: Page, peer: str) -> None:
    page.goto(f"/#/c/{peer}")
    expect(page.locator(".thread-title")).to_be_visible()
    expect(page.locator(".older")).not_to_contain_text("Loading")


def composer(page: Page, peer: str) -> Any:
    return page.get_by_label(f"Message @{peer}", exact=True)


def send_ui(page: Page, peer: str, text: str) -> None:
    box = composer(page, peer)
    box.fill(text)
    box.press("Enter")


def message(page: Page, text: str) -> Any:
    """The list item of a message with exactly this text."""
    return page.locator(".msgs li.msg").filter(has=page.locator(".msg-text", has_text=text))
