"""The route table: one handler per method and path."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from starlette.routing import Route

from chat.app import create_app
from tests.support import settings_for


def test_no_route_is_shadowed_by_another(tmp_path: Path) -> None:
    # Starlette serves the first match: a second route for the same method and
    # path is dead code, and the answer depends on the order of registration.
    app = create_app(settings_for("redis://127.0.0.1:1/0", tmp_path))
    served = Counter(
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
    )
    assert [key for key, count in served.items() if count > 1] == []
    assert ("GET", "/api/me") in served
