"""Operator actions (PROTOCOL.md v1.1, Operators), shared by `dmhub admin` and
the admin HTTP API, and the command line's tables.

Each action returns the JSON the API answers with; the command prints it as a
table, or as is with `--json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import msgspec

from chat.config import Settings
from chat.errors import ApiError, unknown_user
from chat.protocol import validation
from chat.store import keys, safety
from chat.store.backfill import backfill
from chat.store.store import Store, iso_ms


async def _handle(store: Store, lc: str) -> str:
    handle = await store.redis.hget(keys.user(lc), "handle")
    if handle is None:
        raise unknown_user(lc)
    return str(handle)


async def reports(store: Store, settings: Settings, lc: str | None = None) -> dict[str, Any]:
    """One account's reports (newest first), or every reported account."""
    if lc is not None:
        handle = await _handle(store, lc)
        entries = await safety.report_log(store, lc)
        return {
            "handle": handle,
            "restricted": await safety.is_restricted(store, lc),
            "reports": [safety.public_report(handle, e) for e in entries],
        }
    window_ms = settings.restrict_window_s * 1000
    return {"accounts": await safety.reported_accounts(store, window_ms)}


async def restrictions(store: Store) -> dict[str, Any]:
    return {"restrictions": [r.public() for r in await safety.restrictions(store)]}


async def clear(store: Store, lc: str) -> dict[str, Any]:
    """Lift a restriction, and say why it was there."""
    handle = await _handle(store, lc)
    was = await safety.clear(store, lc, safety.now_ms())
    return {
        "handle": handle,
        "was_restricted": was is not None,
        "restriction": was.public() if was is not None else None,
    }


async def suspend(store: Store, lc: str) -> dict[str, Any]:
    handle = await _handle(store, lc)
    now = safety.now_ms()
    await safety.suspend(store, lc, now)
    return {"handle": handle, "suspended": True, "suspended_at": iso_ms(now)}


async def unsuspend(store: Store, lc: str) -> dict[str, Any]:
    handle = await _handle(store, lc)
    await safety.unsuspend(store, lc)
    return {"handle": handle, "suspended": False}


# -- tables for people ------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def render(command: str, result: dict[str, Any]) -> str:
    """What `dmhub admin COMMAND` prints without --json."""
    if command == "reports" and "accounts" in result:
        accounts = result["accounts"]
        if not accounts:
            return "No reports."
        rows = [
            [
                "@" + a["handle"],
                _text(a["reports"]),
                _text(a["reporters_in_window"]),
                _text(a["restricted"]),
                _text(a["suspended"]),
                _text(a["last_reported_at"]),
            ]
            for a in accounts
        ]
        return table(
            ["account", "reports", "reporters (window)", "restricted", "suspended", "last report"],
            rows,
        )
    if command == "reports":
        head = f"Reports about @{result['handle']}" + (
            " (restricted)" if result["restricted"] else ""
        )
        if not result["reports"]:
            return f"{head}: none."
        rows = [
            [
                "@" + _text(r["reporter"]),
                _text(r["reason"]),
                _text(r["message_id"]),
                _text(r["reported_at"]),
            ]
            for r in result["reports"]
        ]
        return head + "\n" + table(["reporter", "reason", "message", "reported at"], rows)
    if command == "restrictions":
        found = result["restrictions"]
        if not found:
            return "No account is restricted."
        rows = [
            [
                "@" + r["handle"],
                r["restricted_at"],
                ", ".join(f"@{x['reporter']} ({x['reason']})" for x in r["reports"]) or "-",
            ]
            for r in found
        ]
        return table(["account", "restricted at", "reported by"], rows)
    if command == "clear":
        if not result["was_restricted"]:
            return (
                f"@{result['handle']} was not restricted; reports made until now no longer count."
            )
        restriction = result["restriction"]
        lines = [
            f"Cleared @{result['handle']}: restricted since {restriction['restricted_at']}, "
            "after these reports (they no longer count):"
        ]
        rows = [
            [
                "@" + _text(r["reporter"]),
                _text(r["reason"]),
                _text(r["message_id"]),
                _text(r["reported_at"]),
            ]
            for r in restriction["reports"]
        ]
        lines.append(table(["reporter", "reason", "message", "reported at"], rows))
        return "\n".join(lines)
    if command == "suspend":
        return f"Suspended @{result['handle']}: its sessions ended and nobody can write to it."
    if command == "unsuspend":
        return f"@{result['handle']} is no longer suspended."
    if command == "backfill":
        columns = [
            ("accounts", "accounts"),
            ("skipped", "skipped (deleted)"),
            ("letters_set", "letters set"),
            ("letters_cleared", "letters cleared"),
            ("read_pointers_moved", "read pointers moved"),
            ("unread_counts_moved", "unread counts moved"),
            ("old_hashes_deleted", "old hashes deleted"),
        ]
        return table([title for _, title in columns], [[_text(result[k]) for k, _ in columns]])
    raise ValueError(command)


# -- `dmhub admin` ------------------------------------------------------------------


def add_parser(commands: Any) -> None:
    """The `admin` command and its subcommands, on the `dmhub` parser."""
    admin = commands.add_parser(
        "admin",
        help="review reports, lift restrictions, suspend accounts, backfill after an upgrade",
        description="Runs against the same storage as `dmhub serve`: REDIS_URL, or the "
        "embedded Valkey of DMHUB_DATA_DIR (attached to while dmhub serve runs, else "
        "started for the command).",
    )
    actions = admin.add_subparsers(dest="admin_command", required=True)
    reports_ = actions.add_parser("reports", help="reported accounts, or one account's reports")
    reports_.add_argument("--handle", help="the reports about this account")
    actions.add_parser("restrictions", help="restricted accounts and who reported them")
    for name, text in (
        ("clear", "lift a restriction (reports made before it stop counting)"),
        ("suspend", "suspend an account: no sign-in, sessions end, nobody can write to it"),
        ("unsuspend", "lift a suspension"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("handle")
    actions.add_parser(
        "backfill",
        help="once, when upgrading: derive the relationship letters and the read state "
        "of data written before them (safe to run again)",
        description="For every account: sets the relationship letters of its user hash "
        "(p:<peer>) to exactly what its follow, block and wrote collections say, and "
        "moves its read state from the old rd:/unread: hashes into its user hash, never "
        "over a newer field. Run it once after stopping the old processes and before "
        "starting the new ones. Safe to run again: a second run changes nothing.",
    )
    for action in actions.choices.values():
        action.add_argument("--json", action="store_true", help="print JSON")


@contextlib.contextmanager
def storage(settings: Settings) -> Iterator[str]:
    """The Redis URL `dmhub serve` uses with these settings, started if need be."""
    if settings.redis_url:
        yield settings.redis_url
        return
    import redis

    from chat.store.embedded import EmbeddedValkey, running_url

    url = running_url(settings.data_dir)
    if url is not None:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        try:
            client.ping()
        except redis.RedisError:
            url = None  # left behind by a dmhub that is gone: start our own below
        finally:
            client.close()
    if url is not None:
        yield url
        return
    with EmbeddedValkey(
        settings.data_dir, settings.appendfsync, maxmemory=settings.valkey_maxmemory
    ) as valkey:
        yield valkey.url


async def run(url: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from chat.store.connection import target

    client = (await target(url)).client()  # one node or a cluster: scans cover every master
    store = Store(client, event_retention=settings.event_retention)
    command = args.admin_command
    try:
        if command == "reports":
            lc = _lc(args.handle) if args.handle else None
            return await reports(store, settings, lc)
        if command == "restrictions":
            return await restrictions(store)
        if command == "backfill":
            return (await backfill(store)).public()
        operation = {"clear": clear, "suspend": suspend, "unsuspend": unsuspend}[command]
        return await operation(store, _lc(args.handle))
    finally:
        await client.aclose()


def _lc(handle: str) -> str:
    handle = handle.removeprefix("@")
    if not validation.is_handle(handle):
        raise unknown_user(handle[:32])
    return handle.lower()


def main_from_args(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        with storage(settings) as url:
            result = asyncio.run(run(url, settings, args))
    except ApiError as error:
        print(f"dmhub admin: {error.detail}", file=sys.stderr)
        return 1
    except Exception as error:  # storage unreachable, a locked data folder...
        print(f"dmhub admin: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(msgspec.json.encode(result).decode())
    else:
        print(render(args.admin_command, result))
    return 0
