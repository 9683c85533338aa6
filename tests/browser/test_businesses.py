"""Businesses in Chromium: the front door from sign-up to a customer's message.

A business signs up, sets its greeting and quick replies, opens its DMs and
makes a Message button on /buttons. The snippet is pasted into a page of
another origin, served by the test under a strict CSP (scripts only from
dmhub, no inline styles); a signed-out customer clicks the button, signs up,
sends the prefilled text, and the business sees it with its `ref`. Also: the
welcome's quick replies and those on a business's message, the generator's
errors next to their fields, and button.js on a hostile host page.

Writes docs/screenshots/{business-settings,button-generator,button-on-host-page,
welcome-quick-replies,came-from}.png and prints button.js's size and render
time (run with -s to see them).
"""

from __future__ import annotations

import contextlib
import gzip
import re
import statistics
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from browser_helpers import PASSWORD, ApiPerson, message, new_handle, sign_in, sign_up, signed_in
from playwright.sync_api import Page, expect

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
REPLIES = [
    {"label": "Track my order", "metadata": "intent:track"},
    {"label": "Talk to a person", "metadata": "intent:human"},
]

pytestmark = pytest.mark.timeout(180)


class HostSite:
    """A website of another origin (another port) that pastes the snippet.

    Its CSP lets scripts come only from dmhub and allows no inline style at
    all: the button must render, styled, under it.
    """

    def __init__(self, dmhub: str) -> None:
        self.dmhub = dmhub
        self.pages: dict[str, str] = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/site.css":
                    body, kind = SITE_CSS.encode(), "text/css"
                elif path in site.pages:
                    body, kind = site.pages[path].encode(), "text/html; charset=utf-8"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Security-Policy", site.csp)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def csp(self) -> str:
        return (
            f"default-src 'none'; script-src {self.dmhub}; style-src 'self'; "
            "img-src 'self'; base-uri 'none'; form-action 'none'"
        )

    def page(self, path: str, body: str, title: str = "Spoke & Chain Bikes") -> str:
        self.pages[path] = (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            '<link rel="stylesheet" href="/site.css"></head><body>'
            f"{body}</body></html>"
        )
        return self.url + path


# A host stylesheet that would wreck an unprotected button.
SITE_CSS = """
body { font: 18px/1.6 Georgia, serif; margin: 40px; text-transform: uppercase; color: #333; }
a { color: hotpink; text-decoration: underline wavy; font-size: 30px; }
span, button { border: 3px dashed red; }
.pricing { max-width: 640px; padding: 24px; border: 1px solid #ddd; border-radius: 12px; }
"""


@pytest.fixture
def host_site(server: str) -> Iterator[HostSite]:
    site = HostSite(server)
    site.thread.start()
    try:
        yield site
    finally:
        site.httpd.shutdown()
        site.httpd.server_close()


def sign_up_business(page: Page, handle: str, name: str) -> None:
    page.goto("/")
    page.get_by_role("button", name="Create an account").click()
    page.get_by_label("Handle").fill(handle)
    page.get_by_label("Display name (optional)").fill(name)
    page.get_by_label("Business", exact=False).check()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    signed_in(page)


def open_settings(page: Page, handle: str) -> None:
    page.get_by_role("button", name=f"Settings for @{handle}").click()
    expect(page.get_by_role("dialog")).to_be_visible()


# The link as button.js makes it a button, inside its host's shadow root.
BTN = "a[part=button]"


def shadow_button(page: Page) -> object:
    """The visible button inside the first dmhub-button's shadow root."""
    return page.locator("dmhub-button").first.locator(BTN)


def snippet_from_generator(page: Page) -> str:
    expect(page.locator("#gen-copy")).to_be_enabled()
    return str(page.locator("#gen-snippet").text_content())


# Run before any page script; DevTools-injected, so the host's CSP does not
# apply. Records when the first button host lands in the page (button.js
# attaches and fills the shadow root before inserting it).
TIME_RENDER = """(() => {
    window.__globalsBefore = Object.keys(window);
    new MutationObserver((records, observer) => {
        for (const r of records) for (const n of r.addedNodes) {
            if (n.nodeName === 'DMHUB-BUTTON' && !window.__rendered) {
                window.__rendered = performance.now();
                observer.disconnect();
            }
        }
    }).observe(document, {childList: true, subtree: true});
})()"""


def test_business_front_door_from_sign_up_to_a_customer_message(
    new_page: Callable[..., Page], server: str, host_site: HostSite
) -> None:
    shop = new_handle("bikes")
    pb = new_page(permissions=["clipboard-read", "clipboard-write"])

    # 1. The business signs up as a business and sets itself up in Settings.
    sign_up_business(pb, shop, "Spoke & Chain Bikes")
    open_settings(pb, shop)
    dialog = pb.get_by_role("dialog")
    expect(dialog.locator(".person-name .tag")).to_have_text("Business")
    dialog.get_by_role("switch", name="Receive messages from anyone").check()
    expect(dialog.locator(".dialog-status")).to_have_text("Saved.")
    expect(dialog.get_by_text("wait in Requests")).to_be_visible()
    dialog.get_by_label("Greeting", exact=True).fill("Hi! Ask us about repairs, orders or rentals.")
    dialog.get_by_role("button", name="Save greeting").click()
    expect(dialog.locator(".dialog-status")).to_have_text("Greeting saved.")
    for i, reply in enumerate(REPLIES, start=1):
        dialog.get_by_role("button", name="Add a quick reply").click()
        dialog.get_by_label(f"Quick reply {i} label").fill(reply["label"])
        dialog.get_by_label(f"Quick reply {i} metadata").fill(reply["metadata"])
    dialog.get_by_role("button", name="Save quick replies").click()
    expect(dialog.locator(".dialog-status")).to_have_text("Quick replies saved.")
    dialog.screenshot(path=str(SHOTS / "business-settings.png"))

    # 2. From Settings to the generator; the handle is already there.
    dialog.get_by_role("link", name="Make a Message button").click()
    expect(pb).to_have_url(f"{server}/buttons")
    expect(pb.get_by_label("Your handle")).to_have_value(shop)
    prefill = "Hi! I have a question about the Pro plan."
    pb.get_by_label("Prefilled message (optional)").fill(prefill)
    pb.get_by_label("Where the button is (optional)").fill("pricing-page")
    expect(pb.locator("#gen-snippet")).to_contain_text("ref=pricing-page")
    expect(pb.locator(f"#gen-preview dmhub-button {BTN}")).to_have_text(f"Message @{shop}")
    pb.screenshot(path=str(SHOTS / "button-generator.png"), full_page=True)
    pb.get_by_role("button", name="Copy snippet").click()
    expect(pb.locator("#gen-status")).to_have_text("Copied.")
    snippet = str(pb.evaluate("navigator.clipboard.readText()"))
    assert snippet == snippet_from_generator(pb)
    assert snippet.count("\n") == 1 and 'class="dmhub-message-button"' in snippet

    # 3. Pasted into a page of another origin with a strict CSP.
    page_url = host_site.page(
        "/pricing",
        f'<main class="pricing"><h1>Pro plan</h1><p>Questions before you buy?</p>'
        f'{snippet}<p><a href="#faq">Read the FAQ</a></p></main>',
    )
    pc = new_page()
    pc.add_init_script(TIME_RENDER)
    pc.goto(page_url)
    button = shadow_button(pc)
    expect(button).to_have_text(f"Message @{shop}")
    # One element whichever way a test or a tool looks for it.
    expect(pc.locator("a.dmhub-message-button")).to_have_count(1)
    expect(pc.locator("a.dmhub-message-button")).to_be_visible()
    expect(pc.get_by_text(f"Message @{shop}")).to_be_visible()
    expect(pc.get_by_role("link", name=f"Message @{shop}")).to_be_visible()
    # Styled by its own sheet despite the CSP and the host's rules.
    style = pc.evaluate(
        """() => { const a = document.querySelector('dmhub-button').shadowRoot.querySelector('a');
                   const s = getComputedStyle(a);
                   return [s.backgroundColor, s.textTransform, s.fontSize, s.borderStyle]; }"""
    )
    assert style == ["rgb(11, 99, 206)", "none", "15px", "none"], style
    new_globals = pc.evaluate(
        "Object.keys(window).filter((k) => !window.__globalsBefore.includes(k)"
        " && !k.startsWith('__'))"
    )
    assert new_globals == ["dmhub"], new_globals
    # Keyboard: the first Tab stop of the page, with its label as its name.
    pc.locator("body").focus()
    pc.keyboard.press("Tab")
    expect(button).to_be_focused()
    expect(button).to_have_accessible_name(f"Message @{shop}")
    expect(button).to_have_attribute("href", re.compile(r"/messages/compose\?recipient="))
    pc.screenshot(path=str(SHOTS / "button-on-host-page.png"))
    timing = pc.evaluate(
        """() => { const r = performance.getEntriesByType('resource')
                     .find((e) => e.name.includes('/button.js'));
                   return {rendered: window.__rendered, scriptEnd: r.responseEnd}; }"""
    )
    print(
        f"\nbutton on a host page: on screen {timing['rendered']:.1f} ms after navigation start,"
        f" {timing['rendered'] - timing['scriptEnd']:.1f} ms after button.js arrived"
    )

    # 4. The customer clicks (Enter), signs up, and lands on the prefilled message.
    pc.keyboard.press("Enter")
    customer_page = pc
    expect(customer_page).to_have_url(re.compile(r"/messages/compose\?recipient="))
    expect(customer_page.locator(".auth-note")).to_contain_text(f"@{shop}")
    customer = new_handle("cust")
    sign_up(customer_page, customer, goto=None)
    expect(customer_page.get_by_label("To", exact=True)).to_have_value(shop)
    box = customer_page.get_by_label("Message", exact=True)
    expect(box).to_have_value(prefill)
    expect(customer_page.locator(".person-card .greeting-text")).to_have_text(
        "Hi! Ask us about repairs, orders or rentals."
    )
    expect(customer_page.locator(".person-card .qr-chip")).to_have_count(2)
    box.press("Enter")
    expect(customer_page).to_have_url(re.compile(rf"/#/c/{shop}$"))
    expect(message(customer_page, prefill)).to_have_attribute("data-status", "sent")

    # 5. The business sees the message live, and where it came from.
    pb.goto("/#/requests")  # it came in only because DMs are open
    row = pb.locator(f'.conv[data-handle="{customer}"]')
    expect(row).to_be_visible()
    row.click()
    expect(message(pb, prefill)).to_be_visible()
    expect(message(pb, prefill).locator(".came-from")).to_have_text("came from: pricing-page")
    pb.locator(".thread").screenshot(path=str(SHOTS / "came-from.png"))


def test_welcome_quick_replies_and_replies_on_a_message(
    new_page: Callable[..., Page], server: str
) -> None:
    shop = ApiPerson(server, new_handle("shop"), "Spoke & Chain Bikes", kind="business")
    shop.settings(open_dms=True, greeting="Hi! How can we help today?", quick_replies=REPLIES)
    fan = ApiPerson(server, new_handle("fan"), "Robin")
    page = new_page()
    sign_in(page, fan.handle)
    page.goto(f"/#/c/{shop.handle}")
    welcome = page.locator(".greeting")
    expect(welcome.locator(".greeting-text")).to_have_text("Hi! How can we help today?")
    chips = welcome.get_by_role("group", name="Quick replies").get_by_role("button")
    expect(chips).to_have_text([r["label"] for r in REPLIES])
    page.locator(".thread").screenshot(path=str(SHOTS / "welcome-quick-replies.png"))
    # The profile shows the badge and the greeting too.
    page.get_by_role("button", name="Profile and actions").click()
    profile = page.get_by_role("dialog")
    expect(profile.locator(".person-name .tag")).to_have_text("Business")
    expect(profile.locator(".greeting-text")).to_have_text("Hi! How can we help today?")
    profile.get_by_role("button", name="Close").click()

    chips.filter(has_text="Track my order").click()
    expect(message(page, "Track my order")).to_have_attribute("data-status", "sent")
    expect(welcome).to_be_hidden()  # a welcome is for a conversation not started yet
    sent = shop.history(fan.handle)
    assert [(m["text"], m.get("quick_reply")) for m in sent] == [("Track my order", "intent:track")]

    # The business (or its bot) offers choices on a message; they show under it.
    offer = [{"label": "Yes, book it", "metadata": "book:yes"},
             {"label": "No thanks", "metadata": "book:no"}]  # fmt: skip
    r = shop.client.post(
        f"/api/conversations/{fan.handle}/messages",
        json={"text": "Shall we book a repair for Friday?", "quick_replies": offer},
    )
    assert r.status_code == 201, r.text
    asked = message(page, "Shall we book a repair for Friday?")
    expect(asked.locator(".qr-chip")).to_have_text(["Yes, book it", "No thanks"])
    asked.get_by_role("button", name="Yes, book it").click()
    expect(message(page, "Yes, book it")).to_have_attribute("data-status", "sent")
    expect(asked.locator(".qr-chip")).to_have_count(0)  # answered: the choices go
    last = shop.history(fan.handle)[-1]
    assert (last["text"], last["quick_reply"]) == ("Yes, book it", "book:yes")


def test_generator_shows_each_error_next_to_its_field(
    new_page: Callable[..., Page], server: str
) -> None:
    closed = ApiPerson(server, new_handle("closed"), "Closed Shop", kind="business")
    other = ApiPerson(server, new_handle("other"), "Other Shop", kind="business")
    page = new_page()
    sign_in(page, closed.handle)
    page.goto("/buttons")
    handle_error = page.locator("#gen-handle-err")

    # Own account, DMs closed: the fix is one click away.
    expect(page.get_by_label("Your handle")).to_have_value(closed.handle)
    expect(handle_error).to_contain_text("Open its DMs first")
    expect(page.get_by_label("Your handle")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#gen-copy")).to_be_disabled()
    page.get_by_role("button", name="Open my DMs").click()
    expect(handle_error).to_be_empty()
    expect(page.locator("#gen-copy")).to_be_enabled()
    assert closed.settings()["user"]["open_dms"] is True

    # Someone else's closed DMs: the same error, no button.
    page.get_by_label("Your handle").fill(other.handle)
    expect(handle_error).to_contain_text("Open its DMs first")
    expect(handle_error.get_by_role("button")).to_have_count(0)

    page.get_by_label("Your handle").fill("nobody_" + new_handle("x")[:7])
    expect(handle_error).to_contain_text("There is no account")

    page.get_by_label("Your handle").fill(closed.handle)
    expect(handle_error).to_be_empty()
    page.get_by_label("Prefilled message (optional)").fill("x" * 10_001)
    expect(page.locator("#gen-text-err")).to_contain_text("at most 10,000 characters")
    expect(handle_error).to_be_empty()
    expect(page.locator("#gen-preview dmhub-button")).to_have_count(0)

    page.get_by_label("Prefilled message (optional)").fill("hello")
    page.get_by_label("Where the button is (optional)").fill("not a ref!")
    expect(page.locator("#gen-ref-err")).to_contain_text("ref is 1 to 64")
    expect(page.locator("#gen-text-err")).to_be_empty()
    page.get_by_label("Where the button is (optional)").fill("footer")
    expect(page.locator("#gen-snippet")).to_contain_text("ref=footer")
    page.get_by_label("Small").check()
    expect(page.locator("#gen-snippet")).to_contain_text('data-size="small"')

    # The error's Settings link opens Settings over the inbox.
    page.goto("/#/settings")
    expect(page.get_by_role("dialog")).to_contain_text("Greeting")
    expect(page).to_have_url(re.compile(r"/#/$"))


def test_button_script_on_a_busy_host_page(
    new_page: Callable[..., Page], server: str, host_site: HostSite
) -> None:
    shop = ApiPerson(server, new_handle("shop"), kind="business")
    shop.settings(open_dms=True)
    compose = f"{server}/messages/compose?recipient={shop.handle}&text={quote('Hi there')}"
    script = f'<script async src="{server}/button.js"></script>'
    url = host_site.page(
        "/many",
        f'<p><a class="dmhub-message-button" href="{compose}" data-size="small" target="_blank">'
        "Chat with us</a></p>"
        f'<p><a class="dmhub-message-button" href="{compose}" data-theme="dark"></a></p>'
        f'<p><a class="dmhub-message-button" href="{server}/messages/compose?recipient=no%20such!">'
        "</a></p>"
        f'<p><a class="dmhub-message-button" href="{server}/messages/compose"></a></p>'
        f'<div id="later"></div>{script}{script}',
    )
    page = new_page()
    page.goto(url)
    hosts = page.locator("dmhub-button")
    expect(hosts).to_have_count(4)  # the script twice still makes one button per link
    expect(hosts.nth(0).locator(BTN)).to_have_text("Chat with us")
    expect(hosts.nth(0).locator(BTN)).to_have_attribute("target", "_blank")
    expect(hosts.nth(0).locator(BTN)).to_have_attribute("rel", "noopener")
    expect(hosts.nth(1).locator(BTN)).not_to_have_attribute("target", "_blank")
    expect(hosts.nth(1).locator(BTN)).to_have_text(f"Message @{shop.handle}")
    expect(hosts.nth(2).locator(BTN)).to_have_text("Message @no such!")
    expect(hosts.nth(3).locator(BTN)).to_have_text("Message")
    heights = [hosts.nth(i).locator(BTN).bounding_box()["height"] for i in range(2)]
    assert heights == [30, 40], heights
    dark_bg = page.evaluate(
        "getComputedStyle(document.querySelectorAll('dmhub-button')[1]"
        ".shadowRoot.querySelector('a')).backgroundColor"
    )
    assert dark_bg == "rgb(239, 243, 244)"
    # Added later: the mutation observer renders it; render() is safe to call again.
    page.evaluate(
        f"""() => {{ const a = document.createElement('a');
                 a.className = 'dmhub-message-button'; a.href = {compose!r};
                 document.getElementById('later').append(a);
                 window.dmhub.render(); window.dmhub.render(); }}"""
    )
    expect(hosts).to_have_count(5)
    expect(page.locator(f"#later dmhub-button {BTN}")).to_have_text(f"Message @{shop.handle}")
    # A wrong handle still opens its link; the chat page says what is wrong.
    hosts.nth(2).locator(BTN).click()
    expect(page).to_have_url(re.compile(r"/messages/compose\?recipient=no%20such!"))

    # Without the script the plain link still works.
    plain = host_site.page(
        "/plain", f'<a class="dmhub-message-button" href="{compose}">Message</a>'
    )
    page.goto(plain)
    expect(page.locator("dmhub-button")).to_have_count(0)
    page.get_by_role("link", name="Message").click()
    expect(page).to_have_url(re.compile(rf"/messages/compose\?recipient={shop.handle}"))


def test_button_script_size_and_render_time(
    new_page: Callable[..., Page], server: str, host_site: HostSite
) -> None:
    """Not a pass/fail on speed (that is for benchmarks): it reports the figures."""
    body = httpx.get(f"{server}/button.js").content
    gzipped = len(gzip.compress(body, 9))
    assert len(body) < 8192 and gzipped < 3072
    shop = ApiPerson(server, new_handle("shop"), kind="business")
    compose = f"{server}/messages/compose?recipient={shop.handle}"
    links = "".join(
        f'<p><a class="dmhub-message-button" href="{compose}&amp;ref=p{i}"></a></p>'
        for i in range(20)
    )
    url = host_site.page("/timing", f'{links}<script async src="{server}/button.js"></script>')
    page = new_page()
    firsts, runs, per_render = [], [], []
    page.add_init_script(TIME_RENDER)
    # When button.js defines its namespace, just before its first render().
    page.add_init_script(
        """(() => { let value;
            Object.defineProperty(window, 'dmhub', {configurable: true, enumerable: true,
              get: () => value, set: (v) => { window.__started = performance.now(); value = v; }});
        })()"""
    )
    for _ in range(5):
        page.goto(url)
        expect(page.locator("dmhub-button")).to_have_count(20)
        firsts.append(
            page.evaluate(
                "window.__rendered - performance.getEntriesByType('resource')"
                ".find((e) => e.name.includes('/button.js')).responseEnd"
            )
        )
        runs.append(page.evaluate("window.__rendered - window.__started"))
        per_render.append(
            page.evaluate(
                """() => { const box = document.createElement('div'); document.body.append(box);
                     for (let i = 0; i < 100; i++) { const a = document.createElement('a');
                       a.className = 'dmhub-message-button';
                       a.href = '/messages/compose?recipient=x';
                       box.append(a); }
                     const t = performance.now(); window.dmhub.render(box);
                     const spent = performance.now() - t; box.getBoundingClientRect();
                     return spent / 100; }"""
            )
        )
    print(
        f"\nbutton.js: {len(body)} bytes, {gzipped} gzipped (-9);"
        f" 20 buttons on screen {statistics.median(firsts):.1f} ms (median of 5) after the"
        f" script arrived, of which the script's own first render {statistics.median(runs):.1f}"
        f" ms; render() {statistics.median(per_render) * 1000:.0f} µs per button"
    )
    with contextlib.suppress(Exception):
        page.close()
