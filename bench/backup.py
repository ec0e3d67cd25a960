#!/usr/bin/env python3
"""Backup and restore time: ``flask backup create`` and ``flask backup restore`` on a database
of realistic size, on SQLite and on PostgreSQL (pg_dump and the portable dump).

    .venv/bin/python bench/backup.py [--citizens 100000] [--licences 20000] [--audit 300000]
                                     [--only sqlite|pg_dump|portable]

The database is filled with bulk SQL, not the slow paths, but with valid rows: citizens with
valid ID numbers (one argon2id hash shared: hashing 100,000 would take hours), licences copied
from one really issued, sealed licence (its PDF, each copy with its own identifier, serial,
verify code and status index), audit events tagged with the instance's key as ``audit.record``
tags them (left for the chainer), and a log-in event per citizen. Prints the database size,
the archive size and the seconds for create and restore, and the seconds per GB.

PostgreSQL: a database ``soak_backup_<pid>_<random>`` on BENCH_ADMIN_URL (default
``postgresql://postgres@127.0.0.1:5432/postgres``), dropped afterwards. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

# Run as a script, this folder is sys.path[0]; _common puts the project before it.
from _common import FLASK, ROOT, postgres_database, run_flask
from soak import id_number

PASSPHRASE = "bench backup passphrase"
BATCH = 5000
TABLES = ("users", "login_events", "licences", "audit_log")


def fill(citizens: int, licences: int, audit_rows: int) -> None:
    """In a subprocess with the run's environment (DATABASE_URL, TONGBAN_INSTANCE_DIR)."""
    import random
    from datetime import timedelta

    from sqlalchemy import func, insert, select, update

    from licence import identifiers, services
    from licence.models import Licence, LicenceCounter
    from people.models import LoginEvent, User
    from people.passwords import hash_password
    from tests.licence.samples import SAMPLES
    from tongban import audit, create_app
    from tongban.clock import token, utcnow
    from tongban.extensions import db

    app = create_app()
    rnd = random.Random(7)
    with app.app_context():
        now = utcnow()
        pw = hash_password("Bench-Passw0rd!")
        for start in range(0, citizens, BATCH):
            db.session.execute(insert(User), [
                {"sub": secrets.token_urlsafe(15), "id_number": id_number(i), "name": f"市民{i}",
                 "phone": f"139{i:08d}", "password_hash": pw, "assurance_level": 1 + i % 3,
                 "failed_logins": 0, "disabled": False, "created_at": now - timedelta(days=i % 700),
                 "password_changed_at": now} for i in range(start, min(citizens, start + BATCH))])
        first = db.session.execute(select(func.min(User.id))).scalar()
        for start in range(0, citizens, BATCH):
            db.session.execute(insert(LoginEvent), [
                {"user_id": first + i, "at": now - timedelta(minutes=i), "ip": f"10.{i % 250}.{i % 199}.7",
                 "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0", "outcome": "success"}
                for i in range(start, min(citizens, start + BATCH))])
        db.session.commit()

        (hid, hname), data = SAMPLES["营业执照"]
        real = services.issue("营业执照", hid, hname, data, actor="bench")
        db.session.commit()
        base = {c.name: getattr(real, c.key) for c in Licence.__table__.columns if c.name != "id"}
        serial0 = int(real.serial)
        idx0 = real.status_idx
        for start in range(1, licences, BATCH):
            rows = []
            for i in range(start, min(licences, start + BATCH)):
                lid = identifiers.build(real.type_code, real.issuer_uscc, serial0 + i, 1)
                rows.append({**base, "identifier": str(lid), "serial": lid.serial,
                             "verify_code": token(16), "status_idx": idx0 + i,
                             "holder_name": f"{hname}{i}", "status": "valid" if i % 50 else "revoked"})
            db.session.execute(insert(Licence), rows)
        # the counters continue after the copies, as if they had been issued one by one
        for key in (f"serial:{real.issuer_uscc}", services.STATUS_LIST_KEY):
            db.session.execute(update(LicenceCounter).where(LicenceCounter.key == key)
                               .values(value=LicenceCounter.value + licences - 1))
        db.session.commit()

        actions = ("login.success", "token.issued", "licence.viewed", "refresh.family_started", "login.failure")
        for start in range(0, audit_rows, BATCH):
            rows = []
            for i in range(start, min(audit_rows, start + BATCH)):
                action = actions[i % len(actions)]
                rows.append(audit._row_values(app, action, f"user:{secrets.token_urlsafe(15)}",
                                              f"client:{rnd.randrange(1000):04d}",
                                              "failure" if action == "login.failure" else "success",
                                              {"acr": "L2", "n": i}, f"10.{i % 250}.{i % 199}.7"))
            db.session.execute(insert(audit.AuditLog), rows)
            db.session.commit()


def counts(env: dict) -> dict:
    out = run_flask(env, "shell", stdin="from tongban.extensions import db\nfrom sqlalchemy import text\n"
                    + "import json\nprint('COUNTS', json.dumps({t: db.session.execute(text(f'SELECT count(*) FROM "
                    + "{t}')).scalar() for t in " + repr(TABLES) + "}))\n")
    line = next(x for x in out.splitlines() if "COUNTS" in x)
    return json.loads(line.split("COUNTS", 1)[1])


def timed(env: dict, *args: str) -> tuple[float, float, float]:
    """Wall seconds of one ``flask`` command (start-up included); the CPU seconds it and its
    children (pg_dump, pg_restore) used — on a shared machine the steadier figure; the database
    server's own CPU (COPY) is not in it — and the peak RSS (MiB) of it or a child."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(FLASK), "--app", "wsgi", *args], cwd=ROOT,
                                env=env, stdin=subprocess.PIPE, stdout=out, stderr=out)
        proc.stdin.write((PASSPHRASE + "\n").encode())
        proc.stdin.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        dt = time.perf_counter() - t0
        if proc.returncode:
            out.seek(0)
            sys.exit(f"flask {' '.join(args)} failed:\n{out.read().decode(errors='replace')[-2000:]}")
    return dt, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def measure(label: str, env: dict, db_size: int, tmp: Path, expected: dict) -> dict:
    archive = tmp / f"{label}.tbk"
    # the CLI's own start-up (create_app), for scale: wall and CPU of `backup --help`
    startup, startup_cpu = min(timed(env, "backup", "--help")[:2] for _ in range(2))
    load = os.getloadavg()[0]
    create_s, create_cpu, create_mib = timed(env, "backup", "create", str(archive))
    size = archive.stat().st_size
    restore_s, restore_cpu, restore_mib = timed(env, "backup", "restore", str(archive))
    load = max(load, os.getloadavg()[0])
    got = counts(env)
    if got != expected:
        sys.exit(f"{label}: restored counts {got} differ from {expected}")
    gb = db_size / 1e9
    row = {"label": label, "db_mb": db_size / 1e6, "archive_mb": size / 1e6, "startup_s": startup,
           "create_s": create_s, "create_cpu_s": create_cpu, "restore_cpu_s": restore_cpu, "load": load,
           "startup_cpu_s": startup_cpu, "create_peak_rss_mib": create_mib, "restore_peak_rss_mib": restore_mib,
           "restore_s": restore_s, "create_s_per_gb": create_s / gb, "restore_s_per_gb": restore_s / gb}
    print(f"{label:22} db {row['db_mb']:8.1f} MB  archive {row['archive_mb']:8.1f} MB  "
          f"create {create_s:7.1f} s ({create_cpu:.1f} s CPU, {create_mib:.0f} MiB)  "
          f"restore {restore_s:7.1f} s ({restore_cpu:.1f} s CPU, {restore_mib:.0f} MiB)  "
          f"per GB of database: create {row['create_s_per_gb']:6.0f} s, restore {row['restore_s_per_gb']:6.0f} s "
          f"(CLI start-up {startup:.1f} s, {startup_cpu:.1f} s CPU, included; load average {load:.1f})",
          flush=True)
    archive.unlink()
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--citizens", type=int, default=100_000)
    ap.add_argument("--licences", type=int, default=20_000)
    ap.add_argument("--audit", type=int, default=300_000)
    ap.add_argument("--only", choices=("sqlite", "pg_dump", "portable"), action="append")
    ap.add_argument("--fill", action="store_true", help=argparse.SUPPRESS)  # internal
    args = ap.parse_args()
    if not (1 <= args.citizens <= 2_000_000 and 1 <= args.licences <= 200_000 and 0 <= args.audit <= 5_000_000):
        ap.error("out of bounds: --citizens ≤ 2,000,000, --licences ≤ 200,000, --audit ≤ 5,000,000")
    if args.fill:
        fill(args.citizens, args.licences, args.audit)
        return 0
    chosen = args.only or ["sqlite", "pg_dump", "portable"]
    admin = os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    if urlsplit(admin).hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"refusing a non-loopback address: {admin}")
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("TONGBAN_", "FLASK_")) and k not in ("DATABASE_URL", "REDIS_URL")}
    print(f"{args.citizens} citizens (+ a log-in event each), {args.licences} licences, {args.audit} audit events")
    results = []
    for backend in ("sqlite", "postgresql"):
        modes = [m for m in chosen if (m == "sqlite") == (backend == "sqlite")]
        if not modes:
            continue
        tmp = Path(tempfile.mkdtemp(prefix="tongban-bench-backup-"))
        cleanup = contextlib.ExitStack()
        try:
            if backend == "sqlite":
                url = f"sqlite:///{tmp / 'tongban.db'}"
            else:
                url = cleanup.enter_context(postgres_database(admin, "soak_backup_"))
                dbname = urlsplit(url).path.lstrip("/")
            env = {**base_env, "DATABASE_URL": url, "TONGBAN_INSTANCE_DIR": str(tmp / "instance"),
                   "TONGBAN_OUTBOX_THREAD": "0", "TONGBAN_AUDIT_CHAIN_THREAD": "0"}
            run_flask(env, "db", "upgrade")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--fill", "--citizens", str(args.citizens), "--licences",
                            str(args.licences), "--audit", str(args.audit)], cwd=ROOT, env=env, check=True,
                           timeout=3600)
            print(f"{backend}: filled in {time.perf_counter() - t0:.0f} s", flush=True)
            expected = counts(env)
            if backend == "sqlite":
                db_size = (tmp / "tongban.db").stat().st_size
            else:
                import psycopg

                with psycopg.connect(admin, autocommit=True) as conn:
                    db_size = conn.execute("SELECT pg_database_size(%s)", (dbname,)).fetchone()[0]
            for mode in modes:
                menv = {**env, "TONGBAN_BACKUP_PORTABLE": "1"} if mode == "portable" else env
                results.append(measure(f"{backend} ({mode})" if backend != "sqlite" else "sqlite", menv,
                                       db_size, tmp, expected))
        finally:
            cleanup.close()  # drops the PostgreSQL database
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
