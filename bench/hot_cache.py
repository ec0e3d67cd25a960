"""The hot cache (tongban/hotcache.py): server CPU time per request of the lean userinfo and
the lean ``GET /v/<code>`` JSON, with ``TONGBAN_HOT_CACHE`` off and on, in one Granian worker.

CPU, not requests per second: the machine may be shared, and wall-clock throughput then
measures the neighbours. The figure is the server's process group's utime+stime
(``/proc/<pid>/stat``, every process of the group) over the requests answered, read before and
after each run; the load generator runs in this process (pinned to CPU 1 when there are two),
so its CPU is not counted. JWKS (no I/O at all) is the floor of the server per request.

``--database`` PostgreSQL admin URL (a database is made and dropped) or nothing (SQLite);
``--redis`` a Redis URL (the invalidation log) or nothing (the file generation). ``--churn``
N: a background thread ends and starts one other person's log-in session (or suspends and
reopens it) N times a second during the runs (what invalidations cost). Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import (
    Scenario,
    code_flow,
    drive,
    free_port,
    group_cpu_seconds,
    issue_licences,
    pinning,
    postgres_database,
    run_flask,
    setup_tongban,
    start_tongban,
    stop,
    tongban_env,
    wait_ready,
)

CHURNED = [0]


def churn(env: dict, per_second: float, stop_flag: threading.Event) -> threading.Thread:
    """Invalidations while the runs go: another account's session row ended and re-opened through
    the ORM, N times a second, by an application in this process (its hooks publish ``sid:``)."""

    def run() -> None:
        os.environ.update({k: v for k, v in env.items() if k in ("TONGBAN_INSTANCE_DIR", "DATABASE_URL",
                                                                "REDIS_URL")})
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tongban import create_app
        from tongban.clock import utcnow
        from tongban.extensions import db

        app = create_app({"SQLALCHEMY_DATABASE_URI": env["DATABASE_URL"], "REDIS_URL": env.get("REDIS_URL", ""),
                          "TONGBAN_INSTANCE_DIR": env["TONGBAN_INSTANCE_DIR"], "TONGBAN_OUTBOX_THREAD": False,
                          "TONGBAN_AUDIT_CHAIN_THREAD": False})
        from people.models import LoginSession, User

        with app.app_context():
            other = db.session.query(User).order_by(User.id.desc()).first()
            sess = LoginSession(sid="bench-churn", token_hash="0" * 64, user_id=other.id, auth_time=utcnow(),
                                acr="1", amr="pwd", created_at=utcnow(), last_seen=utcnow(), ip="", user_agent="")
            db.session.add(sess)
            db.session.commit()
            while not stop_flag.is_set():
                sess.ended_at = None if sess.ended_at else utcnow()
                db.session.commit()
                CHURNED[0] += 1
                stop_flag.wait(1 / per_second)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6, help="per endpoint and setting")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--database", default="", help="PostgreSQL admin URL (default: SQLite)")
    ap.add_argument("--redis", default="", help="Redis URL (default: none, the file generation)")
    ap.add_argument("--churn", type=float, default=0.0, help="invalidations per second during the runs")
    ap.add_argument("--rounds", type=int, default=2, help="off/on alternations (the machine drifts)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tongban-bench-hotcache-"))
    with contextlib.ExitStack() as stack:
        if args.database:
            database = stack.enter_context(postgres_database(args.database, "tongban_bench_hotcache_"))
        else:
            database = f"sqlite:///{tmp / 'tongban.db'}"
        port = free_port()
        env = tongban_env(tmp / "instance", database, port)
        env["TONGBAN_ACCESS_LOG"] = "0"
        env["TONGBAN_HOT_CACHE_WITHOUT_REDIS"] = "1"  # one machine: the file generation reaches every process
        if args.redis:
            env["REDIS_URL"] = args.redis
            import redis

            redis.Redis.from_url(args.redis).flushdb()
        run_flask(env, "db", "upgrade", "heads")
        clients = setup_tongban(env)
        code = issue_licences(env, 2)
        run_flask(env, "users", "create", "--id-number", "110105199003070017", "--name", "李四",
                  "--password-stdin", stdin="Bench-Passw0rd!\n")
        server_prefix, _ = pinning()
        print(f"database {'PostgreSQL' if args.database else 'SQLite'}, "
              f"{'Redis log' if args.redis else 'file generation'}, churn {args.churn:g}/s, "
              f"granian 1 worker{' on CPU 0, load on CPU 1' if server_prefix else ''}, "
              f"{args.connections} connections, {args.seconds:g} s per run; load average {os.getloadavg()}")
        token = None
        stop_churn = threading.Event()
        results: dict[tuple[str, str], list[tuple[float, float, int, int]]] = {}
        try:
            for _round in range(args.rounds):
                for setting in ("0", "1"):
                    server = start_tongban({**env, "TONGBAN_HOT_CACHE": setting}, server_prefix, quiet=True)
                    try:
                        meta = wait_ready(port, server)
                        if token is None:
                            token = code_flow(f"http://127.0.0.1:{port}", meta, clients["portal"])
                            if args.churn:
                                churn(env, args.churn, stop_churn)
                        scenarios = [
                            Scenario("GET /oauth/userinfo", "GET", "/oauth/userinfo", None,
                                     {"Authorization": f"Bearer {token}"}),
                            Scenario("GET /v/<code> JSON", "GET", code, None, {"Accept": "application/json"}),
                            Scenario("GET /jwks.json (floor)", "GET", "/jwks.json"),
                        ]
                        for sc in scenarios:
                            drive(port, sc, 0.5, 1)  # warm: the full stack's first answers, the template
                            before = group_cpu_seconds(server.pid)
                            r = drive(port, sc, args.seconds, args.connections)
                            cpu = group_cpu_seconds(server.pid) - before
                            results.setdefault((sc.name, setting), []).append(
                                (cpu, r["rps"], r["requests"], r["errors"]))
                    finally:
                        stop(server)
        finally:
            stop_churn.set()
            time.sleep(0.2)
        print(f"\n{'endpoint':28} {'cache':>5} {'CPU µs/req':>11} {'req/s':>9} {'requests':>9} {'errors':>7}")
        for (name, setting), runs in results.items():
            cpu = sum(c for c, *_ in runs)
            n = sum(k for _c, _r, k, _e in runs)
            rps = sum(r for _c, r, _k, _e in runs) / len(runs)
            errs = sum(e for *_x, e in runs)
            print(f"{name:28} {'on' if setting == '1' else 'off':>5} {cpu / max(n, 1) * 1e6:11.0f} {rps:9.0f} "
                  f"{n:9d} {errs:7d}")
        print(f"load average after {os.getloadavg()}; invalidations published by the churn: {CHURNED[0]}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
