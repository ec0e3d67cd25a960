#!/usr/bin/env python3
"""CPU per request of the full Flask stack, in-process: the log-in page and a cheap request.

    .venv/bin/python bench/page.py [--n 2000] [--rounds 5] [--only login_get lang]
                                   [--profile STEP [--top 30]] [--callgrind]

A throw-away instance (SQLite in a temporary folder, migrated), the JSON access log written to
a file as in production. Each step is one raw WSGI call (no test client, no HTTP server):

    login_get   GET /login?next=/oauth/authorize?... (the page a password log-in shows; a fresh
                browser: no cookies, so a new CSRF token and a session cookie every time)
    lang        GET /lang/en?next=/login (a 302 with a cookie: little more than the hooks)
    not_found   GET /no-such-page (the error page through every hook)

Its own throw-away app (not ``_common.throwaway_app``, which holds an app context open: every
request would then share its ``g``, unlike a worker's). Prints the least process CPU per call
over the rounds (``time.process_time()``; the machine may be shared). --profile STEP: a cProfile
of that step. --callgrind: run under valgrind's callgrind and print instructions per call
instead (stable on a loaded machine; keep --n in the hundreds).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

# Run as a script, this folder is sys.path[0].
from _common import callgrind, callgrind_dump

ROOT = Path(__file__).resolve().parent.parent

AUTHORIZE = "/oauth/authorize?" + urlencode({
    "response_type": "code", "client_id": "portal", "redirect_uri": "http://127.0.0.1:9/cb",
    "scope": "openid profile", "state": "s", "nonce": "n0nce", "code_challenge": "x" * 43,
    "code_challenge_method": "S256"})
STEPS = {
    "login_get": ("/login", "next=" + quote(AUTHORIZE, safe="")),
    "lang": ("/lang/en", "next=/login"),
    "not_found": ("/no-such-page", ""),
}


def environ(path: str, query: str) -> dict:
    return {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "5000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:5000",
        "HTTP_ACCEPT_LANGUAGE": "zh-CN,zh;q=0.9,en;q=0.8", "HTTP_USER_AGENT": "bench/page",
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0),
    }




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", nargs="*", choices=list(STEPS), default=list(STEPS))
    ap.add_argument("--profile", choices=list(STEPS), default="")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--callgrind", action="store_true")
    args = ap.parse_args()
    grind = os.environ.get("TONGBAN_BENCH_UNDER_CALLGRIND")
    if args.callgrind and not grind:
        folder = Path(tempfile.mkdtemp(prefix="tongban-page-cg-"))
        env = dict(os.environ, TONGBAN_BENCH_UNDER_CALLGRIND=str(folder))
        argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--quiet",
                f"--callgrind-out-file={folder / 'cg.out.%p'}", sys.executable, *sys.argv]
        try:
            sys.exit(subprocess.call(argv, env=env))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    tmp = Path(tempfile.mkdtemp(prefix="tongban-page-"))
    try:
        run(args, tmp, Path(grind) if grind else None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, tmp: Path, grind: Path | None) -> None:
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    from flask_migrate import upgrade

    from tongban import create_app, logs
    from tongban.bootstrap import bootstrap

    app = create_app({"TONGBAN_INSTANCE_DIR": str(tmp / "instance"),
                      "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp / 'bench.db'}",
                      "TONGBAN_ISSUER": "http://127.0.0.1:5000",
                      "TONGBAN_OUTBOX_THREAD": False, "TONGBAN_AUDIT_CHAIN_THREAD": False,
                      "TONGBAN_USAGE_FLUSH_SECONDS": 3600})
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory, revision="heads")
        bootstrap()
    import logging

    for h in list(logging.getLogger().handlers):  # alembic's fileConfig: not there in a production worker
        logging.getLogger().removeHandler(h)
    logs.configure("json", stream=open(tmp / "access.log", "w"))  # noqa: SIM115 - kept open for the run

    def call(step: str) -> str:
        seen: list[str] = []
        body = b"".join(app(environ(*STEPS[step]), lambda s, h, e=None: seen.append(s)))
        assert body
        return seen[0]

    for step in args.only:
        for _ in range(100):
            status = call(step)
        print(f"{step:10} {status}", end="  ", flush=True)
        if grind is not None:
            gc.collect()
            callgrind("-z")
            callgrind("-i", "on")
            for _ in range(args.n):
                call(step)
            callgrind("-i", "off")
            print(f"{callgrind_dump(Path(grind), step) / args.n:10.0f} instructions/call (callgrind)")
            continue
        best = float("inf")
        for _ in range(args.rounds):
            gc.collect()
            t0 = time.process_time()
            for _ in range(args.n):
                call(step)
            best = min(best, time.process_time() - t0)
        print(f"{best / args.n * 1e6:8.1f} µs/call (least process CPU of {args.rounds} rounds of {args.n})")
        if step == args.profile:
            prof = cProfile.Profile(time.process_time)
            prof.enable()
            for _ in range(args.n):
                call(step)
            prof.disable()
            if os.environ.get("BENCH_PROFILE_DUMP"):
                prof.dump_stats(os.environ["BENCH_PROFILE_DUMP"])
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats(args.sort).print_stats(args.top)
            print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()) + "\n")


if __name__ == "__main__":
    main()
