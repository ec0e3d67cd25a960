#!/usr/bin/env python3
"""Token-service throughput of one production worker.

    .venv/bin/python bench/tokens.py [--seconds 10] [--connections 8] [--server granian|gunicorn]
                                     [--driver python|wrk]

Creates a throwaway instance (SQLite in a temporary folder, or BENCH_DATABASE_URL),
migrates it, registers a client_credentials client allowed to introspect, starts
``python -m tongban.serve`` (what ``make serve`` runs) with WEB_CONCURRENCY=1 pinned to
CPU 0, and drives it from CPU 1 for a fixed time per endpoint, with keep-alive HTTP/1.1
connections (stdlib ``http.client``, one thread each; or ``wrk`` with --driver wrk):

    POST token_endpoint          grant_type=client_credentials (Basic auth)
    POST introspection_endpoint  token=<access token> (Basic auth)
    GET  userinfo_endpoint       Bearer <a citizen's access token from a real code flow>
    GET  jwks_uri
    GET  /.well-known/openid-configuration

Prints requests/s, p50/p99 latency, errors, and the server processes' RSS.
Only 127.0.0.1 is contacted; the whole run stays under two minutes by default.
bench/compare.py measures the same endpoints side by side with node-oidc-provider.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

# Run as a script, this folder is sys.path[0].
from _common import (
    DISCOVERY,
    HOST,
    Scenario,
    basic_auth,
    code_flow,
    fetch,
    free_port,
    local_paths,
    measure_table,
    pinning,
    print_group_rss,
    setup_tongban,
    start_tongban,
    stop,
    tongban_env,
    wait_ready,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10, help="per endpoint (default 10)")
    ap.add_argument("--connections", type=int, default=8, help="keep-alive connections (default 8)")
    ap.add_argument("--server", choices=("granian", "gunicorn"), default="granian")
    ap.add_argument("--driver", choices=("python", "wrk"), default="python", help="load generator")
    ap.add_argument("--only", nargs="*", choices=("token", "introspect", "userinfo", "jwks", "discovery"),
                    help="run only these endpoints")
    args = ap.parse_args()
    if args.seconds * 5 > 125:
        sys.exit("--seconds: keep the whole run under two minutes (at most 25 per endpoint)")

    tmp = Path(tempfile.mkdtemp(prefix="tongban-bench-"))
    port = free_port()
    database = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp / 'tongban.db'}"
    env = tongban_env(tmp / "instance", database, port, args.server)
    print(f"instance {tmp}  database {database}")
    made = setup_tongban(env)
    basic = basic_auth(made["client"]["client_id"], made["client"]["client_secret"])

    server_prefix, load_prefix = pinning()
    server = start_tongban(env, server_prefix)
    try:
        meta = wait_ready(port, server)
        paths = local_paths(meta, ("token_endpoint", "introspection_endpoint", "jwks_uri", "userinfo_endpoint",
                                   "authorization_endpoint"))
        form = {"Authorization": basic, "Content-Type": "application/x-www-form-urlencoded"}
        token_body = urlencode({"grant_type": "client_credentials"}).encode()
        status, body = fetch(port, "POST", paths["token_endpoint"], token_body, form)
        if status != 200:
            sys.exit(f"token request failed: {status} {body[:300]!r}")
        access_token = json.loads(body)["access_token"]
        user_token = code_flow(f"http://{HOST}:{port}", meta, made["portal"])

        scenarios = {
            "token": Scenario("POST token (client_credentials)", "POST", paths["token_endpoint"], token_body, form),
            "introspect": Scenario("POST introspect", "POST", paths["introspection_endpoint"],
                                   urlencode({"token": access_token}).encode(), form),
            "userinfo": Scenario("GET userinfo", "GET", paths["userinfo_endpoint"], None,
                                 {"Authorization": f"Bearer {user_token}"}),
            "jwks": Scenario("GET jwks", "GET", paths["jwks_uri"]),
            "discovery": Scenario("GET discovery", "GET", DISCOVERY),
        }
        chosen = args.only or list(scenarios)
        print(f"{args.server}, 1 worker{' on CPU 0, load from CPU 1' if server_prefix else ''}, "
              f"{args.connections} connections, {args.seconds:g} s each, {args.driver} driver\n")
        measure_table(args.driver, port, [scenarios[k] for k in chosen], args.seconds, args.connections,
                      load_prefix)
        print_group_rss(server.pid)
    finally:
        stop(server)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
