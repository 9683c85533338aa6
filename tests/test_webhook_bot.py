"""The sample bot of docs/webhooks.md, run exactly as written there."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from chat.config import Settings
from tests.support import ROOT, free_port, new_user, running_server, settings_for
from tests.test_webhooks import FAST

REPLY = "Thanks, we got your message"


def bot_source() -> str:
    doc = (ROOT / "docs" / "webhooks.md").read_text()
    blocks = re.findall(r"```python\n(# bot\.py\n.*?)```", doc, re.S)
    assert len(blocks) == 1, "docs/webhooks.md has one ```python block starting '# bot.py'"
    return blocks[0]


async def test_the_documented_bot_answers_a_customer(redis_url: str, tmp_path: Path) -> None:
    script = tmp_path / "bot.py"
    script.write_text(bot_source())
    settings: Settings = settings_for(redis_url, tmp_path, webhooks=FAST)
    async with running_server(settings) as server:
        shop = await new_user(server.url, kind="business", open_dms=True)
        customer = await new_user(server.url)
        assert shop.user and customer.user and shop.token
        port = free_port()
        bot = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "DMHUB_URL": server.url,
                "DMHUB_TOKEN": shop.token,
                "PUBLIC_URL": f"http://127.0.0.1:{port}/dmhub",
                "PORT": str(port),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            assert bot.stdout is not None
            async with asyncio.timeout(20):
                line = await bot.stdout.readline()
            assert b"bot listening" in line, line
            hooks = await shop.request("GET", "/api/webhooks")
            assert len(hooks["webhooks"]) == 1

            sent = await customer.post_message(shop.user["handle"], "Where is my order?")
            async with asyncio.timeout(10):
                while True:
                    history = await customer.messages(shop.user["handle"])
                    replies = [m for m in history["messages"] if m["from"] != sent["from"]]
                    if replies:
                        break
                    await asyncio.sleep(0.05)
            assert [m["text"] for m in replies] == [REPLY]
            assert replies[0]["client_id"] == f"thanks-{sent['id']}"
            # Its own reply comes back to it through the webhook, and it lets it be.
            await asyncio.sleep(0.3)
            history = await customer.messages(shop.user["handle"])
            assert [m["text"] for m in history["messages"]] == ["Where is my order?", REPLY]
        finally:
            if bot.returncode is None:
                bot.send_signal(signal.SIGINT)  # the bot deletes its webhook on the way out
                async with asyncio.timeout(10):
                    await bot.wait()
        assert (await shop.request("GET", "/api/webhooks")) == {"webhooks": []}
