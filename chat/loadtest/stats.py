"""Counters and latency histograms that merge across generator processes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

# Microseconds, from 1 µs to 5 minutes, 3 significant digits.
LOWEST_US = 1
HIGHEST_US = 300_000_000
DIGITS = 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def record(histogram: HdrHistogram, seconds: float) -> None:
    histogram.record_value(min(max(int(seconds * 1_000_000), LOWEST_US), HIGHEST_US))


def summary_ms(histogram: HdrHistogram) -> dict[str, float | None]:
    """p50/p90/p99/max in milliseconds (None when nothing was recorded)."""
    if histogram.get_total_count() == 0:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    return {
        "p50": round(histogram.get_value_at_percentile(50) / 1000, 3),
        "p90": round(histogram.get_value_at_percentile(90) / 1000, 3),
        "p99": round(histogram.get_value_at_percentile(99) / 1000, 3),
        "max": round(histogram.get_max_value() / 1000, 3),
    }


@dataclass
class Tally:
    """What one generator process saw since its last report (or in total)."""

    sent: int = 0
    acked: int = 0
    expected: int = 0
    delivered: int = 0
    duplicates: int = 0
    reconnects: int = 0
    slow_closed: int = 0
    connected: int = 0
    connect_failures: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    delivery: HdrHistogram = field(default_factory=new_histogram)
    ack: HdrHistogram = field(default_factory=new_histogram)
    connect: HdrHistogram = field(default_factory=new_histogram)

    COUNTS = (
        "sent",
        "acked",
        "expected",
        "delivered",
        "duplicates",
        "reconnects",
        "slow_closed",
        "connected",
        "connect_failures",
    )

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {name: getattr(self, name) for name in self.COUNTS}
        wire["errors"] = dict(self.errors)
        for name in ("delivery", "ack", "connect"):
            histogram: HdrHistogram = getattr(self, name)
            wire[name] = histogram.encode().decode() if histogram.get_total_count() else None
        return wire

    def add_wire(self, wire: dict[str, Any]) -> None:
        for name in self.COUNTS:
            setattr(self, name, getattr(self, name) + wire[name])
        self.errors.update(wire["errors"])
        for name in ("delivery", "ack", "connect"):
            if wire[name]:
                getattr(self, name).decode_and_add(wire[name].encode())
