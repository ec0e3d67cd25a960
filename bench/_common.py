"""What the benchmarks share: every script in bench/ imports its helpers from here (run as
scripts, this folder is sys.path[0]); none defines its own port finder, server start or stop,
readiness wait, request, CPU pinning, percentile, timer or load-average line.

* the load generators: ``drive`` (stdlib ``http.client``, one keep-alive connection per
  thread, Python) and ``wrk_drive`` (the ``wrk`` binary with a generated Lua script for the
  method, body and headers, counting every non-2xx answer as an error); ``measure`` picks one;
* CPU pinning (server on CPU 0, load from CPU 1), process-group RSS, stopping a server;
* a throw-away Tongban instance: its environment, ``flask`` commands, the bench clients and
  citizen, a real code flow for a user access token, ``python -m tongban.serve``, and a
  PostgreSQL database made for the run and dropped after it;
* in-process figures: ``timed`` (median and best wall, median CPU of a callable),
  ``throwaway_app`` (an app on a scratch SQLite instance, migrated and bootstrapped),
  ``one_page_pdf``, ``pct``, ``loadavg``, ``group_cpu_seconds`` (utime + stime of a process group);
* node-oidc-provider installed with npm into a scratch (or cache) folder, optionally with a
  current Node from the npm registry (the ``node`` package ships the binary), and started
  with bench/oidc_provider_server.mjs.

Only 127.0.0.1 is contacted, except npm's registry for the install.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# the scripts import tongban, the project's packages and the tests' corpora; the project comes
# first: run as scripts, bench/seal.py and bench/licence.py would otherwise shadow those packages
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))
VENV_BIN = ROOT / ".venv" / "bin"
FLASK = VENV_BIN / "flask"
PYTHON = VENV_BIN / "python"
HOST = "127.0.0.1"
DISCOVERY = "/.well-known/openid-configuration"


# ---------------------------------------------------------------- small HTTP helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None,
            headers: dict) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def fetch(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
          ) -> tuple[int, bytes]:
    """One request on a fresh connection to 127.0.0.1:port."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        return request(conn, method, path, body, headers or {})
    finally:
        conn.close()


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 90) -> dict:
    """Poll discovery until the server answers 200; its metadata."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit("the server exited before answering; see its output above")
        try:
            status, body = fetch(port, "GET", DISCOVERY)
            if status == 200:
                return json.loads(body)
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("the server did not answer in time")


def local_paths(meta: dict, keys: Sequence[str]) -> dict[str, str]:
    """The paths of these discovery endpoints; refuses any not on 127.0.0.1 (no load elsewhere)."""
    out = {}
    for key in keys:
        if key not in meta:
            sys.exit(f"discovery has no {key}")
        if urlsplit(meta[key]).hostname != HOST:
            sys.exit(f"{key} {meta[key]} is not on {HOST}; refusing to send load elsewhere")
        out[key] = urlsplit(meta[key]).path
    return out


def pkce() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) for one authorization request (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def basic_auth(client_id: str, secret: str) -> str:
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def b64json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def jwt_header_claims(token: str) -> tuple[dict, dict] | None:
    """(header, claims) of a compact JWS, unverified; None when it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        return b64json(parts[0]), b64json(parts[1])
    except ValueError:
        return None


# ---------------------------------------------------------------- figures


def pct(values: Sequence[float], p: float) -> float:
    """The ``p`` quantile of sorted seconds, in milliseconds (nan when empty)."""
    return values[min(len(values) - 1, int(p * len(values)))] * 1000 if values else float("nan")


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg has them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


class Timing(NamedTuple):
    """``timed``'s answer: median wall, best wall and median CPU seconds, and the last result."""

    median: float
    best: float
    cpu: float
    out: Any


def timed(fn, n: int, warm_up: bool = True, catch: bool = False) -> Timing:
    """Run ``fn()`` ``n`` times (after one warm-up call: key decryption, fonts, caches). On a
    shared machine the best wall time and the CPU time say more than the median wall time.
    ``catch``: an exception is the result (a limit answering with an error is the figure)."""
    import statistics

    if warm_up:
        fn()
    times, cpu, out = [], [], None
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        try:
            out = fn()
        except Exception as e:
            if not catch:
                raise
            out = e
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return Timing(statistics.median(times), min(times), statistics.median(cpu), out)


def rate(fn, seconds: float = 1.0, warm_up: bool = True) -> float:
    """Calls of ``fn()`` per second over ``seconds`` (after one warm-up call)."""
    if warm_up:
        fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def one_page_pdf() -> bytes:
    """A one-page A4 PDF with a line of Latin and Chinese text (reportlab)."""
    import io

    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=(595, 842))
    c.drawString(72, 770, "Tongban benchmark notice / 通知")
    c.showPage()
    c.save()
    return buf.getvalue()


@contextlib.contextmanager
def throwaway_app(config: dict | None = None, quiet: Sequence[str] = ("alembic",)) -> Iterator:
    """An app on a scratch instance folder and SQLite database (KEK all zero), migrated and
    bootstrapped, yielded inside its app context. ``quiet``: loggers held at WARNING."""
    import logging

    from flask_migrate import upgrade

    from tongban import create_app
    from tongban.bootstrap import bootstrap

    tmp = tempfile.mkdtemp(prefix="tongban-bench-")
    app = create_app({"TONGBAN_INSTANCE_DIR": tmp, "TONGBAN_KEK": bytes(32), **(config or {})})
    with app.app_context():
        for name in quiet:
            logging.getLogger(name).setLevel(logging.WARNING)
        upgrade(directory=app.extensions["migrate"].directory, revision="heads")
        bootstrap()
        yield app


# ---------------------------------------------------------------- processes and CPUs


def pin_self(cpu: int) -> None:
    """Move this process to one CPU (when there are at least two)."""
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {cpu})


def _group(pgid: int) -> Iterator[tuple[int, Path]]:
    """(pid, /proc/<pid>) of every process in the process group ``pgid``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid:
                yield int(entry.name), entry
        except (OSError, ProcessLookupError):
            continue


def _stat_fields(entry: Path) -> list[str]:
    """/proc/<pid>/stat after the command name: field 3 (state) is index 0."""
    return (entry / "stat").read_text().rsplit(")", 1)[1].split()


def group_cpu_by_pid(pgid: int) -> dict[int, float]:
    """{pid: utime + stime seconds} of every process in the process group ``pgid`` (/proc/<pid>/stat)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid, entry in _group(pgid):
        try:
            fields = _stat_fields(entry)
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15 of stat)
    return out


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every process in the process group ``pgid``, seconds."""
    return sum(group_cpu_by_pid(pgid).values())


def group_switches(pgid: int) -> int:
    """Context switches (voluntary and not) of every thread of every process in the group."""
    total = 0
    for _, entry in _group(pgid):
        try:
            for task in (entry / "task").iterdir():
                for line in (task / "status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def _cmdline(entry: Path) -> str:
    return (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()


def group_processes(pgid: int) -> list[tuple[int, int, str]]:
    """(pid, parent pid, command) of every process in the process group ``pgid`` but make/sh."""
    out = []
    for pid, entry in _group(pgid):
        try:
            cmd, ppid = _cmdline(entry), int(_stat_fields(entry)[1])
        except (OSError, ValueError, IndexError):
            continue
        if cmd and not cmd.startswith(("make", "/bin/sh", "sh ")):
            out.append((pid, ppid, cmd))
    return sorted(out)


def status_kib(pid: int, field: str) -> int:
    """A KiB figure of /proc/<pid>/status (VmRSS, RssAnon, ...); 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pinning() -> tuple[list[str], list[str]]:
    """(server prefix, load prefix): ``taskset -c 0`` and ``taskset -c 1`` on two or more CPUs
    with taskset; this process moves to CPU 1 too. Empty prefixes (and a note) otherwise."""
    taskset = shutil.which("taskset")
    if (os.cpu_count() or 1) < 2 or not taskset:
        print("note: fewer than 2 CPUs or no taskset: server and load generator share CPUs")
        return [], []
    os.sched_setaffinity(0, {1})
    return [taskset, "-c", "0"], [taskset, "-c", "1"]


def group_rss(pgid: int) -> list[tuple[int, str, int]]:
    """(pid, command, RSS KiB) of every process in the server's process group."""
    out = []
    for pid, entry in _group(pgid):
        try:
            cmd = _cmdline(entry)
        except OSError:
            continue
        out.append((pid, cmd[:90], status_kib(pid, "VmRSS")))
    return sorted(out)


def stop(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    """SIGTERM to the server's process group (started with start_new_session), then SIGKILL."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


# ---------------------------------------------------------------- load generators


class Scenario:
    def __init__(self, name: str, method: str, path: str, body: bytes | None = None, headers=None):
        self.name, self.method, self.path, self.body = name, method, path, body
        self.headers = {"Connection": "keep-alive", **(headers or {})}


def in_threads(count: int, worker, seconds: float) -> float:
    """``worker(i, deadline)`` in ``count`` threads released at once (a barrier), each running
    until ``deadline`` (a ``time.perf_counter()`` value ``seconds`` after the release); the
    seconds from the release until the last thread ended."""
    gate = threading.Barrier(count + 1)
    deadline = [0.0]

    def run(i: int) -> None:
        gate.wait()
        worker(i, deadline[0])

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    gate.wait()
    for t in threads:
        t.join()
    return time.perf_counter() - began


def drive(port: int, scenario: Scenario, seconds: float, connections: int, count: int = 0) -> dict:
    """The Python load generator: ``connections`` threads, one keep-alive connection each, for
    ``seconds`` (or, with ``count``, until each has sent its share of ``count`` requests); any
    answer but 200 and any connection error counts as an error."""
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    share = max(1, count // connections) if count else 0

    def worker(i: int, deadline: float) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        mine = latencies[i]
        sent = 0
        while True:
            t0 = time.perf_counter()
            if (sent >= share) if share else (t0 >= deadline):
                break
            sent += 1
            try:
                status, _ = request(conn, scenario.method, scenario.path, scenario.body, scenario.headers)
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=30)
                continue
            mine.append(time.perf_counter() - t0)
            if status != 200:
                errors[i] += 1
        conn.close()

    elapsed = in_threads(connections, worker, seconds)
    lat = sorted(x for per in latencies for x in per)
    return {"name": scenario.name, "requests": len(lat), "rps": len(lat) / elapsed,
            "p50_ms": pct(lat, 0.50), "p99_ms": pct(lat, 0.99), "errors": sum(errors), "driver": "python"}


def measure_table(driver: str, port: int, scenarios: Sequence[Scenario], seconds: float, connections: int,
                  load_prefix: Sequence[str] = (), width: int = 34, indent: str = "",
                  warmup: float = 0.0) -> list[dict]:
    """``measure`` each scenario (after ``warmup`` seconds of it, unmeasured), printing a table."""
    print(table_header(width, indent))
    out = []
    for scenario in scenarios:
        if warmup > 0:
            measure(driver, port, scenario, warmup, connections, load_prefix)
        r = measure(driver, port, scenario, seconds, connections, load_prefix)
        print(table_row(r, width, indent), flush=True)
        out.append(r)
    return out


def table_header(width: int = 34, indent: str = "") -> str:
    """The head of a results table: endpoint, req/s, p50 and p99 ms, errors."""
    return f"{indent}{'endpoint':{width}} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"


def table_row(r: dict, width: int = 34, indent: str = "") -> str:
    """One ``measure`` result as a row under ``table_header``."""
    return f"{indent}{r['name']:{width}} {r['rps']:9.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['errors']:7d}"


def print_group_rss(pgid: int, title: str = "server processes (RSS):") -> None:
    """``title``, then pid, RSS and command of every process in the group."""
    print(f"\n{title}")
    for pid, cmdline, rss in group_rss(pgid):
        print(f"  {pid:>7}  {rss / 1024:7.1f} MiB  {cmdline}")


def lua_string(value: str | bytes) -> str:
    """A Lua string literal of exactly these bytes (anything unusual as a \\ddd escape)."""
    raw = value.encode() if isinstance(value, str) else value
    safe = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 -_./:=+%")
    return '"' + "".join(chr(c) if c in safe else f"\\{c:03d}" for c in raw) + '"'


# wrk calls response() for every answer (per thread, in that thread's Lua state); done() adds
# the threads' counts up and prints one machine-readable line. Latencies are in microseconds.
_WRK_TAIL = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non2xx") end
  local e = summary.errors
  io.write(string.format("WRK_RESULT %d %d %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    bad, e.connect, e.read, e.write, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_script(scenario: Scenario) -> str:
    lines = [f"wrk.method = {lua_string(scenario.method)}"]
    if scenario.body is not None:
        lines.append(f"wrk.body = {lua_string(scenario.body)}")
    for name, value in scenario.headers.items():
        lines.append(f"wrk.headers[{lua_string(name)}] = {lua_string(value)}")
    return "\n".join(lines) + "\n" + _WRK_TAIL


def wrk_drive(port: int, scenario: Scenario, seconds: float, connections: int,
              prefix: Sequence[str] = (), threads: int = 1) -> dict:
    """``wrk`` (one thread by default: it gets one CPU) with a generated Lua script; every
    non-2xx answer and every connect/read/write error or timeout (10 s) counts as an error."""
    wrk = shutil.which("wrk")
    if not wrk:
        sys.exit("wrk is not installed (apt-get install wrk), or use the Python driver")
    with tempfile.TemporaryDirectory(prefix="tongban-wrk-") as tmp:
        script = Path(tmp) / "scenario.lua"
        script.write_text(wrk_script(scenario))
        cmd = [*prefix, wrk, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
               "--timeout", "10s", "-s", str(script), f"http://{HOST}:{port}{scenario.path}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRK_RESULT ")), None)
    if proc.returncode or line is None:
        sys.exit(f"wrk failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    requests, duration_us, non2xx, connect, read, write, timeout, p50, p99 = (int(x) for x in line.split()[1:])
    socket_errors = connect + read + write + timeout
    return {"name": scenario.name, "requests": requests, "rps": requests / (duration_us / 1e6),
            "p50_ms": p50 / 1000, "p99_ms": p99 / 1000, "errors": non2xx + socket_errors,
            "non2xx": non2xx, "socket_errors": socket_errors, "driver": "wrk"}


def measure(driver: str, port: int, scenario: Scenario, seconds: float, connections: int,
            load_prefix: Sequence[str] = ()) -> dict:
    """``driver`` "wrk" or "python". The Python driver runs in this process (already on the load CPU)."""
    if driver == "wrk":
        return wrk_drive(port, scenario, seconds, connections, prefix=load_prefix)
    return drive(port, scenario, seconds, connections)


# ---------------------------------------------------------------- a throw-away Tongban


CITIZEN, PASSWORD = "11010519491231002X", "Bench-Passw0rd!"
REDIRECT_URI = "http://127.0.0.1:9/cb"


def tongban_env(instance: Path, database: str, port: int, server: str = "granian", redis: bool = False) -> dict:
    """The environment of a bench instance: its own instance folder and database, one worker,
    no issuer (nor Redis, unless ``redis``) inherited from the caller, no log-in throttle in the way."""
    drop = ("TONGBAN_ISSUER", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "FLASK_DEBUG", *(() if redis else ("REDIS_URL",)))
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({"TONGBAN_INSTANCE_DIR": str(instance), "DATABASE_URL": database, "HOST": HOST,
                "PORT": str(port), "WEB_CONCURRENCY": "1", "SERVER": server})
    env.setdefault("TONGBAN_LOGIN_RATE_PER_IP", "1000000")
    return env


def run_flask(env: dict, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run([str(FLASK), "--app", "wsgi", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode:
        sys.exit(f"flask {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def setup_tongban(env: dict) -> dict:
    """Migrate; a client_credentials client allowed to introspect, a first-party code-flow portal
    and a citizen with a password. {"client": {...}, "portal": {...}} (ids and secrets)."""
    run_flask(env, "db", "upgrade", "heads")
    client = json.loads(run_flask(
        env, "clients", "create", "--name", "bench", "--department", "bench",
        "--redirect-uri", REDIRECT_URI, "--grant-type", "client_credentials",
        "--scope", "openid", "--introspection", "--json"))
    run_flask(env, "users", "create", "--id-number", CITIZEN, "--name", "张三", "--password-stdin",
              stdin=PASSWORD + "\n")
    portal = json.loads(run_flask(
        env, "clients", "create", "--name", "bench portal", "--department", "bench",
        "--redirect-uri", REDIRECT_URI, "--grant-type", "authorization_code",
        "--scope", "openid profile", "--first-party", "--json"))
    return {"client": client, "portal": portal}


def start_tongban(env: dict, prefix: Sequence[str] = (), quiet: bool = False,
                  log: Path | None = None) -> subprocess.Popen:
    """``python -m tongban.serve`` (it execs Granian or gunicorn) in its own process group.
    ``quiet``: its stdout goes nowhere; ``log``: its stdout and stderr (the access log) go to that file."""
    out = None
    if log is not None:
        out = log.open("ab")
    elif quiet:
        out = subprocess.DEVNULL
    try:
        return subprocess.Popen([*prefix, str(PYTHON), "-m", "tongban.serve"], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT if log is not None else None)
    finally:
        if log is not None and out is not None and out != subprocess.DEVNULL:
            out.close()


def log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def code_flow(base: str, meta: dict, portal: dict, then: Sequence[str] = ()) -> str:
    """Log the citizen in and run the code flow with PKCE once: a real user access token.
    ``then``: paths the logged-in browser opens afterwards (warm-up)."""
    import requests  # the venv's; only the code flow needs it

    browser = requests.Session()
    page = browser.get(f"{base}/login", timeout=30)
    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
    if not found:
        sys.exit("no csrf_token on the log-in page")
    browser.post(f"{base}/login", data={"csrf_token": found.group(1), "login": CITIZEN, "password": PASSWORD},
                 allow_redirects=False, timeout=30)
    verifier, challenge = pkce()
    resp = browser.get(meta["authorization_endpoint"], params={
        "response_type": "code", "client_id": portal["client_id"], "redirect_uri": REDIRECT_URI,
        "scope": "openid profile", "state": "s", "code_challenge": challenge,
        "code_challenge_method": "S256"}, allow_redirects=False, timeout=30)
    code = re.search(r"[?&]code=([^&]+)", resp.headers.get("Location", ""))
    if not code:
        sys.exit(f"the code flow did not return a code: {resp.status_code} {resp.headers.get('Location')}")
    tok = requests.post(meta["token_endpoint"], data={
        "grant_type": "authorization_code", "code": code.group(1), "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier}, auth=(portal["client_id"], portal["client_secret"]), timeout=30)
    if tok.status_code != 200:
        sys.exit(f"code flow token request failed: {tok.status_code} {tok.text[:300]}")
    for path in then:
        browser.get(f"{base}{path}", timeout=30)
    return tok.json()["access_token"]


LICENCE_HOLDER = ("91350100M000100Y43", "通办示范科技有限公司")


def issue_licences(env: dict, count: int) -> str:
    """Issue ``count`` 营业执照 (sealed, certified) with ``flask licences issue``; the /v/<code>
    path of the last one."""
    path = ""
    for i in range(count):
        out = json.loads(run_flask(env, "licences", "issue", "--type", "营业执照", "--holder-id",
                                   LICENCE_HOLDER[0], "--holder-name", f"{LICENCE_HOLDER[1]}{i}", "--json"))
        path = urlsplit(out["verify_url"]).path
    return path


_DB_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


@contextlib.contextmanager
def postgres_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the run (``<prefix><pid>_<random>``), dropped afterwards
    whatever happens; yields its SQLAlchemy URL (postgresql+psycopg)."""
    import psycopg  # the venv's

    name = f"{prefix}{os.getpid()}_{secrets.token_hex(3)}".lower()
    if not _DB_NAME.fullmatch(name):
        sys.exit(f"--db-prefix: {prefix!r} does not make a plain database name (a-z, 0-9, _)")
    plain = admin_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        parts = urlsplit(plain)
        yield parts._replace(scheme="postgresql+psycopg", path=f"/{name}").geturl()
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- node-oidc-provider


NODE_OIDC_PROVIDER = "oidc-provider@9.13.3"  # as the Makefile's NODE_OIDC_PROVIDER
SERVER_MJS = BENCH / "oidc_provider_server.mjs"
NODE_CLIENT_ID, NODE_CLIENT_SECRET = "bench", "bench-secret-0123456789abcdef0123456789abcdef"
NODE_PORTAL_ID, NODE_ACCOUNT = "bench-portal", "bench-citizen"
NODE_RESOURCE = "urn:tongban:bench:api"
NODE_OPAQUE_RESOURCE = "urn:tongban:bench:opaque"


def install_node_provider(folder: Path, node_package: str | None = None, timeout: float = 300) -> dict:
    """npm-install node-oidc-provider (and ``node_package``, e.g. "node@22", whose binary then
    runs the server) into ``folder``; skipped when that folder already holds the same set (a
    cache). Copies bench/oidc_provider_server.mjs there. {"node", "provider_version",
    "node_version", "installed_s"}."""
    npm = shutil.which("npm")
    packages = [NODE_OIDC_PROVIDER, *([node_package] if node_package else [])]
    stamp = folder / (".installed-" + hashlib.sha256(" ".join(packages).encode()).hexdigest()[:16])
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if not stamp.exists():
        if not npm:
            sys.exit("npm is needed to install node-oidc-provider (apt-get install npm)")
        for old in folder.glob(".installed-*"):
            old.unlink()
        (folder / "package.json").write_text(json.dumps(
            {"name": "tongban-bench-node-oidc", "private": True, "type": "module"}))
        inst = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "--save-exact",
                               *packages], cwd=folder, capture_output=True, text=True, timeout=timeout)
        if inst.returncode:
            sys.exit(f"npm install {' '.join(packages)} failed:\n{inst.stderr[-2000:]}")
        stamp.write_text(" ".join(packages) + "\n")
    installed_s = time.monotonic() - t0
    shutil.copyfile(SERVER_MJS, folder / "server.mjs")
    if node_package:
        node = folder / "node_modules" / ".bin" / "node"
        if not node.exists():
            sys.exit(f"{node_package} did not install a node binary in {node.parent}")
        node_path = str(node)
    else:
        found = shutil.which("node")
        if not found:
            sys.exit("needs node on PATH")
        node_path = found
    version = json.loads((folder / "node_modules" / "oidc-provider" / "package.json").read_text())["version"]
    node_version = subprocess.run([node_path, "--version"], capture_output=True, text=True,
                                  timeout=30).stdout.strip()
    return {"node": node_path, "provider_version": version, "node_version": node_version,
            "installed_s": installed_s}


def start_node_provider(folder: Path, node: str, port: int, prefix: Sequence[str] = (),
                        state: Path | None = None) -> subprocess.Popen:
    """``node server.mjs`` (NODE_ENV=production) in its own process group."""
    env = {**os.environ, "NODE_ENV": "production", "BENCH_PORT": str(port), "BENCH_RESOURCE": NODE_RESOURCE,
           "BENCH_OPAQUE_RESOURCE": NODE_OPAQUE_RESOURCE, "BENCH_CLIENT_ID": NODE_CLIENT_ID,
           "BENCH_CLIENT_SECRET": NODE_CLIENT_SECRET, "BENCH_PORTAL_ID": NODE_PORTAL_ID,
           "BENCH_ACCOUNT": NODE_ACCOUNT}
    env.pop("DEBUG", None)
    env.pop("NODE_OPTIONS", None)
    if state is not None:
        env["BENCH_STATE"] = str(state)
    return subprocess.Popen([*prefix, node, "server.mjs"], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                            start_new_session=True)


# ---------------------------------------------------------------- callgrind (in-process counts)


def callgrind(*args: str) -> None:
    """Ask valgrind's callgrind, which runs this process, to do something (``callgrind_control``)."""
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


def callgrind_dump(folder: Path, key: str, keep: str | None = None) -> int:
    """Dump what was counted since the counters were last zeroed or dumped; its instruction
    count (Ir), read from the dump file callgrind writes in ``folder`` (then deleted, or copied
    to ``keep.<key>`` first for ``callgrind_annotate``)."""
    callgrind("-d", key)
    for _ in range(100):
        for f in folder.glob("cg.out.*"):
            text = f.read_text(errors="replace")
            if f"Trigger: dump {key}" in text and "\ntotals:" in text:
                if keep:
                    shutil.copy(f, f"{keep}.{key}")
                f.unlink()
                return int(text.split("\ntotals:", 1)[1].split()[0])
        time.sleep(0.1)
    sys.exit("callgrind did not write its dump")
