"""The HTTP API of PROTOCOL.md: thin handlers over the store and the actions."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat import metrics, signin
from chat.config import DEFAULT_PAGE_LIMIT, LOGIN_WINDOW_S, MAX_PAGE_LIMIT, SIGNUP_WINDOW_S
from chat.errors import (
    BAD_CREDENTIALS,
    HANDLE_TAKEN,
    NOT_ALLOWED,
    NOT_FOUND,
    SUSPENDED,
    UNAUTHENTICATED,
    ApiError,
    invalid,
    rate_limited,
    unknown_user,
)
from chat.hub import actions
from chat.protocol import validation
from chat.runtime import Runtime
from chat.store import accounts, business, keys, safety
from chat.store.graph import FollowResult
from chat.store.store import public_user
from chat.store.teams import team_store
from chat.teams.authz import acting_account, agent_handle
from chat.transport import auth
from chat.transport import client_ip as client_ip_module

MAX_BODY_BYTES = 64 * 1024
# `?as=BUSINESS`: an agent acting for a business whose team it is in (Teams).
AS_PARAM = "as"
_encoder = msgspec.json.Encoder()


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(data), status, headers, media_type="application/json")


def raw_json(text: str, status: int = 200) -> Response:
    return Response(text, status, media_type="application/json")


def no_content() -> Response:
    return Response(status_code=204)


async def body(request: Request) -> dict[str, Any]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise invalid(f"The body is over {MAX_BODY_BYTES // 1024} KiB.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    return validation.json_object(validation.json_document(raw))


async def signed_in(request: Request) -> auth.Principal:
    rt = runtime(request)
    return await auth.authenticate(
        rt.store,
        request.headers,
        request.cookies,
        needs_origin=request.method not in auth.SAFE_METHODS,
        origins=rt.origins,
        server=request.scope.get("server"),
    )


async def acting(request: Request, principal: auth.Principal) -> str:
    """The account a conversation request acts for: the caller's, or `?as=`'s
    business when the caller is in its team (chat/teams/authz.py); else 403."""
    return await acting_account(
        runtime(request).store, principal.user, request.query_params.get(AS_PARAM)
    )


def check_login_origin(request: Request) -> None:
    """Sign-up and sign-in set a cookie: refuse them from foreign pages (login CSRF)."""
    origin = request.headers.get("origin")
    if origin:
        auth.check_origin(runtime(request).origins, origin, request.scope.get("server"))


def session_response(request: Request, user: dict[str, Any], token: str, status: int) -> Response:
    rt = runtime(request)
    response = json({"user": user, "token": token}, status)
    response.set_cookie(
        auth.COOKIE_NAME,
        token,
        max_age=rt.settings.session_ttl_s,
        httponly=True,
        samesite="lax",
        secure=rt.settings.secure_cookies,
        path="/",
    )
    return response


def me_body(row: dict[str, str]) -> dict[str, Any]:
    return {"user": public_user(row), "settings": {"read_receipts": row.get("rr") != "0"}}


async def existing_user(request: Request, handle: object) -> dict[str, str]:
    lc = actions.peer_key(handle)
    row = await runtime(request).store.user(lc)
    if row is None:
        raise unknown_user(str(handle))
    return row


def page_cursor(value: str | None) -> int | None:
    return validation.page_cursor(value)


def page_limit(request: Request) -> int:
    return validation.limit(request.query_params.get("limit"), DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)


# -- accounts and sessions ------------------------------------------------------


async def create_account(request: Request) -> Response:
    check_login_origin(request)
    data = await body(request)
    handle = validation.handle(data.get("handle"))
    password = validation.password(data.get("password"))
    name = validation.name(data["name"]) if data.get("name") is not None else handle
    kind = validation.kind(data.get("kind", "person"))
    rt = runtime(request)
    ip = client_ip(request)
    limit = rt.settings.limit_signups_per_hour
    if limit > 0:
        count, window_left = await rt.store.signin.count_signup(ip, SIGNUP_WINDOW_S)
        if count > limit:
            raise limited(
                "signups", window_left, "Too many new accounts from your network; try later."
            )
    password_hash = await auth.hash_password(password)
    if not await rt.store.create_user(handle, password_hash, name, kind):
        if limit > 0:
            await rt.store.signin.uncount_signup(ip, SIGNUP_WINDOW_S)
        raise ApiError(HANDLE_TAKEN, f"The handle @{handle} is taken.", field="handle")
    token = auth.new_token()
    await start_session(request, token, handle.lower())
    row = await rt.store.user(handle.lower())
    assert row is not None
    return session_response(request, public_user(row), token, 201)


async def create_session(request: Request) -> Response:
    check_login_origin(request)
    data = await body(request)
    handle, password = data.get("handle"), data.get("password")
    if not isinstance(handle, str) or not isinstance(password, str):
        raise invalid("handle and password are required.")
    if not validation.is_handle(handle) or len(password) > validation.MAX_PASSWORD:
        # No account can match: answer without counting anything, so that junk
        # handles cannot grow Redis or spend anyone's budget.
        raise bad_credentials()
    lc = handle.lower()
    found = await checked_password(request, lc, password)
    if found is None:
        raise bad_credentials()
    # Told only to whoever knows the password.
    if found[0].get("active") == "0":
        raise ApiError(SUSPENDED, f"@{found[0]['handle']} is suspended by an operator.")
    token = auth.new_token()
    await start_session(request, token, lc)
    return session_response(request, public_user(found[0]), token, 200)


async def checked_password(
    request: Request, lc: str, password: str
) -> tuple[dict[str, str], str] | None:
    """(user row, hash) when the password is the account's, else None; 429 when
    the `logins` limit says this IP may not try now.

    The attempt is counted against the IP before the password is checked, and
    given back when it was right: concurrent guesses cannot slip past the limit
    while their argon2 checks wait for a slot.
    """
    rt = runtime(request)
    limit = rt.settings.limit_login_failures
    ip = client_ip(request)
    failures_before = 0
    if limit > 0:
        attempts, window_left = await rt.store.signin.begin(ip, LOGIN_WINDOW_S)
        now_ms = int(time.time() * 1000)
        failures_before, last_ms = await rt.store.signin.account_failures(ip, lc)
        refused = signin.ip_refusal(attempts - 1, limit, window_left) or signin.account_refusal(
            failures_before, last_ms, now_ms
        )
        if refused is not None:
            raise limited("logins", refused.retry_after_s, refused.detail)
    found = await rt.store.password_hash(lc)
    ok = await auth.verify_password(found[1] if found else None, password)
    if limit > 0:
        if ok and found is not None:
            await rt.store.signin.succeeded(ip, lc, failures_before > 0, LOGIN_WINDOW_S)
        else:
            await rt.store.signin.failed(ip, lc, int(time.time() * 1000), LOGIN_WINDOW_S)
    return found if ok else None


async def start_session(request: Request, token: str, lc: str) -> None:
    rt = runtime(request)
    await accounts.start_session(
        rt.store,
        auth.token_hash(token),
        lc,
        rt.settings.session_ttl_s,
        client_ip(request),
        request.headers.get("user-agent", ""),
    )


def bad_credentials() -> ApiError:
    return ApiError(BAD_CREDENTIALS, "That handle and password do not match an account.")


def limited(limit: str, retry_after_s: float, detail: str) -> ApiError:
    metrics.RATE_LIMITED.labels(limit).inc()
    return rate_limited(limit, retry_after_s, detail)


def client_ip(request: Request) -> str:
    """The key per-IP limits count against (chat/transport/client_ip.py)."""
    trusted = runtime(request).settings.trusted_proxies
    return client_ip_module.ip_key(client_ip_module.scope_client_ip(request.scope, trusted))


async def end_session(request: Request) -> Response:
    principal = await signed_in(request)
    await accounts.end_sessions(runtime(request).store, principal.user, [principal.session])
    response = no_content()
    response.delete_cookie(auth.COOKIE_NAME, path="/")
    return response


# -- me, people, follows, blocks -----------------------------------------------


async def get_me(request: Request) -> Response:
    principal = await signed_in(request)
    row = await runtime(request).store.user(principal.user)
    if row is None:
        raise ApiError("unauthenticated", "This account no longer exists.")
    return json(await with_standing(request, principal.user, me_body(row)))


async def with_standing(request: Request, lc: str, me: dict[str, Any]) -> dict[str, Any]:
    """`GET /api/me` says whether the account is restricted, and the teams it
    answers for (v1.1)."""
    store = runtime(request).store
    me["restricted"] = await safety.is_restricted(store, lc)
    me["teams"] = await team_store(store).teams(lc)
    return me


async def current_session(request: Request) -> Response:
    """`GET /api/me` for whoever is signed in, else `{"user": null}`, never a 401.

    The chat page asks this first: being signed out is where every visit
    starts, not an error for the browser's console.
    """
    try:
        return await get_me(request)
    except ApiError as error:
        if error.code != UNAUTHENTICATED:
            raise
    return json({"user": None})


async def patch_me(request: Request) -> Response:
    principal = await signed_in(request)
    data = await body(request)
    store = runtime(request).store
    row = await store.user(principal.user)
    if row is None:
        raise ApiError("unauthenticated", "This account no longer exists.")
    validation.me_fields(data)
    changes: dict[str, str] = {}
    removed: list[str] = []
    if "name" in data:
        changes["name"] = validation.name(data["name"])
    if "open_dms" in data:
        changes["open_dms"] = "1" if validation.boolean(data["open_dms"], "open_dms") else "0"
    if "read_receipts" in data:
        changes["rr"] = "1" if validation.boolean(data["read_receipts"], "read_receipts") else "0"
    if "greeting" in data:
        greeting = validation.greeting(data["greeting"])
        if greeting is not None and row.get("kind") != "business":
            raise invalid("Only business accounts can set a greeting.", "greeting")
        if greeting is None:
            removed.append("greeting")
        else:
            changes["greeting"] = greeting
    if "quick_replies" in data:
        replies = validation.quick_replies(data["quick_replies"])
        if replies and row.get("kind") != "business":
            raise invalid("Only business accounts can set quick replies.", "quick_replies")
        if replies:
            changes["qr"] = business.encode_quick_replies(replies)
        else:
            removed.append("qr")
    await store.update_user(principal.user, changes, removed)
    row = await store.user(principal.user)
    assert row is not None
    return json(await with_standing(request, principal.user, me_body(row)))


async def get_user(request: Request) -> Response:
    principal = await signed_in(request)
    other = actions.peer_key(request.path_params["handle"])
    pair = await runtime(request).store.pair_facts(principal.user, other)
    if pair.recipient is None:
        raise unknown_user(request.path_params["handle"])
    return json({"user": public_user(pair.recipient), "relationship": actions.relationship(pair)})


async def edge(request: Request) -> Response:
    """PUT/DELETE /api/following/{handle} and /api/blocks/{handle}."""
    principal = await signed_in(request)
    target = await existing_user(request, request.path_params["handle"])
    other = target["handle"].lower()
    if other == principal.user:
        raise invalid("That is your own account.", "handle")
    store = runtime(request).store
    is_block = request.url.path.startswith("/api/blocks/")
    if request.method == "PUT":
        if is_block:
            await store.block(principal.user, other)
        else:
            follow_refused(await store.follow(principal.user, other), target["handle"])
    else:
        await (store.unblock if is_block else store.unfollow)(principal.user, other)
    return no_content()


def follow_refused(result: FollowResult, handle: str) -> None:
    """A block, either way, stands between the two: no follow (v1.1 reasons)."""
    if result is FollowResult.YOU_BLOCKED:
        raise ApiError(
            NOT_ALLOWED,
            f"You blocked @{handle}; unblock them to follow them.",
            reason="you_blocked",
        )
    if result is FollowResult.BLOCKED_YOU:
        # Worded like any other refusal that must not reveal a block.
        raise ApiError(NOT_ALLOWED, f"You can't follow @{handle}.", reason="cannot_receive")


def edge_list(key_of: Any) -> Any:
    async def endpoint(request: Request) -> Response:
        principal = await signed_in(request)
        before = page_cursor(
            request.query_params.get("before") or request.query_params.get("cursor")
        )
        rows, next_cursor = await runtime(request).store.edge_page(
            key_of(principal.user), page_limit(request), before
        )
        return json({"users": [public_user(r) for r in rows], "next": next_cursor})

    return endpoint


# -- conversations ----------------------------------------------------------------


async def list_conversations(request: Request) -> Response:
    """The v1 listing; routes_team.list_conversations decides when it applies."""
    principal = await signed_in(request)
    folder = validation.folder(request.query_params.get("folder"))
    before = page_cursor(request.query_params.get("before"))
    conversations, next_cursor = await runtime(request).store.conversation_page(
        principal.user, folder, page_limit(request), before
    )
    return json({"conversations": conversations, "next": next_cursor})


async def conversation_peer(request: Request, me: str) -> str:
    """The peer of a conversation path; 404 not_found unless the two ever talked."""
    peer = actions.peer_key(request.path_params["peer"])
    store = runtime(request).store
    if peer == me or not await store.conversation_exists(me, peer):
        if peer != me and await store.user(peer) is None:
            raise unknown_user(request.path_params["peer"])
        raise ApiError(NOT_FOUND, "There is no conversation between you and that account.")
    return peer


async def list_messages(request: Request) -> Response:
    principal = await signed_in(request)
    me = await acting(request, principal)
    peer = await conversation_peer(request, me)
    before = request.query_params.get("before")
    if before is not None:
        before = validation.message_id(before, "before")
    store = runtime(request).store
    messages, next_id = await store.message_page(me, peer, page_limit(request), before)
    seen = await store.peer_read_up_to(me, peer)
    next_json = f'"{next_id}"' if next_id else "null"
    seen_json = f'"{seen}"' if seen else "null"
    return raw_json(
        f'{{"messages":[{",".join(messages)}],"next":{next_json},"peer_read_up_to":{seen_json}}}'
    )


async def post_message(request: Request) -> Response:
    principal = await signed_in(request)
    me = await acting(request, principal)
    data = await body(request)
    store = runtime(request).store
    result = await actions.send_message(
        store,
        me,
        request.path_params["peer"],
        data.get("text"),
        data.get("client_id"),
        options=actions.send_options(data),
        agent=await agent_handle(store, principal.user, me),
    )
    response = raw_json(f'{{"message":{result.message_json}}}', 201 if result.created else 200)
    # The outbox entry is removed once the client has its answer, off its latency.
    response.background = BackgroundTask(store.sends.finish, result)
    return response


async def read_conversation(request: Request) -> Response:
    principal = await signed_in(request)
    me = await acting(request, principal)
    data = await body(request)
    await actions.mark_read(
        runtime(request).store, me, request.path_params["peer"], data.get("up_to")
    )
    return no_content()


async def accept_conversation(request: Request) -> Response:
    principal = await signed_in(request)
    me = await acting(request, principal)
    peer = await conversation_peer(request, me)
    store = runtime(request).store
    if not await store.accept(me, peer):
        raise ApiError(NOT_FOUND, "That conversation is not in your requests or inbox.")
    return no_content()


async def delete_conversation(request: Request) -> Response:
    principal = await signed_in(request)
    me = await acting(request, principal)
    peer = await conversation_peer(request, me)
    await runtime(request).store.hide_conversation(me, peer)
    return no_content()


routes = [
    Route("/api/accounts", create_account, methods=["POST"]),
    Route("/api/sessions", create_session, methods=["POST"]),
    Route("/api/sessions/current", end_session, methods=["DELETE"]),
    Route("/api/sessions/current", current_session, methods=["GET"]),
    Route("/api/me", get_me, methods=["GET"]),
    Route("/api/me", patch_me, methods=["PATCH"]),
    Route("/api/users/{handle}", get_user, methods=["GET"]),
    Route("/api/following", edge_list(keys.following), methods=["GET"]),
    Route("/api/followers", edge_list(keys.followers), methods=["GET"]),
    Route("/api/following/{handle}", edge, methods=["PUT", "DELETE"]),
    Route("/api/blocks", edge_list(keys.blocking), methods=["GET"]),
    Route("/api/blocks/{handle}", edge, methods=["PUT", "DELETE"]),
    # GET /api/conversations is routes_team's: it falls back to list_conversations.
    Route("/api/conversations/{peer}/messages", list_messages, methods=["GET"]),
    Route("/api/conversations/{peer}/messages", post_message, methods=["POST"]),
    Route("/api/conversations/{peer}/read", read_conversation, methods=["POST"]),
    Route("/api/conversations/{peer}/accept", accept_conversation, methods=["POST"]),
    Route("/api/conversations/{peer}", delete_conversation, methods=["DELETE"]),
]
