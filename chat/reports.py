"""Reports and restriction, as pure functions (PROTOCOL.md v1.1).

An account reported by `threshold` distinct accounts in good standing within
the window is restricted. The store hands `weigh` who reported and when, and
what each reporter's account looks like now; `weigh` says whether that is
enough and which reports counted, which is what an operator is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

REASONS = ("spam", "abuse")


@dataclass(frozen=True, slots=True)
class Standing:
    """What weighing needs to know of a reporter's account."""

    exists: bool
    created_ms: int
    restricted: bool = False
    suspended: bool = False


@dataclass(frozen=True, slots=True)
class Received:
    """One counted report: the first by `reporter` since the last clear."""

    reporter: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Weighing:
    restrict: bool
    # The reporters whose reports count, oldest report first.
    counted: tuple[str, ...]


def in_good_standing(standing: Standing | None, report_at_ms: int, min_age_ms: int) -> bool:
    """Neither restricted nor suspended, and old enough when it reported.

    Age at the time of the report, so that a throwaway account made for the
    purpose does not start counting a day later.
    """
    if standing is None or not standing.exists:
        return False
    if standing.restricted or standing.suspended:
        return False
    return report_at_ms - standing.created_ms >= min_age_ms


def weigh(
    reports: Sequence[tuple[Received, Standing | None]],
    *,
    now_ms: int,
    threshold: int,
    window_ms: int,
    min_age_ms: int,
    cleared_ms: int = 0,
) -> Weighing:
    """Is the account reported enough to be restricted? `threshold` 0 never restricts."""
    counted: list[tuple[int, str]] = []
    seen: set[str] = set()
    for report, standing in reports:
        if report.reporter in seen:
            continue
        # Reports from before an operator cleared the account no longer count.
        if report.at_ms <= cleared_ms or report.at_ms <= now_ms - window_ms:
            continue
        if report.at_ms > now_ms or not in_good_standing(standing, report.at_ms, min_age_ms):
            continue
        seen.add(report.reporter)
        counted.append((report.at_ms, report.reporter))
    counted.sort()
    names = tuple(reporter for _, reporter in counted)
    return Weighing(threshold > 0 and len(names) >= threshold, names)
