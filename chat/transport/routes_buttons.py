"""The Message button: `GET /api/buttons` (checks a button and writes its
snippet), `/button.js` (the embeddable script) and `/buttons` (the generator).

No sign-in: a business may try its button before it has a session here, and
nothing returned is more than what a visitor clicking the button would learn.
"""

from __future__ import annotations

import hashlib
import html
from functools import cache
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from chat.errors import DMS_CLOSED, UNKNOWN_USER, ApiError
from chat.protocol import validation
from chat.store.store import public_user
from chat.transport.http import json, runtime
from chat.transport.web import WEB_DIR

BUTTON_JS = WEB_DIR / "button.js"
BUTTONS_PAGE = WEB_DIR / "buttons.html"
BUTTON_CLASS = "dmhub-message-button"
# Snippets are pasted once and live for years, so they name the bare URL: a
# new button.js reaches every site within minutes, and in between browsers use
# their copy and revalidate it by ETag (a 304). `?v=VERSION` (the ETag's
# value) names one version for good and is cached for a year.
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, max-age=300, stale-while-revalidate=86400"


@cache
def button_script() -> tuple[bytes, str]:
    """The script and its version (a content hash), read once per process."""
    body = BUTTON_JS.read_bytes()
    return body, hashlib.sha256(body).hexdigest()[:12]


def origin_of(request: Request) -> str:
    """Where snippets point: DMHUB_PUBLIC_URL's origin, else the one asked."""
    configured = runtime(request).origins.public
    if configured is not None:
        return str(configured)
    return f"{request.url.scheme}://{request.url.netloc}"


def snippet(compose_url: str, script_url: str, label: str, size: str) -> str:
    # Same tab, as a plain link would; a site that wants a new tab adds
    # target="_blank" and the button honours it.
    link = (
        f'<a class="{BUTTON_CLASS}" href="{html.escape(compose_url)}" data-size="{size}">'
        f"{html.escape(label, quote=False)}</a>"
    )
    return f'{link}\n<script async src="{html.escape(script_url)}"></script>'


async def check_button(request: Request) -> Response:
    wanted = validation.button_request(request.query_params)
    row = await runtime(request).store.user(wanted.handle.lower())
    if row is None:
        raise ApiError(UNKNOWN_USER, f"There is no account @{wanted.handle}.", field="handle")
    handle = row["handle"]
    if row.get("active") == "0":
        # Suspended: nobody can write to it. Said without the reason, as the
        # permission rule's `cannot_receive` does.
        raise ApiError(
            DMS_CLOSED,
            f"@{handle} cannot receive messages from strangers right now, so a customer "
            "clicking this button could not write.",
            field="handle",
        )
    if row.get("open_dms") != "1":
        raise ApiError(
            DMS_CLOSED,
            f"@{handle} receives messages only from people it follows, so a customer "
            "clicking this button could not write. Open its DMs first.",
            field="handle",
        )
    query = {"recipient": handle}
    if wanted.text:
        query["text"] = wanted.text
    if wanted.ref:
        query["ref"] = wanted.ref
    origin = origin_of(request)
    compose_url = f"{origin}/messages/compose?{urlencode(query)}"
    script_url = f"{origin}/button.js"
    label = wanted.label or f"Message @{handle}"
    return json(
        {
            "user": public_user(row),
            "compose_url": compose_url,
            "snippet": snippet(compose_url, script_url, label, wanted.size),
        }
    )


async def button_js(request: Request) -> Response:
    body, version = button_script()
    etag = f'"{version}"'
    cache_control = IMMUTABLE if request.query_params.get("v") == version else REVALIDATE
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type="text/javascript; charset=utf-8")


async def buttons_page(request: Request) -> Response:
    if not BUTTONS_PAGE.exists():
        return PlainTextResponse("The button generator is not installed.", 404)
    return FileResponse(BUTTONS_PAGE, headers={"Cache-Control": "no-cache"})


routes = [
    Route("/api/buttons", check_button, methods=["GET"]),
    Route("/button.js", button_js, methods=["GET", "HEAD"]),
    Route("/buttons", buttons_page, methods=["GET", "HEAD"]),
]
