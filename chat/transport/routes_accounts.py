"""Account controls: password, sessions, export, deletion.

PUT /api/me/password, GET/DELETE /api/sessions, DELETE /api/sessions/{id},
GET /api/me/export, DELETE /api/me. Each needs the caller signed in; those
that could hand the account over (password, deletion) also need the current
password, checked like a sign-in (argon2 slots, the IP's `logins` budget).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from chat.errors import NOT_FOUND, UNAUTHENTICATED, ApiError, invalid
from chat.protocol import validation
from chat.store import accounts, keys
from chat.store.store import EVERY_SESSION, gone_user, iso_ms, public_user
from chat.transport import auth
from chat.transport.http import (
    body,
    checked_password,
    json,
    me_body,
    no_content,
    runtime,
    signed_in,
)

_encoder = msgspec.json.Encoder()


def only_fields(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for name in data:
        if name not in allowed:
            raise invalid(f"Unknown field {name[:40]!r}.", name[:40])


def new_password(value: object) -> str:
    try:
        return validation.password(value)
    except ApiError as error:
        error.field = "new_password"
        raise


async def check_password(request: Request, lc: str, password: object, field: str) -> None:
    """The account's current password, or 422 naming the field; checked as a
    sign-in is (argon2 slots, the IP's `logins` limit)."""
    if not isinstance(password, str) or len(password) > validation.MAX_PASSWORD:
        raise invalid("Type your current password.", field)
    if await checked_password(request, lc, password) is None:
        raise invalid("That is not your current password.", field)


async def change_password(request: Request) -> Response:
    principal = await signed_in(request)
    data = await body(request)
    only_fields(data, ("current_password", "new_password"))
    new = new_password(data.get("new_password"))
    await check_password(request, principal.user, data.get("current_password"), "current_password")
    store = runtime(request).store
    await accounts.set_password_hash(store, principal.user, await auth.hash_password(new))
    # Whoever knew the old password may hold a session: end all but this one.
    await accounts.end_all_sessions(store, principal.user, keep=principal.session)
    return no_content()


async def list_sessions(request: Request) -> Response:
    principal = await signed_in(request)
    rows = await accounts.sessions(runtime(request).store, principal.user)
    return json({"sessions": [row.public(principal.session) for row in rows]})


async def end_every_session(request: Request) -> Response:
    principal = await signed_in(request)
    store = runtime(request).store
    await accounts.end_all_sessions(store, principal.user)
    # A session made before the index existed is not in it: end this one by
    # name, and close every socket of the user whatever its session.
    await accounts.end_sessions(store, principal.user, [principal.session])
    await store.publish_session_end(principal.user, EVERY_SESSION)
    return signed_out(no_content())


async def end_one_session(request: Request) -> Response:
    principal = await signed_in(request)
    wanted = request.path_params["id"]
    store = runtime(request).store
    rows = await accounts.sessions(store, principal.user)
    match = [row.token_hash for row in rows if row.id == wanted]
    if not match:
        raise ApiError(NOT_FOUND, "You have no session with that id.")
    await accounts.end_sessions(store, principal.user, match)
    response = no_content()
    return signed_out(response) if principal.session in match else response


def signed_out(response: Response) -> Response:
    response.delete_cookie(auth.COOKIE_NAME, path="/")
    return response


async def delete_me(request: Request) -> Response:
    principal = await signed_in(request)
    data = await body(request)
    only_fields(data, ("password",))
    await check_password(request, principal.user, data.get("password"), "password")
    if not await accounts.delete_account(runtime(request).store, principal.user):
        raise ApiError(UNAUTHENTICATED, "This account no longer exists.")
    return signed_out(no_content())


# -- export ------------------------------------------------------------------------


async def export(request: Request) -> Response:
    principal = await signed_in(request)
    store = runtime(request).store
    row = await store.user(principal.user)
    if row is None:
        raise ApiError(UNAUTHENTICATED, "This account no longer exists.")
    filename = f"dmhub-{row['handle']}.json"
    return StreamingResponse(
        export_chunks(request, principal.user, row),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def export_chunks(request: Request, lc: str, row: dict[str, str]) -> AsyncIterator[bytes]:
    """The export as JSON, written a batch at a time so that memory stays bounded."""
    store = runtime(request).store
    head: dict[str, Any] = {"exported_at": iso_ms(int(time.time() * 1000)), **me_body(row)}
    yield _encoder.encode(head)[:-1]
    for name, key in (
        ("following", keys.following(lc)),
        ("followers", keys.followers(lc)),
        ("blocks", keys.blocking(lc)),
    ):
        yield f',"{name}":['.encode()
        first = True
        async for handles in accounts.edge_handles(store, key):
            if handles:
                yield (b"" if first else b",") + _encoder.encode(handles)[1:-1]
                first = False
        yield b"]"
    yield b',"conversations":['
    peers = await accounts.conversation_peers(store, lc)
    for start in range(0, len(peers), accounts.BATCH):
        batch = peers[start : start + accounts.BATCH]
        for index, (peer, peer_row) in enumerate(
            zip(batch, await store.users(batch), strict=True), start
        ):
            peer_object = public_user(peer_row) if peer_row else gone_user(peer)
            yield (b"," if index else b"") + b'{"peer":' + _encoder.encode(peer_object)
            yield b',"messages":['
            first = True
            async for messages in accounts.conversation_messages(store, lc, peer):
                yield (b"" if first else b",") + ",".join(messages).encode()
                first = False
            yield b"]}"
    yield b"]}"


routes = [
    Route("/api/me/password", change_password, methods=["PUT"]),
    Route("/api/me/export", export, methods=["GET"]),
    Route("/api/me", delete_me, methods=["DELETE"]),
    Route("/api/sessions", list_sessions, methods=["GET"]),
    Route("/api/sessions", end_every_session, methods=["DELETE"]),
    Route("/api/sessions/{id}", end_one_session, methods=["DELETE"]),
]
