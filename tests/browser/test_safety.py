"""The safety half of the page: reporting a request (it goes, and the reporter
now blocks the sender), "delete all" requests, a rate-limited send that says
when it will go and then goes by itself (same client_id), the restricted
banner, and the "can you write" texts read from `relationship.reason`."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from browser_helpers import (
    ApiPerson,
    message,
    new_handle,
    open_conversation,
    send_ui,
    sign_in,
    wait_inbox,
)
from playwright.sync_api import expect

from tests.support import DmhubProcess

pytestmark = pytest.mark.timeout(120)

# Burst of 20, then one token every 3 s: the page's send after 20 quick ones
# waits ~3 s, long enough to see the countdown and short enough for a test.
LOW_MESSAGES_PER_MIN = 20


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with a low message limit, where one report by a fresh
    account restricts (so the banner can be seen without three old accounts)."""
    data = tmp_path_factory.mktemp("dmhub-limited")
    srv = DmhubProcess(
        {
            "DMHUB_DATA_DIR": str(data),
            "REDIS_URL": "",
            "DMHUB_LIMIT_MESSAGES_PER_MIN": str(LOW_MESSAGES_PER_MIN),
            "DMHUB_RESTRICT_REPORTERS": "1",
            "DMHUB_REPORTER_MIN_AGE_S": "0",
        }
    ).start()
    try:
        yield srv.url
    finally:
        srv.terminate()


def relationship(me: ApiPerson, other: str) -> dict[str, object]:
    r = me.client.get(f"/api/users/{other}")
    assert r.status_code == 200, r.text
    rel: dict[str, object] = r.json()["relationship"]
    return rel


def requests_of(me: ApiPerson) -> list[str]:
    r = me.client.get("/api/conversations", params={"folder": "requests"})
    assert r.status_code == 200, r.text
    return [c["peer"]["handle"] for c in r.json()["conversations"]]


def test_report_from_a_request_blocks_and_clears_it_then_delete_all(new_page, server):
    biz = ApiPerson(server, new_handle("o"))
    biz.settings(open_dms=True)
    spammer = ApiPerson(server, new_handle("s"))
    other = ApiPerson(server, new_handle("x"))
    third = ApiPerson(server, new_handle("t"))
    spammer.send(biz.handle, "cheap watches, click here")
    other.send(biz.handle, "hello, a question about my order")
    third.send(biz.handle, "hi there")

    page = new_page()
    sign_in(page, biz.handle)
    wait_inbox(page)
    page.goto("/#/requests")
    row = page.locator(f'.conv[data-handle="{spammer.handle}"]')
    expect(row).to_be_visible()

    # From the request itself: the bar offers Report, the dialog says it blocks.
    open_conversation(page, spammer.handle)
    page.locator(".request-bar").get_by_role("button", name="Report").click()
    dialog = page.get_by_role("dialog", name=f"Report @{spammer.handle}")
    expect(dialog).to_contain_text("also blocks")
    dialog.get_by_label("Spam").check()
    dialog.get_by_role("button", name="Report and block").click()
    expect(dialog).to_be_hidden()
    expect(page).to_have_url(re.compile(r"#/requests$"))
    expect(row).to_have_count(0)
    rel = relationship(biz, spammer.handle)
    assert rel["blocking"] is True and rel["can_message"] is False
    assert rel["reason"] == "you_blocked"
    assert spammer.handle not in requests_of(biz)

    # From the list: each request row has its own Report.
    page.get_by_role("button", name=f"Report @{other.handle}").click()
    page.get_by_role("dialog", name=f"Report @{other.handle}").get_by_role(
        "button", name="Report and block"
    ).click()
    expect(page.locator(f'.conv[data-handle="{other.handle}"]')).to_have_count(0)
    assert relationship(biz, other.handle)["blocking"] is True

    # Delete all: confirmed in the page, and the sender is not blocked.
    page.locator(".requests-tools").get_by_role("button", name="Delete all").click()
    page.get_by_role("dialog", name="Delete all requests?").get_by_role(
        "button", name="Delete all"
    ).click()
    expect(page.locator(".conv-list .conv")).to_have_count(0)
    expect(page.locator(".list-status")).to_contain_text("No message requests")
    assert requests_of(biz) == []
    assert relationship(biz, third.handle)["blocking"] is False


def test_rate_limited_send_says_when_and_sends_by_itself(new_page, limited_server):
    a = ApiPerson(limited_server, new_handle("a"))
    b = ApiPerson(limited_server, new_handle("b"))
    a.follow(b.handle)
    b.follow(a.handle)
    page = new_page(base_url=limited_server)
    sign_in(page, a.handle)
    open_conversation(page, b.handle)

    # Spend the whole burst from another device of the same person.
    for i in range(LOW_MESSAGES_PER_MIN):
        r = a.client.post(f"/api/conversations/{b.handle}/messages", json={"text": f"burst {i}"})
        if r.status_code == 429:
            break
        assert r.status_code == 201, r.text
    send_ui(page, b.handle, "after the burst")
    mine = message(page, "after the burst")
    expect(mine).to_have_attribute("data-status", "waiting")
    expect(mine.locator(".wait-text")).to_contain_text(
        re.compile(r"Sends by itself at .+\(in \d+ s\)")
    )
    expect(mine).to_have_attribute("data-status", re.compile("sent|seen"), timeout=20_000)
    expect(mine.locator(".wait-text")).to_have_count(0)
    stored = [m for m in b.history(a.handle) if m["text"] == "after the burst"]
    assert len(stored) == 1 and stored[0]["client_id"]
    assert mine.get_attribute("data-key") == f"c:{stored[0]['client_id']}"


def test_restricted_account_sees_the_banner_and_why_it_cannot_write(new_page, limited_server):
    spammer = ApiPerson(limited_server, new_handle("s"))
    victim = ApiPerson(limited_server, new_handle("v"))
    shop = ApiPerson(limited_server, new_handle("o"))
    for p in (victim, shop):
        p.settings(open_dms=True)
    spammer.send(victim.handle, "buy now")
    r = victim.client.post("/api/reports", json={"handle": spammer.handle, "reason": "spam"})
    assert r.status_code == 202, r.text

    page = new_page(base_url=limited_server)
    sign_in(page, spammer.handle)
    banner = page.locator("#restricted-banner")
    expect(banner).to_contain_text("Your account is restricted")
    expect(banner).to_contain_text("operator")
    # Open DMs do not let a restricted account in, and the page says why.
    page.goto(f"/#/new/{shop.handle}")
    verdict = page.locator(".verdict")
    expect(verdict).to_have_attribute("data-can-message", "false")
    expect(verdict).to_contain_text("restricted")


def test_reply_rule_reads_without_contradiction(new_page, server):
    # The shop keeps its DMs closed and follows nobody, but wrote first.
    shop = ApiPerson(server, new_handle("o"), kind="business")
    customer = ApiPerson(server, new_handle("c"))
    customer.follow(shop.handle)
    shop.follow(customer.handle)
    shop.send(customer.handle, "Your parcel is on its way")
    r = shop.client.delete(f"/api/following/{customer.handle}")
    assert r.status_code == 204
    rel = relationship(customer, shop.handle)
    assert rel["can_message"] is True and rel["followed_by"] is False

    page = new_page()
    sign_in(page, customer.handle)
    page.goto(f"/#/new/{shop.handle}")
    verdict = page.locator(".verdict")
    expect(verdict).to_have_attribute("data-can-message", "true")
    expect(verdict).to_contain_text("wrote to you, so you can reply")
    page.get_by_role("button", name="View profile").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator(".person-dms")).to_contain_text("people they wrote to, like you")
    expect(dialog).not_to_contain_text("only from people they follow")


def test_report_from_a_conversation_blocks_and_says_so(new_page, server):
    a = ApiPerson(server, new_handle("a"))
    b = ApiPerson(server, new_handle("b"))
    a.follow(b.handle)
    b.follow(a.handle)
    b.send(a.handle, "you will regret this")
    page = new_page()
    sign_in(page, a.handle)
    open_conversation(page, b.handle)
    expect(message(page, "you will regret this")).to_be_visible()
    page.locator(".thread-head").get_by_role("button", name="Report").click()
    dialog = page.get_by_role("dialog", name=f"Report @{b.handle}")
    dialog.get_by_label("Abuse or harassment").check()
    dialog.get_by_role("button", name="Report and block").click()
    expect(dialog).to_be_hidden()
    # The history stays readable; the composer gives way to why, with the way back.
    expect(message(page, "you will regret this")).to_be_visible()
    expect(page.locator(".cant-box")).to_contain_text(f"You blocked @{b.handle}")
    expect(
        page.locator(".cant-box").get_by_role("button", name=f"Unblock @{b.handle}")
    ).to_be_visible()
    assert relationship(a, b.handle)["reason"] == "you_blocked"
