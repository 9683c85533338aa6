"""The client IP that per-IP limits count against (chat/transport/client_ip.py)."""

from __future__ import annotations

import pytest

from chat.transport.client_ip import (
    ProxyListError,
    client_ip,
    ip_key,
    parse_trusted_proxies,
    scope_client_ip,
)

PROXIES = parse_trusted_proxies("10.0.0.1, 10.1.0.0/16 ,::1")
NONE = parse_trusted_proxies("")


def test_the_peer_is_the_client_when_no_proxy_is_trusted() -> None:
    assert client_ip("203.0.113.9", "1.2.3.4", NONE) == "203.0.113.9"


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    assert client_ip("203.0.113.9", "1.2.3.4", PROXIES) == "203.0.113.9"


def test_a_trusted_peer_forwards_the_right_most_untrusted_hop() -> None:
    # The client wrote "6.6.6.6" itself; only the hop our proxy appended counts.
    assert client_ip("10.0.0.1", "6.6.6.6, 198.51.100.7", PROXIES) == "198.51.100.7"


def test_chained_trusted_proxies_are_skipped() -> None:
    forwarded = "6.6.6.6, 198.51.100.7, 10.1.4.4"
    assert client_ip("10.0.0.1", forwarded, PROXIES) == "198.51.100.7"


def test_all_hops_trusted_gives_the_left_most() -> None:
    assert client_ip("10.0.0.1", "10.1.0.9, 10.1.0.8", PROXIES) == "10.1.0.9"


def test_garbage_in_the_header_stops_at_the_last_trusted_hop() -> None:
    assert client_ip("10.0.0.1", "1.2.3.4, not-an-ip", PROXIES) == "10.0.0.1"


def test_a_trusted_peer_without_the_header_is_itself() -> None:
    assert client_ip("10.0.0.1", None, PROXIES) == "10.0.0.1"


def test_ports_brackets_and_mapped_addresses() -> None:
    assert client_ip("::ffff:10.0.0.1", "[2001:db8::5]:443", PROXIES) == "2001:db8::5"
    assert client_ip("::1", "198.51.100.7:5555", PROXIES) == "198.51.100.7"


def test_no_peer_is_unknown() -> None:
    assert client_ip(None, "1.2.3.4", PROXIES) == "unknown"
    assert client_ip("not an address", None, PROXIES) == "unknown"


def test_a_bad_proxy_entry_is_refused() -> None:
    with pytest.raises(ProxyListError):
        parse_trusted_proxies("10.0.0.1, example.com")


def test_from_an_asgi_scope_several_headers_are_one_list() -> None:
    scope = {
        "client": ("10.0.0.1", 5000),
        "headers": [
            (b"x-forwarded-for", b"6.6.6.6"),
            (b"host", b"x"),
            (b"x-forwarded-for", b"198.51.100.7"),
        ],
    }
    assert scope_client_ip(scope, PROXIES) == "198.51.100.7"
    assert scope_client_ip({"client": None, "headers": []}, PROXIES) == "unknown"


def test_ipv6_clients_are_counted_by_their_64() -> None:
    assert ip_key("2001:db8:1:2:aaaa::1") == ip_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert ip_key("198.51.100.7") == "198.51.100.7"
