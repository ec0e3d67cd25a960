"""openid-client 6 (Node; certified strict RP) drives the modern profile: PAR, JAR (by value and
pushed), private_key_jwt, prompt=none errors through PAR, revocation with hints, refresh rotation.
Skipped without node/openid-client, failed in CI (tests/idp/node_rp.py)."""

from __future__ import annotations

import pytest

from tests.conftest import CITIZEN_ID, PASSWORD
from tests.idp import node_rp
from tests.idp.helpers import REDIRECT
from tests.idp.test_oidc_modern import CLIENT_EC, KEYS, public_jwks


@pytest.fixture(autouse=True)
def _openid_client():
    node_rp.require()


def test_openid_client_par_jar_private_key_jwt(live_server, citizen, make_client):
    fapi, _ = make_client(token_endpoint_auth_method="private_key_jwt", first_party=True, profile="fapi2",
                          jwks=public_jwks(CLIENT_EC), grant_types=["authorization_code", "refresh_token"],
                          scopes=["openid", "profile", "offline_access"])
    jar, _ = make_client(token_endpoint_auth_method="private_key_jwt", first_party=True,
                         jwks=public_jwks(CLIENT_EC), grant_types=["authorization_code", "refresh_token"])
    out = node_rp.run("openid_client_modern.mjs", {
        "issuer": live_server, "fapiClientId": fapi, "jarClientId": jar, "jwk": KEYS["client_ec"],
        "redirect": REDIRECT, "login": CITIZEN_ID, "password": PASSWORD})
    assert out["metadata"]["pushed_authorization_request_endpoint"] == f"{live_server}/oauth/par", out
    assert "private_key_jwt" in out["metadata"]["token_endpoint_auth_methods_supported"]
    # PAR: only client_id and request_uri go through the browser
    assert out["parUrlParams"] == ["client_id", "request_uri"], out
    assert out["promptNone"]["name"] == "AuthorizationResponseError", out
    assert out["promptNone"]["error"] == "login_required", out
    par = out["par"]
    assert par.get("sub") and par["name"] == "张三" and par["hasRefresh"], out
    assert par["tokenType"].lower() == "dpop", out  # fapi2: sender-constrained (FAPI 2.0 §5.3.2.1)
    assert par["rotated"] is True and par["oldRefreshAgain"]["error"] == "invalid_grant", out
    assert out["revokeRefresh"] == {"ok": "revoked"}, out
    assert out["refreshAfterRevoke"]["error"] == "invalid_grant", out
    assert out["introspectBefore"] is True and out["revokeAccess"] == {"ok": "revoked"}, out
    assert out["introspectAfter"] is False, out
    assert out["jarPar"]["sub"] == par["sub"], out
    assert out["jarUrlParams"] == ["client_id", "request"], out
    assert out["jarValue"]["sub"] == par["sub"], out
    assert out["fapiPlain"] == {"status": 400, "callback": False}, out
