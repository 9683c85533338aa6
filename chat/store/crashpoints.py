"""Named points between the steps of a split operation where a test can make
this process die, as a kill -9 would, to prove the reconciler completes what
was left half-done (tests/test_reconcile*.py).

Off unless `DMHUB_CRASH_AT` names the point; read once, at import.
"""

from __future__ import annotations

import os

CRASH_ENV = "DMHUB_CRASH_AT"
CRASH_EXIT_CODE = 70

_armed = os.environ.get(CRASH_ENV, "")


def crash_point(name: str) -> None:
    """Die here, at once and without cleanup, if a test asked for it."""
    if _armed and _armed == name:
        os._exit(CRASH_EXIT_CODE)
