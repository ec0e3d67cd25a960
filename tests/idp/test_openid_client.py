"""openid-client 6 (Node; a certified, strict relying party) against the live provider.

``make install`` installs openid-client into .venv/openid-client (tests/idp/node_rp.py finds it
there or at $TONGBAN_OPENID_CLIENT); without node or the library the test is skipped, in CI
(CI=true) it fails.
"""

from __future__ import annotations

import pytest

from tests.conftest import CITIZEN_ID, PASSWORD
from tests.idp import node_rp
from tests.idp.helpers import REDIRECT


@pytest.fixture(autouse=True)
def _openid_client():
    node_rp.require()


def test_openid_client_accepts_every_answer(live_server, citizen, make_client, tmp_path):
    cid, secret = make_client(first_party=True)
    out = node_rp.run("openid_client_check.mjs", {"issuer": live_server, "clientId": cid, "secret": secret,
                                                  "redirect": REDIRECT, "login": CITIZEN_ID, "password": PASSWORD})
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
