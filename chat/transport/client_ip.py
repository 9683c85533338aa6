"""Who is on the other end: the client IP that per-IP limits count against.

The peer address is the client, unless the peer is one of the operator's
proxies (`DMHUB_TRUSTED_PROXIES`); then `X-Forwarded-For` names the hops, and
the client is the right-most hop that is not itself a trusted proxy. Hops left
of it were written by the client and prove nothing, so they are never used.

Pure functions over the ASGI scope's values, so HTTP routes and the WebSocket
handshake (and any other engineer's limit) agree on one answer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FORWARDED_FOR = "x-forwarded-for"
UNKNOWN = "unknown"
# A forwarded header longer than this is not one a proxy of ours wrote.
MAX_FORWARDED_HOPS = 32


class ProxyListError(ValueError):
    """DMHUB_TRUSTED_PROXIES holds something that is neither an IP nor a CIDR."""

    def __init__(self, entry: str) -> None:
        super().__init__(f"DMHUB_TRUSTED_PROXIES: {entry!r} is not an IP address or CIDR")
        self.entry = entry


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    networks: tuple[IPNetwork, ...] = ()

    def __contains__(self, address: IPAddress | None) -> bool:
        if address is None:
            return False
        address = _unmapped(address)
        return any(address.version == net.version and address in net for net in self.networks)


def parse_trusted_proxies(raw: str | Iterable[str]) -> TrustedProxies:
    """`"10.0.0.1, 10.1.0.0/16, ::1"` → the networks; raises ProxyListError."""
    entries = raw.split(",") if isinstance(raw, str) else raw
    networks: list[IPNetwork] = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ProxyListError(entry) from None
    return TrustedProxies(tuple(networks))


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_ip(value: str | None) -> IPAddress | None:
    """An address as a peer or a proxy wrote it (`[::1]:443` and `1.2.3.4:80` too)."""
    if not value:
        return None
    text = value.strip()
    if text.startswith("["):  # [v6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        return _unmapped(ipaddress.ip_address(text))
    except ValueError:
        return None


def client_ip(peer: str | None, forwarded_for: str | None, trusted: TrustedProxies) -> str:
    """The client's IP as text; `unknown` when the server cannot tell (no peer)."""
    address = parse_ip(peer)
    if address is None:
        return UNKNOWN
    if address not in trusted or not forwarded_for:
        return str(address)
    hops = forwarded_for.split(",")
    if len(hops) > MAX_FORWARDED_HOPS:
        hops = hops[-MAX_FORWARDED_HOPS:]
    for hop in reversed(hops):
        hop_address = parse_ip(hop)
        if hop_address is None:
            # Garbage where a proxy of ours should have written an address: stop
            # at the last hop we can vouch for.
            return str(address)
        if hop_address not in trusted:
            return str(hop_address)
        address = hop_address
    # Every hop is a trusted proxy: the left-most is as close to the client as we get.
    return str(address)


def scope_client_ip(scope: Mapping[str, object], trusted: TrustedProxies) -> str:
    """client_ip() for an ASGI scope (HTTP request or WebSocket handshake)."""
    client = scope.get("client")
    peer = str(client[0]) if isinstance(client, (tuple, list)) and client else None
    forwarded: list[str] = []
    headers = scope.get("headers")
    if isinstance(headers, list):
        for name, value in headers:
            if name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
    # Several headers are one list, in order (RFC 9110 §5.3).
    return client_ip(peer, ",".join(forwarded) or None, trusted)


def ip_key(ip: str) -> str:
    """The hash-tag content of per-IP keys: an IPv6 client is its /64, since one
    subscriber usually holds a whole /64 and would otherwise get 2^64 buckets."""
    address = parse_ip(ip)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False).network_address) + "/64"
    return ip
