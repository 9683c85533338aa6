"""Faults around one dmhub: Valkey crashing under it, pub/sub dropping, SIGTERM, slow readers.

Every fault is real: valkey-server gets SIGKILL, dmhub gets SIGTERM, a client's
TCP receive window really fills up. Waits poll a condition until a deadline.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from chat import metrics
from chat.client import Client, ClientError
from chat.hub import actions
from chat.store import keys
from chat.store.embedded import EmbeddedValkey
from tests.faults import (
    eventually,
    history,
    messages_until,
    next_message,
    open_raw,
    raw_post,
    recv_json,
    recv_reply,
    recv_until_closed,
    tcp_socket_with_small_buffer,
)
from tests.support import DmhubProcess, new_user, running_server, settings_for


def ids(items: list[dict[str, Any]]) -> list[str]:
    """Message ids of messages or of `message` frames."""
    return [item["message"]["id"] if "message" in item else item["id"] for item in items]


async def ready(url: str) -> bool:
    async with httpx.AsyncClient(timeout=2) as http:
        return (await http.get(url + "/readyz")).status_code == 200


def send_frame(to: str, text: str, client_id: str) -> str:
    return json.dumps({"type": "send", "to": to, "text": text, "client_id": client_id})


# -- Valkey SIGKILL and restart under a running server --------------------------------


@pytest.mark.timeout(45)
@pytest.mark.parametrize("catch_up", ["live", "by_resync"])
async def test_valkey_crash_keeps_acked_messages_and_server_recovers_by_itself(
    own_valkey: EmbeddedValkey, tmp_path: Path, catch_up: str
) -> None:
    """Valkey gets SIGKILL with sockets open, then comes back on the same data dir.

    After the restart the retries are sent either once the hub has subscribed
    again (`live`: the open sockets get them through pub/sub), or while the hub
    cannot subscribe yet (`by_resync`: SSUBSCRIBE is denied by an ACL until the
    retries are stored, so the open sockets can only get them through the hub's
    resync after pub/sub reconnects). Either way: once each, in order."""
    async with running_server(settings_for(own_valkey.url, tmp_path)) as srv:
        alice = await new_user(srv.url)
        bob = await new_user(srv.url)
        assert alice.user and bob.user and alice.token
        a_h, b_h = alice.user["handle"], bob.user["handle"]
        await bob.follow(a_h)

        async with alice.socket() as alice_other, bob.socket() as bob_sock:
            sender, _ = await open_raw(srv.url, alice.token)

            acked: list[dict[str, Any]] = []
            for i in range(30):
                await sender.send(send_frame(b_h, f"before {i}", f"pre-{i}"))
                frame = await recv_reply(sender)
                assert frame["type"] == "ack" and frame["client_id"] == f"pre-{i}", frame
                acked.append(frame["message"])
            for i in range(5):
                acked.append(await alice.post_message(b_h, f"http before {i}", f"hpre-{i}"))
            assert ids(await messages_until(bob_sock, acked[-1]["id"])) == ids(acked)
            assert ids(await messages_until(alice_other, acked[-1]["id"])) == ids(acked)

            # Crash Valkey right after the last ack (well inside the everysec window).
            own_valkey.kill()

            # (b) a WebSocket send during the outage: `unavailable`, with its client_id, no ack.
            await sender.send(send_frame(b_h, "during the outage (ws)", "outage-ws"))
            frame = await recv_reply(sender, timeout=15)
            assert frame["type"] == "error", frame
            assert frame["code"] == "unavailable"
            assert frame["client_id"] == "outage-ws"

            # ... and over HTTP: 503 unavailable.
            response = await raw_post(
                srv.url, alice.token, b_h, "during the outage (http)", "outage-http"
            )
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "unavailable"
            async with httpx.AsyncClient(timeout=5) as http:
                assert (await http.get(srv.url + "/readyz")).status_code == 503
                assert (await http.get(srv.url + "/healthz")).status_code == 200

            # A new socket cannot be authenticated meanwhile: 503 unavailable at the handshake.
            with pytest.raises(ClientError) as handshake:
                await bob.socket().connect()
            assert handshake.value.status == 503 and handshake.value.code == "unavailable"

            # The already-open sockets survive the outage.
            assert sender.close_code is None
            assert bob_sock.close_code is None

            own_valkey.start()  # same data dir, same unix socket path, same URL
            admin = aioredis.Redis.from_url(own_valkey.url, decode_responses=True)
            channels = [keys.channel(a_h.lower()), keys.channel(b_h.lower())]

            async def subscribed() -> bool:
                counts = dict(await admin.pubsub_shardnumsub(*channels))
                return all(int(counts[c]) > 0 for c in channels)

            if catch_up == "by_resync":
                await admin.execute_command("ACL", "SETUSER", "default", "-ssubscribe")
                # In case the hub got in first: it cannot come back now.
                await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
                assert not await subscribed()
            await eventually(lambda: ready(srv.url), 20, "/readyz to answer 200 again")
            if catch_up == "live":
                await eventually(subscribed, 15, "the hub to subscribe again")

            # (a) every acked message survived the crash; (b) nothing from the outage was stored.
            assert ids(await history(alice, b_h)) == ids(acked)
            assert [m["text"] for m in await history(bob, a_h)] == [m["text"] for m in acked]

            # (d) retries with the same client_id store exactly one message each.
            await sender.send(send_frame(b_h, "during the outage (ws)", "outage-ws"))
            frame = await recv_reply(sender)
            assert frame["type"] == "ack" and frame["client_id"] == "outage-ws", frame
            retried_ws = frame["message"]
            await sender.send(send_frame(b_h, "during the outage (ws)", "outage-ws"))
            again = await recv_reply(sender)
            assert again["type"] == "ack" and again["message"] == retried_ws, again

            first = await raw_post(
                srv.url, alice.token, b_h, "during the outage (http)", "outage-http"
            )
            assert first.status_code == 201, first.text
            retried_http = first.json()["message"]
            second = await raw_post(
                srv.url, alice.token, b_h, "during the outage (http)", "outage-http"
            )
            assert second.status_code == 200, second.text
            assert second.json()["message"] == retried_http

            stored = await history(alice, b_h)
            assert ids(stored) == [*ids(acked), retried_ws["id"], retried_http["id"]]
            assert [m["client_id"] for m in stored].count("outage-ws") == 1
            assert [m["client_id"] for m in stored].count("outage-http") == 1

            if catch_up == "by_resync":
                assert not await subscribed()
                await admin.execute_command("ACL", "SETUSER", "default", "+ssubscribe")
                await eventually(subscribed, 15, "the hub to subscribe again")
            await admin.aclose()

            # (c) the recipient's socket, open all along, gets both, once each, in order,
            # live or through the resync after pub/sub reconnects; then nothing extra.
            sentinel = await alice.post_message(b_h, "after recovery")
            expected = [retried_ws["id"], retried_http["id"], sentinel["id"]]
            assert ids(await messages_until(bob_sock, sentinel["id"], timeout=20)) == expected
            # The sender's other socket too.
            assert ids(await messages_until(alice_other, sentinel["id"], timeout=20)) == expected

            # One more, now certainly live, proves nothing duplicate was queued behind.
            last = await alice.post_message(b_h, "live again")
            assert (await next_message(bob_sock))["message"]["id"] == last["id"]
            assert (await next_message(alice_other))["message"]["id"] == last["id"]
            await sender.close()
        await alice.aclose()
        await bob.aclose()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("resync", ["by_the_broker", "called_directly"])
async def test_pubsub_loss_resync_delivers_missed_messages_once_and_not_to_the_sender(
    own_valkey: EmbeddedValkey, tmp_path: Path, resync: str
) -> None:
    """Pub/sub drops (and cannot resubscribe) while storage works: sends are acked,
    and once pub/sub is back the hub's resync hands every other socket what it
    missed, once. The sending socket got acks, so it must not get `message`
    copies of its own sends (PROTOCOL.md: the sender's *other* sockets do).

    `by_the_broker` is the real path: the Broker notices its reconnect and calls
    Hub.resync_all itself. `called_directly` calls Hub.resync_all (the Broker's
    on_resubscribed hook) from the test, to check what a resync delivers even
    when the broker never triggers it."""
    admin = aioredis.Redis.from_url(own_valkey.url, decode_responses=True)
    async with running_server(settings_for(own_valkey.url, tmp_path)) as srv:
        alice = await new_user(srv.url)
        bob = await new_user(srv.url)
        assert alice.user and bob.user and alice.token
        a_h, b_h = alice.user["handle"], bob.user["handle"]
        await bob.follow(a_h)
        bob_channel = keys.channel(b_h.lower())

        async def subscribers() -> int:
            return int((await admin.pubsub_shardnumsub(bob_channel))[0][1])

        async with alice.socket() as alice_other, bob.socket() as bob_sock:
            sender, _ = await open_raw(srv.url, alice.token)
            await eventually(lambda: subscribers(), 5, "bob's channel to be subscribed")

            # Pub/sub may not come back until we allow SSUBSCRIBE again.
            await admin.execute_command("ACL", "SETUSER", "default", "-ssubscribe")
            await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            await eventually(
                lambda: _equals(subscribers(), 0), 5, "the pub/sub connection to be gone"
            )

            during: list[dict[str, Any]] = []
            for i in range(3):
                await sender.send(send_frame(b_h, f"while pub/sub is down {i}", f"down-{i}"))
                frame = await recv_json(sender)
                assert frame["type"] == "ack" and frame["client_id"] == f"down-{i}", frame
                during.append(frame["message"])

            await admin.execute_command("ACL", "SETUSER", "default", "+ssubscribe")
            await eventually(lambda: subscribers(), 15, "the hub to subscribe again")
            if resync == "called_directly":
                await srv.app.state.runtime.hub.resync_all()

            sentinel = await alice.post_message(b_h, "after pub/sub is back")
            expected = [*ids(during), sentinel["id"]]
            assert ids(await messages_until(bob_sock, sentinel["id"], timeout=15)) == expected
            assert ids(await messages_until(alice_other, sentinel["id"], timeout=15)) == expected

            # The sending socket: after its three acks, the next `message` frame it
            # sees must be the sentinel (sent over HTTP, so every socket gets it).
            seen: list[dict[str, Any]] = []
            while True:
                frame = await recv_json(sender, timeout=15)
                if frame["type"] == "message":
                    seen.append(frame)
                    if frame["message"]["id"] == sentinel["id"]:
                        break
            assert ids(seen) == [sentinel["id"]], (
                "the sending socket got message frames for its own acked sends"
            )
            await sender.close()
        await alice.aclose()
        await bob.aclose()
    await admin.aclose()


@pytest.mark.timeout(40)
async def test_a_live_message_as_the_resync_begins_does_not_hide_what_was_missed(
    own_valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    """Messages stored while pub/sub was down; pub/sub comes back; one more message
    is stored and dispatched live just as the hub's resync begins (injected from
    inside the resync's first store call, a real call to the real Valkey). The
    socket, open all along, must still get every message once, in order: a live
    event must not move a socket past events that its catch-up has not replayed."""
    admin = aioredis.Redis.from_url(own_valkey.url, decode_responses=True)
    async with running_server(settings_for(own_valkey.url, tmp_path)) as srv:
        rt = srv.app.state.runtime
        hub = rt.hub
        alice = await new_user(srv.url)
        bob = await new_user(srv.url)
        assert alice.user and bob.user and alice.token
        a_h, b_h = alice.user["handle"], bob.user["handle"]
        await bob.follow(a_h)
        bob_channel = keys.channel(b_h.lower())

        async def subscribers() -> int:
            return int((await admin.pubsub_shardnumsub(bob_channel))[0][1])

        injected: list[str] = []
        handed_over = asyncio.Event()
        real_on_message = hub.broker._on_message
        real_live_sessions = rt.store.live_sessions

        bob_payloads: list[str] = []

        def handed(message_id: str) -> bool:
            return any(f'"id":"{message_id}"' in p for p in bob_payloads)

        def on_message(channel: str, payload: str) -> None:
            real_on_message(channel, payload)
            if channel == bob_channel:
                bob_payloads.append(payload)
                # The publish can overtake the reply to the send that made it.
                if injected and handed(injected[0]):
                    handed_over.set()

        async def live_sessions(token_hashes: list[str]) -> set[str]:
            if not injected:
                result = await actions.send_message(
                    rt.store, a_h.lower(), b_h, "sent as the resync begins", None
                )
                injected.append(result.message_id)
                if handed(result.message_id):
                    handed_over.set()
                await asyncio.wait_for(handed_over.wait(), 5)
            result_sessions: set[str] = await real_live_sessions(token_hashes)
            return result_sessions

        hub.broker._on_message = on_message
        rt.store.live_sessions = live_sessions  # type: ignore[method-assign]

        async with bob.socket() as bob_sock:
            await eventually(lambda: subscribers(), 5, "bob's channel to be subscribed")
            await admin.execute_command("ACL", "SETUSER", "default", "-ssubscribe")
            await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            await eventually(lambda: _equals(subscribers(), 0), 5, "pub/sub to be gone")

            missed = [await alice.post_message(b_h, f"missed {i}") for i in range(3)]
            await admin.execute_command("ACL", "SETUSER", "default", "+ssubscribe")
            await eventually(lambda: subscribers(), 15, "the hub to subscribe again")
            await eventually(lambda: injected, 10, "the hub to begin its resync")

            sentinel = await alice.post_message(b_h, "after the resync")
            expected = [*ids(missed), injected[0], sentinel["id"]]
            assert ids(await history(bob, a_h)) == expected
            got = await messages_until(bob_sock, sentinel["id"], timeout=15)
            assert ids(got) == expected
        await alice.aclose()
        await bob.aclose()
    await admin.aclose()


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


# -- SIGTERM: drain with 1012, no ack lost ---------------------------------------------------


@pytest.mark.timeout(50)
async def test_sigterm_closes_every_socket_1012_and_loses_no_ack(
    own_valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    env = {"REDIS_URL": own_valkey.url, "DMHUB_DATA_DIR": str(tmp_path)}
    node = DmhubProcess(env).start()
    restarted: DmhubProcess | None = None
    try:
        alice = await new_user(node.url)
        bob = await new_user(node.url)
        assert alice.user and bob.user and alice.token
        a_h, b_h = alice.user["handle"], bob.user["handle"]
        await bob.follow(a_h)

        observers = [alice.socket(), alice.socket(peer=b_h), bob.socket(), bob.socket()]
        for sock in observers:
            await sock.connect()
        sender, _ = await open_raw(node.url, alice.token)

        # A burst of sends, and SIGTERM while they are in flight.
        count = 40
        for i in range(count):
            await sender.send(send_frame(b_h, f"drain {i}", f"drain-{i}"))
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)

        frames, code = await recv_until_closed(sender, timeout=25)
        assert code == 1012, f"sending socket closed with {code}"
        for sock in observers:
            assert await sock.wait_closed(25) == 1012
        assert await _wait_exit(node) == 0, node.log()

        acks = {f["client_id"]: f["message"] for f in frames if f["type"] == "ack"}
        errors = [f for f in frames if f["type"] == "error"]
        # A send that arrives once the drain began is answered, not dropped:
        # `unavailable`, with its client_id, so the client retries elsewhere.
        assert all(e["code"] == "unavailable" and e["client_id"] for e in errors), errors
        assert not {e["client_id"] for e in errors} & set(acks), "a send both acked and refused"

        restarted = DmhubProcess(env).start()
        again = Client(restarted.url, token=alice.token)
        for i in range(count):
            response = await raw_post(restarted.url, alice.token, b_h, f"drain {i}", f"drain-{i}")
            assert response.status_code in (200, 201), response.text
            message = response.json()["message"]
            if f"drain-{i}" in acks:
                # Acked before the shutdown: the retry is a repeat, with the same message.
                assert response.status_code == 200, response.text
                assert message == acks[f"drain-{i}"]
        stored = await history(again, b_h)
        client_ids = [m["client_id"] for m in stored]
        assert sorted(client_ids) == sorted(f"drain-{i}" for i in range(count))
        await again.aclose()
        await sender.close()
        for sock in observers:
            await sock.close()
        await alice.aclose()
        await bob.aclose()
    finally:
        node.kill()
        if restarted is not None:
            restarted.kill()


async def _wait_exit(node: DmhubProcess, timeout: float = 25) -> int:
    assert node.process is not None
    process = node.process
    await eventually(lambda: process.poll() is not None, timeout, "dmhub to exit")
    return process.returncode


# -- a slow reader ------------------------------------------------------------------------------


@pytest.mark.timeout(45)
async def test_slow_reader_is_closed_1013_and_resumes_from_its_cursor_without_gap(
    redis_url: str, tmp_path: Path
) -> None:
    async with running_server(settings_for(redis_url, tmp_path, socket_queue=8)) as srv:
        alice = await new_user(srv.url)
        bob = await new_user(srv.url)
        carol = await new_user(srv.url)
        assert alice.user and bob.user and carol.user and alice.token and bob.token
        a_h, b_h, c_h = alice.user["handle"], bob.user["handle"], carol.user["handle"]
        await bob.follow(a_h)
        await carol.follow(a_h)
        hub = srv.app.state.runtime.hub

        # Bob's slow device: a 4 KiB receive window, and a client that never reads.
        port = int(srv.url.rsplit(":", 1)[1])
        raw = tcp_socket_with_small_buffer(4096)
        # A loopback connect to a listening socket completes in the kernel's backlog.
        raw.connect(("127.0.0.1", port))
        slow, slow_ready = await open_raw(srv.url, bob.token, sock=raw, max_queue=1)

        slow_closes = metrics.SLOW_CLOSES._value.get()

        def bob_codes() -> list[int | None]:
            # A socket closed with 1013 leaves the hub at once (its close frame
            # does not wait for room), so the counter says which one it was.
            closed = int(metrics.SLOW_CLOSES._value.get() - slow_closes) * [1013]
            return [c.close_code for c in hub.by_user.get(b_h.lower(), ())] + closed

        async with bob.socket() as bob_fast, carol.socket() as carol_sock:
            await eventually(lambda: len(bob_codes()) == 2, 5, "both of bob's sockets to attach")
            text = "x" * 5000
            sent: list[dict[str, Any]] = []
            async with httpx.AsyncClient(
                base_url=srv.url, headers={"Authorization": f"Bearer {alice.token}"}, timeout=10
            ) as http:
                for i in range(3000):
                    response = await http.post(
                        f"/api/conversations/{b_h}/messages",
                        json={"text": text, "client_id": f"flood-{i}"},
                    )
                    assert response.status_code == 201, response.text
                    sent.append(response.json()["message"])
                    if 1013 in bob_codes():
                        break
            assert 1013 in bob_codes(), (
                f"the slow socket was never closed after {len(sent)} messages"
            )
            # Only the slow one: the fast socket of the same user keeps its place.
            assert bob_codes().count(1013) == 1 and None in bob_codes(), bob_codes()

            # The slow client finally reads: what was queued, then the close with 1013.
            frames, code = await recv_until_closed(slow, timeout=20)
            assert code == 1013, f"closed with {code}"
            got = [f for f in frames if f["type"] == "message"]
            assert ids(got) == ids(sent)[: len(got)], "frames before the close had a gap"
            assert len(got) < len(sent)

            # The server is healthy and its other sockets kept working.
            async with httpx.AsyncClient(timeout=5) as http:
                assert (await http.get(srv.url + "/healthz")).status_code == 200
            assert ids(await messages_until(bob_fast, sent[-1]["id"], timeout=20)) == ids(sent)
            to_carol = await alice.post_message(c_h, "still here")
            assert (await next_message(carol_sock))["message"]["id"] == to_carol["id"]
            assert bob_fast.close_code is None

            # Reconnect with the last cursor it saw: everything missed, in order, no gap.
            cursor = got[-1]["cursor"] if got else slow_ready["cursor"]
            async with bob.socket(since=cursor) as resumed:
                rest = await messages_until(resumed, sent[-1]["id"], timeout=20)
                assert ids(got) + ids(rest) == ids(sent)
                after = await alice.post_message(b_h, "live after the resume")
                assert (await next_message(resumed))["message"]["id"] == after["id"]
                assert (await next_message(bob_fast))["message"]["id"] == after["id"]
        for client in (alice, bob, carol):
            await client.aclose()


@pytest.mark.timeout(30)
async def test_a_socket_whose_catch_up_fails_is_closed_not_left_with_a_gap(
    redis_url: str, tmp_path: Path
) -> None:
    async with running_server(settings_for(redis_url, tmp_path)) as srv:
        store = srv.app.state.runtime.store
        hub = srv.app.state.runtime.hub
        alice, bob, carol = [await new_user(srv.url) for _ in range(3)]
        assert alice.user and bob.user and carol.user
        await bob.follow(alice.user["handle"])
        await carol.follow(alice.user["handle"])
        async with bob.socket() as bob_sock, carol.socket() as carol_sock:
            real_events_page = store.events_page

            async def events_page(lc: str, cursor: str, count: int, max_bytes: int) -> Any:
                if lc == bob.user["handle"].lower():  # type: ignore[index]
                    raise aioredis.ConnectionError("storage went away mid-replay")
                return await real_events_page(lc, cursor, count, max_bytes)

            store.events_page = events_page
            await hub.resync_all()
            store.events_page = real_events_page
            assert await bob_sock.wait_closed(5) == 1012
            # The other socket caught up and is live.
            sent = await alice.post_message(carol.user["handle"], "still flowing")
            assert (await carol_sock.next_event())["message"] == sent
