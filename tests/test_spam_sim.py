"""The spam simulation at its small size (bench/spam_sim.py): spammers reach no
inbox and are all restricted, while no ordinary person or the business is
refused anything or restricted."""

from __future__ import annotations

import pytest

from bench.spam_sim import SMALL, simulate, table

pytestmark = pytest.mark.timeout(150)


async def test_spammers_reach_no_inbox_and_are_restricted_nobody_else_is_limited() -> None:
    summary = await simulate(SMALL)
    print(table(summary))
    assert summary["errors"] == [] and summary["unfinished_tasks"] == 0
    spammers = summary["spammers"]
    assert len(spammers) == SMALL.spammers
    for s in spammers:
        # Every open-DM account (and the business) was tried.
        assert s["attempted"] == summary["population"]["open_dms"] + 1, s
        assert s["stored"] > 0, s
        assert s["landed_inbox"] == 0, s
        assert s["landed_requests"] == s["stored"], s
        assert s["restricted"] is True, s
        assert s["reports_received"] >= summary["settings"]["DMHUB_RESTRICT_REPORTERS"], s
        assert s["attempted"] == s["stored"] + sum(s["refused"].values()), s
        assert "reason:restricted" in s["refused"], s
    assert summary["reports"]["spam_found_in_inbox_by_reporters"] == 0
    people, business = summary["people"], summary["business"]
    assert people["stored"] > 0 and people["refused"] == 0, people
    assert people["restricted"] == []
    assert business["stored"] > 0 and business["refused"] == 0, business
    assert business["restricted"] is False
