"""Teams over HTTP: membership (`/api/team`), a conversation's status and
assignee (`PATCH /api/conversations/{peer}?as=B`), internal notes, and the
team's listing of conversations (called from http.list_conversations).

Every route that acts for a business goes through `acting`, the one check of
chat/teams/authz.py.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat.config import MAX_TEAM_SIZE, MAX_TEAMS_PER_AGENT, TEAM_FILTER_SCAN
from chat.errors import NOT_ALLOWED, ApiError, invalid, unknown_user
from chat.permission.rule import Reason
from chat.protocol import validation
from chat.store.store import public_user
from chat.store.teams import FOLDERS, AddResult, team_store
from chat.teams import core
from chat.transport import auth
from chat.transport import http as v1
from chat.transport.http import (
    AS_PARAM,
    acting,
    body,
    conversation_peer,
    existing_user,
    json,
    no_content,
    page_cursor,
    page_limit,
    raw_json,
    runtime,
    signed_in,
)

# -- membership -------------------------------------------------------------------


async def business_of(request: Request) -> tuple[auth.Principal, dict[str, str]]:
    principal = await signed_in(request)
    row = await runtime(request).store.user(principal.user)
    if row is None:
        raise ApiError("unauthenticated", "This account no longer exists.")
    if row.get("kind") != "business":
        # cannot_receive: the contract's reasons have none for "not a business",
        # and every not_allowed carries one (see chat/teams/authz.py).
        raise ApiError(
            NOT_ALLOWED, "Only a business account has a team.", reason=Reason.CANNOT_RECEIVE.value
        )
    return principal, row


async def change_member(request: Request) -> Response:
    """PUT/DELETE /api/team/{handle}: only the business itself changes its team,
    except that an agent may leave one (`DELETE /api/team/{self}?as=B`)."""
    if request.method == "DELETE" and AS_PARAM in request.query_params:
        return await leave_team(request)
    principal, _ = await business_of(request)
    target = await existing_user(request, request.path_params["handle"])
    agent = target["handle"].lower()
    if agent == principal.user:
        raise invalid("A business is always in its own team.", "handle")
    teams = team_store(runtime(request).store)
    if request.method == "DELETE":
        await teams.remove_agent(principal.user, agent)
        return no_content()
    result = await teams.add_agent(principal.user, agent)
    if result is AddResult.TEAM_FULL:
        raise invalid(f"A team has at most {MAX_TEAM_SIZE} agents.", "handle")
    if result is AddResult.AGENT_FULL:
        raise invalid(
            f"@{target['handle']} is already in {MAX_TEAMS_PER_AGENT} teams, the most allowed.",
            "handle",
        )
    return no_content()


async def leave_team(request: Request) -> Response:
    """An agent leaves a team it was put in. A business adds any account without
    asking, and each account is in at most MAX_TEAMS_PER_AGENT teams: without a
    way out, throwaway businesses could fill them all."""
    principal = await signed_in(request)
    business = await acting(request, principal)
    target = await existing_user(request, request.path_params["handle"])
    if business == principal.user or target["handle"].lower() != principal.user:
        raise ApiError(
            NOT_ALLOWED,
            "With as=, an agent can remove only itself from the team.",
            reason=Reason.CANNOT_RECEIVE.value,
        )
    await team_store(runtime(request).store).remove_agent(business, principal.user)
    return no_content()


async def list_members(request: Request) -> Response:
    """GET /api/team: the caller's team, or with ?as=B the team of B."""
    principal = await signed_in(request)
    business = await acting(request, principal)
    rows = await team_store(runtime(request).store).members(business)
    return json({"users": [public_user(row) for row in rows]})


# -- the team's listing -----------------------------------------------------------------


async def list_conversations(request: Request) -> Response:
    """GET /api/conversations; with `as=`, `status=` or `assignee=` the team's
    listing, and a business's own listing carries status and assignee too."""
    principal = await signed_in(request)
    params = request.query_params
    me = await acting(request, principal)
    team_view = AS_PARAM in params or "status" in params or "assignee" in params
    store = runtime(request).store
    if not team_view:
        row = await store.user(me)
        if row is None or row.get("kind") != "business":
            return await v1.list_conversations(request)
    wanted = core.listing_filter(params.get("status"), params.get("assignee"), principal.user)
    folder = params.get("folder")
    # The team's queue spans both folders unless one is asked for: a customer's
    # first message lands in the business's requests.
    folders = (validation.folder(folder),) if folder or not team_view else FOLDERS
    conversations, next_cursor = await team_store(store).conversation_page(
        me,
        folders,
        wanted,
        page_limit(request),
        page_cursor(params.get("before")),
        TEAM_FILTER_SCAN,
    )
    return json({"conversations": conversations, "next": next_cursor})


# -- status, assignee, notes --------------------------------------------------------------


async def patch_conversation(request: Request) -> Response:
    principal = await signed_in(request)
    business = await acting(request, principal)
    peer = await conversation_peer(request, business)
    change = core.change(await body(request))
    store = runtime(request).store
    teams = team_store(store)
    assignee: tuple[str | None] | None = None
    if change.assignee_set:
        handle: str | None = None
        if change.assignee is not None:
            if change.assignee != business and not await teams.is_member(business, change.assignee):
                raise invalid("The assignee must be in the business's team.", "assignee")
            row = await store.user(change.assignee)
            if row is None:
                raise invalid("The assignee must be in the business's team.", "assignee")
            handle = row["handle"]
        assignee = (handle,)
    peer_row, by_row = await store.users([peer, principal.user])
    if peer_row is None or by_row is None:
        raise unknown_user(request.path_params["peer"])
    await teams.set_state(
        business, peer, peer_row["handle"], change.status, assignee, by_row["handle"]
    )
    conversation = await teams.conversation(business, peer)
    return json({"conversation": conversation})


async def post_note(request: Request) -> Response:
    principal = await signed_in(request)
    business = await acting(request, principal)
    peer = await conversation_peer(request, business)
    data = await body(request)
    text = core.note_text(data.get("text"))
    store = runtime(request).store
    peer_row, author_row = await store.users([peer, principal.user])
    if peer_row is None or author_row is None:
        raise unknown_user(request.path_params["peer"])
    note = await team_store(store).add_note(
        business, peer, peer_row["handle"], author_row["handle"], text
    )
    return raw_json(f'{{"note":{note.json}}}', 201)


async def list_notes(request: Request) -> Response:
    principal = await signed_in(request)
    business = await acting(request, principal)
    peer = await conversation_peer(request, business)
    before = request.query_params.get("before")
    if before is not None and validation.stream_id(before) is None:
        raise invalid("That cursor is not one this server gave out.", "before")
    notes, next_id = await team_store(runtime(request).store).note_page(
        business, peer, page_limit(request), before
    )
    next_json = f'"{next_id}"' if next_id else "null"
    return raw_json(f'{{"notes":[{",".join(notes)}],"next":{next_json}}}')


# Registered before http.routes: GET /api/me and GET /api/conversations here
# extend the v1 handlers, which they call.
routes = [
    Route("/api/conversations", list_conversations, methods=["GET"]),
    Route("/api/team", list_members, methods=["GET"]),
    Route("/api/team/{handle}", change_member, methods=["PUT", "DELETE"]),
    Route("/api/conversations/{peer}", patch_conversation, methods=["PATCH"]),
    Route("/api/conversations/{peer}/notes", post_note, methods=["POST"]),
    Route("/api/conversations/{peer}/notes", list_notes, methods=["GET"]),
]
