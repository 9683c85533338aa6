"""The page trims and counts a message exactly as the server does (issue 8).

String.prototype.trim keeps zero-width spaces and drops what Python's
str.strip keeps, so `"\ufeff" + 10,000 characters` once passed the page's
counter and failed on the server. Both now follow one definition
(chat/protocol/validation.py, web/js/format.js), checked here side by side.
"""

from __future__ import annotations

import pytest

from chat.protocol import validation

pytestmark = pytest.mark.timeout(60)

SAMPLES = [
    "\ufeff" + "x" * 10_000,
    " \u200b hi \u2060\n",
    "\u3164\u115f a \u2800",
    "\u202eevil\u202c",
    "\x1c\x85 mixed \u00a0\u3000",
    "\u2764\ufe0f",
    "\ufe0f",
    "\u200d\U0001f468\u200d\U0001f469",
    "   ",
    "plain",
    "\U0001f600" * 3,
]


def server_view(text: str) -> list[object]:
    trimmed = validation.trim(text)
    return [trimmed, len(trimmed), validation.is_blank(trimmed)]


def test_the_page_trims_and_counts_as_the_server_does(new_page, server):
    page = new_page()
    page.goto("/healthz")
    seen = page.evaluate(
        """async (samples) => {
            const f = await import('/static/js/format.js');
            return samples.map((s) => [f.trimText(s), f.textLength(s), f.isBlank(s)]);
        }""",
        SAMPLES,
    )
    assert seen == [server_view(s) for s in SAMPLES]
    # The counter's verdict: over the limit on the page as on the server.
    assert seen[0][1] == validation.MAX_TEXT
    over = page.evaluate(
        "async (s) => (await import('/static/js/format.js')).textLength(s)",
        "\ufeff" + "x" * 10_001,
    )
    assert over > validation.MAX_TEXT
