"""The benchmarks' own machinery (bench/_common.py, bench/compare.py): the wrk Lua script sends
exactly the method, body and headers asked for and counts every non-2xx answer as an error;
the side-by-side table marks missing rows and errors. No figures are asserted."""

from __future__ import annotations

import re
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# appended, not prepended: bench/seal.py and bench/licence.py must not shadow the packages
sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))

import _common
import compare

TRICKY = 'grant_type=client_credentials&x=a"b\\c\n]]%€&y=' + "\x00\x7f"


def lua_unescape(literal: str) -> bytes:
    """What Lua makes of the literal lua_string writes (only \\ddd escapes, no others)."""
    assert literal[0] == literal[-1] == '"'
    inner = literal[1:-1]
    assert not re.search(r'["\n\r]|\\(?!\d{3})', inner), inner
    return re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1))), inner).encode("latin-1")


@pytest.mark.parametrize("value", [TRICKY, "Basic YmVuY2g6c2VjcmV0", "", "é中文\\", b"\xff\xfe\r\n"])
def test_lua_string_is_exactly_the_bytes(value):
    raw = value.encode() if isinstance(value, str) else value
    assert lua_unescape(_common.lua_string(value)) == raw


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, bytes, str | None]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, body, self.headers.get("Authorization")))
        status = 404 if self.path.startswith("/missing") else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recorder():
    _Recorder.seen = []
    server = ThreadingHTTPServer((_common.HOST, 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], _Recorder.seen
    server.shutdown()
    server.server_close()


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed")
def test_wrk_sends_the_scenario_and_counts_non_2xx(recorder):
    port, seen = recorder
    auth = 'Basic "quoted"\\'
    ok = _common.Scenario("post", "POST", "/token?a=1", TRICKY.encode(), {"Authorization": auth})
    r = _common.wrk_drive(port, ok, 1, 2)
    assert r["requests"] > 0 and r["errors"] == 0 and r["driver"] == "wrk"
    assert seen and all(s == ("POST", "/token?a=1", TRICKY.encode(), auth) for s in seen)

    missing = _common.Scenario("get", "GET", "/missing")
    r = _common.wrk_drive(port, missing, 1, 2)
    assert r["requests"] > 0 and r["non2xx"] == r["requests"] and r["errors"] >= r["requests"]


def test_python_driver_counts_non_2xx(recorder):
    port, _ = recorder
    r = _common.drive(port, _common.Scenario("get", "GET", "/missing"), 0.3, 2)
    assert r["requests"] > 0 and r["errors"] == r["requests"]


def test_table_marks_tongban_only_rows_and_errors():
    node = {"token": {"rps": 2000.0, "p50_ms": 3.0, "p99_ms": 9.0, "errors": 0}}
    tongban = {"token": {"rps": 1000.0, "p50_ms": 6.0, "p99_ms": 20.0, "errors": 5},
               "licence": {"rps": 900.0, "p50_ms": 7.0, "p99_ms": 30.0, "errors": 0}}
    lines = compare.table(node, tongban, ["token", "licence"]).splitlines()
    assert lines[0] == "| endpoint | node req/s | Tongban req/s | ratio | node p50/p99 | Tongban p50/p99 |"
    assert lines[2] == ("| POST token (client_credentials) | 2,000 | 1,000 ⚠ 5 errors | 0.50× "
                        "| 3.0 / 9.0 ms | 6.0 / 20.0 ms |")
    assert lines[3] == "| GET /v/<code> JSON (licence check) | — | 900 | — | — | 7.0 / 30.0 ms |"


def test_median_round_adds_up_errors_and_keeps_the_range():
    rounds = [{"token": {"rps": r, "p50_ms": r / 100, "p99_ms": 1.0, "errors": e, "requests": 10}}
              for r, e in ((300.0, 0), (100.0, 2), (200.0, 0))]
    m = compare.median_round(rounds, "token")
    assert (m["rps"], m["p50_ms"], m["errors"], m["requests"]) == (200.0, 2.0, 2, 30)
    assert compare.cell_rps(m) == "200 (100–300) ⚠ 2 errors"
    assert compare.median_round(rounds, "licence") is None
