"""Who may act as whom: the one check behind every `as=` route and `/ws?as=`.

An agent acts for a business only while it is in the business's team (read
from Redis on every request and handshake, so a removal counts at once). `as=`
names a business or nothing: a person's account is never reachable through it,
not even one's own.
"""

from __future__ import annotations

from chat.errors import NOT_ALLOWED, ApiError
from chat.permission.rule import Reason
from chat.protocol import validation
from chat.store.store import Store
from chat.store.teams import TeamStore


def not_member(business: str) -> ApiError:
    # Same words whether the account is missing, a person, or a business whose
    # team you are not in: `as=` must not tell them apart. Every not_allowed
    # carries a reason from the contract's list; cannot_receive is the one that
    # deliberately says nothing about the other account (docs/protocol.md).
    return ApiError(
        NOT_ALLOWED, f"You are not in the team of @{business}.", reason=Reason.CANNOT_RECEIVE.value
    )


async def acting_account(store: Store, principal: str, as_param: str | None) -> str:
    """The lower-cased account a request acts for: the caller's own, or the business
    named by `as=` when the caller is in its team (or is that business)."""
    if as_param is None:
        return principal
    if not validation.is_handle(as_param):
        raise not_member(as_param[:32])
    business = as_param.lower()
    row = await store.user(business)
    # A suspended business answers nobody, through its agents neither.
    if row is None or row.get("kind") != "business" or row.get("active") == "0":
        raise not_member(as_param)
    if business == principal or await TeamStore(store).is_member(business, principal):
        return business
    raise not_member(as_param)


async def agent_handle(store: Store, principal: str, acting: str) -> str | None:
    """The handle (as typed) to sign an agent's messages with; None when the caller
    acts as itself."""
    if acting == principal:
        return None
    row = await store.user(principal)
    return row["handle"] if row is not None else principal
