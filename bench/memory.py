#!/usr/bin/env python3
"""Resident memory (RSS) of one production worker, after start and after warm-up.

    .venv/bin/python bench/memory.py [--server granian|gunicorn] [--requests 300] [--top 25]
                                     [--no-imports]

Creates a throwaway instance (SQLite in a temporary folder, or BENCH_DATABASE_URL), migrates
it, registers a client_credentials client allowed to introspect, a first-party portal, a
citizen and one e-licence, starts ``python -m tongban.serve`` with WEB_CONCURRENCY=1 (as
``make serve`` and bench/tokens.py do) and reads VmRSS of every server process (Granian's
main process and its worker) from /proc:

1. after start (the first discovery answer);
2. after warm-up: ``--requests`` of each hot endpoint (token, introspect, userinfo, JWKS,
   discovery) over 8 keep-alive connections, a browser log-in and code flow, the licence
   scan page /v/<code> and the public seal page /seals/verify.

Then, unless ``--no-imports``, what importing the app costs and who is to blame, each in a
fresh interpreter: ``python -X importtime`` (top modules by cumulative import time, and the
third-party packages by self time), and tracemalloc while ``wsgi`` is imported (top
packages by the memory their modules allocated and still hold).

No timing is asserted; the figures are printed. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlencode, urlsplit

# Run as a script, this folder is sys.path[0].
from _common import (
    CITIZEN,
    DISCOVERY,
    HOST,
    PYTHON,
    ROOT,
    Scenario,
    basic_auth,
    code_flow,
    drive,
    free_port,
    group_processes,
    local_paths,
    request,
    run_flask,
    setup_tongban,
    start_tongban,
    status_kib,
    stop,
    tongban_env,
    wait_ready,
)


def rss_report(label: str, pgid: int) -> dict[str, int]:
    """Print and return VmRSS (KiB) of the main process and of each worker."""
    procs = group_processes(pgid)
    pids = {pid for pid, _, _ in procs}
    figures: dict[str, int] = {}
    print(f"\nRSS {label}:")
    for pid, ppid, cmd in procs:
        role = "worker" if ppid in pids else "main"
        rss = status_kib(pid, "VmRSS")
        anon = status_kib(pid, "RssAnon")
        figures[role if role not in figures else f"{role}-{pid}"] = rss
        print(f"  {role:6} {pid:>7}  RSS {rss / 1024:7.1f} MiB  (anonymous {anon / 1024:6.1f} MiB)  {cmd[:70]}")
    return figures


def hammer(port: int, method: str, path: str, body: bytes | None, headers: dict, total: int,
           connections: int = 8) -> int:
    """``total`` requests over ``connections`` keep-alive connections; returns the non-200 count."""
    return drive(port, Scenario(path, method, path, body, headers), 0, connections, count=total)["errors"]


def setup(env: dict) -> tuple[dict, dict, str]:
    """Migrate; the bench clients, the citizen and one licence (→ its /v/<code> path)."""
    made = setup_tongban(env)
    issued = json.loads(run_flask(env, "licences", "issue", "--type", "社会保障卡", "--holder-id", CITIZEN,
                                  "--holder-name", "张三", "--field", "gender=女", "--field", "birth_date=1949-12-31",
                                  "--field", "card_no=A12345678", "--json"))
    return made["client"], made["portal"], urlsplit(issued["verify_url"]).path


def warm_up(port: int, meta: dict, created: dict, portal: dict, licence_path: str, total: int) -> None:
    form = {"Authorization": basic_auth(created["client_id"], created["client_secret"]),
            "Content-Type": "application/x-www-form-urlencoded"}
    token_path = urlsplit(meta["token_endpoint"]).path
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    status, body = request(conn, "POST", token_path, urlencode({"grant_type": "client_credentials"}).encode(),
                           form)
    if status != 200:
        sys.exit(f"token request failed: {status} {body[:300]!r}")
    access_token = json.loads(body)["access_token"]
    user_token = code_flow(f"http://{HOST}:{port}", meta, portal, then=("/account",))  # and a logged-in page
    for path, accept in ((licence_path, "text/html"), (licence_path, "application/json"),
                         ("/seals/verify", "text/html"), ("/login", "text/html")):
        status, _ = request(conn, "GET", path, None, {"Accept": accept})
        if status != 200:
            sys.exit(f"GET {path} answered {status}")
    conn.close()
    steps = [
        ("token", "POST", token_path, urlencode({"grant_type": "client_credentials"}).encode(), form),
        ("introspect", "POST", urlsplit(meta["introspection_endpoint"]).path,
         urlencode({"token": access_token}).encode(), form),
        ("userinfo", "GET", urlsplit(meta["userinfo_endpoint"]).path, None,
         {"Authorization": f"Bearer {user_token}"}),
        ("jwks", "GET", urlsplit(meta["jwks_uri"]).path, None, {}),
        ("discovery", "GET", DISCOVERY, None, {}),
        ("licence scan", "GET", licence_path, None, {}),
    ]
    for name, method, path, body, headers in steps:
        errors = hammer(port, method, path, body, headers, total)
        print(f"  warm-up {name:13} {total} requests, {errors} not 200")


# ---------------------------------------------------------------- what importing the app costs

_TRACE = r"""
# Net memory each module's import leaves allocated (its code objects and module-level data),
# exclusive of the modules it imports in turn: importlib's _load_unlocked wrapped, tracemalloc's
# current total read before and after, children subtracted.
import importlib._bootstrap as boot
import json, sys, tracemalloc
from collections import defaultdict

own = defaultdict(int)
stack = [0]
original = boot._load_unlocked

def load(spec):
    stack.append(0)
    before = tracemalloc.get_traced_memory()[0]
    try:
        return original(spec)
    finally:
        total = tracemalloc.get_traced_memory()[0] - before
        children = stack.pop()
        own[spec.name] += total - children
        stack[-1] += total

boot._load_unlocked = load
tracemalloc.start(1)
import wsgi  # noqa: F401
held = tracemalloc.get_traced_memory()[0]
tracemalloc.stop()
boot._load_unlocked = original
print(json.dumps({"own": own, "held": held, "top_level": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def import_costs(env: dict, top: int) -> None:
    env = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
    # 1. RSS and modules of a plain import (no tracing overhead)
    plain = subprocess.run(
        [str(PYTHON), "-c", "import wsgi, sys; s = open('/proc/self/status').read();"
         "print(int(s.split('VmRSS:')[1].split()[0]), len(sys.modules))"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if plain.returncode:
        sys.exit(f"import wsgi failed:\n{plain.stderr}")
    rss, count = plain.stdout.split()
    print(f"\nimport wsgi (create_app) in a fresh interpreter: RSS {int(rss) / 1024:.1f} MiB, {count} modules")

    # 2. tracemalloc: memory still held after the import, by package
    traced = subprocess.run([str(PYTHON), "-c", _TRACE, str(ROOT)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    if traced.returncode:
        sys.exit(f"tracemalloc run failed:\n{traced.stderr}")
    data = json.loads(traced.stdout.strip().splitlines()[-1])
    by_pkg: dict[str, int] = defaultdict(int)
    for name, size in data["own"].items():
        by_pkg[name.split(".")[0]] += size
    print(f"\ntracemalloc while importing wsgi: {data['held'] / 1048576:.1f} MiB held by Python; "
          f"top {top} packages by what importing their modules left allocated (MiB):")
    for pkg, size in sorted(by_pkg.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {size / 1048576:7.2f}  {pkg}")
    print(f"\ntop {top} modules (MiB, exclusive of what they import):")
    for name, size in sorted(data["own"].items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {size / 1048576:7.2f}  {name}")

    # 3. -X importtime: cumulative time per top-level import, and self time per package
    timed = subprocess.run([str(PYTHON), "-X", "importtime", "-c", "import wsgi"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    self_by_pkg: dict[str, int] = defaultdict(int)
    cumulative: dict[str, int] = {}
    for line in timed.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        self_us, cum_us, name = int(m.group(1)), int(m.group(2)), m.group(4)
        self_by_pkg[name.split(".")[0]] += self_us
        cumulative[name] = max(cumulative.get(name, 0), cum_us)
    print(f"\npython -X importtime, top {top} packages by self time (ms, all their modules):")
    for pkg, us in sorted(self_by_pkg.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {us / 1000:8.1f}  {pkg}")
    print(f"\npython -X importtime, top {top} imports by cumulative time (ms):")
    for name, us in sorted(cumulative.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {us / 1000:8.1f}  {name}")
    heavy = ("pyhanko", "reportlab", "saml2", "xmlsec", "pypdf", "fontTools", "qrcode", "PIL", "gmssl_pyx",
             "lxml", "xmlschema", "elementpath", "webauthn", "cbor2", "pkcs11", "aiohttp")
    present = [m for m in heavy if m in data["top_level"]]
    print(f"\nheavy packages imported by create_app: {', '.join(present) or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", choices=("granian", "gunicorn"), default="granian")
    ap.add_argument("--requests", type=int, default=400, help="warm-up requests per hot endpoint (default 400)")
    ap.add_argument("--top", type=int, default=25, help="lines of each import table (default 25)")
    ap.add_argument("--no-imports", action="store_true", help="skip the import-time tables")
    args = ap.parse_args()
    if not 1 <= args.requests <= 20000:
        sys.exit("--requests: between 1 and 20000")

    tmp = Path(tempfile.mkdtemp(prefix="tongban-memory-"))
    port = free_port()
    env = tongban_env(tmp / "instance", os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp / 'tongban.db'}",
                      port, args.server, redis=True)
    try:
        print(f"instance {tmp}  database {env['DATABASE_URL']}")
        created, portal, licence_path = setup(env)
        server = start_tongban(env, log=tmp / "server.log")  # the access log: not on the terminal
        try:
            meta = wait_ready(port, server)
            local_paths(meta, ("token_endpoint", "introspection_endpoint", "jwks_uri", "userinfo_endpoint",
                               "authorization_endpoint"))
            time.sleep(1)
            before = rss_report("after start", server.pid)
            warm_up(port, meta, created, portal, licence_path, args.requests)
            time.sleep(1)
            after = rss_report("after warm-up", server.pid)
            if "worker" in after:
                print(f"\nworker: {before.get('worker', 0) / 1024:.1f} MiB after start, "
                      f"{after['worker'] / 1024:.1f} MiB after warm-up (target ≤ 150 MB = 143.1 MiB)")
        finally:
            stop(server)
        if not args.no_imports:
            import_costs(env, args.top)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
