"""Browser tests of the chat page against a real dmhub server.

One `python -m chat serve` subprocess per test session (with its own embedded
Valkey in a temporary data folder), Debian's Chromium driven by Playwright's
sync API. Each test makes its own people with unique handles, so tests don't
depend on each other or on order.

Set DMHUB_BROWSER_BASE_URL to run against a server you started yourself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import DmhubProcess

# scripts/ensure-chromium.sh accepts a chromium anywhere on PATH: so does this.
CHROMIUM = os.environ.get("DMHUB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a running dmhub server."""
    external = os.environ.get("DMHUB_BROWSER_BASE_URL")
    if external:
        yield external.rstrip("/")
        return
    data = tmp_path_factory.mktemp("dmhub-data")
    srv = DmhubProcess({"DMHUB_DATA_DIR": str(data), "REDIS_URL": ""}).start()
    try:
        yield srv.url
    finally:
        srv.terminate()


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        # Never a skip: a browser test that did not run checked nothing.
        pytest.fail(
            f"{CHROMIUM} is missing: run 'make test' (it installs Debian's chromium), "
            "or set DMHUB_CHROMIUM to a Chromium binary"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class PageProblems:
    """JS errors and dialogs seen in any page of a test: both fail the test.

    A dialog can only come from script the page did not mean to run (the page
    itself never calls alert/confirm), so it is the tell-tale of injected
    markup being executed.
    """

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []

    def watch(self, page: object) -> None:
        def on_dialog(dialog: object) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")  # type: ignore[attr-defined]
            dialog.dismiss()  # type: ignore[attr-defined]

        def on_console(msg: object) -> None:
            # The page must live within the server's CSP: a refusal means an
            # inline style or script slipped in somewhere.
            text = msg.text  # type: ignore[attr-defined]
            if msg.type == "error" and "Content Security Policy" in text:  # type: ignore[attr-defined]
                self.errors.append(text)

        page.on("dialog", on_dialog)  # type: ignore[attr-defined]
        page.on("console", on_console)  # type: ignore[attr-defined]
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))  # type: ignore[attr-defined]


@pytest.fixture
def problems() -> Iterator[PageProblems]:
    p = PageProblems()
    yield p
    assert not p.dialogs, f"a page opened a dialog: {p.dialogs}"
    assert not p.errors, f"uncaught errors in the page: {p.errors}"


@pytest.fixture
def new_page(
    chromium: object, server: str, problems: PageProblems
) -> Iterator[Callable[..., object]]:
    """Factory: a page in a fresh browser context (its own cookies = its own person)."""
    contexts: list[object] = []

    def make(
        viewport: dict[str, int] | None = None, base_url: str | None = None, **kwargs: object
    ) -> object:
        ctx = chromium.new_context(  # type: ignore[attr-defined]
            base_url=base_url or server,
            viewport=viewport or {"width": 1200, "height": 800},
            **kwargs,
        )
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        # Every page of the context, including extra tabs a test opens.
        ctx.on("page", problems.watch)
        return ctx.new_page()

    yield make
    for ctx in contexts:
        with contextlib.suppress(Exception):
            ctx.close()
