#!/usr/bin/env python3
"""node-oidc-provider and Tongban side by side, on the same core of this machine.

    .venv/bin/python bench/compare.py [--seconds 10] [--connections 8] [--warmup 2] [--rounds 1]
        [--node-package node@22] [--cache-dir DIR | --keep] [--driver auto|wrk|python]
        [--db-prefix tongban_bench_] [--only token introspect ...] [--markdown FILE]

1. Installs node-oidc-provider (9.13.3, the Makefile's pin) and a current Node (the npm
   package ``node@22`` ships the binary) into a scratch folder with npm: a temporary folder
   removed afterwards, kept with --keep, or --cache-dir DIR, reused by later runs.
2. Runs node-oidc-provider (bench/oidc_provider_server.mjs: in-memory adapter, ES256 JWT
   access tokens for a resource, opaque ones for a second resource; a user access token
   minted with the provider's Grant and AccessToken models) pinned to CPU 0
   (``taskset -c 0``), checks it, measures it, notes its RSS and stops it.
3. Runs Tongban (``python -m tongban.serve``, Granian, WEB_CONCURRENCY=1) on a PostgreSQL
   database made for the run (``<db-prefix><pid>_<random>``, dropped afterwards) pinned to
   the same CPU 0; a client_credentials client, a citizen and a real code flow for the
   user access token, a few licences for ``/v/<code>``; checks it, measures it, notes its
   RSS and stops it.
   With --rounds N, steps 2 and 3 repeat N times (the same database; both servers restarted;
   Tongban goes first in every other round).
4. Prints one Markdown table (endpoint | node req/s | Tongban req/s | ratio | p50/p99
   each; with rounds, each row's median round and the range), the servers' RSS after the
   (last) run, the machine (CPU model, cores, load average) and the versions.

The load comes from CPU 1 (``taskset -c 1``): ``wrk`` (one thread, a Lua script per
endpoint for the method, body and headers; every non-2xx answer counts as an error), or,
without wrk, the Python driver of bench/tokens.py. Both servers get the same connections and
the same seconds per endpoint, after an unmeasured warm-up of the same endpoint:

    POST token          client_credentials, Basic auth (node: resource=<the JWT resource>)
    POST introspection  node: an opaque token (it refuses JWTs); Tongban: its ES256 JWT
    GET  userinfo       Bearer user token (node: minted; Tongban: from a code flow with PKCE)
    GET  JWKS
    GET  discovery
    GET  /v/<code> JSON Tongban only (the online licence check); node "—"

A run with any error (non-2xx, connection error, timeout) says so under the table and
exits with status 2. Only 127.0.0.1 is contacted, except npm's registry for the install.
docs/performance.md describes the method and how to read the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from urllib.parse import urlencode

# Run as a script, this folder is sys.path[0].
from _common import (
    DISCOVERY,
    HOST,
    ROOT,
    Scenario,
    basic_auth,
    code_flow,
    fetch,
    free_port,
    group_rss,
    install_node_provider,
    issue_licences,
    jwt_header_claims,
    loadavg,
    local_paths,
    log_tail,
    measure_table,
    pinning,
    postgres_database,
    setup_tongban,
    start_node_provider,
    start_tongban,
    stop,
    tongban_env,
    wait_ready,
)
from node_oidc_provider import node_checks

ENDPOINTS = ("token", "introspect", "userinfo", "jwks", "discovery", "licence")
LABELS = {
    "token": "POST token (client_credentials)",
    "introspect": "POST introspection",
    "userinfo": "GET userinfo",
    "jwks": "GET JWKS",
    "discovery": "GET discovery",
    "licence": "GET /v/<code> JSON (licence check)",
}


# ---------------------------------------------------------------- the machine and versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def tool_version(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    out = (proc.stdout or proc.stderr).strip().splitlines()
    return out[0] if out else "?"


def git_commit() -> str:
    return tool_version(["git", "-C", str(ROOT), "log", "-1", "--format=%h (%cs)"])


def pg_version(database_url: str) -> str:
    import psycopg  # the venv's

    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0].split()[0]}" if row else "PostgreSQL ?"


# ---------------------------------------------------------------- the two servers


def loud(message: str) -> None:
    print(f"\n!!! {message}\n", flush=True)


def run_rows(label: str, port: int, scenarios: dict[str, Scenario], args, load_prefix: list[str]) -> dict:
    results = {}
    print(f"\n{label}: {args.connections} connections, {args.warmup:g} s warm-up + {args.seconds:g} s each, "
          f"{args.driver}")
    rows = measure_table(args.driver, port, list(scenarios.values()), args.seconds, args.connections, load_prefix,
                         36, "  ", warmup=args.warmup)
    for key, r in zip(scenarios, rows, strict=True):
        results[key] = r
        if r["errors"]:
            loud(f"{label} {r['name']}: {r['errors']} errors in {r['requests']} requests")
    return results


def rss_of(pgid: int) -> tuple[int, list[tuple[int, str, int]]]:
    procs = group_rss(pgid)
    return sum(rss for _, _, rss in procs), procs


def check_common(port: int, paths: dict, userinfo: dict, label: str) -> None:
    """userinfo answers the user token with a subject; JWKS has an ES256 key; discovery answers."""
    status, body = fetch(port, "GET", paths["userinfo_endpoint"], None, userinfo)
    if status != 200 or not json.loads(body).get("sub"):
        sys.exit(f"{label}: userinfo with the user access token: {status} {body[:300]!r}")
    status, body = fetch(port, "GET", paths["jwks_uri"])
    keys = json.loads(body).get("keys", []) if status == 200 else []
    if not any(k.get("crv") == "P-256" for k in keys):
        sys.exit(f"{label}: JWKS {status} has no P-256 key: {body[:300]!r}")
    status, _ = fetch(port, "GET", DISCOVERY)
    if status != 200:
        sys.exit(f"{label}: discovery answered {status}")
    print(f"{label}: userinfo answers the user token, JWKS has {len(keys)} keys (a P-256 one), discovery 200")


def node_round(args, folder: Path, node: str, server_prefix: list[str], load_prefix: list[str],
               report: dict) -> dict:
    """Start node-oidc-provider, check it, measure it, note its RSS, stop it."""
    port = free_port()
    state = folder / f"state-{os.getpid()}.json"
    state.unlink(missing_ok=True)
    server = start_node_provider(folder, node, port, server_prefix, state=state)
    try:
        meta = wait_ready(port, server, timeout=30)
        c = node_checks(port, meta)
        paths = {**c["paths"], **local_paths(meta, ("userinfo_endpoint", "jwks_uri"))}
        for _ in range(100):
            if state.exists() and state.stat().st_size:
                break
            time.sleep(0.1)
        else:
            sys.exit("node-oidc-provider did not write its user access token")
        user_token = json.loads(state.read_text())["user_access_token"]
        userinfo = {"Authorization": f"Bearer {user_token}"}
        check_common(port, paths, userinfo, "node")
        scenarios = {
            "token": Scenario(LABELS["token"], "POST", paths["token_endpoint"], c["token_body"], c["form"]),
            "introspect": Scenario(LABELS["introspect"], "POST", paths["introspection_endpoint"],
                                   c["introspect_body"], c["form"]),
            "userinfo": Scenario(LABELS["userinfo"], "GET", paths["userinfo_endpoint"], None, userinfo),
            "jwks": Scenario(LABELS["jwks"], "GET", paths["jwks_uri"]),
            "discovery": Scenario(LABELS["discovery"], "GET", DISCOVERY),
        }
        scenarios = {k: v for k, v in scenarios.items() if k in args.only}
        results = run_rows("node-oidc-provider", port, scenarios, args, load_prefix)
        report["node_rss"] = rss_of(server.pid)
        return results
    finally:
        stop(server, timeout=10)
        state.unlink(missing_ok=True)


def tongban_round(args, env: dict, made: dict, licence_path: str, log: Path, server_prefix: list[str],
                  load_prefix: list[str], report: dict) -> dict:
    """Start Tongban (python -m tongban.serve, one worker), check it, measure it, note its RSS, stop it."""
    port = int(env["PORT"])
    # Its output (the access log: one JSON line per request, the default) goes to a file.
    server = start_tongban(env, server_prefix, log=log)
    try:
        try:
            meta = wait_ready(port, server)
        except SystemExit:
            print(log_tail(log), file=sys.stderr)
            raise
        paths = local_paths(meta, ("token_endpoint", "introspection_endpoint", "jwks_uri",
                                   "userinfo_endpoint", "authorization_endpoint"))
        form = {"Authorization": basic_auth(made["client"]["client_id"], made["client"]["client_secret"]),
                "Content-Type": "application/x-www-form-urlencoded"}
        token_body = urlencode({"grant_type": "client_credentials"}).encode()
        status, body = fetch(port, "POST", paths["token_endpoint"], token_body, form)
        if status != 200:
            sys.exit(f"Tongban token request failed: {status} {body[:300]!r}")
        access_token = json.loads(body)["access_token"]
        parsed = jwt_header_claims(access_token)
        header = parsed[0] if parsed else {}
        print(f"Tongban access token: header {json.dumps(header)}, {len(access_token)} chars")
        if header.get("alg") != "ES256":
            loud(f"Tongban's client_credentials access token is not an ES256 JWT ({header or 'opaque'})")
        introspect_body = urlencode({"token": access_token}).encode()
        status, body = fetch(port, "POST", paths["introspection_endpoint"], introspect_body, form)
        if status != 200 or not json.loads(body).get("active"):
            sys.exit(f"Tongban introspection of its access token is not active: {status} {body[:300]!r}")
        user_token = code_flow(f"http://{HOST}:{port}", meta, made["portal"])
        userinfo = {"Authorization": f"Bearer {user_token}"}
        check_common(port, paths, userinfo, "Tongban")
        json_accept = {"Accept": "application/json"}
        if licence_path:
            status, body = fetch(port, "GET", licence_path, None, json_accept)
            if status != 200 or not isinstance(json.loads(body), dict):
                sys.exit(f"Tongban {licence_path}: {status} {body[:300]!r}")
            print(f"Tongban /v/<code> JSON: 200, {len(body)} bytes")
        scenarios = {
            "token": Scenario(LABELS["token"], "POST", paths["token_endpoint"], token_body, form),
            "introspect": Scenario(LABELS["introspect"], "POST", paths["introspection_endpoint"],
                                   introspect_body, form),
            "userinfo": Scenario(LABELS["userinfo"], "GET", paths["userinfo_endpoint"], None, userinfo),
            "jwks": Scenario(LABELS["jwks"], "GET", paths["jwks_uri"]),
            "discovery": Scenario(LABELS["discovery"], "GET", DISCOVERY),
            "licence": Scenario(LABELS["licence"], "GET", licence_path or "/", None, json_accept),
        }
        scenarios = {k: v for k, v in scenarios.items() if k in args.only}
        results = run_rows("Tongban", port, scenarios, args, load_prefix)
        report["tongban_rss"] = rss_of(server.pid)
        return results
    finally:
        stop(server)


def run_all(args, server_prefix: list[str], load_prefix: list[str], report: dict) -> tuple[list, list]:
    """Install node once, prepare Tongban's database once; then per round node and Tongban."""
    node_rounds: list[dict] = []
    tongban_rounds: list[dict] = []
    temp = args.cache_dir is None
    folder = Path(tempfile.mkdtemp(prefix="tongban-bench-node-")) if temp else args.cache_dir.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="tongban-bench-compare-"))
    try:
        node = None
        if set(args.only) - {"licence"}:
            info = install_node_provider(folder, args.node_package)
            node = info["node"]
            report["node"] = f"node-oidc-provider {info['provider_version']} on Node {info['node_version']}"
            print(f"{report['node']} in {folder} (npm install {info['installed_s']:.1f} s"
                  f"{', cached' if info['installed_s'] < 1 else ''})")
        with postgres_database(args.pg_admin_url, args.db_prefix) as database:
            report["database"] = pg_version(database)
            env = tongban_env(tmp / "instance", database, free_port())
            env["TONGBAN_HOT_CACHE_WITHOUT_REDIS"] = "1"  # one machine: the file generation reaches every process
            if args.redis_url:
                env["REDIS_URL"] = args.redis_url
            print(f"Tongban: instance {tmp}, database {database.rsplit('/', 1)[1]} ({report['database']})")
            made = setup_tongban(env)
            licence_path = issue_licences(env, args.licences) if "licence" in args.only else ""
            for i in range(args.rounds):
                # Every other round Tongban goes first: a load that drifts during the run
                # does not always favour the same server.
                order = ["node", "tongban"] if i % 2 == 0 or not node else ["tongban", "node"]
                if args.rounds > 1:
                    print(f"\n==== round {i + 1} of {args.rounds}")
                for who in order:
                    if who == "node" and node:
                        node_rounds.append(node_round(args, folder, node, server_prefix, load_prefix, report))
                    elif who == "tongban":
                        tongban_rounds.append(tongban_round(args, env, made, licence_path, tmp / "server.log",
                                                            server_prefix, load_prefix, report))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if temp and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        elif temp:
            print(f"kept {folder} (pass --cache-dir {folder} to reuse it)")
    return node_rounds, tongban_rounds


# ---------------------------------------------------------------- the table


def median_round(rounds: list[dict], key: str) -> dict | None:
    """The round with the median req/s (the lower one of an even count), with every round's
    errors and requests added up and the range of req/s."""
    runs = sorted((r[key] for r in rounds if key in r), key=lambda r: r["rps"])
    if not runs:
        return None
    out = dict(runs[(len(runs) - 1) // 2])
    out.update(errors=sum(r["errors"] for r in runs), requests=sum(r["requests"] for r in runs),
               rounds=len(runs), min_rps=runs[0]["rps"], max_rps=runs[-1]["rps"])
    return out


def cell_rps(r: dict | None) -> str:
    if r is None:
        return "—"
    text = f"{r['rps']:,.0f}"
    if r.get("rounds", 1) > 1:
        text += f" ({r['min_rps']:,.0f}–{r['max_rps']:,.0f})"
    return text + (f" ⚠ {r['errors']} errors" if r["errors"] else "")


def cell_lat(r: dict | None) -> str:
    return "—" if r is None else f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms"


def table(node: dict, tongban: dict, keys: list[str]) -> str:
    lines = ["| endpoint | node req/s | Tongban req/s | ratio | node p50/p99 | Tongban p50/p99 |",
             "|---|---:|---:|---:|---:|---:|"]
    for key in keys:
        n, t = node.get(key), tongban.get(key)
        ratio = f"{t['rps'] / n['rps']:.2f}×" if n and t and n["rps"] else "—"
        lines.append(f"| {LABELS[key]} | {cell_rps(n)} | {cell_rps(t)} | {ratio} | {cell_lat(n)} | {cell_lat(t)} |")
    return "\n".join(lines)


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10, help="measured seconds per endpoint (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured seconds per endpoint first (default 2)")
    ap.add_argument("--connections", type=int, default=8, help="keep-alive connections (default 8)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="node then Tongban, this many times; the table shows each row's median round "
                         "and the range (default 1)")
    ap.add_argument("--driver", choices=("auto", "wrk", "python"), default="auto",
                    help="load generator (auto: wrk when installed, else the Python driver)")
    ap.add_argument("--node-package", default="node@22",
                    help="the npm package whose node binary runs the provider (default node@22; "
                         "'' for the node on PATH)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--cache-dir", type=Path, help="install node and the provider here and reuse them")
    where.add_argument("--keep", action="store_true", help="keep the temporary install folder")
    ap.add_argument("--pg-admin-url", default=os.environ.get("BENCH_PG_ADMIN_URL",
                                                             "postgresql://postgres@127.0.0.1:5432/postgres"),
                    help="PostgreSQL to create the run's database in (env BENCH_PG_ADMIN_URL)")
    ap.add_argument("--db-prefix", default="tongban_bench_", help="the run's database name prefix")
    ap.add_argument("--redis-url", default="", help="REDIS_URL for Tongban (default: none, one process)")
    ap.add_argument("--licences", type=int, default=3, help="licences issued before /v/<code> (default 3)")
    ap.add_argument("--only", nargs="*", choices=ENDPOINTS, help="only these endpoints")
    ap.add_argument("--markdown", type=Path, help="also write the report (Markdown) to this file")
    args = ap.parse_args()
    if not 1 <= args.seconds <= 60 or not 0 <= args.warmup <= 30 or not 1 <= args.rounds <= 10:
        sys.exit("--seconds: 1 to 60; --warmup: 0 to 30; --rounds: 1 to 10")
    if not 1 <= args.connections <= 1024:
        sys.exit("--connections: 1 to 1024")
    if not 1 <= args.licences <= 50:
        sys.exit("--licences: 1 to 50")
    if not venv_ready():
        sys.exit("run it with the project's interpreter: .venv/bin/python bench/compare.py (make install first)")
    args.only = [k for k in ENDPOINTS if k in (args.only or ENDPOINTS)]
    if args.driver == "auto":
        args.driver = "wrk" if shutil.which("wrk") else "python"
        if args.driver == "python":
            print("note: wrk not found (apt-get install wrk); using the Python driver, which may itself "
                  "limit the fast rows")

    report: dict = {"load_before": loadavg(), "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    server_prefix, load_prefix = pinning()
    node_rounds, tongban_rounds = run_all(args, server_prefix, load_prefix, report)
    report["load_after"] = loadavg()
    node = {k: r for k in args.only if (r := median_round(node_rounds, k))}
    tongban = {k: r for k in args.only if (r := median_round(tongban_rounds, k))}

    rounds = f"median of {args.rounds} rounds (range in brackets), " if args.rounds > 1 else ""
    lines = [f"Figures of {report['started']}, {rounds}"
             f"{'both servers on CPU 0, load from CPU 1' if server_prefix else 'servers and load share the CPUs'}, "
             f"{args.connections} connections, {args.warmup} s warm-up + {args.seconds} s per endpoint, "
             f"{'wrk' if args.driver == 'wrk' else 'Python driver'}:", "",
             table(node, tongban, args.only), ""]
    parts = []
    if "node_rss" in report:
        parts.append(f"node {mib(report['node_rss'][0])} (one process)")
    if "tongban_rss" in report:
        total, procs = report["tongban_rss"]
        parts.append(f"Tongban {mib(total)} (Granian: {' + '.join(mib(rss) for _, _, rss in procs)}, "
                     f"{len(procs)} processes)")
    if parts:
        lines.append("RSS after the run: " + "; ".join(parts) + ".")
    lines.append(f"Machine: {cpu_model()}, {os.cpu_count()} cores, Linux {platform.release()}; "
                 f"load average {report['load_before']} before, {report['load_after']} after.")
    versions = [report.get("node", ""),
                f"Tongban {metadata.version('tongban')} at {git_commit()} on Python {platform.python_version()}, "
                f"Granian {metadata.version('granian')}, {report.get('database', '')}"]
    if args.driver == "wrk":
        versions.append(tool_version(["wrk", "-v"]).split(" Copyright")[0].strip())
    lines.append("Versions: " + "; ".join(v for v in versions if v) + ".")
    errors = [(who, r) for who, rows in (("node", node), ("Tongban", tongban)) for r in rows.values() if r["errors"]]
    if errors:
        lines += ["", "**ERRORS — these figures are not valid:** " + "; ".join(
            f"{who} {r['name']}: {r['errors']} of {r['requests']}" for who, r in errors)]
    text = "\n".join(lines)
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    if errors:
        loud("THE RUN HAD ERRORS (non-2xx answers or connection errors): see above")
        sys.exit(2)


def venv_ready() -> bool:
    """The venv's interpreter (Tongban's packages importable for the versions; requests, psycopg)."""
    try:
        metadata.version("tongban")
        import psycopg  # noqa: F401
        import requests  # noqa: F401
    except (metadata.PackageNotFoundError, ImportError):
        return False
    return True


if __name__ == "__main__":
    main()
