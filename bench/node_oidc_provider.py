#!/usr/bin/env python3
"""node-oidc-provider 9 token/introspection throughput on this machine, measured like bench/tokens.py.

    .venv/bin/python bench/node_oidc_provider.py [--seconds 8] [--connections 8] [--only token introspect]
                                                 [--driver python|wrk]

Issue 4 quotes node-oidc-provider 9 as the bar to beat; this measures it on the same
machine and core so the comparison is not across machines (bench/compare.py puts both side
by side, on a current Node). It creates a temporary folder, runs ``npm install
oidc-provider@9.13.3`` there (nothing is installed into or committed to this repository),
copies bench/oidc_provider_server.mjs there as ``server.mjs``, which has

    * a client_credentials client, client_secret_basic (the file also has a code-flow client
      and an account, for bench/compare.py's userinfo row);
    * features.clientCredentials and features.introspection enabled;
    * features.resourceIndicators with a default resource whose access tokens are
      JWTs (RFC 9068 ``at+jwt``) signed ES256 with a freshly generated P-256 key;
    * the default in-memory adapter, proxy off, listening on 127.0.0.1 (free port);

starts it with ``taskset -c 0 node server.mjs`` (NODE_ENV=production, the node on PATH),
checks that a client_credentials token really is an ES256 JWT, and drives it from CPU 1 with
the very same load generator as bench/tokens.py (bench/_common.py's ``drive()``: keep-alive
``http.client`` connections, one thread each, fixed time per endpoint; or ``wrk``):

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
import json
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

# Run as a script, this folder is sys.path[0].
from _common import (
    NODE_CLIENT_ID,
    NODE_CLIENT_SECRET,
    NODE_OPAQUE_RESOURCE,
    NODE_RESOURCE,
    Scenario,
    basic_auth,
    fetch,
    free_port,
    install_node_provider,
    jwt_header_claims,
    local_paths,
    measure_table,
    pinning,
    print_group_rss,
    start_node_provider,
    stop,
    wait_ready,
)


def node_checks(port: int, meta: dict) -> dict:
    """Check what is compared: client_credentials gives an ES256 RFC 9068 JWT; the provider
    refuses to introspect it; an opaque token of the second resource introspects active.
    {"form", "token_body", "introspect_body", "paths", "access_token"}."""
    paths = local_paths(meta, ("token_endpoint", "introspection_endpoint"))
    form = {"Authorization": basic_auth(NODE_CLIENT_ID, NODE_CLIENT_SECRET),
            "Content-Type": "application/x-www-form-urlencoded"}
    token_body = urlencode({"grant_type": "client_credentials", "resource": NODE_RESOURCE}).encode()
    status, body = fetch(port, "POST", paths["token_endpoint"], token_body, form)
    if status != 200:
        sys.exit(f"token request failed: {status} {body[:300]!r}")
    access_token = json.loads(body)["access_token"]
    parsed = jwt_header_claims(access_token)
    if parsed is None:
        sys.exit(f"access token is not a JWS: {access_token[:60]}")
    header, claims = parsed
    if header.get("alg") != "ES256" or header.get("typ") != "at+jwt":
        sys.exit(f"access token header is {header}, not ES256 at+jwt")
    print(f"node access token: header {json.dumps(header)}, aud {claims.get('aud')}, {len(access_token)} chars")

    # node-oidc-provider refuses to introspect structured (JWT) access tokens
    # ("unsupported_token_type"); confirm that, then introspect an opaque one instead.
    status, body = fetch(port, "POST", paths["introspection_endpoint"],
                         urlencode({"token": access_token}).encode(), form)
    refused = status == 400 and json.loads(body).get("error") == "unsupported_token_type"
    opaque_body = urlencode({"grant_type": "client_credentials", "resource": NODE_OPAQUE_RESOURCE}).encode()
    status, body = fetch(port, "POST", paths["token_endpoint"], opaque_body, form)
    if status != 200:
        sys.exit(f"opaque token request failed: {status} {body[:300]!r}")
    opaque_token = json.loads(body)["access_token"]
    if opaque_token.count(".") == 2:
        sys.exit("the opaque resource returned a JWT")
    introspect_body = urlencode({"token": opaque_token}).encode()
    status, body = fetch(port, "POST", paths["introspection_endpoint"], introspect_body, form)
    if status != 200 or not json.loads(body).get("active"):
        sys.exit(f"introspection of the opaque token is not active: {status} {body[:300]!r}")
    print(f"node introspection of that JWT: {'refused (unsupported_token_type)' if refused else 'accepted'}; "
          f"the introspection row uses an opaque token ({len(opaque_token)} chars), active")
    return {"form": form, "token_body": token_body, "introspect_body": introspect_body, "paths": paths,
            "access_token": access_token}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8, help="per endpoint (default 8)")
    ap.add_argument("--connections", type=int, default=8, help="keep-alive connections (default 8)")
    ap.add_argument("--driver", choices=("python", "wrk"), default="python", help="load generator")
    ap.add_argument("--only", nargs="*", choices=("token", "introspect"), help="run only these endpoints")
    args = ap.parse_args()
    if args.seconds * 2 > 80:
        sys.exit("--seconds: keep the whole run under two minutes (at most 40 per endpoint)")

    tmp = Path(tempfile.mkdtemp(prefix="tongban-bench-node-oidc-"))
    server = None
    try:
        info = install_node_provider(tmp)
        print(f"oidc-provider {info['provider_version']} on node {info['node_version']} in {tmp} "
              f"(npm install {info['installed_s']:.1f} s)")
        server_prefix, load_prefix = pinning()
        port = free_port()
        server = start_node_provider(tmp, info["node"], port, server_prefix)
        meta = wait_ready(port, server, timeout=30)
        c = node_checks(port, meta)
        print()
        scenarios = {
            "token": Scenario("POST token (client_credentials)", "POST", c["paths"]["token_endpoint"],
                              c["token_body"], c["form"]),
            "introspect": Scenario("POST introspect (opaque token)", "POST", c["paths"]["introspection_endpoint"],
                                   c["introspect_body"], c["form"]),
        }
        chosen = args.only or list(scenarios)
        print(f"node-oidc-provider {info['provider_version']}, 1 process"
              f"{' on CPU 0, load from CPU 1' if server_prefix else ''}, "
              f"{args.connections} connections, {args.seconds:g} s each, {args.driver} driver\n")
        measure_table(args.driver, port, [scenarios[k] for k in chosen], args.seconds, args.connections,
                      load_prefix)
        print_group_rss(server.pid)
    finally:
        stop(server, timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
