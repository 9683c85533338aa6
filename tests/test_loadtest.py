"""`dmhub loadtest` against a real dmhub process: figures, losses, churn."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bench.limits import BENCH_LIMITS_ENV
from chat.loadtest.runner import Options
from tests.support import ROOT, DmhubProcess

JSON_KEYS = {
    "connections",
    "sent",
    "acked",
    "delivered",
    "lost",
    "duplicates",
    "errors",
    "duration_s",
    "send_rate",
    "delivered_rate",
    "latency_ms",
    "ack_latency_ms",
}


@pytest.fixture(scope="module")
def dmhub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DmhubProcess]:
    """One server for the module: each run signs up accounts of its own (a
    random handle prefix, or the rerun's own), so runs do not meet."""
    data = tmp_path_factory.mktemp("loadtest-data")
    # Limits on, as in production, but above this workload (bench/run.py does the same).
    env = {"DMHUB_DATA_DIR": str(data), "REDIS_URL": "", **BENCH_LIMITS_ENV}
    server = DmhubProcess(env)
    server.start()
    yield server
    server.terminate()


def loadtest(*args: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "chat", "loadtest", "--json", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.timeout(120)
def test_a_small_run_delivers_everything_and_reports_figures(dmhub_server: DmhubProcess) -> None:
    code, result = loadtest(
        "--url", dmhub_server.url, "--connections", "30", "--pairs", "10",
        "--rate", "100", "--duration", "2", "--procs", "2",
    )  # fmt: skip
    assert code == 0, json.dumps(result)
    assert JSON_KEYS <= set(result)
    assert result["connections"] == 30
    assert result["sent"] == 200 and result["acked"] == 200
    # Recipients hold 15 of the 30 sockets, so each message is due on 1.5 of them.
    assert result["delivered"] == 300 and result["lost"] == 0 and result["duplicates"] == 0
    assert result["errors"] == {}
    latency = result["latency_ms"]
    assert isinstance(latency, dict)
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    server = result["server"]
    assert isinstance(server, dict) and server["rss_mb"] > 0


@pytest.mark.timeout(120)
def test_churning_sockets_resume_by_cursor_and_lose_nothing(dmhub_server: DmhubProcess) -> None:
    code, result = loadtest(
        "--url", dmhub_server.url, "--connections", "40", "--pairs", "10",
        "--rate", "100", "--duration", "3", "--reconnect-churn", "10",
    )  # fmt: skip
    assert code == 0, json.dumps(result)
    assert isinstance(result["reconnects"], int) and result["reconnects"] >= 5
    assert result["lost"] == 0 and result["duplicates"] == 0


@pytest.mark.timeout(120)
def test_a_rerun_on_the_same_accounts_delivers_everything(dmhub_server: DmhubProcess) -> None:
    # Same handles, so same senders: client_ids must not repeat across runs,
    # or dmhub would rightly treat the second run's sends as retries.
    args = ["--url", dmhub_server.url, "--connections", "20", "--pairs", "10",
            "--rate", "50", "--duration", "1", "--prefix", "rerun"]  # fmt: skip
    for _ in range(2):
        code, result = loadtest(*args)
        assert code == 0, json.dumps(result)
        assert result["delivered"] == result["expected"] == 50


def test_refuses_anything_but_loopback() -> None:
    with pytest.raises(SystemExit, match="loopback"):
        Options(urls=["http://10.0.0.5:8000"]).validate()
    with pytest.raises(SystemExit, match="at least 2 x"):
        Options(urls=["http://127.0.0.1:8000"], connections=10, pairs=10).validate()
