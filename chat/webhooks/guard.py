"""SSRF protection: a webhook may only reach the public Internet.

Checked twice. When a webhook is created, its host is resolved and every
address must be public (else `422 invalid`, field `url`; a host that does not
resolve yet is accepted). And at every
connection: the transport's network backend resolves the host itself, refuses
if any address is internal, and connects to the address it checked, so a DNS
answer that changes between the check and the connection (rebinding) gains
nothing. Redirects are never followed (httpx's default, kept explicit).
`DMHUB_WEBHOOK_ALLOW_PRIVATE=1` turns the address checks off (and allows
http://), for receivers on the same machine or network.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import typing
from collections.abc import AsyncIterator, Iterator

import certifi
import httpcore
import httpx

from chat.errors import invalid
from chat.webhooks.policy import Address, address_allowed, parse_url

RESOLVE_TIMEOUT_S = 3.0


class BlockedAddress(httpx.TransportError):
    """The receiver's host resolves to an address webhooks may not reach."""


async def resolve(host: str, port: int) -> list[Address]:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(RESOLVE_TIMEOUT_S):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # An IPv6 sockaddr may carry a zone ("fe80::1%eth0"): drop it to parse.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def _refusal(host: str, address: Address) -> str:
    # The address itself is not repeated: any account may create webhooks, and
    # naming what an internal host name resolves to would map the operator's
    # network for it. An IP literal in the URL is the caller's own words.
    if host.strip("[]") == str(address):
        return f"{address} is not a public Internet address."
    return f"{host} resolves to an address that is not a public Internet address."


async def check_url(value: object, *, allow_private: bool) -> str:
    """The webhook URL to store, or `422 invalid` (field `url`)."""
    url, host = parse_url(value, allow_private=allow_private)
    if allow_private:
        return url
    try:
        addresses = await resolve(host, 443)
    except (OSError, TimeoutError, UnicodeError):
        # Not resolving (yet, or from here) is not resolving to an internal
        # address: accepted. Every connection is checked again anyway, and
        # deliveries fail, and say so in last_error, until it resolves.
        return url
    for address in addresses:
        if not address_allowed(address):
            raise invalid(_refusal(host, address), "url")
    return url


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address, and connects only to a checked one."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await resolve(host, port)
        except (OSError, TimeoutError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
        if not self.allow_private:
            for address in addresses:
                if not address_allowed(address):
                    raise BlockedAddress(_refusal(host, address))
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError(f"{host} has no address")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress("webhooks do not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@contextlib.contextmanager
def _mapped(request: httpx.Request) -> Iterator[None]:
    """httpcore's exceptions as httpx's, as httpx's own transport does."""
    try:
        yield
    except httpcore.TimeoutException as exc:
        raise httpx.TimeoutException(str(exc) or "timed out", request=request) from exc
    except httpcore.ConnectError as exc:
        raise httpx.ConnectError(str(exc) or "could not connect", request=request) from exc
    except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
        raise httpx.NetworkError(str(exc) or type(exc).__name__, request=request) from exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes], request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._request):
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        closer = getattr(self._stream, "aclose", None)
        if closer is not None:
            await closer()


class GuardedTransport(httpx.AsyncBaseTransport):
    """httpx's transport over one httpcore pool whose connections go through
    `GuardedBackend`. Connections are kept alive and reused per receiver."""

    def __init__(self, *, allow_private: bool, max_connections: int) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
            network_backend=GuardedBackend(allow_private),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped(request):
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, typing.AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream, request),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
