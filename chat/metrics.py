"""Prometheus metrics of one process (each worker exports its own).

The metrics every message touches (`SENDS`, `SEND_LATENCY`, `EVENTS_DISPATCHED`)
are `HotCounter`/`HotHistogram`: plain numbers in this process, read by
prometheus_client only when /metrics is scraped. Its own `Counter` and
`Histogram` take a lock per update, and `labels()` builds its key each time:
about 11 µs of the server's CPU per message at 2,000 msg/s, against about 1 µs
for these (docs/performance.md). They are updated from the event loop's thread
only, which is what makes a lock unnecessary. The rest stay prometheus_client's.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString


class HotCount:
    """One counter's value: `inc` is an addition."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HotCounter(Collector):
    """A counter for the event loop's hot path, exported as prometheus_client's would be
    (`NAME_total`, `NAME_created`; a labelled child appears once it is used)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        # Keyed by label values; the code passes a fixed set of them (outcomes).
        self.children: dict[tuple[str, ...], HotCount] = {}
        self._unlabelled = HotCount()
        registry.register(self)

    def labels(self, *values: str) -> HotCount:
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}")
            child = self.children[values] = HotCount()
        return child

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled.value += amount

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        if self.labelnames:
            for values, child in list(self.children.items()):
                family.add_metric(list(values), child.value, created=child.created)
        else:
            family.add_metric([], self._unlabelled.value, created=self._unlabelled.created)
        return [family]


class HotHistogram(Collector):
    """A histogram (no labels) for the hot path: a bucket count and a sum per observation."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = sorted(float(b) for b in buckets)
        # One count per bound, then +Inf; cumulative only when exported.
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.created = time.time()
        registry.register(self)

    def observe(self, value: float) -> None:
        # A value equal to a bound belongs to that bucket (`le`).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[Metric]:
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            total += count
            le: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
            buckets.append((le, float(total)))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, self.sum)
        family.samples.append(Sample(f"{self.name}_created", {}, self.created))
        return [family]


SOCKETS = Gauge("dmhub_sockets", "Open WebSocket connections on this process.")
SENDS = HotCounter("dmhub_sends_total", "Message sends by outcome.", ["outcome"])
SEND_LATENCY = HotHistogram(
    "dmhub_send_seconds",
    "From a send arriving to its durable write returning.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
ACK_REPLICA_WAITS = Counter(
    "dmhub_ack_replica_waits_total",
    "Acks that waited for replicas (DMHUB_ACK_REPLICAS): confirmed, or short (sent "
    "anyway with fewer replicas confirming: a failover could lose them).",
    ["outcome"],
)
PUBSUB_RECONNECTS = Counter("dmhub_pubsub_reconnects_total", "Pub/sub reconnections.")
RECONCILED = Counter(
    "dmhub_reconciled_total",
    "Split operations a reconciler completed after their process left them half-done.",
    ["kind"],
)
EVENTS_DISPATCHED = HotCounter("dmhub_events_dispatched_total", "Pub/sub events fanned out here.")
SLOW_CLOSES = Counter("dmhub_slow_socket_closes_total", "Sockets closed with 1013 (too slow).")
INVALID_FRAMES = Counter("dmhub_invalid_frames_total", "Frames answered with an invalid error.")
RATE_LIMITED = Counter(
    "dmhub_rate_limited_total", "Requests and frames refused by a v1.1 limit.", ["limit"]
)

WEBHOOK_DELIVERIES = Counter(
    "dmhub_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: delivered (2xx), http_error, timeout, network, blocked.",
    ["outcome"],
)
WEBHOOK_LATENCY = Histogram(
    "dmhub_webhook_delivery_seconds",
    "From an event being stored to its receiver answering 2xx, retries included.",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0),
)
WEBHOOKS_SERVED = Gauge("dmhub_webhooks_served", "Webhooks whose lease this process holds.")
WEBHOOKS_FAILING = Gauge(
    "dmhub_webhooks_failing",
    "Webhooks served here whose deliveries are failing, deactivated ones included.",
)
STORAGE_OOM_REFUSALS = Counter(
    "dmhub_storage_oom_refusals_total",
    "Writes Redis refused because it reached maxmemory (answered 503 unavailable).",
)
REDIS_USED_MEMORY = Gauge(
    "dmhub_redis_used_memory_bytes", "Redis used_memory, read when /metrics is scraped."
)
REDIS_MAXMEMORY = Gauge(
    "dmhub_redis_maxmemory_bytes", "Redis maxmemory (0: no ceiling), read when /metrics is scraped."
)
