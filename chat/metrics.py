"""Prometheus metrics of one process (each worker exports its own)."""

from prometheus_client import Counter, Gauge, Histogram

SOCKETS = Gauge("dmhub_sockets", "Open WebSocket connections on this process.")
SENDS = Counter("dmhub_sends_total", "Message sends by outcome.", ["outcome"])
SEND_LATENCY = Histogram(
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
EVENTS_DISPATCHED = Counter("dmhub_events_dispatched_total", "Pub/sub events fanned out here.")
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
