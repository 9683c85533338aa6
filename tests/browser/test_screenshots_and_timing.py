"""Screenshots for the docs, and the page's speed as a person sees it.

Writes docs/screenshots/{inbox,conversation,new-message}.png at a desktop
viewport and prints (run with -s to see them):
  - first contentful paint of the inbox page, and time until the inbox list
    is on screen (from the page's own Performance timeline);
  - on-screen delivery: from pressing Enter in one browser to the text being
    in the other browser's DOM, timed with both pages' high-resolution clocks.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from browser_helpers import ApiPerson, message, new_handle, open_conversation, sign_in, wait_inbox
from playwright.sync_api import expect

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}

pytestmark = pytest.mark.timeout(180)

# Both clocks are performance.timeOrigin + now() of pages in one browser on
# one machine, so their difference is the delivery time as a person sees it.
WATCH_ARRIVALS = """() => {
    window.__arrivals = {};
    const list = document.querySelector('.msgs');
    new MutationObserver(() => {
        const now = performance.timeOrigin + performance.now();
        for (const el of list.querySelectorAll('.msg-text')) {
            const t = el.textContent;
            if (t.startsWith('timing probe') && !(t in window.__arrivals)) {
                window.__arrivals[t] = now;
            }
        }
    }).observe(list, {childList: true, subtree: true});
}"""

WATCH_ENTER = """() => {
    window.__sent = {};
    const box = document.querySelector('.thread .composer-input');
    box.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' && !ev.shiftKey) {
            window.__sent[box.value] = performance.timeOrigin + performance.now();
        }
    }, {capture: true});
}"""


def _ms(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return (
        f"median {statistics.median(values):.1f} ms, p95 {p95:.1f} ms, "
        f"min {values[0]:.1f} ms, max {values[-1]:.1f} ms (n={len(values)})"
    )


def _people(server: str) -> dict[str, ApiPerson]:
    me = ApiPerson(server, new_handle("maya"), "Maya Chen")
    me.settings(open_dms=True)
    cast = {
        "jonas": (
            "Jonas Berg",
            [
                ("them", "Hey Maya! Are we still on for the design review tomorrow?"),
                ("me", "Yes! 10:30 in the big room."),
                ("me", "I'll bring the printed mockups."),
                ("them", "Perfect. Can you also send me the link to the prototype?"),
                ("me", "Sure, here it is: https://example.com/proto/v3"),
                ("them", "Thanks 🙌"),
            ],
        ),
        "priya": (
            "Priya Natarajan",
            [("me", "Did the deploy go out?"), ("them", "It did, all green ✅")],
        ),
        "sam": ("Sam Okafor", [("them", "Lunch on Friday?")]),
        "lena": ("Lena Fischer", [("me", "Happy birthday Lena! 🎂"), ("them", "Aww thank you!")]),
        "acme": (
            "Acme Support",
            [
                ("me", "My order hasn't arrived yet"),
                ("them", "Sorry about that! Could you share your order number?"),
            ],
        ),
    }
    people = {"me": me}
    for key, (name, lines) in cast.items():
        p = ApiPerson(server, new_handle(key), name)
        p.follow(me.handle)
        me.follow(p.handle)
        people[key] = p
        for who, text in lines:
            if who == "me":
                me.send(p.handle, text)
            else:
                p.send(me.handle, text)
    # A stranger's first message waits in Requests.
    stranger = ApiPerson(server, new_handle("riley"), "Riley Quinn")
    stranger.send(me.handle, "Hi! I loved your talk, could I ask you a question?")
    people["stranger"] = stranger
    # Someone Maya can't write to yet, for the New message check.
    people["closed"] = ApiPerson(server, new_handle("noor"), "Noor Haddad")
    return people


def test_screenshots_first_paint_and_delivery(new_page, server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    people = _people(server)
    me, jonas = people["me"], people["jonas"]

    page = new_page(viewport=DESKTOP)
    sign_in(page, me.handle)
    wait_inbox(page)
    expect(page.locator(f'.conv[data-handle="{people["sam"].handle}"] .badge')).to_have_text("1")
    expect(page.locator("#tab-requests .badge")).to_have_text("1")

    # First paint and time-to-inbox, measured on fresh loads of a signed-in page.
    fcp, ready = [], []
    for _ in range(5):
        page.reload()
        wait_inbox(page)
        t = page.evaluate(
            """() => ({
                fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,
                ready: (performance.getEntriesByName('dmhub:inbox-ready')[0] || {}).startTime,
            })"""
        )
        fcp.append(t["fcp"])
        ready.append(t["ready"])
    print(f"\n[dmhub browser] first contentful paint of the inbox page: {_ms(fcp)}")
    print(f"[dmhub browser] inbox list visible (conversations loaded and drawn): {_ms(ready)}")

    page.mouse.move(0, 0)
    page.screenshot(path=str(SHOTS / "inbox.png"))

    # Conversation with Jonas, who reads along in another browser and types.
    jp = new_page(viewport=DESKTOP)
    sign_in(jp, jonas.handle)
    open_conversation(jp, me.handle)
    open_conversation(page, jonas.handle)
    expect(message(page, "Sure, here it is")).to_have_attribute("data-status", "seen")
    jp.get_by_label(f"Message @{me.handle}", exact=True).press_sequentially("See you", delay=30)
    expect(page.locator(".typing-line")).to_contain_text("is typing")
    page.mouse.move(0, 0)
    page.screenshot(path=str(SHOTS / "conversation.png"))

    # New message check: someone who doesn't follow Maya and has DMs closed.
    closed = people["closed"]
    page.goto(f"/#/new/{closed.handle}")
    expect(page.locator(".verdict")).to_have_attribute("data-can-message", "false")
    page.get_by_label("Message", exact=True).fill("Hi Noor, do you have a minute?")
    page.mouse.move(0, 0)
    page.screenshot(path=str(SHOTS / "new-message.png"))

    # Delivery time: Enter in Maya's page -> text in Lena's DOM.
    lena = people["lena"]
    lp = new_page(viewport=DESKTOP)
    sign_in(lp, lena.handle)
    open_conversation(lp, me.handle)
    open_conversation(page, lena.handle)
    lp.evaluate(WATCH_ARRIVALS)
    page.evaluate(WATCH_ENTER)
    box = page.get_by_label(f"Message @{lena.handle}", exact=True)
    delivery = []
    for i in range(20):
        text = f"timing probe {i:02d}"
        box.fill(text)
        box.press("Enter")
        expect(message(lp, text)).to_be_attached()
        sent = page.evaluate("t => window.__sent[t]", text)
        got = lp.evaluate("t => window.__arrivals[t]", text)
        delivery.append(got - sent)
    label = "on-screen delivery, Enter in one browser -> text in the other"
    print(f"[dmhub browser] {label}: {_ms(delivery)}")

    for name in ("inbox.png", "conversation.png", "new-message.png"):
        assert (SHOTS / name).stat().st_size > 10_000
