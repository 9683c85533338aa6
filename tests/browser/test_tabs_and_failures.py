"""Several tabs of one person, failed sends, session end, the composer's keys."""

from __future__ import annotations

import re

import pytest
from browser_helpers import (
    composer,
    friends,
    lands_signed_out,
    message,
    open_conversation,
    send_ui,
    sign_in,
    wait_inbox,
)
from playwright.sync_api import expect

pytestmark = pytest.mark.timeout(120)


def test_two_tabs_of_one_person_stay_in_sync(new_page, server):
    a, b = friends(server)
    tab1 = new_page()
    sign_in(tab1, a.handle)
    tab2 = tab1.context.new_page()  # same context: same cookie, same person
    tab2.goto("/")
    wait_inbox(tab1)
    wait_inbox(tab2)
    open_conversation(tab1, b.handle)

    # Read in tab 1 (conversation on screen) clears the badge in tab 2.
    b.send(a.handle, "hello to both tabs")
    expect(message(tab1, "hello to both tabs")).to_be_visible()
    row2 = tab2.locator(f'.conv[data-handle="{b.handle}"]')
    expect(row2).to_contain_text("hello to both tabs")
    expect(row2.locator(".badge")).to_have_count(0)

    # Sent from tab 1, shown in tab 2 as ours, once.
    send_ui(tab1, b.handle, "sent from tab one")
    expect(row2).to_contain_text("You: sent from tab one")
    row2.click()
    mine = message(tab2, "sent from tab one")
    expect(mine).to_have_class(re.compile(r"\bmine\b"))
    expect(mine).to_have_count(1)
    expect(mine).to_have_attribute("data-status", re.compile("sent|seen"))
    # Same element key (client_id) in both tabs: they agree on identity.
    assert mine.get_attribute("data-key") == message(tab1, "sent from tab one").get_attribute(
        "data-key"
    )
    assert [m["text"] for m in b.history(a.handle)].count("sent from tab one") == 1


def test_failed_send_shows_why_and_retry_reuses_client_id(new_page, server):
    a, b = friends(server)
    pa = new_page()
    sign_in(pa, a.handle)
    open_conversation(pa, b.handle)
    r = b.client.put(f"/api/blocks/{a.handle}")
    assert r.status_code == 204

    send_ui(pa, b.handle, "are you there?")
    failed = message(pa, "are you there?")
    expect(failed).to_have_attribute("data-status", "failed")
    expect(failed.locator(".fail-text")).not_to_be_empty()
    key = failed.get_attribute("data-key")
    assert key and key.startswith("c:")

    r = b.client.delete(f"/api/blocks/{a.handle}")
    assert r.status_code == 204
    # The block ended the follows both ways: b follows a again to let a in.
    b.follow(a.handle)
    failed.get_by_role("button", name="Retry").click()
    expect(failed).to_have_attribute("data-status", re.compile("sent|seen"))
    stored = [m for m in b.history(a.handle) if m["text"] == "are you there?"]
    assert len(stored) == 1
    assert stored[0]["client_id"] == key[2:]


def test_signing_out_in_one_tab_signs_out_the_other(new_page, server):
    a, _b = friends(server)
    tab1 = new_page()
    sign_in(tab1, a.handle)
    wait_inbox(tab1)
    tab2 = tab1.context.new_page()
    tab2.goto("/")
    wait_inbox(tab2)

    tab1.get_by_role("button", name=re.compile("^Settings")).click()
    lands_signed_out(tab1, tab1.get_by_role("button", name="Sign out", exact=True).click)
    expect(tab1.get_by_role("button", name="Sign in")).to_be_visible()
    expect(tab2.locator(".auth-note")).to_contain_text("signed out")
    # Nothing secret was left behind in storage.
    for tab in (tab1, tab2):
        stored = tab.evaluate(
            "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
        )
        assert "correct-horse" not in stored
        assert "token" not in stored.lower()


def test_composer_keys_and_character_limit(new_page, server):
    a, b = friends(server)
    pa = new_page()
    sign_in(pa, a.handle)
    open_conversation(pa, b.handle)
    box = composer(pa, b.handle)
    expect(box).to_be_focused()

    # Shift+Enter breaks the line, Enter sends.
    box.press_sequentially("line one")
    box.press("Shift+Enter")
    box.press_sequentially("line two")
    expect(pa.locator(".msgs li.msg")).to_have_count(0)
    box.press("Enter")
    sent = message(pa, "line one")
    expect(sent.locator(".msg-text")).to_have_text("line one\nline two", use_inner_text=True)
    expect(box).to_have_value("")

    # Live counter, and nothing over 10,000 characters goes out.
    counter = pa.locator(".thread .counter")
    box.fill("a" * 9_999)
    expect(counter).to_have_text("9,999 / 10,000")
    box.press_sequentially("bc")
    expect(counter).to_have_text("10,001 / 10,000")
    expect(counter).to_have_class(re.compile("is-over"))
    expect(pa.get_by_role("button", name="Send")).to_be_disabled()
    box.press("Enter")
    pa.wait_for_timeout(300)
    expect(pa.locator(".msgs li.msg")).to_have_count(1)
    box.press("Backspace")
    expect(counter).to_have_text("10,000 / 10,000")
    expect(pa.get_by_role("button", name="Send")).to_be_enabled()


def test_keyboard_only_sign_in_search_and_send(new_page, server):
    a, b = friends(server)
    b.send(a.handle, "ping for the keyboard test")
    page = new_page()
    page.goto("/")
    handle = page.get_by_label("Handle")
    expect(handle).to_be_focused()
    page.keyboard.type(a.handle)
    page.keyboard.press("Tab")
    page.keyboard.type("correct-horse-7")
    page.keyboard.press("Enter")
    wait_inbox(page)

    page.get_by_label("Search conversations by handle").focus()
    page.keyboard.type(b.handle[:6])
    expect(page.locator(".conv:not(.conv-suggest)")).to_have_count(1)
    # A handle typed in full that isn't in the list is offered as a new message.
    expect(page.locator(".conv-suggest")).to_contain_text(f"Message @{b.handle[:6]}")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"#/c/{b.handle}$"))
    box = composer(page, b.handle)
    expect(box).to_be_focused()
    page.keyboard.type("typed without a mouse")
    page.keyboard.press("Enter")
    expect(message(page, "typed without a mouse")).to_have_attribute(
        "data-status", re.compile("sent|seen")
    )

    # The profile card is a modal dialog: Escape closes it, focus comes back.
    page.get_by_role("button", name="Profile and actions").focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"@{b.handle}")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(page.get_by_role("button", name="Profile and actions")).to_be_focused()


def test_profile_card_follow_block_and_report(new_page, server):
    a, b = friends(server)
    pa = new_page()
    sign_in(pa, a.handle)
    open_conversation(pa, b.handle)
    pa.get_by_role("button", name="Profile and actions").click()
    dialog = pa.get_by_role("dialog")
    expect(dialog.locator(".person-rel")).to_have_text("You follow each other")

    dialog.get_by_role("button", name="Unfollow").click()
    expect(dialog.locator(".person-rel")).to_have_text("Follows you")
    dialog.get_by_role("button", name="Follow", exact=True).click()
    expect(dialog.locator(".person-rel")).to_have_text("You follow each other")

    dialog.get_by_role("button", name="Block").click()
    expect(dialog.locator(".dialog-status")).to_contain_text("You blocked")
    expect(dialog.get_by_role("button", name="Unblock")).to_be_visible()
    pa.keyboard.press("Escape")
    # The conversation now says why you can't write, with the way out.
    expect(pa.locator(".cant-box")).to_contain_text(f"You blocked @{b.handle}")
    expect(composer(pa, b.handle)).to_be_hidden()
    pa.locator(".cant-box").get_by_role("button", name=f"Unblock @{b.handle}").click()
    # The block ended the follows both ways, so b's DMs are closed to a again.
    expect(pa.locator(".cant-box")).to_contain_text(
        "only receives messages from people they follow"
    )
    expect(composer(pa, b.handle)).to_be_hidden()

    # Report from the profile card: it says what happened.
    pa.get_by_role("button", name="Profile and actions").click()
    dialog.get_by_role("button", name="Report…").click()
    dialog.get_by_label("Spam").check()
    dialog.get_by_role("button", name="Report and block").click()
    expect(dialog.locator(".dialog-status")).to_contain_text("reported and blocked")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_phone_layout_shows_one_pane_at_a_time(new_page, server, scheme):
    a, b = friends(server, "Ana Phone", "Bruno Longname-With-A-Very-Long-Display-Name")
    b.send(a.handle, "a long line without spaces " + "x" * 200)
    page = new_page(viewport={"width": 360, "height": 740}, color_scheme=scheme)
    sign_in(page, a.handle)
    wait_inbox(page)
    sidebar, pane = page.locator("#sidebar"), page.locator("#main")
    expect(sidebar).to_be_visible()
    expect(pane).to_be_hidden()

    page.locator(f'.conv[data-handle="{b.handle}"]').click()
    expect(pane).to_be_visible()
    expect(sidebar).to_be_hidden()
    expect(message(page, "a long line without spaces")).to_be_visible()
    # Nothing sticks out sideways on a 360 px phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert page.locator(".msgs").evaluate("el => el.scrollWidth <= el.clientWidth")

    page.get_by_role("link", name="Back to conversations").click()
    expect(sidebar).to_be_visible()
    expect(pane).to_be_hidden()


def test_settings_name_and_read_receipts_persist(new_page, server):
    a, _b = friends(server, "Old Name")
    page = new_page()
    sign_in(page, a.handle)
    wait_inbox(page)
    page.get_by_role("button", name=re.compile("^Settings")).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Display name").fill("Brand New Name")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.locator(".dialog-status")).to_have_text("Name saved.")
    receipts = dialog.get_by_role("switch", name="Read receipts")
    expect(receipts).to_be_checked()
    receipts.uncheck()
    expect(dialog.locator(".dialog-status")).to_have_text("Saved.")
    expect(page.locator(".me-btn .avatar")).to_have_text("BN")

    page.reload()
    wait_inbox(page)
    page.get_by_role("button", name=re.compile("^Settings")).click()
    expect(dialog.get_by_label("Display name")).to_have_value("Brand New Name")
    expect(dialog.get_by_role("switch", name="Read receipts")).not_to_be_checked()
    expect(dialog.get_by_role("switch", name="Receive messages from anyone")).not_to_be_checked()
