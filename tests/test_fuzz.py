"""Fuzzing a real server: generated frames, bodies and query strings (issue 8).

`hypothesis` generates the inputs: well-formed frames with wrong values, frames
of unknown types, JSON nested a thousand levels deep, text that is not JSON,
binary frames, and HTTP bodies and query strings for every route that a client
may call repeatedly. A real `dmhub serve` process on a real Valkey answers
them. Whatever the input: no 5xx, no traceback or error in the server's log,
only the contract's error codes (HTTP and frames alike), only the contract's
close codes, and RSS bounded. The figures are recorded (`record_figures`: the
run's `figures` section).

Generation only (no shrinking): a failure names the input that caused it.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.support import PASSWORD, DmhubProcess, unique_handle

pytestmark = [
    pytest.mark.timeout(240),
    # websockets draws its mask keys from `random`; hypothesis warns about any use.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

SOCKETS = 6
FRAMES_PER_BATCH = 100
REQUESTS_PER_CASE = 10
# WebSocket handshakes with generated since, peer and as query parameters.
HANDSHAKES = 300
HANDSHAKES_PER_CASE = 10
FRAME_BATCHES = int(os.environ.get("FUZZ_BATCHES", 200))  # 20,000 generated frames
# Nearly every request carries both a body and a query string: ~3,500 inputs.
HTTP_CASES = int(os.environ.get("FUZZ_HTTP", 2_000))
RSS_GROWTH_LIMIT_MIB = 80

# PROTOCOL.md: what an `error` frame may say, and why a socket may be closed.
FRAME_CODES = {"invalid", "too_long", "not_allowed", "unknown_user", "rate_limited", "unavailable"}
CLOSE_CODES = {1008, 1009}  # too many invalid frames; a frame over 64 KiB
# PROTOCOL.md's HTTP error codes (v1 and v1.1).
HTTP_CODES = {
    "invalid",
    "too_long",
    "not_allowed",
    "unknown_user",
    "not_found",
    "rate_limited",
    "unauthenticated",
    "bad_credentials",
    "forbidden_origin",
    "handle_taken",
    "suspended",
    "dms_closed",
}
SERVER_FRAMES = {"ready", "ack", "message", "typing", "read", "error", "pong", "reset", "note"}

# -- what to generate -----------------------------------------------------------
#
# hypothesis draws the values (odd unicode, huge numbers, nested structures, the
# strings that once broke the server) and a seed; each example then combines its
# values into many frames or requests with a `random.Random(seed)`. Drawing every
# frame from hypothesis would cost milliseconds each (its own `randoms()` too: each
# call is a tracked draw), and this test must stay near a minute.

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_value = st.one_of(
    leaf,
    st.lists(leaf, max_size=3),
    st.dictionaries(st.text(max_size=8), leaf, max_size=3),
)
ODD_STRINGS = [
    "",
    " ",
    "\u200b",
    "\u2060\u3164",
    "\ufeff",
    "\u202e\u202c",
    "\u00b2",
    "9" * 5000,
    "5-99999999999999999999999",
    "18446744073709551616-0",
    "-1",
    "0",
    "x" * 10_001,
    "\ufeff" + "x" * 10_000,
    "a\x00b",
    "../../etc",
    "%00",
    "\ud7ff",
]
# By index: a strategy's repr shows its values, and some of these are long.
odd = st.integers(0, len(ODD_STRINGS) - 1).map(ODD_STRINGS.__getitem__)
FRAME_TYPES = ["send", "typing", "read", "ping"]
FRAME_FIELDS = ["to", "text", "client_id", "peer", "up_to", "nonce", "ref", "quick_reply"]


def values(handles: list[str]) -> st.SearchStrategy[list[Any]]:
    """What one example contributes: a few values of every kind a field may get."""
    one = st.one_of(
        st.sampled_from([*handles, *(h.upper() for h in handles), "nobody_here"]),
        odd,
        st.from_regex(r"[0-9]{1,22}", fullmatch=True),
        st.text(max_size=60),
        json_value,
    )
    return st.lists(one, min_size=6, max_size=12)


def deep(n: int) -> str:
    return "[" * n + "]" * n


def make_frame(rnd: random.Random, pool: list[Any], handles: list[str]) -> str | bytes:
    """One frame from an example's values; mostly well-formed, some not at all."""
    roll = rnd.random()
    if roll < 0.05:
        n = rnd.choice([10, 500, 1000, 3000])
        return rnd.choice(
            [deep(n), '{"type":"ping","nonce":' + deep(n) + "}",
             '{"type":"send","to":"x","text":"y","extra":' + deep(n) + "}",
             '{"type":"dance","x":' + deep(n) + "}", '{"type":' + deep(n) + "}"]
        )  # fmt: skip
    if roll < 0.08:
        return bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 64)))
    if roll < 0.12:
        return str(rnd.choice(pool))
    frame: dict[str, Any] = {}
    if rnd.random() < 0.9:
        frame["type"] = rnd.choice(FRAME_TYPES) if rnd.random() < 0.85 else rnd.choice(pool)
    for name in rnd.sample(FRAME_FIELDS, rnd.randint(0, len(FRAME_FIELDS))):
        frame[name] = rnd.choice(pool)
    if frame.get("type") == "send" and rnd.random() < 0.3:
        frame.update(to=rnd.choice(handles), text=str(rnd.choice(pool)) or "hi")
    text = json.dumps(frame, ensure_ascii=rnd.random() < 0.5)
    if rnd.random() < 0.05:
        text = text[: rnd.randint(0, len(text))]  # cut short: not JSON any more
    return text


REQUESTS = [
    ("GET", "/api/conversations"),
    ("GET", "/api/following"),
    ("GET", "/api/followers"),
    ("GET", "/api/blocks"),
    ("GET", "/api/me"),
    ("GET", "/api/buttons"),
    ("GET", "/api/sessions"),
    ("GET", "/api/me/export"),
    ("GET", "/api/webhooks"),
    ("GET", "/api/users/{h}"),
    ("GET", "/api/webhooks/{h}"),
    ("PUT", "/api/following/{h}"),
    ("DELETE", "/api/following/{h}"),
    ("PUT", "/api/blocks/{h}"),
    ("DELETE", "/api/blocks/{h}"),
    ("GET", "/api/conversations/{h}/messages"),
    ("POST", "/api/conversations/{h}/messages"),
    ("POST", "/api/conversations/{h}/read"),
    ("POST", "/api/conversations/{h}/accept"),
    ("POST", "/api/conversations/{h}/notes"),
    ("PATCH", "/api/conversations/{h}"),
    ("DELETE", "/api/conversations/{h}"),
    ("POST", "/api/accounts"),
    ("POST", "/api/sessions"),
    ("POST", "/api/reports"),
    ("PATCH", "/api/me"),
]
# Sign-up and sign-in hash or verify a password (argon2, tens of milliseconds):
# fewer of them keeps the run near a minute.
REQUEST_WEIGHTS = [0.2 if path in ("/api/accounts", "/api/sessions") else 1 for _, path in REQUESTS]
QUERY_KEYS = ["before", "limit", "folder", "cursor", "since", "as", "status", "assignee",
              "handle", "text", "label", "size", "ref", "peer"]  # fmt: skip
BODY_KEYS = ["handle", "password", "name", "kind", "open_dms", "read_receipts", "greeting",
             "quick_replies", "text", "client_id", "up_to", "reason", "message_id", "status",
             "assignee", "ref", "quick_reply"]  # fmt: skip


def make_request(
    rnd: random.Random, pool: list[Any], handles: list[str]
) -> tuple[str, str, dict[str, str], bytes]:
    method, path = rnd.choices(REQUESTS, REQUEST_WEIGHTS)[0]
    segment = rnd.choice([*handles, str(rnd.choice(pool)) or "x"])
    path = path.replace("{h}", quote(segment, safe=""))
    keys = rnd.sample(QUERY_KEYS, rnd.randint(1, 3) if rnd.random() < 0.9 else 0)
    query = {k: str(rnd.choice(pool)) for k in keys}
    roll = rnd.random()
    if roll < 0.1:
        body = b""
    elif roll < 0.15:
        body = ('{"text":' + deep(rnd.choice([500, 1000, 3000])) + "}").encode()
    elif roll < 0.2:
        body = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 64)))
    elif roll < 0.3:
        body = json.dumps(rnd.choice(pool)).encode()
    else:
        fields = {k: rnd.choice(pool) for k in rnd.sample(BODY_KEYS, rnd.randint(0, 4))}
        body = json.dumps(fields, ensure_ascii=rnd.random() < 0.5).encode()
    return method, path, query, body


# -- the run ----------------------------------------------------------------------


def sign_up(http: httpx.Client) -> tuple[str, str]:
    handle = unique_handle("f")
    response = http.post("/api/accounts", json={"handle": handle, "password": PASSWORD})
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    patched = http.patch(
        "/api/me", json={"open_dms": True}, headers={"Authorization": f"Bearer {token}"}
    )
    assert patched.status_code == 200, patched.text
    return handle, token


class Sockets:
    """Several fuzzing sockets; one that the server closed is checked and reopened."""

    def __init__(self, url: str, tokens: list[str], stats: Counter[str]) -> None:
        self.url = url.replace("http", "ws", 1) + "/ws"
        self.tokens = tokens
        self.stats = stats
        self.open: list[ClientConnection | None] = [None] * SOCKETS
        self.turn = 0
        self.nonce = 0

    def _connect(self, index: int) -> ClientConnection:
        token = self.tokens[index % len(self.tokens)]
        ws = connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {token}"},
            max_size=None,
            open_timeout=10,
        ).__enter__()
        ready = json.loads(ws.recv(timeout=10))
        assert ready["type"] == "ready", ready
        return ws

    def run_batch(self, batch: list[str | bytes]) -> None:
        index = self.turn = (self.turn + 1) % SOCKETS
        ws = self.open[index] or self._connect(index)
        self.open[index] = ws
        try:
            for frame in batch:
                ws.send(frame)
                self.stats["frames sent"] += 1
            self.nonce += 1
            marker = f"sync-{self.nonce}"
            ws.send(json.dumps({"type": "ping", "nonce": marker}))
            while True:
                answer = json.loads(ws.recv(timeout=15))
                kind = answer.get("type")
                assert kind in SERVER_FRAMES, (answer, batch)
                if kind == "error":
                    self.stats[f"frame error {answer.get('code')}"] += 1
                    assert answer.get("code") in FRAME_CODES, (answer, batch)
                else:
                    self.stats[f"frame {kind}"] += 1
                if kind == "pong" and answer.get("nonce") == marker:
                    return
        except ConnectionClosed:
            code = ws.close_code
            self.stats[f"close {code}"] += 1
            assert code in CLOSE_CODES, (code, ws.close_reason, batch)
            self.open[index] = None

    def close(self) -> None:
        for ws in self.open:
            if ws is not None:
                ws.close()


def test_fuzzed_frames_bodies_and_queries_get_only_contract_answers(
    redis_url: str, tmp_path: Path, record_figures: Callable[[str], None]
) -> None:
    process = DmhubProcess(
        {
            "REDIS_URL": redis_url,
            "DMHUB_DATA_DIR": str(tmp_path),
            # Inputs from a fuzzer are mostly invalid; keep its sockets open to see them all
            # (test_websocket.py checks the 1008 close).
            "DMHUB_MAX_INVALID_FRAMES": "1000000",
            "DMHUB_LIMIT_SIGNUPS_PER_HOUR": "0",
            # Its shutdown must fit terminate()'s 20 s: the default drain (10 s)
            # plus uvicorn's grace after it (drain + 5 s) did not, once, on a busy
            # machine with a socket still busy at SIGTERM.
            "DMHUB_DRAIN_TIMEOUT": "3",
        }
    ).start()
    assert process.process is not None
    server = psutil.Process(process.process.pid)
    http = httpx.Client(base_url=process.url, timeout=15)
    stats: Counter[str] = Counter()
    sockets: Sockets | None = None
    try:
        people = [sign_up(http) for _ in range(3)]
        handles = [h for h, _ in people]
        tokens = [t for _, t in people]
        sockets = Sockets(process.url, tokens, stats)
        rss_before = server.memory_info().rss / 2**20
        started = time.monotonic()

        fuzz = settings(
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )

        @settings(fuzz, max_examples=FRAME_BATCHES)
        @given(values(handles), st.integers(0, 2**32))
        def frames(pool: list[Any], seed: int) -> None:
            assert sockets is not None
            rnd = random.Random(seed)
            sockets.run_batch([make_frame(rnd, pool, handles) for _ in range(FRAMES_PER_BATCH)])

        frames()
        frames_s = time.monotonic() - started
        rss_frames = server.memory_info().rss / 2**20

        @settings(fuzz, max_examples=HTTP_CASES // REQUESTS_PER_CASE)
        @given(values(handles), st.integers(0, 2**32))
        def requests(pool: list[Any], seed: int) -> None:
            rnd = random.Random(seed)
            for _ in range(REQUESTS_PER_CASE):
                method, path, query, body = make_request(rnd, pool, handles)
                who = rnd.randint(0, len(tokens))
                headers = {"Authorization": f"Bearer {tokens[who]}"} if who < len(tokens) else {}
                response = http.request(method, path, params=query, content=body, headers=headers)
                stats["http requests"] += 1
                stats["http bodies"] += bool(body)
                stats["http query strings"] += bool(query)
                where = (method, path, query, body[:200])
                status = response.status_code
                assert status < 500, (where, status, response.text[:300])
                if status >= 400:
                    code = response.json()["error"]["code"]
                    stats[f"http {status} {code}"] += 1
                    assert code in HTTP_CODES, (where, response.text[:300])
                else:
                    stats[f"http {status}"] += 1

        requests()

        @settings(fuzz, max_examples=HANDSHAKES // HANDSHAKES_PER_CASE)
        @given(values(handles), st.integers(0, 2**32))
        def handshakes(pool: list[Any], seed: int) -> None:
            rnd = random.Random(seed)
            for _ in range(HANDSHAKES_PER_CASE):
                keys = rnd.sample(["since", "peer", "as"], rnd.randint(1, 3))
                query = urlencode({k: str(rnd.choice(pool)) for k in keys})
                token = rnd.choice(tokens)
                stats["ws handshakes"] += 1
                try:
                    with connect(
                        f"{process.url.replace('http', 'ws', 1)}/ws?{query}",
                        additional_headers={"Authorization": f"Bearer {token}"},
                        open_timeout=10,
                    ) as ws:
                        first = json.loads(ws.recv(timeout=10))
                        assert first["type"] == "ready", (query, first)
                        stats["ws handshake 101"] += 1
                except InvalidStatus as refused:
                    status = refused.response.status_code
                    body = json.loads(refused.response.body or b"{}")
                    code = body.get("error", {}).get("code")
                    stats[f"ws handshake {status} {code}"] += 1
                    assert status < 500 and code in HTTP_CODES, (query, status, body)

        handshakes()
        elapsed = time.monotonic() - started
        rss_after = server.memory_info().rss / 2**20

        log = process.log_path.read_text(errors="replace")
        assert "Traceback" not in log, log[-4000:]
        assert not re.search(r"\b(ERROR|CRITICAL)\b", log), log[-4000:]
        assert stats["frames sent"] >= FRAME_BATCHES * FRAMES_PER_BATCH
        assert stats["http requests"] == HTTP_CASES
        assert stats["ws handshakes"] == HANDSHAKES
        codes = sorted(
            k for k in stats if k.startswith(("frame error", "close", "http 4", "ws handshake "))
        )
        record_figures(
            f"fuzz: {stats['frames sent']:,} frames over {SOCKETS} sockets "
            f"in {frames_s:.1f} s; "
            f"{stats['http requests']:,} HTTP requests ({stats['http bodies']:,} with a body, "
            f"{stats['http query strings']:,} with a query string); "
            f"{stats['ws handshakes']} WebSocket handshakes; {elapsed:.1f} s in all\n"
            f"codes seen: {', '.join(f'{k} x{stats[k]}' for k in codes)}\n"
            f"server RSS MiB: before {rss_before:.0f}, after frames {rss_frames:.0f}, "
            f"after HTTP {rss_after:.0f}"
        )
        assert rss_after - rss_before < RSS_GROWTH_LIMIT_MIB, (rss_before, rss_after)
    finally:
        if sockets is not None:
            sockets.close()
        http.close()
        process.terminate()
