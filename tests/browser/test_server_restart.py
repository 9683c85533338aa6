"""The page rides out a restart of the server: it reconnects by itself, resumes
from its cursor, and sends what was written meanwhile, exactly once."""

from __future__ import annotations

import re

import pytest
from browser_helpers import friends, message, open_conversation, send_ui, sign_in
from playwright.sync_api import expect

from tests.support import DmhubProcess

pytestmark = pytest.mark.timeout(150)


def test_page_reconnects_after_server_restart(new_page, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    srv = DmhubProcess({"DMHUB_DATA_DIR": str(data), "REDIS_URL": ""}).start()
    try:
        a, b = friends(srv.url)
        pa = new_page(base_url=srv.url)
        sign_in(pa, a.handle)
        open_conversation(pa, b.handle)
        send_ui(pa, b.handle, "before the restart")
        expect(message(pa, "before the restart")).to_have_attribute("data-status", "sent")

        srv.terminate()
        expect(pa.locator("#offline-banner")).to_be_visible(timeout=20_000)
        send_ui(pa, b.handle, "written while the server was down")
        expect(message(pa, "written while the server was down")).to_have_attribute(
            "data-status", "sending"
        )

        srv.start()
        b.send(a.handle, "hello again after the restart")
        expect(message(pa, "written while the server was down")).to_have_attribute(
            "data-status", re.compile("sent|seen"), timeout=40_000
        )
        expect(message(pa, "hello again after the restart")).to_have_count(1)
        expect(pa.locator("#offline-banner")).to_be_hidden()
        texts = [m["text"] for m in b.history(a.handle)]
        assert texts.count("written while the server was down") == 1
        assert texts.count("before the restart") == 1
    finally:
        srv.terminate()
