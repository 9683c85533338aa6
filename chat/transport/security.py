"""Security headers on every HTTP response."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
API_PREFIX = "/api/"
# API answers are per person (messages, sessions, tokens): no shared or disk cache
# may keep them, nor the browser's back/forward cache after a sign-out.
NO_STORE = (b"cache-control", b"no-store")
# A year, the floor of browsers' preload lists. Sent only when the operator said
# the site is HTTPS (secure cookies): over plain HTTP it would lock people out.
HSTS_MAX_AGE_S = 365 * 24 * 3600
HSTS = (b"strict-transport-security", f"max-age={HSTS_MAX_AGE_S}".encode())


class SecurityHeaders:
    """Pure ASGI (no per-request task), and it leaves WebSocket traffic alone."""

    def __init__(self, app: ASGIApp, *, https: bool = False) -> None:
        self.app = app
        self.headers = [*HEADERS, HSTS] if https else HEADERS
        self.api_headers = [*self.headers, NO_STORE]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.api_headers if scope["path"].startswith(API_PREFIX) else self.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
