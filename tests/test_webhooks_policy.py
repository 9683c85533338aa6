"""The pure core of webhooks, tested directly: signatures, URLs, addresses,
the event filter, backoff, deactivation and the bodies."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json

import pytest

from chat.errors import ApiError
from chat.webhooks import policy, signature_header, verify
from chat.webhooks.signing import parse_header

SECRET = "whsec_test"
BODY = b'{"id":"1-0","type":"message","account":"bob","event":{}}'


def test_the_signature_is_hmac_sha256_over_time_dot_body() -> None:
    header = signature_header(SECRET, 1_700_000_000, BODY)
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_verify_accepts_the_signed_body_and_nothing_else() -> None:
    now = 1_700_000_000
    headers = {"Dmhub-Signature": signature_header(SECRET, now, BODY)}
    assert verify(SECRET, headers, BODY, 300, now=now)
    assert verify(SECRET, headers, BODY.decode(), 300, now=now + 299)
    # Header names in any case, as frameworks hand them over.
    assert verify(SECRET, {"dmhub-signature": headers["Dmhub-Signature"]}, BODY, 300, now=now)
    assert not verify(SECRET, headers, BODY + b" ", 300, now=now)
    assert not verify(SECRET, headers, BODY.replace(b"bob", b"eve"), 300, now=now)
    assert not verify("whsec_other", headers, BODY, 300, now=now)
    assert not verify(SECRET, headers, BODY, 300, now=now + 301)  # replayed later
    assert not verify(SECRET, headers, BODY, 300, now=now - 301)
    assert not verify(SECRET, {}, BODY, 300, now=now)


def test_verify_accepts_any_one_of_several_signatures() -> None:
    good = signature_header(SECRET, 10, BODY).split(",")[1]
    headers = {"Dmhub-Signature": f"t=10,v1={'0' * 64},{good}"}
    assert verify(SECRET, headers, BODY, 5, now=12)


@pytest.mark.parametrize(
    "value", ["", "t=1", "v1=ab", "t=x,v1=ab", "t=1,t=2,v1=ab", "garbage", "t=1,v1"]
)
def test_malformed_signature_headers_do_not_parse(value: str) -> None:
    assert parse_header(value) is None
    assert not verify(SECRET, {"Dmhub-Signature": value}, BODY, 10**9, now=1)


def test_urls() -> None:
    assert policy.parse_url(" https://a.example/x?y=1 ", allow_private=False) == (
        "https://a.example/x?y=1",
        "a.example",
    )
    assert policy.parse_url("http://127.0.0.1:9/h", allow_private=True)[1] == "127.0.0.1"
    for bad in [None, 3, "", "http://a.example/", "ftp://a.example", "https://", "https://a b/",
                "https://a.example:99999/", "https://a.example:0/", "x" * 3000]:  # fmt: skip
        with pytest.raises(ApiError) as refused:
            policy.parse_url(bad, allow_private=False)
        assert refused.value.field == "url", bad


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.251", False),
        ("255.255.255.255", False),
        ("192.0.2.1", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:93.184.215.14", True),
        ("64:ff9b::7f00:1", False),
        ("2002:7f00:1::", False),
        # Python 3.11 calls these global; each stands for an IPv4 address.
        ("::127.0.0.1", False),
        ("::8.8.8.8", False),
        ("::ffff:0:7f00:1", False),
        ("64:ff9b:1::a00:1", False),
        ("2606:4700::1111", True),
        ("8.8.8.8", True),
    ],
)
def test_only_public_addresses_are_allowed(address: str, allowed: bool) -> None:
    assert policy.address_allowed(ipaddress.ip_address(address)) is allowed


def test_the_event_filter() -> None:
    assert policy.events(None) == ("message", "read")
    assert policy.events(["read", "message", "read"]) == ("message", "read")
    assert policy.events(["read"]) == ("read",)
    for bad in [[], ["typing"], "message", [1], {"message": True}]:
        with pytest.raises(ApiError) as refused:
            policy.events(bad)
        assert refused.value.field == "events"


def test_unknown_fields_are_refused() -> None:
    policy.known_fields({"url": "x", "events": []}, policy.CREATE_FIELDS)
    with pytest.raises(ApiError) as refused:
        policy.known_fields({"url": "x", "secret": "mine"}, policy.CREATE_FIELDS)
    assert refused.value.field == "secret"


def test_replay_cursors() -> None:
    assert policy.replay_cursor("1700000000000-3") == "1700000000000-3"
    for bad in [None, 5, "", "5", "a-b", "1-2-3", "99999999999999999999999-0"]:
        with pytest.raises(ApiError) as refused:
            policy.replay_cursor(bad)
        assert refused.value.field == "since"
    assert policy.cursor_before("5-3") == "5-2"
    assert policy.cursor_before("5-0") == f"4-{2**64 - 1}"


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    delays = [policy.backoff_delay(n, 1.0, 600.0, 0.0) for n in range(1, 13)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == 600.0 and delays[-1] == 600.0
    assert policy.backoff_delay(3, 1.0, 600.0, 0.999) == pytest.approx(2.0, abs=0.01)
    assert policy.backoff_delay(10_000, 1.0, 600.0, 0.5) == 450.0


def test_deactivation_deadline() -> None:
    day_ms = 24 * 3600 * 1000
    assert not policy.past_deadline(0, day_ms - 1, 24 * 3600)
    assert policy.past_deadline(0, day_ms, 24 * 3600)


def test_the_body_carries_the_frame_byte_for_byte() -> None:
    frame = '{"type":"message","message":{"id":"7","text":"h\\u00e9"},"cursor":"9-0"}'
    body = policy.delivery_body("9-0", "message", "Bob", frame)
    assert body.endswith(b',"event":' + frame.encode() + b"}")
    assert json.loads(body) == {
        "id": "9-0", "type": "message", "account": "Bob", "event": json.loads(frame),
    }  # fmt: skip
    assert policy.event_type(frame) == "message"
    assert policy.event_type("not json") == ""


def test_the_webhook_object_never_shows_the_secret() -> None:
    row = {"url": "https://a.example/", "events": "message", "created": "0", "secret": SECRET,
           "cursor": "5-0", "failing": "1000", "error": "HTTP 500.", "active": "0"}  # fmt: skip
    view = policy.view("0123456789abcdef", row)
    assert view == {
        "id": "0123456789abcdef", "url": "https://a.example/", "events": ["message"],
        "created_at": "1970-01-01T00:00:00.000Z", "delivered_up_to": "5-0",
        "failing_since": "1970-01-01T00:00:01.000Z", "last_error": "HTTP 500.", "active": False,
    }  # fmt: skip
    assert SECRET not in json.dumps(view)
    assert policy.is_webhook_id("0123456789abcdef")
    assert not policy.is_webhook_id("0123456789ABCDEF") and not policy.is_webhook_id("../x")
