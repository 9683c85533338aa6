"""Who is calling: bearer tokens and session cookies, and the Origin rule.

Tokens are random and opaque; Redis keeps only their SHA-256, so a leaked
database does not hand out live sessions. Cookie-authenticated requests that
change state, and cookie-authenticated WebSocket handshakes, must come from an
allowed Origin (CSRF and cross-site WebSocket hijacking); bearer requests need
no Origin because a browser never attaches a bearer token on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from chat.config import DEFAULT_ARGON2_CONCURRENCY
from chat.errors import FORBIDDEN_ORIGIN, UNAUTHENTICATED, ApiError
from chat.store.store import Store
from chat.transport.origins import OriginPolicy, refusal_detail

COOKIE_NAME = "dmhub_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# OWASP's argon2id baseline (19 MiB, 2 passes): strong, and ~20 ms here, so
# sign-ups and load-test set-up are not throttled by hashing.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Verified against when the handle does not exist, so timing does not tell.
_DUMMY_HASH = _hasher.hash("dmhub-no-such-account")
# Hashing runs in threads that release the GIL; at most this many at once
# (DMHUB_ARGON2_CONCURRENCY, set by the app at start-up), so a sign-in flood
# queues here instead of starving the event loop that carries everyone's messages.
ARGON2_CONCURRENCY = DEFAULT_ARGON2_CONCURRENCY
# One semaphore per event loop: a semaphore is bound to the loop it first waited on.
_argon2_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def set_argon2_concurrency(slots: int) -> None:
    global ARGON2_CONCURRENCY
    ARGON2_CONCURRENCY = max(1, slots)
    _argon2_slots.clear()


def _slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slots = _argon2_slots.get(loop)
    if slots is None:
        slots = _argon2_slots[loop] = asyncio.Semaphore(ARGON2_CONCURRENCY)
    return slots


@dataclass(frozen=True, slots=True)
class Principal:
    user: str  # lower-cased handle, the key of everything the user owns
    session: str  # SHA-256 of the token
    via_cookie: bool


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def hash_password(password: str) -> str:
    async with _slots():
        return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(stored_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    async with _slots():
        return await asyncio.to_thread(check)


def credentials(headers: Mapping[str, str], cookies: dict[str, str]) -> tuple[str, bool] | None:
    """(token, came from the cookie) or None. A bearer header wins over a cookie."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip(), False
        return None
    cookie = cookies.get(COOKIE_NAME)
    if cookie:
        return cookie, True
    return None


def bearer_is(authorization: str | None, expected: str) -> bool:
    """Whether an `Authorization` header is `Bearer <expected>`: the one check of
    the operators' tokens (admin API, metrics).

    Compared as bytes: compare_digest refuses str with non-ASCII characters,
    and a header may carry any Latin-1 byte, which must be a 401, not a 500.
    """
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(
        given.strip().encode(), expected.encode()
    )


def check_origin(
    origins: OriginPolicy, origin: str | None, server: tuple[str, int | None] | None
) -> None:
    """The one Origin check of cookie requests and handshakes: 403 forbidden_origin."""
    if not origins.allows(origin, server):
        raise ApiError(FORBIDDEN_ORIGIN, refusal_detail(origin))


async def authenticate(
    store: Store,
    headers: Mapping[str, str],
    cookies: dict[str, str],
    *,
    needs_origin: bool,
    origins: OriginPolicy,
    server: tuple[str, int | None] | None,
) -> Principal:
    """`server` is the connection's local address (ASGI scope), for the default origin."""
    found = credentials(headers, cookies)
    if found is None:
        raise ApiError(UNAUTHENTICATED, "Sign in first: send a bearer token or the session cookie.")
    token, via_cookie = found
    if via_cookie and needs_origin:
        check_origin(origins, headers.get("origin"), server)
    digest = token_hash(token)
    user = await store.session_user(digest)
    if user is None:
        raise ApiError(UNAUTHENTICATED, "This session has ended or the token is not valid.")
    return Principal(user=user, session=digest, via_cookie=via_cookie)
