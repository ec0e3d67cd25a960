#!/usr/bin/env python3
"""CPU time per request of one production worker: a figure a loaded machine blurs much less
than requests per second.

    .venv/bin/python bench/cpu.py [--seconds 8] [--connections 8] [--driver auto|wrk|python]
        [--only token introspect userinfo jwks discovery] [--sqlite] [--py-spy PREFIX]
    .venv/bin/python bench/cpu.py --inproc N [--profile [--profile-sort cumulative] | --callgrind
        [--callgrind-keep PREFIX]] [--sqlite] [--only ...]

Server mode (the default): a throw-away instance (PostgreSQL, as bench/compare.py: a database
made for the run and dropped after it, ``BENCH_PG_ADMIN_URL``; or SQLite with --sqlite) served
by ``python -m tongban.serve`` (what ``make serve`` runs; one Granian worker) pinned to CPU 0,
the access log on and written to a file; the load from CPU 1 (wrk, or the Python driver). For
each endpoint, after a warm-up, the utime+stime of every process of the server (its worker and
Granian's main process, read from /proc/<pid>/stat) and the context switches of all their
threads are read before and after the measured run, and divided by the requests answered.
``WEB_THREADS`` and the ``GRANIAN_*`` variables of the options ``make serve`` does not set
(``GRANIAN_RUNTIME_MODE``, ``GRANIAN_RUNTIME_THREADS``, ...) pass through to the server, to
compare server options. --py-spy PREFIX: py-spy (on PATH) samples the worker during each
measured run (native frames included; it pauses the worker to sample, so read the shares, not
the throughput).

--inproc N: no server; the WSGI application is called N times per endpoint in this process and
``time.process_time()`` is read around the calls: what the Python side costs alone. --profile
adds a cProfile summary per endpoint (top functions by own time). --callgrind runs the script
under valgrind's callgrind and counts the instructions of exactly those N calls (the same on a
quiet and on a loaded machine; ~50 times slower, so keep N in the hundreds); --callgrind-keep PREFIX
keeps each endpoint's dump as PREFIX.<endpoint> for ``callgrind_annotate``. Measure one endpoint
per run when comparing counts (``--only token``): an endpoint measured after another counted
~170 k more instructions per request in one series.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

# Run as a script, this folder is sys.path[0].
from _common import (
    DISCOVERY,
    HOST,
    ROOT,
    Scenario,
    basic_auth,
    callgrind,
    callgrind_dump,
    code_flow,
    fetch,
    free_port,
    group_cpu_by_pid,
    group_switches,
    local_paths,
    measure,
    pinning,
    postgres_database,
    setup_tongban,
    start_tongban,
    stop,
    tongban_env,
    wait_ready,
)

ENDPOINTS = ("token", "introspect", "userinfo", "jwks", "discovery")


def scenarios(paths: dict, basic: str, access_token: str, user_token: str) -> dict[str, Scenario]:
    form = {"Authorization": basic, "Content-Type": "application/x-www-form-urlencoded"}
    return {
        "token": Scenario("POST token (client_credentials)", "POST", paths["token_endpoint"],
                          urlencode({"grant_type": "client_credentials"}).encode(), form),
        "introspect": Scenario("POST introspect", "POST", paths["introspection_endpoint"],
                               urlencode({"token": access_token}).encode(), form),
        "userinfo": Scenario("GET userinfo", "GET", paths["userinfo_endpoint"], None,
                             {"Authorization": f"Bearer {user_token}"}),
        "jwks": Scenario("GET jwks", "GET", paths["jwks_uri"]),
        "discovery": Scenario("GET discovery", "GET", DISCOVERY),
    }


def server_mode(args, env: dict, made: dict, tmp: Path) -> None:
    server_prefix, load_prefix = pinning()
    env = dict(env)
    env["TONGBAN_ACCESS_LOG"] = "1"
    server = start_tongban(env, server_prefix, log=tmp / "server.log")
    try:
        port = int(env["PORT"])
        meta = wait_ready(port, server)
        paths = local_paths(meta, ("token_endpoint", "introspection_endpoint", "jwks_uri", "userinfo_endpoint"))
        basic = basic_auth(made["client"]["client_id"], made["client"]["client_secret"])
        status, body = fetch(port, "POST", paths["token_endpoint"], b"grant_type=client_credentials",
                             {"Authorization": basic, "Content-Type": "application/x-www-form-urlencoded"})
        if status != 200:
            sys.exit(f"token request failed: {status} {body[:300]!r}")
        access_token = json.loads(body)["access_token"]
        user_token = code_flow(f"http://{HOST}:{port}", meta, made["portal"])
        chosen = scenarios(paths, basic, access_token, user_token)
        options = " ".join(f"{k}={v}" for k, v in sorted(env.items()) if k.startswith("GRANIAN_"))
        print(f"1 Granian worker on CPU 0, load from CPU 1, {args.connections} connections, {args.driver} driver, "
              f"{args.seconds:g} s per endpoint{', ' + options if options else ''}; "
              f"load average {os.getloadavg()[0]:.2f}\n")
        print(f"{'endpoint':34} {'requests':>9} {'req/s':>8} {'worker µs/req':>14} {'all µs/req':>11} "
              f"{'switches/req':>13} {'errors':>7}")
        for key in args.only:
            sc = chosen[key]
            measure(args.driver, port, sc, args.warmup, args.connections, load_prefix)
            before, switches = group_cpu_by_pid(server.pid), group_switches(server.pid)
            spy = None
            if args.py_spy:
                import subprocess

                worker_pid = next(pid for pid in before if pid != server.pid)
                spy = subprocess.Popen(["py-spy", "record", "--native", "-r", "100", "-f", "raw",
                                        "-d", str(int(args.seconds)), "-p", str(worker_pid),
                                        "-o", f"{args.py_spy}.{key}.txt"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            r = measure(args.driver, port, sc, args.seconds, args.connections, load_prefix)
            if spy is not None:
                spy.wait(timeout=60)
            after, switches = group_cpu_by_pid(server.pid), group_switches(server.pid) - switches
            deltas = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
            worker = max(deltas.values())  # the worker does the work; Granian's main process idles
            total = sum(deltas.values())
            n = max(1, r["requests"])
            print(f"{r['name']:34} {r['requests']:9d} {r['rps']:8.0f} {worker / n * 1e6:14.1f} "
                  f"{total / n * 1e6:11.1f} {switches / n:13.2f} {r['errors']:7d}", flush=True)
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    finally:
        stop(server)


def environ_for(sc: Scenario, port: int) -> dict:
    env = {"REQUEST_METHOD": sc.method, "PATH_INFO": sc.path, "QUERY_STRING": "", "SERVER_NAME": HOST,
           "SERVER_PORT": str(port), "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": HOST,
           "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": True,
           "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0)}
    for name, value in sc.headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            env["CONTENT_TYPE"] = value
        else:
            env["HTTP_" + key] = value
    body = sc.body or b""
    if body:
        env["CONTENT_LENGTH"] = str(len(body))
    env["wsgi.input"] = io.BytesIO(body)
    return env


def inproc_mode(args, env: dict, made: dict, tmp: Path) -> None:
    os.environ.update({k: v for k, v in env.items() if k.startswith(("TONGBAN_", "DATABASE_URL"))})
    os.environ["TONGBAN_ISSUER"] = f"http://{HOST}:{env['PORT']}"
    os.environ["TONGBAN_ACCESS_LOG"] = "1"
    # the usage counts are written every few seconds: thousands of requests apart in production,
    # a handful apart under callgrind (which runs ~50 times slower): not part of the count
    os.environ.setdefault("TONGBAN_USAGE_FLUSH_SECONDS", "3600")
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    import wsgi
    from tongban import logs

    app = wsgi.app
    logs.configure("json", stream=open(tmp / "access.log", "w"))  # noqa: SIM115 - kept open for the run
    port = int(env["PORT"])

    def call(sc: Scenario) -> tuple[str, bytes]:
        seen = []
        body = b"".join(app(environ_for(sc, port), lambda s, h, e=None: seen.append(s)))
        return seen[0], body

    meta = json.loads(call(Scenario("d", "GET", DISCOVERY))[1])
    paths = local_paths(meta, ("token_endpoint", "introspection_endpoint", "jwks_uri", "userinfo_endpoint"))
    basic = basic_auth(made["client"]["client_id"], made["client"]["client_secret"])
    form = {"Authorization": basic, "Content-Type": "application/x-www-form-urlencoded"}
    status, body = call(Scenario("t", "POST", paths["token_endpoint"], b"grant_type=client_credentials", form))
    if not status.startswith("200"):
        sys.exit(f"token request failed: {status} {body[:300]!r}")
    access_token = json.loads(body)["access_token"]
    chosen = scenarios(paths, basic, access_token, "")
    print(f"in-process WSGI calls, {args.inproc} per endpoint (no HTTP server)\n")
    for key in args.only:
        if key == "userinfo":
            continue  # needs a code flow through a server
        sc = chosen[key]
        for _ in range(200):
            status, _ = call(sc)
        if not status.startswith("200"):
            sys.exit(f"{key}: {status}")
        prof = None
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        import gc

        gc.collect()  # every endpoint's run starts from the same collector state
        if args.callgrind:
            callgrind("-z")
            callgrind("-i", "on")
        t0 = time.process_time()
        for _ in range(args.inproc):
            call(sc)
        cpu = time.process_time() - t0
        if args.callgrind:
            callgrind("-i", "off")
            keep = os.environ.get("TONGBAN_BENCH_CALLGRIND_KEEP")  # --callgrind-keep: for callgrind_annotate
            counted = callgrind_dump(tmp / "callgrind", key, keep)
            print(f"{sc.name:34} {counted / args.inproc:10.0f} instructions/request (callgrind)")
            continue
        if prof is not None:
            prof.disable()
        print(f"{sc.name:34} {cpu / args.inproc * 1e6:8.1f} µs/request (process CPU){' (profiled)' if prof else ''}")
        if prof is not None:
            import pstats

            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats(args.profile_sort).print_stats(args.top)
            print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()) + "\n")




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8, help="measured seconds per endpoint (default 8)")
    ap.add_argument("--warmup", type=float, default=2, help="unmeasured seconds first (default 2)")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--driver", choices=("auto", "wrk", "python"), default="auto")
    ap.add_argument("--only", nargs="*", choices=ENDPOINTS, default=list(ENDPOINTS))
    ap.add_argument("--sqlite", action="store_true", help="SQLite in a temporary folder instead of PostgreSQL")
    ap.add_argument("--pg-admin-url", default=os.environ.get("BENCH_PG_ADMIN_URL",
                                                            "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--db-prefix", default="tongban_bench_")
    ap.add_argument("--inproc", type=int, default=0, metavar="N", help="call the WSGI app N times per endpoint")
    ap.add_argument("--profile", action="store_true", help="with --inproc: a cProfile summary per endpoint")
    ap.add_argument("--callgrind", action="store_true",
                    help="with --inproc: instructions per request, counted by valgrind's callgrind (stable on a "
                         "loaded machine); runs this script under valgrind")
    ap.add_argument("--callgrind-keep", metavar="PREFIX", help="with --callgrind: keep each endpoint's dump as "
                    "PREFIX.<endpoint> (for callgrind_annotate)")
    ap.add_argument("--py-spy", metavar="PREFIX", help="server mode: py-spy (on PATH) samples the worker, native "
                    "frames included, during each measured run into PREFIX.<endpoint>.txt (collapsed stacks)")
    ap.add_argument("--profile-sort", choices=("tottime", "cumulative"), default="tottime",
                    help="the order of the profile summary (default: own time)")
    ap.add_argument("--top", type=int, default=25, help="functions in each profile summary")
    args = ap.parse_args()
    if args.driver == "auto":
        args.driver = "wrk" if shutil.which("wrk") else "python"

    tmp = Path(tempfile.mkdtemp(prefix="tongban-bench-cpu-"))
    if args.callgrind and not os.environ.get("TONGBAN_BENCH_UNDER_CALLGRIND"):
        if not args.inproc or not shutil.which("valgrind"):
            sys.exit("--callgrind needs --inproc N and valgrind (apt-get install valgrind)")
        (tmp / "callgrind").mkdir()
        os.environ["TONGBAN_BENCH_UNDER_CALLGRIND"] = str(tmp)
        if args.callgrind_keep:
            os.environ["TONGBAN_BENCH_CALLGRIND_KEEP"] = os.path.abspath(args.callgrind_keep)
        argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--quiet",
                f"--callgrind-out-file={tmp / 'callgrind' / 'cg.out.%p'}", sys.executable, *sys.argv]
        try:
            os.execvp(argv[0], argv)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if os.environ.get("TONGBAN_BENCH_UNDER_CALLGRIND"):
        shutil.rmtree(tmp, ignore_errors=True)
        tmp = Path(os.environ["TONGBAN_BENCH_UNDER_CALLGRIND"])
    try:
        if args.sqlite:
            run(args, f"sqlite:///{tmp / 'tongban.db'}", tmp)
        else:
            with postgres_database(args.pg_admin_url, args.db_prefix) as database:
                run(args, database, tmp)
    finally:
        if os.environ.get("TONGBAN_BENCH_UNDER_CALLGRIND"):
            # valgrind writes a last (empty) dump when this process ends: its folder stays
            for entry in tmp.iterdir():
                if entry.name != "callgrind":
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            print(f"(callgrind's last, empty, dump goes to {tmp / 'callgrind'})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args, database: str, tmp: Path) -> None:
    env = tongban_env(tmp / "instance", database, free_port())
    made = setup_tongban(env)
    if args.inproc:
        inproc_mode(args, env, made, tmp)
    else:
        server_mode(args, env, made, tmp)


if __name__ == "__main__":
    main()
