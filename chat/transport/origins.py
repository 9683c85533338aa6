"""Which pages may use the session cookie: the server's own origin, plus a list.

An origin is the triple (scheme, host, port), compared whole. Comparing only
the host against the request's `Host` header would let `https://` pages speak
to an `http://` server, and would let a DNS-rebinding page (whose `Origin`
and `Host` agree, both naming the attacker's domain) through.

The server's own origin is `DMHUB_PUBLIC_URL` when set (behind a proxy it is the
only one a browser sees). Without it, it is the address the connection came
in on, over `http` (dmhub itself does not terminate TLS); on a loopback address
`localhost` is the same server, so both names are accepted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
SERVED_SCHEME = "http"
LOOPBACK_NAMES = ("localhost",)
# How much of a refused Origin header a refusal repeats.
MAX_ECHOED_ORIGIN = 100


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if DEFAULT_PORTS.get(self.scheme) == self.port:
            return f"{self.scheme}://{host}"
        return f"{self.scheme}://{host}:{self.port}"


def parse_origin(text: str) -> Origin | None:
    """The origin of an `Origin` header or a configured URL; None when it names none.

    A configured URL may carry a path (`https://example.com/chat/`): only its
    origin counts. `null`, other schemes, credentials and bad ports name none.
    """
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in DEFAULT_PORTS or not host or parts.username or parts.password:
        return None
    return Origin(scheme, host, DEFAULT_PORTS[scheme] if port is None else port)


def served_origins(server: tuple[str, int | None] | None) -> tuple[Origin, ...]:
    """What a browser calls this server when no public URL is configured.

    `server` is the ASGI scope's local address of the connection.
    """
    if server is None or server[1] is None:
        return ()
    return tuple(Origin(SERVED_SCHEME, name, server[1]) for name in host_names(server[0]))


def host_names(address: str) -> tuple[str, ...]:
    """The names a browser may use for a local address: a dual-stack socket reports
    IPv4 clients as `::ffff:a.b.c.d`, and a loopback address is also `localhost`."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return (address.lower(),)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.compressed, *LOOPBACK_NAMES) if ip.is_loopback else (ip.compressed,)


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    public: Origin | None
    allowed: frozenset[Origin]

    @classmethod
    def from_urls(cls, public_url: str | None, allowed: Iterable[str]) -> OriginPolicy:
        """Raises ValueError naming the first entry that is not an http(s) origin."""
        public = None
        if public_url:
            public = parse_origin(public_url)
            if public is None:
                raise ValueError(f"not an http(s) URL: {public_url!r}")
        parsed = set()
        for entry in allowed:
            origin = parse_origin(entry)
            if origin is None:
                raise ValueError(f"not an http(s) origin: {entry!r}")
            parsed.add(origin)
        return cls(public, frozenset(parsed))

    def allows(self, origin_header: str | None, server: tuple[str, int | None] | None) -> bool:
        """Whether a page of `origin_header` may use the cookie on this connection."""
        if not origin_header:
            return False
        origin = parse_origin(origin_header)
        if origin is None:
            return False
        if origin in self.allowed or origin == self.public:
            return True
        return self.public is None and origin in served_origins(server)


def refusal_detail(origin_header: str | None) -> str:
    """Why a cookie request was refused, in words that point the operator at the fix."""
    if not origin_header:
        return (
            "A request that uses the session cookie to change something, or to open "
            "a socket, must carry an Origin header."
        )
    return (
        f"Pages at {origin_header[:MAX_ECHOED_ORIGIN]} may not use this server's session "
        "cookie. The operator allows an origin with DMHUB_PUBLIC_URL or DMHUB_ALLOWED_ORIGINS."
    )


def configuration_warning(public_url: str | None, secure_cookies: bool) -> str | None:
    """What `dmhub serve` says at start-up about a set-up that refuses every browser."""
    if secure_cookies and not public_url:
        return (
            "DMHUB_SECURE_COOKIES is on but DMHUB_PUBLIC_URL is not set: the session "
            "cookie's pages are https, this server's own origin is its http address, so "
            "browsers will get 403 forbidden_origin. Set DMHUB_PUBLIC_URL to the https URL "
            "people open."
        )
    return None
