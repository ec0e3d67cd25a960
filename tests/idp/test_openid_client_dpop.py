"""openid-client 6 (Node; a certified, strict relying party) as a DPoP public client with a pairwise
subject, against the live provider: code + PKCE with DPoP (``getDPoPHandle``, ``dpop_jkt``), the
nonce challenges it answers itself, userinfo and refresh with DPoP, another key refused.

The library is looked for in ``.venv/openid-client`` or $TONGBAN_OPENID_CLIENT (installed with
``npm install openid-client@6.9.1``); without it (or node) the test is skipped, except in CI
(CI=true), where it fails.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CITIZEN_ID, PASSWORD
from tests.idp.helpers import REDIRECT

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
MODULES = Path(os.environ.get("TONGBAN_OPENID_CLIENT") or ROOT / ".venv" / "openid-client")
SALT = bytes(range(64, 96))


def _library() -> Path:
    node = shutil.which("node")
    if node and (MODULES / "node_modules" / "openid-client").is_dir():
        return Path(node)
    message = f"node and openid-client 6 in {MODULES} (npm install openid-client@6.9.1) are needed"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def _expected_pairwise(sector: str, sub: str) -> str:
    d = hashlib.sha256(sector.encode() + b"\x00" + sub.encode() + b"\x00" + SALT).digest()
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode()


@pytest.fixture
def strict_resources(app):
    """Resource servers ask for a DPoP nonce too (so openid-client meets the challenge at userinfo)."""
    app.config["TONGBAN_DPOP_REQUIRE_NONCE_RESOURCE"] = True
    app.config["TONGBAN_PAIRWISE_SALT"] = SALT
    app.extensions.pop("tongban.pairwise_salt", None)
    yield
    app.config["TONGBAN_DPOP_REQUIRE_NONCE_RESOURCE"] = False
    app.config["TONGBAN_PAIRWISE_SALT"] = None
    app.extensions.pop("tongban.pairwise_salt", None)


def test_openid_client_with_dpop_and_pairwise_sub(live_server, citizen, make_client, strict_resources):
    node = _library()
    cid, _ = make_client(first_party=True, token_endpoint_auth_method="none", subject_type="pairwise",
                         require_dpop=True, grant_types=["authorization_code", "refresh_token"])
    script = MODULES / "tongban_openid_client_dpop.mjs"
    shutil.copyfile(HERE / "openid_client_dpop.mjs", script)
    env = {**os.environ, "OC_ARGS": json.dumps({"issuer": live_server, "clientId": cid, "redirect": REDIRECT,
                                                "login": CITIZEN_ID, "password": PASSWORD})}
    run = subprocess.run([str(node), str(script)], cwd=MODULES, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert "error" not in out, out
    assert "ES256" in out["discovery"]["dpopAlgs"] and "pairwise" in out["discovery"]["subjectTypes"]
    expected = _expected_pairwise("127.0.0.1", citizen.sub)
    assert out["code"]["tokenType"] == "dpop" and out["code"]["sub"] == expected != citizen.sub
    assert out["userinfo"] == {"sub": expected, "name": "张三"}
    assert out["refresh"]["tokenType"] == "dpop" and out["userinfoAfterRefresh"] == expected
    # the nonce challenges came and openid-client answered them
    assert out["challenges"]["token"] >= 1 and out["challenges"]["userinfo"] >= 1, out["challenges"]
    # another key: refused at userinfo (invalid_token) and for the bound refresh token (invalid_grant)
    assert out["otherKey"] != "accepted" and out["otherKeyRefresh"] != "accepted", out
    assert out["otherKeyRefresh"]["error"] == "invalid_grant", out
    from idp import tokens

    at = tokens.decode_access_token(out["refresh"]["accessToken"])
    assert at.claims["cnf"]["jkt"] == out["code"]["jkt"] and at.claims["sub"] == expected
