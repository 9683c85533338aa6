"""The signed-out page: what a newcomer sees first, with the console open."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("path", ["/", "/messages/compose?recipient=someone&text=hi"])
def test_the_signed_out_page_logs_no_errors_and_asks_for_nothing_it_cannot_get(
    new_page: Any, path: str
) -> None:
    page = new_page()
    console: list[str] = []
    refused: list[str] = []
    page.on(
        "console",
        lambda msg: (
            console.append(f"{msg.type}: {msg.text}") if msg.type in ("error", "warning") else None
        ),
    )
    page.on(
        "response",
        lambda response: (
            refused.append(f"{response.status} {response.url}") if response.status >= 400 else None
        ),
    )
    page.goto(path)
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert console == []
    assert refused == []
