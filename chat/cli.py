"""The `dmhub` command."""

from __future__ import annotations

import argparse
import os
import sys

from chat.config import DEFAULT_HOST, DEFAULT_PORT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dmhub", description="A self-hostable DM server.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server (embedded Valkey unless REDIS_URL)")
    serve.add_argument("--host", default=os.environ.get("HOST", DEFAULT_HOST))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", DEFAULT_PORT)))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", 1)))
    serve.add_argument("--log-level", default=os.environ.get("DMHUB_LOG_LEVEL", "info"))

    load = commands.add_parser(
        "loadtest",
        help="open-loop load test of running servers (loopback only)",
        description="Creates users through the API, opens sockets with a bounded ramp, sends "
        "at a fixed rate between sender/recipient pairs, and reports latency and losses. "
        "Exits 1 when messages were lost.",
    )
    load.add_argument("--url", action="append", default=[], help="server URL (repeatable)")
    load.add_argument("--connections", type=int, default=100, help="sockets in all")
    load.add_argument("--pairs", type=int, default=50, help="sender/recipient pairs")
    load.add_argument("--rate", type=float, default=100.0, help="messages per second, in all")
    load.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    load.add_argument("--drain", type=float, default=5.0, help="seconds to wait for stragglers")
    load.add_argument("--ramp", type=float, default=500.0, help="new sockets per second")
    load.add_argument("--procs", type=int, default=1, help="generator processes")
    load.add_argument("--size", type=int, default=32, help="message text size in characters")
    load.add_argument(
        "--slow-readers",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="fraction of receiving sockets that stop reading",
    )
    load.add_argument(
        "--reconnect-churn",
        type=float,
        default=0.0,
        metavar="RATE",
        help="receiving sockets dropped and resumed per second",
    )
    load.add_argument(
        "--server-pid",
        type=int,
        action="append",
        help="measure this server process (default: found by port)",
    )
    load.add_argument("--prefix", help="handle prefix (reuses accounts of an earlier run)")
    load.add_argument("--json", action="store_true", help="print one JSON object")
    load.add_argument(
        "--adapter",
        default="dmhub",
        help="protocol: dmhub, or module:Class for another system (bench/)",
    )

    from chat.admin import add_parser as add_admin_parser

    add_admin_parser(commands)

    args = parser.parse_args(argv)
    if args.command == "serve":
        from chat.server import serve as run_server
        from chat.store.embedded import EmbeddedValkeyError

        try:
            run_server(args.host, args.port, max(args.workers, 1), args.log_level)
        except EmbeddedValkeyError as exc:
            print(f"dmhub: {exc}", file=sys.stderr)
            return 1
    elif args.command == "admin":
        from chat.admin import main_from_args as admin_main

        return admin_main(args)
    elif args.command == "loadtest":
        from chat.loadtest.runner import main_from_args

        return main_from_args(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
