"""The chat page, end to end: real server, real browser, two people at once."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from browser_helpers import (
    ApiPerson,
    composer,
    friends,
    message,
    new_handle,
    open_conversation,
    send_ui,
    sign_in,
    sign_up,
    wait_inbox,
)
from playwright.sync_api import expect

pytestmark = pytest.mark.timeout(120)


def test_two_people_sign_up_follow_and_chat_live(new_page, server):
    ada, bo = new_page(), new_page()
    ha, hb = new_handle("ada"), new_handle("bo")
    sign_up(ada, ha, "Ada Lovelace")
    sign_up(bo, hb, "Bo Diddley")
    wait_inbox(ada)
    wait_inbox(bo)

    # Ada wants to write first, but Bo doesn't follow her: the page says so
    # before she writes a word, and the send button stays off.
    ada.get_by_role("link", name="New message").first.click()
    ada.get_by_label("To", exact=True).fill(hb)
    verdict = ada.locator(".verdict")
    expect(verdict).to_contain_text(re.compile(rf"You can.t message @{hb}"))
    expect(verdict).to_contain_text("only receives messages from people they follow")
    expect(ada.get_by_role("button", name="Send")).to_be_disabled()

    # Bo follows Ada from his own New message check.
    bo.get_by_role("link", name="New message").first.click()
    bo.get_by_label("To", exact=True).fill(ha)
    expect(bo.locator(".person-name")).to_contain_text("Ada Lovelace")
    bo.get_by_role("button", name=f"Follow @{ha}").click()
    expect(bo.locator(".person-rel")).to_have_text(f"You follow @{ha}")

    # Now Ada can write.
    ada.get_by_role("button", name="Check again").click()
    expect(verdict).to_contain_text(f"You can message @{hb}")
    box = ada.get_by_label("Message", exact=True)
    box.fill("Hello Bo!")
    box.press("Enter")
    expect(ada).to_have_url(re.compile(rf"#/c/{hb}$"))
    expect(message(ada, "Hello Bo!")).to_have_attribute("data-status", re.compile("sent|seen"))

    # Bo's inbox updates live (no reload): row, preview, unread badges.
    row = bo.locator(f'.conv[data-handle="{ha}"]')
    expect(row).to_contain_text("Hello Bo!")
    expect(row.locator(".badge")).to_have_text("1")
    expect(bo.locator("#tab-inbox .badge")).to_have_text("1")
    row.click()
    expect(message(bo, "Hello Bo!")).to_have_class(re.compile(r"\btheirs\b"))
    expect(bo.locator("#tab-inbox .badge")).to_be_hidden()

    # Bo answers (Ada wrote to him first, so he may), Ada sees it live.
    send_ui(bo, ha, "Hi Ada, good to hear from you")
    expect(message(ada, "Hi Ada, good to hear from you")).to_be_visible()
    # Screen readers hear it through the polite live region.
    expect(ada.locator("#announcer")).to_have_text(
        "New message from Bo Diddley: Hi Ada, good to hear from you"
    )
    expect(message(ada, "Hi Ada, good to hear from you")).to_have_class(re.compile(r"\btheirs\b"))
    # Bo's own copy is marked as his.
    expect(message(bo, "Hi Ada, good to hear from you")).to_have_class(re.compile(r"\bmine\b"))


def test_stranger_is_told_why_then_can_write_once_dms_open(new_page, server):
    owner = new_page()
    stranger = new_page()
    ho, hs = new_handle("shop"), new_handle("str")
    sign_up(owner, ho, "Corner Shop")
    sign_up(stranger, hs)
    wait_inbox(owner)
    wait_inbox(stranger)

    stranger.goto(f"/#/new/{ho}")
    verdict = stranger.locator(".verdict")
    expect(verdict).to_have_attribute("data-can-message", "false")
    expect(verdict).to_contain_text(f"@{ho} only receives messages from people they follow")
    expect(stranger.get_by_role("button", name=f"Follow @{ho}")).to_be_visible()
    expect(stranger.get_by_role("button", name="Send")).to_be_disabled()

    # The owner opens their DMs in Settings.
    owner.get_by_role("button", name=re.compile("^Settings")).click()
    switch = owner.get_by_role("switch", name="Receive messages from anyone")
    expect(switch).not_to_be_checked()
    expect(owner.locator(".settings-dialog")).to_contain_text("wait in Requests")
    switch.check()
    expect(owner.locator(".settings-dialog .dialog-status")).to_have_text("Saved.")
    owner.keyboard.press("Escape")

    stranger.get_by_role("button", name="Check again").click()
    expect(verdict).to_have_attribute("data-can-message", "true")
    expect(verdict).to_contain_text("receives messages from anyone")
    box = stranger.get_by_label("Message", exact=True)
    box.fill("Hi! Is the shop open on Sunday?")
    box.press("Enter")
    expect(message(stranger, "Is the shop open on Sunday?")).to_have_attribute(
        "data-status", "sent"
    )

    # It lands in the owner's Requests, with a badge, live.
    expect(owner.locator("#tab-requests .badge")).to_have_text("1")
    owner.get_by_role("tab", name=re.compile("^Requests")).click()
    row = owner.locator(f'.conv[data-handle="{hs}"]')
    expect(row).to_contain_text("Is the shop open on Sunday?")
    row.click()
    bar = owner.locator(".request-bar")
    expect(bar).to_be_visible()
    for name in ("Accept", "Delete", "Block"):
        expect(bar.get_by_role("button", name=name, exact=True)).to_be_visible()
    bar.get_by_role("button", name="Accept", exact=True).click()
    expect(bar).to_be_hidden()
    send_ui(owner, hs, "Yes, 9 to 5.")
    expect(message(stranger, "Yes, 9 to 5.")).to_be_visible()
    owner.get_by_role("tab", name=re.compile("^Inbox")).click()
    expect(owner.locator(f'.conv[data-handle="{hs}"]')).to_be_visible()


def test_typing_indicator_and_seen_receipts(new_page, server):
    a, b = friends(server, "Alice Typist", "Bob Reader")
    pa, pb = new_page(), new_page()
    sign_in(pa, a.handle)
    sign_in(pb, b.handle)
    open_conversation(pa, b.handle)
    open_conversation(pb, a.handle)

    box = composer(pa, b.handle)
    box.press_sequentially("Typing something", delay=20)
    expect(pb.locator(".typing-line")).to_have_text(f"@{a.handle} is typing…")
    box.press("Enter")
    expect(message(pb, "Typing something")).to_be_visible()
    # The message ends the typing notice, and Bob has it on screen: seen.
    expect(pb.locator(".typing-line")).to_have_text("")
    sent = message(pa, "Typing something")
    expect(sent).to_have_attribute("data-status", "seen")
    expect(sent.locator(".msg-foot")).to_have_text("Seen")


def test_reload_keeps_history(new_page, server):
    a, b = friends(server)
    pa = new_page()
    sign_in(pa, a.handle)
    open_conversation(pa, b.handle)
    texts = ["first line", "second\nwith a line break", "third 🎉"]
    for t in texts:
        send_ui(pa, b.handle, t)
    for t in texts:
        expect(message(pa, t.split("\n")[0])).to_have_attribute("data-status", "sent")
    b.send(a.handle, "an answer from b")
    expect(message(pa, "an answer from b")).to_be_visible()

    pa.reload()
    items = pa.locator(".msgs li.msg .msg-text")
    expect(items).to_have_count(4)
    expect(items).to_have_text([*texts, "an answer from b"])
    # Signed in still (cookie), and the inbox knows the conversation.
    expect(pa.locator(f'.conv[data-handle="{b.handle}"]')).to_contain_text("an answer from b")


def test_older_history_loads_on_scroll_up(new_page, server):
    a, b = friends(server)
    for i in range(1, 96):
        (a if i % 2 else b).send(b.handle if i % 2 else a.handle, f"numbered message {i:03d}")
    pa = new_page()
    sign_in(pa, a.handle)
    open_conversation(pa, b.handle)
    expect(message(pa, "numbered message 095")).to_be_visible()
    expect(message(pa, "numbered message 001")).to_have_count(0)
    # Scroll to the top until the first page arrives (two pages up).
    for _ in range(10):
        pa.locator(".thread-scroll").evaluate("el => el.scrollTo(0, 0)")
        if message(pa, "numbered message 001").count():
            break
        pa.wait_for_timeout(300)
    expect(message(pa, "numbered message 001")).to_be_attached()
    expect(pa.locator(".older")).to_contain_text("beginning of your conversation")
    expect(pa.locator(".msgs li.msg")).to_have_count(95)


def test_offline_sends_are_delivered_once_when_back(new_page, server):
    a, b = friends(server)
    pa, pb = new_page(), new_page()
    sign_in(pa, a.handle)
    sign_in(pb, b.handle)
    open_conversation(pa, b.handle)
    open_conversation(pb, a.handle)
    send_ui(pa, b.handle, "before going offline")
    expect(message(pb, "before going offline")).to_be_visible()

    pa.context.set_offline(True)
    expect(pa.locator("#offline-banner")).to_be_visible(timeout=25_000)
    send_ui(pa, b.handle, "written while offline 1")
    send_ui(pa, b.handle, "written while offline 2")
    expect(message(pa, "written while offline 1")).to_have_attribute("data-status", "sending")
    # Meanwhile Bob writes; Alice's page must catch up from its cursor.
    b.send(a.handle, "sent to you while you were offline")
    pb.wait_for_timeout(1000)
    expect(message(pb, "written while offline 1")).to_have_count(0)
    expect(message(pa, "sent to you while you were offline")).to_have_count(0)

    pa.context.set_offline(False)
    expect(message(pb, "written while offline 1")).to_be_visible(timeout=30_000)
    expect(message(pb, "written while offline 2")).to_be_visible()
    expect(pa.locator("#offline-banner")).to_be_hidden()
    expect(message(pa, "sent to you while you were offline")).to_have_count(1)
    expect(message(pa, "written while offline 2")).to_have_attribute(
        "data-status", re.compile("sent|seen")
    )
    pb.wait_for_timeout(1500)
    for page in (pa, pb):
        expect(message(page, "written while offline 1")).to_have_count(1)
        expect(message(page, "written while offline 2")).to_have_count(1)
    # The server has each exactly once, in order.
    texts = [m["text"] for m in b.history(a.handle)]
    assert texts.count("written while offline 1") == 1
    assert texts.count("written while offline 2") == 1
    assert texts.index("written while offline 1") < texts.index("written while offline 2")
    pb.reload()
    expect(message(pb, "written while offline 1")).to_have_count(1)


@pytest.mark.parametrize("how", ["sign-in", "sign-up"])
def test_compose_deep_link_goes_through_sign_in(new_page, server, how):
    shop = ApiPerson(server, new_handle("biz"), "Bike Repairs")
    shop.settings(open_dms=True)
    prefill = "Hello, my order #1234 hasn't arrived"
    page = new_page()
    page.goto(f"/messages/compose?recipient={shop.handle}&text={quote(prefill)}")
    expect(page.locator(".auth-note")).to_contain_text(f"@{shop.handle}")
    if how == "sign-in":
        visitor = ApiPerson(server, new_handle("cust"))
        sign_in(page, visitor.handle, goto=None)
        me = visitor.handle
    else:
        me = new_handle("cust")
        sign_up(page, me, goto=None)

    expect(page.get_by_label("To", exact=True)).to_have_value(shop.handle)
    box = page.get_by_label("Message", exact=True)
    expect(box).to_have_value(prefill)
    expect(page.locator(".verdict")).to_have_attribute("data-can-message", "true")
    expect(box).to_be_focused()
    box.press("Enter")
    expect(page).to_have_url(re.compile(rf"/#/c/{shop.handle}$"))
    expect(message(page, "my order #1234")).to_have_attribute("data-status", "sent")
    assert [m["text"] for m in shop.history(me)] == [prefill]


def test_markup_in_messages_and_names_is_shown_as_text(new_page, server, problems):
    evil_name = "<img src=x onerror=alert(2)>"
    a, b = friends(server, evil_name, "Bob")
    pa, pb = new_page(), new_page()
    sign_in(pa, a.handle)
    sign_in(pb, b.handle)
    open_conversation(pa, b.handle)
    payload = "<img src=x onerror=alert(1)>"
    send_ui(pa, b.handle, payload)

    # Live in Bob's list, then in the conversation.
    row = pb.locator(f'.conv[data-handle="{a.handle}"]')
    expect(row.locator(".conv-preview")).to_have_text(payload)
    expect(row.locator(".conv-name")).to_have_text(evil_name)
    row.click()
    expect(message(pb, payload)).to_be_visible()
    expect(pb.locator(".msgs .msg-text").last).to_have_text(payload)
    expect(pb.locator(".thread-title")).to_have_text(evil_name)
    pb.wait_for_timeout(500)
    for page in (pa, pb):
        assert page.locator(".msgs img").count() == 0
        assert page.locator("#conv-list img").count() == 0
        assert page.locator("img").count() == 0
    assert not problems.dialogs


def test_request_can_be_deleted_or_blocked(new_page, server):
    owner = ApiPerson(server, new_handle("own"), "Open Owner")
    owner.settings(open_dms=True)
    pest = ApiPerson(server, new_handle("pest"))
    curious = ApiPerson(server, new_handle("cur"))
    curious.send(owner.handle, "just curious")
    pest.send(owner.handle, "buy my stuff")
    page = new_page()
    sign_in(page, owner.handle)
    wait_inbox(page)
    expect(page.locator("#tab-requests .badge")).to_have_text("2")

    page.goto(f"/#/c/{curious.handle}")
    page.locator(".request-bar").get_by_role("button", name="Delete", exact=True).click()
    expect(page).to_have_url(re.compile(r"#/requests$"))
    expect(page.locator(f'.conv[data-handle="{curious.handle}"]')).to_have_count(0)

    page.goto(f"/#/c/{pest.handle}")
    page.locator(".request-bar").get_by_role("button", name="Block", exact=True).click()
    expect(page.locator(f'.conv[data-handle="{pest.handle}"]')).to_have_count(0)
    expect(page.locator("#tab-requests .badge")).to_be_hidden()
    rel = pest.client.get(f"/api/users/{owner.handle}").json()["relationship"]
    assert rel["blocked_by"] is True
    assert rel["can_message"] is False
