#!/usr/bin/env python3
"""Token-service throughput of one production worker.

    .venv/bin/python bench/tokens.py [--seconds 10] [--connections 8] [--server granian|gunicorn]

Creates a throwaway instance (SQLite in a temporary folder, or BENCH_DATABASE_URL),
migrates it, registers a client_credentials client allowed to introspect, starts
``make serve`` with WEB_CONCURRENCY=1 pinned to CPU 0, and drives it from CPU 1
with keep-alive HTTP/1.1 connections (stdlib ``http.client``, one thread each)
for a fixed time per endpoint:

    POST token_endpoint          grant_type=client_credentials (Basic auth)
    POST introspection_endpoint  token=<access token> (Basic auth)
    GET  userinfo_endpoint       Bearer <a citizen's access token from a real code flow>
    GET  jwks_uri
    GET  /.well-known/openid-configuration

Prints requests/s, p50/p99 latency, errors, and the server processes' RSS.
Only 127.0.0.1 is contacted; the whole run stays under two minutes by default.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
FLASK = ROOT / ".venv" / "bin" / "flask"
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def run_flask(env: dict, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run([str(FLASK), "--app", "wsgi", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode:
        sys.exit(f"flask {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None,
            headers: dict) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 90) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit("the server exited before answering; see its output above")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            status, body = request(conn, "GET", "/.well-known/openid-configuration", None, {})
            conn.close()
            if status == 200:
                return json.loads(body)
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("the server did not answer in time")


def group_rss(pgid: int) -> list[tuple[int, str, int]]:
    """(pid, command, RSS KiB) of every process in the server's process group."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            status = (entry / "status").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ProcessLookupError):
            continue
        rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        out.append((int(entry.name), cmd[:90], rss))
    return sorted(out)


class Scenario:
    def __init__(self, name: str, method: str, path: str, body: bytes | None = None, headers=None):
        self.name, self.method, self.path, self.body = name, method, path, body
        self.headers = {"Connection": "keep-alive", **(headers or {})}


def drive(port: int, scenario: Scenario, seconds: float, connections: int) -> dict:
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    start_gate = threading.Barrier(connections + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        mine = latencies[i]
        start_gate.wait()
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at[0]:
                break
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

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start_gate.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    lat = sorted(x for per in latencies for x in per)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {"name": scenario.name, "requests": len(lat), "rps": len(lat) / elapsed,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "errors": sum(errors)}


CITIZEN, PASSWORD = "11010519491231002X", "Bench-Passw0rd!"


def code_flow(base: str, meta: dict, portal: dict) -> str:
    """Log a citizen in and run the code flow with PKCE once: a real user access token."""
    import hashlib
    import re

    import requests

    browser = requests.Session()
    page = browser.get(f"{base}/login")
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text).group(1)
    browser.post(f"{base}/login", data={"csrf_token": csrf, "login": CITIZEN, "password": PASSWORD},
                 allow_redirects=False)
    verifier = "bench-verifier-" + "x" * 40
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    resp = browser.get(meta["authorization_endpoint"], params={
        "response_type": "code", "client_id": portal["client_id"], "redirect_uri": "http://127.0.0.1:9/cb",
        "scope": "openid profile", "state": "s", "code_challenge": challenge,
        "code_challenge_method": "S256"}, allow_redirects=False)
    code = re.search(r"[?&]code=([^&]+)", resp.headers["Location"]).group(1)
    tok = requests.post(meta["token_endpoint"], data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1:9/cb",
        "code_verifier": verifier}, auth=(portal["client_id"], portal["client_secret"]))
    tok.raise_for_status()
    return tok.json()["access_token"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10, help="per endpoint (default 10)")
    ap.add_argument("--connections", type=int, default=8, help="keep-alive connections (default 8)")
    ap.add_argument("--server", choices=("granian", "gunicorn"), default="granian")
    ap.add_argument("--only", nargs="*", choices=("token", "introspect", "userinfo", "jwks", "discovery"),
                    help="run only these endpoints")
    args = ap.parse_args()
    if args.seconds * 5 > 125:
        sys.exit("--seconds: keep the whole run under two minutes (at most 25 per endpoint)")

    ncpu = os.cpu_count() or 1
    taskset = shutil.which("taskset") if ncpu >= 2 else None
    tmp = Path(tempfile.mkdtemp(prefix="tongban-bench-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("TONGBAN_ISSUER", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "FLASK_DEBUG")}
    env.update({
        "TONGBAN_INSTANCE_DIR": str(tmp / "instance"),
        "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp / 'tongban.db'}",
        "HOST": HOST, "PORT": str(port), "WEB_CONCURRENCY": "1", "SERVER": args.server,
    })
    # No throttling in the way of the measurement (one address sends everything).
    env.setdefault("TONGBAN_LOGIN_RATE_PER_IP", "1000000")

    print(f"instance {tmp}  database {env['DATABASE_URL']}")
    run_flask(env, "db", "upgrade")
    created = json.loads(run_flask(
        env, "clients", "create", "--name", "bench", "--department", "bench",
        "--redirect-uri", "http://127.0.0.1:9/cb", "--grant-type", "client_credentials",
        "--scope", "openid", "--introspection", "--json"))
    run_flask(env, "users", "create", "--id-number", CITIZEN, "--name", "张三", "--password-stdin",
              stdin=PASSWORD + "\n")
    portal = json.loads(run_flask(
        env, "clients", "create", "--name", "bench portal", "--department", "bench",
        "--redirect-uri", "http://127.0.0.1:9/cb", "--grant-type", "authorization_code",
        "--scope", "openid profile", "--first-party", "--json"))
    pair = f"{quote(created['client_id'], safe='')}:{quote(created['client_secret'], safe='')}"
    basic = "Basic " + base64.b64encode(pair.encode()).decode()

    cmd = ["make", "--no-print-directory", "serve"]
    if taskset:
        cmd = [taskset, "-c", "0", *cmd]
        os.sched_setaffinity(0, {1})
    else:
        print("note: fewer than 2 CPUs or no taskset: server and load generator share CPUs")
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        meta = wait_ready(port, server)
        for key in ("issuer", "token_endpoint", "introspection_endpoint", "jwks_uri", "userinfo_endpoint",
                    "authorization_endpoint"):
            if key not in meta:
                sys.exit(f"discovery has no {key}")
            if key != "issuer" and urlsplit(meta[key]).hostname != HOST:
                sys.exit(f"{key} {meta[key]} is not on {HOST}; refusing to send load elsewhere")

        form = {"Authorization": basic, "Content-Type": "application/x-www-form-urlencoded"}
        token_body = urlencode({"grant_type": "client_credentials"}).encode()
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        status, body = request(conn, "POST", urlsplit(meta["token_endpoint"]).path, token_body, form)
        conn.close()
        if status != 200:
            sys.exit(f"token request failed: {status} {body[:300]!r}")
        access_token = json.loads(body)["access_token"]
        user_token = code_flow(f"http://{HOST}:{port}", meta, portal)

        scenarios = {
            "token": Scenario("POST token (client_credentials)", "POST",
                              urlsplit(meta["token_endpoint"]).path, token_body, form),
            "introspect": Scenario("POST introspect", "POST", urlsplit(meta["introspection_endpoint"]).path,
                                   urlencode({"token": access_token}).encode(), form),
            "userinfo": Scenario("GET userinfo", "GET", urlsplit(meta["userinfo_endpoint"]).path, None,
                                 {"Authorization": f"Bearer {user_token}"}),
            "jwks": Scenario("GET jwks", "GET", urlsplit(meta["jwks_uri"]).path),
            "discovery": Scenario("GET discovery", "GET", "/.well-known/openid-configuration"),
        }
        chosen = args.only or list(scenarios)
        print(f"{args.server}, 1 worker{' on CPU 0, load from CPU 1' if taskset else ''}, "
              f"{args.connections} connections, {args.seconds:g} s each\n")
        print(f"{'endpoint':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for key in chosen:
            r = drive(port, scenarios[key], args.seconds, args.connections)
            print(f"{r['name']:34} {r['rps']:9.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                  f"{r['errors']:7d}", flush=True)
        print("\nserver processes (RSS):")
        for pid, cmdline, rss in group_rss(server.pid):
            if not cmdline.startswith(("make", "/bin/sh", "sh ")):
                print(f"  {pid:>7}  {rss / 1024:7.1f} MiB  {cmdline}")
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
