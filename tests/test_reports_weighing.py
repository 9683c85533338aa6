"""Report weighing (chat/reports.py): who counts towards a restriction."""

from __future__ import annotations

from chat.reports import Received, Standing, Weighing, in_good_standing, weigh

DAY = 86_400_000
NOW = 100 * DAY
OLD = Standing(exists=True, created_ms=NOW - 30 * DAY)


def reports(
    *names: str, at: int = NOW - 1000, standing: Standing = OLD
) -> list[tuple[Received, Standing | None]]:
    return [(Received(name, at), standing) for name in names]


def weighed(items: list[tuple[Received, Standing | None]], **overrides: int) -> Weighing:
    options = {"now_ms": NOW, "threshold": 3, "window_ms": DAY, "min_age_ms": DAY} | overrides
    return weigh(items, **options)


def test_three_distinct_reporters_in_good_standing_restrict() -> None:
    assert weighed(reports("a", "b")) == Weighing(False, ("a", "b"))
    assert weighed(reports("a", "b", "c")).restrict
    # The same reporter twice is one report.
    assert not weighed(reports("a", "b", "a")).restrict


def test_reports_outside_the_window_or_before_a_clear_do_not_count() -> None:
    old = reports("a", at=NOW - DAY - 1)
    assert not weighed(old + reports("b", "c")).restrict
    assert weighed(old + reports("b", "c"), window_ms=2 * DAY).restrict
    cleared = weighed(reports("a", "b", "c", at=NOW - 5000), cleared_ms=NOW - 4000)
    assert cleared == Weighing(False, ())


def test_fresh_restricted_suspended_or_gone_reporters_do_not_count() -> None:
    fresh = Standing(exists=True, created_ms=NOW - 3600_000)
    restricted = Standing(exists=True, created_ms=0, restricted=True)
    suspended = Standing(exists=True, created_ms=0, suspended=True)
    gone = Standing(exists=False, created_ms=0)
    for bad in (fresh, restricted, suspended, gone):
        items = reports("a", "b") + reports("c", standing=bad)
        assert weighed(items) == Weighing(False, ("a", "b")), bad
    assert not weighed([*reports("a", "b"), (Received("c", NOW - 1), None)]).restrict
    # With no minimum age, a fresh account counts.
    assert weighed(reports("a", "b") + reports("c", standing=fresh), min_age_ms=0).restrict


def test_age_is_taken_when_the_report_was_made() -> None:
    created = NOW - DAY - 10
    standing = Standing(exists=True, created_ms=created)
    assert in_good_standing(standing, created + DAY, DAY)
    assert not in_good_standing(standing, created + DAY - 1, DAY)


def test_threshold_zero_never_restricts_and_counted_is_in_report_order() -> None:
    items = [(Received("z", NOW - 10), OLD), (Received("a", NOW - 5), OLD)]
    assert weighed(items, threshold=0) == Weighing(False, ("z", "a"))
    assert weighed(items, threshold=1) == Weighing(True, ("z", "a"))
