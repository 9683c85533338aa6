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

    args = parser.parse_args(argv)
    if args.command == "serve":
        from chat.server import serve as run_server
        from chat.store.embedded import EmbeddedValkeyError

        try:
            run_server(args.host, args.port, max(args.workers, 1), args.log_level)
        except EmbeddedValkeyError as exc:
            print(f"dmhub: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
