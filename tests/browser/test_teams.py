"""Teams in Chromium: a business adds two colleagues on its settings page; the
two agents, each in its own browser context, share the business's inbox live.
One assigns the conversation to itself and answers; the other sees both live
and leaves an internal note, which the first sees live too. The customer, in a
third context, sees the answer from the business and nothing of the note or of
who wrote it. Writes docs/screenshots/team-inbox.png."""

from __future__ import annotations

import re
from pathlib import Path

from browser_helpers import ApiPerson, new_handle, sign_in, wait_inbox
from playwright.sync_api import expect

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
LATE_FIRST_LISTING = """
const fetchNow = window.fetch;
let late = true;
window.fetch = (url, options) => {
  if (late && String(url).includes('/api/conversations?')) {
    late = false;
    return new Promise((done) => setTimeout(done, 2000)).then(() => fetchNow(url, options));
  }
  return fetchNow(url, options);
};
"""


def test_two_agents_share_a_business_inbox_and_the_customer_sees_only_the_answer(new_page, server):
    shop = ApiPerson(server, new_handle("shop"), "Shop", kind="business")
    shop.settings(open_dms=True)
    ann = ApiPerson(server, new_handle("ann"))
    bob = ApiPerson(server, new_handle("bob"))
    customer = ApiPerson(server, new_handle("cus"))

    # The business adds its two colleagues on the page.
    owner = new_page()
    sign_in(owner, shop.handle)
    wait_inbox(owner)
    owner.get_by_role("button", name=re.compile("^Settings")).click()
    dialog = owner.get_by_role("dialog")
    for agent in (ann, bob):
        dialog.get_by_label("Handle of a new agent").fill(agent.handle)
        dialog.get_by_role("button", name="Add agent").click()
        expect(dialog.locator(".team-members")).to_contain_text(f"@{agent.handle}")
    owner.close()

    customer.send(shop.handle, "My parcel never came")

    # Agent ann: switches from "me" to the business, opens the conversation.
    ann_page = new_page()
    sign_in(ann_page, ann.handle)
    wait_inbox(ann_page)
    ann_page.get_by_label("Acting as").select_option(shop.handle)
    expect(ann_page.locator(".team-conn")).to_have_text("Live")
    ann_page.locator(f'.team-row[data-peer="{customer.handle}"]').click()
    expect(ann_page.locator(".team-msg", has_text="My parcel never came")).to_be_visible()

    # Agent bob has the same conversation open in his own context. His first
    # listing answers late, so the assignment's frame can beat the list it updates
    # (as on a slow network): the controls must still end up showing it.
    bob_page = new_page()
    bob_page.add_init_script(LATE_FIRST_LISTING)
    sign_in(bob_page, bob.handle)
    wait_inbox(bob_page)
    bob_page.goto(f"/#/team/{shop.handle}/{customer.handle}")
    expect(bob_page.locator(".team-conn")).to_have_text("Live")
    expect(bob_page.locator(".team-msg", has_text="My parcel never came")).to_be_visible()

    # Ann assigns it to herself and answers; bob sees both live.
    ann_page.get_by_role("button", name="Assign to me").click()
    expect(bob_page.get_by_label("Assignee", exact=True)).to_have_value(ann.handle)
    expect(
        bob_page.locator(f'.team-row[data-peer="{customer.handle}"] .team-assignee')
    ).to_have_text(f"@{ann.handle}")
    ann_page.get_by_label("Reply to the customer").fill("Sorry! A new one ships today.")
    ann_page.get_by_role("button", name="Send").click()
    answer = bob_page.locator(".team-msg.is-ours", has_text="A new one ships today")
    expect(answer).to_be_visible()
    expect(answer.locator(".team-meta")).to_contain_text(f"@{ann.handle}")

    # Bob leaves an internal note; ann sees it live, marked as internal.
    bob_page.get_by_label("Internal note, only your team sees it").fill("Refund if it fails again")
    bob_page.get_by_role("button", name="Add note").click()
    note = ann_page.locator(".team-note", has_text="Refund if it fails again")
    expect(note).to_be_visible()
    expect(note.locator(".team-note-label")).to_contain_text(f"Internal note by @{bob.handle}")

    ann_page.screenshot(path=str(SCREENSHOTS / "team-inbox.png"))

    # Resolve: both agents' pages move it out of the open tab.
    ann_page.get_by_role("button", name="Resolve").click()
    expect(bob_page.locator(".team-status")).to_have_text("resolved")
    expect(bob_page.locator(f'.team-row[data-peer="{customer.handle}"]')).to_have_count(0)

    # The customer sees the answer, from the business, and nothing else.
    cust_page = new_page()
    sign_in(cust_page, customer.handle, goto=f"/#/c/{shop.handle}")
    expect(cust_page.locator(".msgs li.msg", has_text="A new one ships today")).to_be_visible()
    expect(cust_page.locator("body")).not_to_contain_text("Refund if it fails again")
    expect(cust_page.locator("body")).not_to_contain_text(f"@{ann.handle}")
    history = customer.history(shop.handle)
    assert [m["text"] for m in history] == [
        "My parcel never came",
        "Sorry! A new one ships today.",
    ]
    assert all("agent" not in m for m in history)
    assert history[1]["from"] == shop.handle
