"""The one error type of the API, carrying the contract's codes.

Every refusal that reaches a client, over HTTP or WebSocket, is an `ApiError`.
The transport decides how to render it (an HTTP status with an `error` body,
or an `error` frame); the code and detail are the same either way.
"""

from __future__ import annotations

from typing import Any

# The contract's error codes (PROTOCOL.md), each with the HTTP status it maps to.
INVALID = "invalid"
TOO_LONG = "too_long"
NOT_ALLOWED = "not_allowed"
UNKNOWN_USER = "unknown_user"
NOT_FOUND = "not_found"
RATE_LIMITED = "rate_limited"
UNAVAILABLE = "unavailable"
UNAUTHENTICATED = "unauthenticated"
BAD_CREDENTIALS = "bad_credentials"
FORBIDDEN_ORIGIN = "forbidden_origin"
HANDLE_TAKEN = "handle_taken"
SUSPENDED = "suspended"
DMS_CLOSED = "dms_closed"

HTTP_STATUS: dict[str, int] = {
    INVALID: 422,
    TOO_LONG: 422,
    NOT_ALLOWED: 403,
    UNKNOWN_USER: 404,
    NOT_FOUND: 404,
    RATE_LIMITED: 429,
    UNAVAILABLE: 503,
    UNAUTHENTICATED: 401,
    BAD_CREDENTIALS: 401,
    FORBIDDEN_ORIGIN: 403,
    HANDLE_TAKEN: 409,
    SUSPENDED: 403,
    DMS_CLOSED: 422,
}


class ApiError(Exception):
    """A refusal with a contract error code and a sentence a person can read."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        field: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
        reason: str | None = None,
        limit: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field
        self.retry_after = retry_after
        # v1.1: why a `not_allowed` was refused, and which limit a `rate_limited` hit.
        self.reason = reason
        self.limit = limit
        self.status = status if status is not None else HTTP_STATUS.get(code, 400)

    def body(self) -> dict[str, Any]:
        """The HTTP body: `{"error": {"code", "detail", "field"?, "reason"?, "limit"?,
        "retry_after"?}}`."""
        return {"error": self.fields()}

    def fields(self) -> dict[str, Any]:
        """The error's fields as both transports render them (HTTP body, `error` frame)."""
        error: dict[str, Any] = {"code": self.code, "detail": self.detail}
        if self.field is not None:
            error["field"] = self.field
        if self.reason is not None:
            error["reason"] = self.reason
        if self.limit is not None:
            error["limit"] = self.limit
        if self.retry_after is not None:
            error["retry_after"] = self.retry_after
        return error

    def __repr__(self) -> str:
        return f"ApiError({self.code!r}, {self.detail!r})"


def invalid(detail: str, field: str | None = None) -> ApiError:
    return ApiError(INVALID, detail, field=field)


def unknown_user(handle: str) -> ApiError:
    return ApiError(UNKNOWN_USER, f"There is no account @{handle}.")


def rate_limited(limit: str, retry_after_s: float, detail: str) -> ApiError:
    """A v1.1 limit refusal: `retry_after` is whole seconds, at least 1."""
    return ApiError(
        RATE_LIMITED, detail, limit=limit, retry_after=max(1, int(retry_after_s + 0.999))
    )


def unavailable() -> ApiError:
    return ApiError(
        UNAVAILABLE,
        "Storage is unreachable right now; nothing was stored. Retry with the same client_id.",
    )
