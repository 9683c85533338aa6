"""dmhub's own CPU per message under the benchmark's latency workload, and where it goes.

    flock /tmp/dmhub-bench.lock .venv/bin/python bench/server_cpu.py --runs 3
    flock /tmp/dmhub-bench.lock .venv/bin/python bench/server_cpu.py --runs 1 --profile /tmp/p

Each run is bench/run.py's latency workload for `dmhub-1` (a fresh Valkey from a
copy of a seeded store, a fresh `dmhub serve`, `dmhub loadtest` with 1,000 sockets
at 2,000 msg/s for 10 s, 2 generator processes), and prints the server's and
Valkey's CPU per message sent, p50/p99, and the load average. The seeded store
is kept in `--work` between invocations, so comparing two commits costs no new
sign-ups. With `--profile DIR`, py-spy samples the server during the sending
phase of every run (its samples slow the server down: read the CPU figures of
runs without it). Traffic goes to 127.0.0.1 only; every process started here is
stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    BIN,
    DMHUB_PREFIX,
    FULL,
    SYSTEMS,
    Valkey,
    raise_file_limit,
    running,
    seed_dmhub,
)

PAIRS = FULL.latency_sockets // 2
PROFILE_SECONDS = 8
# The loadtest opens its sockets before it sends: py-spy starts once they are all
# open (and this long after, for the generators to start sending).
CONNECT_TIMEOUT_S = 60.0
SENDING_AFTER_S = 1.0


def seeded(work: Path) -> Path:
    """The seeded store and token cache in `work`, made on first use."""
    seed, tokens = work / "dmhub-seed", work / "dmhub-tokens.json"
    if (seed / "appendonlydir").is_dir() and tokens.exists():
        return seed
    shutil.rmtree(seed, ignore_errors=True)
    session = SimpleNamespace(work=work, token_cache=tokens, log=print)
    return seed_dmhub(session, PAIRS)  # type: ignore[arg-type]


def wait_connected(pid: int, sockets: int) -> None:
    """Until the server holds `sockets` established TCP connections (bounded in time)."""
    import psutil

    server = psutil.Process(pid)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while time.monotonic() < deadline:
        established = [c for c in server.net_connections("tcp") if c.status == "ESTABLISHED"]
        if len(established) >= sockets:
            break
        time.sleep(0.2)
    time.sleep(SENDING_AFTER_S)


def profiler(tool: str, pid: int, out: Path) -> list[str]:
    """The command that samples the server for PROFILE_SECONDS into `out`."""
    seconds = str(PROFILE_SECONDS)
    if tool == "perf":  # C and kernel frames, no Python names (3.11 has no perf map)
        return ["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(pid),
                "-o", str(out), "--", "sleep", seconds]  # fmt: skip
    if tool == "strace":  # syscall counts (strace slows the server a lot)
        return ["timeout", "-s", "INT", seconds, "strace", "-c", "-f", "-p", str(pid),
                "-o", str(out)]  # fmt: skip
    native = ["--native"] if tool == "py-spy-native" else ["--nonblocking"]
    return [str(BIN / "py-spy"), "record", *native, "--format", "raw", "--rate", "400",
            "--duration", seconds, "--pid", str(pid), "-o", str(out)]  # fmt: skip


def one_run(
    work: Path, seed: Path, index: int, profile: Path | None, tool: str = "py-spy"
) -> dict[str, Any]:
    run_dir = work / f"run-{index}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    valkey = Valkey(run_dir / "valkey", seed)
    system = SYSTEMS[0]
    try:
        with running(system, valkey, run_dir, "server") as server:
            command = [
                str(BIN / "dmhub"), "loadtest", "--json",
                "--adapter", system.adapter, "--url", server.url,
                "--connections", str(FULL.latency_sockets), "--pairs", str(PAIRS),
                "--rate", f"{FULL.latency_rate:g}", "--duration", f"{FULL.latency_duration:g}",
                "--drain", f"{FULL.drain:g}", "--ramp", f"{FULL.ramp:g}",
                "--procs", str(FULL.procs), "--server-pid", str(server.pid),
                "--prefix", DMHUB_PREFIX,
            ]  # fmt: skip
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "BENCH_TOKEN_CACHE": str(work / "dmhub-tokens.json"),
            }
            before = valkey.cpu_s()["valkey"]
            load_before = os.getloadavg()
            spy = None
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            try:
                if profile is not None:
                    wait_connected(server.pid, FULL.latency_sockets)
                    out = profile / f"run-{index}.txt"
                    spy = subprocess.Popen(
                        profiler(tool, server.pid, out),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                stdout, _ = process.communicate(timeout=180)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(10)
                if spy is not None:
                    try:
                        spy.wait(PROFILE_SECONDS + 20)
                    except subprocess.TimeoutExpired:
                        spy.kill()
                        spy.wait(5)
            valkey_s = valkey.cpu_s()["valkey"] - before
    finally:
        valkey.stop()
        # The server's log outlives the run (its warnings say what went wrong).
        with contextlib.suppress(OSError):
            shutil.copy(run_dir / "server.log", work / f"run-{index}.log")
        shutil.rmtree(run_dir, ignore_errors=True)
    result = json.loads(stdout.strip().splitlines()[-1])
    sent = result.get("sent") or 0
    server = result.get("server") or {}
    lat = result.get("latency_ms") or {}
    return {
        "sent": sent,
        "lost": result.get("lost"),
        "p50_ms": lat.get("p50"),
        "p99_ms": lat.get("p99"),
        "server_cpu_percent": server.get("cpu_percent"),
        "server_us_per_msg": round(server["cpu_s"] * 1e6 / sent, 1) if sent else None,
        "valkey_us_per_msg": round(valkey_s * 1e6 / sent, 1) if sent else None,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/dmhub-server-cpu"))
    parser.add_argument("--profile", type=Path, help="py-spy raw profiles into this folder")
    parser.add_argument(
        "--tool",
        choices=("py-spy", "py-spy-native", "perf", "strace"),
        default="py-spy",
        help="with --profile: py-spy (Python frames), py-spy-native (C frames too; it "
        "pauses the server at each sample), perf (C and kernel), strace (syscall counts)",
    )
    args = parser.parse_args(argv)
    raise_file_limit()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    seed = seeded(args.work)
    rows = []
    for index in range(1, max(1, min(args.runs, 10)) + 1):
        row = one_run(args.work, seed, index, args.profile, args.tool)
        rows.append(row)
        print(json.dumps(row), flush=True)
    for name in ("server_us_per_msg", "valkey_us_per_msg", "p50_ms", "p99_ms"):
        values = [r[name] for r in rows if r[name] is not None]
        if values:
            print(f"{name}: median {statistics.median(values):.1f}  all {values}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
