"""Team events and webhooks: the business's webhook may ask for its team's
events (status, assignee, notes); the customer's webhook never carries a note
or the name of the agent who answered."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat.config import Settings
from tests.support import RunningServer, new_user, settings_for
from tests.test_webhooks import FAST, create
from tests.webhook_receiver import receiver


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return settings_for(redis_url, tmp_path, webhooks=FAST)


async def test_team_events_reach_the_business_webhook_and_never_the_customer_s(
    server: RunningServer,
) -> None:
    shop = await new_user(server.url, open_dms=True, kind="business")
    ann = await new_user(server.url)
    customer = await new_user(server.url)
    assert shop.user and ann.user and customer.user
    b, c, a = shop.user["handle"], customer.user["handle"], ann.user["handle"]
    await shop.request("PUT", f"/api/team/{a}")
    async with receiver() as business_hook, receiver() as customer_hook, receiver() as plain:
        await create(shop, business_hook.url, events=["message", "conversation", "note"])
        await create(shop, plain.url)  # the default: message and read only
        await create(customer, customer_hook.url)
        await customer.post_message(b, "where is my parcel?")
        await ann.request("POST", f"/api/conversations/{c}/notes", {"text": "secret"}, **{"as": b})
        await ann.request("PATCH", f"/api/conversations/{c}", {"status": "pending"}, **{"as": b})
        await ann.request(
            "POST", f"/api/conversations/{c}/messages", {"text": "on its way"}, **{"as": b}
        )
        await business_hook.wait_for(lambda: len(business_hook.delivered) >= 4)
        await customer_hook.wait_for(lambda: len(customer_hook.delivered) >= 2)
        await plain.wait_for(lambda: len(plain.delivered) >= 2)
    kinds = [d.json["type"] for d in business_hook.delivered]
    assert kinds == ["message", "note", "conversation", "message"]
    assert business_hook.delivered[1].json["event"]["note"]["text"] == "secret"
    assert business_hook.delivered[3].json["event"]["message"]["agent"] == a
    assert [d.json["type"] for d in plain.delivered] == ["message", "message"]
    # The customer's webhook: messages only, and no trace of the agent or the note.
    assert [d.json["type"] for d in customer_hook.delivered] == ["message", "message"]
    for delivery in customer_hook.delivered:
        assert b"agent" not in delivery.body and b"secret" not in delivery.body
