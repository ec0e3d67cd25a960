#!/usr/bin/env python3
"""E-licence benchmark: online QR verification (GET /v/<code> JSON) through one production
worker, offline token verifications per second, and licences issued per second end to end
(identifier, PDF, seal, certify, row, audit). Prints figures; asserts nothing.

    .venv/bin/python bench/licence.py [--seconds 8] [--connections 8] [--issues 20]

Throw-away instance (SQLite in a temporary folder, or BENCH_DATABASE_URL); the server is
``make serve`` with WEB_CONCURRENCY=1 pinned to CPU 0, load from CPU 1 (as bench/tokens.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tokens import HOST, ROOT, Scenario, drive, free_port, run_flask, wait_ready

ORG = ("91350100M000100Y43", "通办示范科技有限公司")


def in_process(instance: Path, database: str, n_issue: int) -> None:
    """Issuing and offline verification measured in this process (no HTTP in the way)."""
    os.environ["TONGBAN_INSTANCE_DIR"] = str(instance)
    os.environ["DATABASE_URL"] = database
    from keys.services import keyring
    from licence import offline, services
    from tests.licence.samples import SAMPLES
    from tongban import create_app
    from tongban.extensions import db

    app = create_app()
    with app.app_context():
        (hid, hname), data = SAMPLES["营业执照"]
        services.issue("营业执照", hid, hname, data, actor="bench")  # warm fonts, keys, seal
        db.session.commit()
        t0 = time.perf_counter()
        for _ in range(n_issue):
            lic = services.issue("营业执照", hid, hname, data, actor="bench")
            db.session.commit()
        dt = time.perf_counter() - t0
        print(f"issue end to end (营业执照, sealed+certified)  {n_issue / dt:8.1f} /s   "
              f"{dt / n_issue * 1000:7.1f} ms each   PDF {len(lic.pdf) / 1024:.0f} KiB")
        token = offline.make_token(lic)
        ring = keyring()
        pub = {k.kid: k.public_key for k in ring.keys if k.alg == "ES256"}
        lst = offline.build_status_bytes([(lic.status_idx, "valid", None)])
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 2:
            offline.verify_token(token, pub, lst)
            n += 1
        dt = time.perf_counter() - t0
        print(f"offline token verify (decode+ES256+status)  {n / dt:8.1f} /s   token {len(token)} chars")
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 1:
            offline.make_token(lic)
            n += 1
        print(f"offline token create                        {n / (time.perf_counter() - t0):8.1f} /s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--issues", type=int, default=20)
    ap.add_argument("--licences", type=int, default=200, help="licences in the table behind /v/")
    args = ap.parse_args()

    ncpu = os.cpu_count() or 1
    taskset = shutil.which("taskset") if ncpu >= 2 else None
    tmp = Path(tempfile.mkdtemp(prefix="tongban-bench-licence-"))
    port = free_port()
    database = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp / 'tongban.db'}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("TONGBAN_ISSUER", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "FLASK_DEBUG")}
    env.update({"TONGBAN_INSTANCE_DIR": str(tmp / "instance"), "DATABASE_URL": database, "HOST": HOST,
                "PORT": str(port), "WEB_CONCURRENCY": "1", "SERVER": "granian"})
    print(f"instance {tmp}  database {database}")
    run_flask(env, "db", "upgrade", "heads")  # "heads": works before and after the branches merge
    in_process(tmp / "instance", database, args.issues)
    # a table of licences, then one code to hit
    code = None
    for i in range(max(1, args.licences // 50)):
        out = json.loads(run_flask(env, "licences", "issue", "--type", "营业执照", "--holder-id", ORG[0],
                                   "--holder-name", f"{ORG[1]}{i}", "--json"))
        code = urlsplit(out["verify_url"]).path
    cmd = ["make", "--no-print-directory", "serve"]
    if taskset:
        cmd = [taskset, "-c", "0", *cmd]
        os.sched_setaffinity(0, {1})
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                              stdout=subprocess.DEVNULL)
    try:
        wait_ready(port, server)
        print(f"\ngranian, 1 worker{' on CPU 0, load from CPU 1' if taskset else ''}, "
              f"{args.connections} connections, {args.seconds:g} s each")
        print(f"{'endpoint':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for sc in (Scenario("GET /v/<code> JSON (known)", "GET", code, None, {"Accept": "application/json"}),
                   Scenario("GET /v/<code> HTML (known)", "GET", code, None, {"Accept": "text/html"})):
            r = drive(port, sc, args.seconds, args.connections)
            print(f"{r['name']:34} {r['rps']:9.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['errors']:7d}",
                  flush=True)
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
