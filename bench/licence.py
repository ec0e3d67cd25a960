#!/usr/bin/env python3
"""E-licence benchmark: online QR verification (GET /v/<code> JSON) through one production
worker, offline token verifications per second, and licences issued per second end to end
(identifier, PDF, seal, certify, row, audit). Prints figures; asserts nothing.

    .venv/bin/python bench/licence.py [--seconds 8] [--connections 8] [--issues 20]

Throw-away instance (SQLite in a temporary folder, or BENCH_DATABASE_URL); the server is
``python -m tongban.serve`` (``make serve``) with WEB_CONCURRENCY=1 pinned to CPU 0, load from
CPU 1 (helpers shared with bench/tokens.py in bench/_common.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

# Run as a script, this folder is sys.path[0]; _common puts the project before it.
from _common import (
    Scenario,
    drive,
    free_port,
    issue_licences,
    pinning,
    rate,
    run_flask,
    start_tongban,
    stop,
    tongban_env,
    wait_ready,
)


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
        per_s = rate(lambda: offline.verify_token(token, pub, lst), 2, warm_up=False)
        print(f"offline token verify (decode+ES256+status)  {per_s:8.1f} /s   token {len(token)} chars")
        per_s = rate(lambda: offline.make_token(lic), 1, warm_up=False)
        print(f"offline token create                        {per_s:8.1f} /s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--issues", type=int, default=20)
    ap.add_argument("--licences", type=int, default=200, help="licences in the table behind /v/")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tongban-bench-licence-"))
    port = free_port()
    database = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp / 'tongban.db'}"
    env = tongban_env(tmp / "instance", database, port)
    print(f"instance {tmp}  database {database}")
    run_flask(env, "db", "upgrade", "heads")  # "heads": works before and after the branches merge
    in_process(tmp / "instance", database, args.issues)
    code = issue_licences(env, max(1, args.licences // 50))  # a table of licences, then one code to hit
    server_prefix, _ = pinning()
    server = start_tongban(env, server_prefix, quiet=True)
    try:
        wait_ready(port, server)
        print(f"\ngranian, 1 worker{' on CPU 0, load from CPU 1' if server_prefix else ''}, "
              f"{args.connections} connections, {args.seconds:g} s each")
        print(f"{'endpoint':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for sc in (Scenario("GET /v/<code> JSON (known)", "GET", code, None, {"Accept": "application/json"}),
                   Scenario("GET /v/<code> HTML (known)", "GET", code, None, {"Accept": "text/html"})):
            r = drive(port, sc, args.seconds, args.connections)
            print(f"{r['name']:34} {r['rps']:9.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['errors']:7d}",
                  flush=True)
    finally:
        stop(server)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
