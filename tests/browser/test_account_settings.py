"""Settings → Account: change the password, then delete the account, in a browser."""

from __future__ import annotations

import re

import httpx
import pytest
from browser_helpers import PASSWORD, lands_signed_out, new_handle, sign_up, wait_inbox
from playwright.sync_api import expect

pytestmark = pytest.mark.timeout(120)

NEW_PASSWORD = "another-horse-8"


def test_change_password_then_delete_the_account(new_page, server):
    page = new_page()
    handle = new_handle("acct")
    sign_up(page, handle)
    wait_inbox(page)

    page.get_by_role("button", name=re.compile("^Settings")).click()
    dialog = page.locator(".settings-dialog")
    expect(dialog.get_by_role("link", name="Download my data")).to_have_attribute(
        "href", "/api/me/export"
    )
    dialog.get_by_label("Current password").fill("not-my-password")
    dialog.get_by_label(re.compile("^New password")).fill(NEW_PASSWORD)
    dialog.get_by_role("button", name="Change password").click()
    expect(dialog.locator(".dialog-status")).to_have_text("That is not your current password.")
    dialog.get_by_label("Current password").fill(PASSWORD)
    dialog.get_by_role("button", name="Change password").click()
    expect(dialog.locator(".dialog-status")).to_contain_text("Password changed")

    dialog.get_by_role("button", name="Delete account…").click()
    dialog.get_by_label("Your password, to confirm").fill(NEW_PASSWORD)
    lands_signed_out(page, dialog.get_by_role("button", name="Delete my account for good").click)

    gone = httpx.post(
        f"{server}/api/sessions", json={"handle": handle, "password": NEW_PASSWORD}, timeout=10
    )
    assert gone.status_code == 401


def test_sign_out_everywhere_asks_once_more_then_signs_out(new_page, server):
    page = new_page()
    sign_up(page, new_handle("every"))
    wait_inbox(page)
    page.get_by_role("button", name=re.compile("^Settings")).click()
    dialog = page.locator(".settings-dialog")
    dialog.get_by_role("button", name="Sign out everywhere").click()
    expect(page.locator("#app")).to_be_visible()
    lands_signed_out(
        page, dialog.get_by_role("button", name="Sign out on every device, this one too?").click
    )


def test_the_other_sessions_are_listed_and_can_be_signed_out(new_page, server):
    page = new_page()
    handle = new_handle("devs")
    sign_up(page, handle)
    wait_inbox(page)
    other = httpx.post(
        f"{server}/api/sessions",
        json={"handle": handle, "password": PASSWORD},
        headers={"User-Agent": "PhoneApp/1.0"},
        timeout=10,
    )
    assert other.status_code == 200
    token = other.json()["token"]

    page.get_by_role("button", name=re.compile("^Settings")).click()
    sessions = page.get_by_role("list", name="Where you are signed in")
    expect(sessions.locator("li")).to_have_count(2)
    expect(sessions).to_contain_text("This device")
    phone = sessions.locator("li", has_text="PhoneApp/1.0")
    phone.get_by_role("button", name=re.compile("^Sign out")).click()
    expect(sessions.locator("li")).to_have_count(1)
    gone = httpx.get(f"{server}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert gone.status_code == 401
