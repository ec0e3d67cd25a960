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

import pytest

from tests.conftest import CITIZEN_ID, PASSWORD
from tests.idp import node_rp
from tests.idp.helpers import REDIRECT

SALT = bytes(range(64, 96))


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
    node_rp.require()
    cid, _ = make_client(first_party=True, token_endpoint_auth_method="none", subject_type="pairwise",
                         require_dpop=True, grant_types=["authorization_code", "refresh_token"])
    out = node_rp.run("openid_client_dpop.mjs", {"issuer": live_server, "clientId": cid, "redirect": REDIRECT,
                                                 "login": CITIZEN_ID, "password": PASSWORD}, timeout=120)
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
