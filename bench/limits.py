"""The limits every benchmark server runs with.

The limits stay on, so each benchmark pays for their checks on every send, but
far above what its generated senders do: a benchmark measures the server, not
the rate limiter's refusals. One table, so that no script turns a limit off.
"""

BENCH_LIMITS_ENV = {
    "DMHUB_LIMIT_MESSAGES_PER_MIN": "10000000",
    "DMHUB_LIMIT_NEW_CONVERSATIONS_PER_DAY": "1000000",
    "DMHUB_LIMIT_REQUESTS_PER_HOUR": "1000000",
    "DMHUB_LIMIT_SOCKETS_PER_USER": "1000",
    # Every benchmark account signs up from 127.0.0.1.
    "DMHUB_LIMIT_SIGNUPS_PER_HOUR": "1000000",
}
