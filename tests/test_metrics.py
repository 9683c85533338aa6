"""The hot-path metrics export exactly what prometheus_client's own would."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from chat.metrics import HotCounter, HotHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def exported(registry: CollectorRegistry) -> str:
    """The exposition text, creation times masked (they differ by construction)."""
    text = generate_latest(registry).decode()
    return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", text)


def test_a_hot_counter_exports_what_a_counter_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hot = HotCounter("x_sends_total", "Sends.", ["outcome"], registry=ours)
    plain = Counter("x_sends_total", "Sends.", ["outcome"], registry=theirs)
    hot_total = HotCounter("x_events_total", "Events.", registry=ours)
    plain_total = Counter("x_events_total", "Events.", registry=theirs)
    assert exported(ours) == exported(theirs)  # nothing counted yet
    for outcome in ("stored", "stored", "refused", "stored"):
        hot.labels(outcome).inc()
        plain.labels(outcome).inc()
    hot_total.inc()
    hot_total.inc(2.5)
    plain_total.inc()
    plain_total.inc(2.5)
    assert exported(ours) == exported(theirs)
    assert 'x_sends_total{outcome="stored"} 3.0' in exported(ours)


def test_a_hot_counter_refuses_the_wrong_labels() -> None:
    hot = HotCounter("x_total", "X.", ["outcome"], registry=CollectorRegistry())
    with pytest.raises(ValueError):
        hot.labels("a", "b")


def test_a_hot_histogram_exports_what_a_histogram_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hot = HotHistogram("x_seconds", "Latency.", BUCKETS, registry=ours)
    plain = Histogram("x_seconds", "Latency.", buckets=BUCKETS, registry=theirs)
    assert exported(ours) == exported(theirs)
    # On the bounds (a bound's own bucket), between them, below and above all.
    for value in (0.0, 0.001, 0.0011, 0.01, 0.5, 1.0, 3.0, 0.0001):
        hot.observe(value)
        plain.observe(value)
    assert exported(ours) == exported(theirs)
    assert 'x_seconds_bucket{le="0.001"} 3.0' in exported(ours)
    assert 'x_seconds_bucket{le="+Inf"} 8.0' in exported(ours)
