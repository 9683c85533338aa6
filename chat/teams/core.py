"""The pure part of teams: statuses, assignees, filters and the frames they make.

No I/O here; chat/store/teams.py and chat/transport/routes_team.py are thin
around these, and tests/test_teams_core.py tests them directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from chat.errors import invalid
from chat.protocol import validation

STATUSES = ("open", "pending", "resolved")
# A conversation nobody has touched yet is open: it needs an answer.
DEFAULT_STATUS = "open"
ASSIGNEE_ME = "me"
ASSIGNEE_NONE = "none"


@dataclass(frozen=True, slots=True)
class ConversationState:
    """What the team knows of one conversation; the assignee as typed at sign-up."""

    status: str = DEFAULT_STATUS
    assignee: str | None = None

    def fields(self) -> dict[str, Any]:
        return {"status": self.status, "assignee": self.assignee}


class _Stored(msgspec.Struct):
    status: str = DEFAULT_STATUS
    assignee: str | None = None


_decoder = msgspec.json.Decoder(_Stored)


def decode_state(raw: str | None) -> ConversationState:
    """A `tconv:` hash value (JSON written by team_state.lua or send.lua)."""
    if not raw:
        return ConversationState()
    try:
        stored = _decoder.decode(raw)
    except msgspec.DecodeError:
        return ConversationState()
    status = stored.status if stored.status in STATUSES else DEFAULT_STATUS
    return ConversationState(status, stored.assignee or None)


def status(value: object) -> str:
    if value not in STATUSES:
        raise invalid("status must be one of open, pending, resolved.", "status")
    return str(value)


@dataclass(frozen=True, slots=True)
class Change:
    """A PATCH body: what to change. `assignee_set` tells null apart from absent."""

    status: str | None
    assignee_set: bool
    assignee: str | None  # lower case; None means unassigned


def change(data: dict[str, Any]) -> Change:
    unknown = set(data) - {"status", "assignee"}
    if unknown:
        raise invalid(f"Unknown field {sorted(unknown)[0]!r}.", sorted(unknown)[0])
    if "status" not in data and "assignee" not in data:
        raise invalid("Say what to change: status, assignee or both.")
    new_status = status(data["status"]) if "status" in data else None
    assignee: str | None = None
    if "assignee" in data and data["assignee"] is not None:
        if not validation.is_handle(data["assignee"]):
            raise invalid("assignee must be a handle of the team, or null.", "assignee")
        assignee = str(data["assignee"]).lower()
    return Change(new_status, "assignee" in data, assignee)


@dataclass(frozen=True, slots=True)
class Filter:
    """`?status=` and `?assignee=` of a team listing; None means any."""

    status: str | None = None
    # "" means unassigned; otherwise a lower-cased handle.
    assignee: str | None = None

    @property
    def active(self) -> bool:
        return self.status is not None or self.assignee is not None

    def matches(self, state: ConversationState) -> bool:
        if self.status is not None and state.status != self.status:
            return False
        if self.assignee is None:
            return True
        current = state.assignee.lower() if state.assignee else ""
        return current == self.assignee


def listing_filter(status_param: str | None, assignee_param: str | None, me: str) -> Filter:
    """Parse the filters; `me` is the agent asking (or the business itself)."""
    wanted_status = status(status_param) if status_param not in (None, "") else None
    assignee: str | None = None
    if assignee_param not in (None, ""):
        if assignee_param == ASSIGNEE_ME:
            assignee = me
        elif assignee_param == ASSIGNEE_NONE:
            assignee = ""
        elif validation.is_handle(assignee_param):
            assignee = str(assignee_param).lower()
        else:
            raise invalid("assignee is me, none or a handle.", "assignee")
    return Filter(wanted_status, assignee)


def conversation_frame(peer: str, state: ConversationState, by: str | None) -> dict[str, Any]:
    """The `conversation` frame team sockets get (before its cursor); `by` is the
    agent who made the change, null when a customer's message reopened it."""
    return {"type": "conversation", "peer": peer, **state.fields(), "by": by}


def note_text(value: object) -> str:
    """A note is held to a message's rules: 1 to 10,000 characters after trimming."""
    return validation.text(value)
