#!/usr/bin/env python3
"""node-oidc-provider 9 token/introspection throughput on this machine, measured like bench/tokens.py.

    .venv/bin/python bench/node_oidc_provider.py [--seconds 8] [--connections 8] [--only token introspect]

Issue 4 quotes node-oidc-provider 9 as the bar to beat; this measures it on the same
machine and core so the comparison is not across machines. It creates a temporary
folder, runs ``npm install oidc-provider@9`` there (nothing is installed into or
committed to this repository), writes a small ``server.mjs`` with

    * one client: client_credentials, client_secret_basic;
    * features.clientCredentials and features.introspection enabled;
    * features.resourceIndicators with a default resource whose access tokens are
      JWTs (RFC 9068 ``at+jwt``) signed ES256 with a freshly generated P-256 key;
    * the default in-memory adapter, proxy off, listening on 127.0.0.1 (free port);

starts it with ``taskset -c 0 node server.mjs`` (NODE_ENV=production), checks that a
client_credentials token really is an ES256 JWT, and drives it from CPU 1 with the very
same load generator as bench/tokens.py (its ``drive()``: keep-alive ``http.client``
connections, one thread each, fixed time per endpoint):

    POST /token                grant_type=client_credentials&resource=<JWT resource> (Basic auth)
    POST /token/introspection  token=<an opaque access token> (Basic auth)

node-oidc-provider does not introspect structured (JWT) access tokens: it answers 400
unsupported_token_type, which the script checks. The introspection row therefore uses an
opaque access token issued for a second resource (``accessTokenFormat: 'opaque'``), a
lookup in the in-memory adapter; Tongban's row introspects its ES256 JWT instead.

Prints requests/s, p50/p99 latency, errors and the node process's RSS, then stops the
server and removes the temporary folder. Only 127.0.0.1 is contacted by the benchmark
itself (npm contacts its registry once, for the install); the run stays well under two
minutes.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

# Run as a script, this folder is sys.path[0]: reuse bench/tokens.py's load generator as is.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokens import HOST, Scenario, drive, free_port, group_rss, request, wait_ready

PACKAGE = "oidc-provider@9"
CLIENT_ID, CLIENT_SECRET = "bench", "bench-secret-0123456789abcdef0123456789abcdef"
RESOURCE = "urn:tongban:bench:api"
OPAQUE_RESOURCE = "urn:tongban:bench:opaque"

SERVER_MJS = r"""
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.BENCH_PORT);
const issuer = `http://127.0.0.1:${port}`;
const resource = process.env.BENCH_RESOURCE;
const opaqueResource = process.env.BENCH_OPAQUE_RESOURCE;

// A fresh P-256 key for ES256 JWT access tokens; an RSA key too, only because
// RS256 is the provider's default ID Token algorithm (no ID Tokens are issued here).
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.BENCH_CLIENT_ID,
    client_secret: process.env.BENCH_CLIENT_SECRET,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: {
    keys: [{ ...ec, kid: 'es256', alg: 'ES256', use: 'sig' }, { ...rsa, kid: 'rs256', alg: 'RS256', use: 'sig' }],
  },
  scopes: ['api:read'],
  ttl: { ClientCredentials: 3600 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        if (resourceIndicator === resource) {
          return {
            scope: 'api:read',
            audience: resource,
            accessTokenTTL: 3600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        }
        // Only for the introspection row: this provider refuses to introspect JWT access tokens.
        if (resourceIndicator === opaqueResource) {
          return { scope: 'api:read', audience: opaqueResource, accessTokenTTL: 3600, accessTokenFormat: 'opaque' };
        }
        throw new Error(`unknown resource ${resourceIndicator}`);
      },
    },
  },
});
provider.proxy = false;
provider.on('server_error', (ctx, err) => console.error('server_error', err));

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
server.keepAliveTimeout = 65000;
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
"""


def b64json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8, help="per endpoint (default 8)")
    ap.add_argument("--connections", type=int, default=8, help="keep-alive connections (default 8)")
    ap.add_argument("--only", nargs="*", choices=("token", "introspect"), help="run only these endpoints")
    args = ap.parse_args()
    if args.seconds * 2 > 80:
        sys.exit("--seconds: keep the whole run under two minutes (at most 40 per endpoint)")
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        sys.exit("needs node and npm on PATH")

    ncpu = os.cpu_count() or 1
    taskset = shutil.which("taskset") if ncpu >= 2 else None
    tmp = Path(tempfile.mkdtemp(prefix="tongban-bench-node-oidc-"))
    server = None
    try:
        (tmp / "package.json").write_text(json.dumps({"name": "bench-node-oidc", "private": True,
                                                      "type": "module"}))
        (tmp / "server.mjs").write_text(SERVER_MJS)
        t0 = time.monotonic()
        inst = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", PACKAGE],
                              cwd=tmp, capture_output=True, text=True, timeout=60)
        if inst.returncode:
            sys.exit(f"npm install {PACKAGE} failed:\n{inst.stderr[-2000:]}")
        version = json.loads((tmp / "node_modules" / "oidc-provider" / "package.json").read_text())["version"]
        node_version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
        print(f"oidc-provider {version} on node {node_version} in {tmp} "
              f"(npm install {time.monotonic() - t0:.1f} s)")

        port = free_port()
        env = {**os.environ, "NODE_ENV": "production", "BENCH_PORT": str(port), "BENCH_RESOURCE": RESOURCE,
               "BENCH_OPAQUE_RESOURCE": OPAQUE_RESOURCE,
               "BENCH_CLIENT_ID": CLIENT_ID, "BENCH_CLIENT_SECRET": CLIENT_SECRET}
        env.pop("DEBUG", None)
        cmd = [node, "server.mjs"]
        if taskset:
            cmd = [taskset, "-c", "0", *cmd]
            os.sched_setaffinity(0, {1})
        else:
            print("note: fewer than 2 CPUs or no taskset: server and load generator share CPUs")
        server = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        meta = wait_ready(port, server, timeout=30)
        for key in ("token_endpoint", "introspection_endpoint"):
            if key not in meta:
                sys.exit(f"discovery has no {key}")
            if urlsplit(meta[key]).hostname != HOST:
                sys.exit(f"{key} {meta[key]} is not on {HOST}; refusing to send load elsewhere")

        pair = f"{quote(CLIENT_ID, safe='')}:{quote(CLIENT_SECRET, safe='')}"
        form = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
                "Content-Type": "application/x-www-form-urlencoded"}
        token_path = urlsplit(meta["token_endpoint"]).path
        introspect_path = urlsplit(meta["introspection_endpoint"]).path
        token_body = urlencode({"grant_type": "client_credentials", "resource": RESOURCE}).encode()

        # Check that this really is what we compare against: an ES256 RFC 9068 JWT access token.
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        status, body = request(conn, "POST", token_path, token_body, form)
        if status != 200:
            sys.exit(f"token request failed: {status} {body[:300]!r}")
        access_token = json.loads(body)["access_token"]
        parts = access_token.split(".")
        if len(parts) != 3:
            sys.exit(f"access token is not a JWS: {access_token[:60]}")
        header, claims = b64json(parts[0]), b64json(parts[1])
        if header.get("alg") != "ES256" or header.get("typ") != "at+jwt":
            sys.exit(f"access token header is {header}, not ES256 at+jwt")
        print(f"access token: header {json.dumps(header)}, aud {claims.get('aud')}, {len(access_token)} chars")

        # node-oidc-provider refuses to introspect structured (JWT) access tokens
        # ("unsupported_token_type"); confirm that, then introspect an opaque one instead.
        status, body = request(conn, "POST", introspect_path, urlencode({"token": access_token}).encode(), form)
        refused = status == 400 and json.loads(body).get("error") == "unsupported_token_type"
        opaque_body = urlencode({"grant_type": "client_credentials", "resource": OPAQUE_RESOURCE}).encode()
        status, body = request(conn, "POST", token_path, opaque_body, form)
        if status != 200:
            sys.exit(f"opaque token request failed: {status} {body[:300]!r}")
        opaque_token = json.loads(body)["access_token"]
        if opaque_token.count(".") == 2:
            sys.exit("the opaque resource returned a JWT")
        introspect_body = urlencode({"token": opaque_token}).encode()
        status, body = request(conn, "POST", introspect_path, introspect_body, form)
        conn.close()
        if status != 200 or not json.loads(body).get("active"):
            sys.exit(f"introspection of the opaque token is not active: {status} {body[:300]!r}")
        print(f"introspection of that JWT: {'refused (unsupported_token_type)' if refused else 'accepted'}; "
              f"introspection row uses an opaque token ({len(opaque_token)} chars), active\n")

        scenarios = {
            "token": Scenario("POST token (client_credentials)", "POST", token_path, token_body, form),
            "introspect": Scenario("POST introspect (opaque token)", "POST", introspect_path, introspect_body, form),
        }
        chosen = args.only or list(scenarios)
        print(f"node-oidc-provider {version}, 1 process{' on CPU 0, load from CPU 1' if taskset else ''}, "
              f"{args.connections} connections, {args.seconds:g} s each\n")
        print(f"{'endpoint':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for key in chosen:
            r = drive(port, scenarios[key], args.seconds, args.connections)
            print(f"{r['name']:34} {r['rps']:9.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                  f"{r['errors']:7d}", flush=True)
        print("\nserver processes (RSS):")
        for pid, cmdline, rss in group_rss(server.pid):
            print(f"  {pid:>7}  {rss / 1024:7.1f} MiB  {cmdline}")
    finally:
        if server is not None:
            try:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
