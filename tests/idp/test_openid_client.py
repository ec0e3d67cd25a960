"""openid-client 6 (Node; a certified, strict relying party) against the live provider.

Runs only where Node and an installed openid-client are at hand; nothing is installed here::

    mkdir -p /tmp/openid-client && (cd /tmp/openid-client && npm install openid-client@6.9.1)
    TONGBAN_OPENID_CLIENT=/tmp/openid-client .venv/bin/pytest tests/idp/test_openid_client.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CITIZEN_ID, PASSWORD
from tests.idp.helpers import REDIRECT

HERE = Path(__file__).parent
MODULES = os.environ.get("TONGBAN_OPENID_CLIENT", "")

pytestmark = pytest.mark.skipif(
    not (MODULES and (Path(MODULES) / "node_modules" / "openid-client").is_dir() and shutil.which("node")),
    reason="set TONGBAN_OPENID_CLIENT to a folder with openid-client 6 installed (npm) and have node",
)


def test_openid_client_accepts_every_answer(live_server, citizen, make_client, tmp_path):
    cid, secret = make_client(first_party=True)
    script = Path(MODULES) / "tongban_openid_client_check.mjs"
    shutil.copyfile(HERE / "openid_client_check.mjs", script)
    env = {**os.environ, "OC_ARGS": json.dumps({"issuer": live_server, "clientId": cid, "secret": secret,
                                                "redirect": REDIRECT, "login": CITIZEN_ID,
                                                "password": PASSWORD})}
    run = subprocess.run([shutil.which("node"), str(script)], cwd=MODULES, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    # prompt=none without a session: openid-client accepts the response (iss, state) and reports
    # the provider's error, not a malformed response
    assert out["promptNone"]["name"] == "AuthorizationResponseError", out
    assert out["promptNone"]["error"] == "login_required", out
    flow = out["codeFlow"]
    assert "sub" in flow, flow
    assert flow["userinfoSub"] == flow["sub"] and flow["name"] == "张三" and flow["refreshed"] is True
    # forced re-authentication: the same SSO session, a fresh authentication
    assert out["reauth"]["sid"] == flow["sid"] and out["reauth"]["auth_time"] >= flow["auth_time"], out
    assert out["silent"]["sub"] == flow["sub"], out
