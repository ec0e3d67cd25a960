"""Security review: attacks on the modern OAuth profile, each once refused."""

from __future__ import annotations

import pytest

from tests.idp.test_token_exchange import (
    AT,
    TE,
    _citizen_token,
    _claims,
    _exchange,
    _introspect,
    disco,  # noqa: F401  (fixture)
)

SALT = bytes(range(32, 64))


@pytest.fixture
def salted(app):
    app.config["TONGBAN_PAIRWISE_SALT"] = SALT
    app.extensions.pop("tongban.pairwise_salt", None)
    yield
    app.extensions.pop("tongban.pairwise_salt", None)


def test_pairwise_client_cannot_learn_public_sub_by_token_exchange(app, salted, live_server, disco,  # noqa: F811
                                                                    citizen, make_client):
    """A pairwise system exchanges its citizen token for a public target: the exchanged JWT it is
    handed must not name the citizen by their public sub (or the target's pairwise one)."""
    from idp.pairwise import pairwise_sub

    b = make_client(client_id="dept-pub", name="公开系统", department="人社局", redirect_uris=[],
                    grant_types=["client_credentials"], scopes=["openid", "profile"])
    a = make_client(client_id="dept-pw", name="成对系统", department="公积金", first_party=True,
                    subject_type="pairwise", grant_types=["authorization_code", TE],
                    scopes=["openid", "profile"], exchange_targets=["dept-pub"])
    subject = _citizen_token(live_server, disco, a, scope="openid profile")
    mine = _claims(subject["access_token"])["sub"]
    assert mine == pairwise_sub("127.0.0.1", citizen.sub) != citizen.sub
    out = _exchange(disco, a, subject["access_token"], audience="dept-pub", subject_token_type=AT)
    import base64
    import json

    payload = out["access_token"].split(".")[1]
    seen_by_a = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert citizen.sub not in json.dumps(seen_by_a)  # the public sub is never readable by the pairwise system
    assert seen_by_a["sub"] == mine
    # the target still knows who it is (its own view of the citizen), and the APIs still find them
    assert _introspect(disco, b, out["access_token"])["sub"] == citizen.sub
    from idp.tokens import decode_access_token

    assert decode_access_token(out["access_token"]).sub == citizen.sub


def test_require_dpop_client_cannot_get_bearer_tokens_by_ciba(app, live_server, citizen, make_client):
    """A system registered with require_dpop must not obtain unbound (Bearer) tokens through CIBA."""
    import requests

    from tests.idp.dpop_helpers import KEY_A, token_request
    from tests.idp.helpers import Browser, discover
    from tests.idp.test_ciba import CIBA, _answer, _row

    d = discover(live_server)
    auth = make_client(client_id="dpop-desk", name="窗口", department="中心", redirect_uris=[],
                       grant_types=[CIBA], scopes=["openid", "profile"], require_dpop=True)
    phone = Browser(live_server)
    assert phone.login().status_code == 302
    resp = requests.post(d["backchannel_authentication_endpoint"], auth=auth,
                         data={"scope": "openid", "login_hint": citizen.id_number})
    assert resp.status_code == 200, resp.text
    rid = resp.json()["auth_req_id"]
    assert _answer(phone, _row().id).status_code == 303
    plain = requests.post(d["token_endpoint"], data={"grant_type": CIBA, "auth_req_id": rid}, auth=auth)
    assert plain.status_code == 400 and plain.json()["error"] == "invalid_dpop_proof", plain.text
    bound = token_request(live_server, {"grant_type": CIBA, "auth_req_id": rid}, KEY_A, auth=auth)
    assert bound.status_code == 200, bound.text
    assert bound.json()["token_type"] == "DPoP"


def test_require_dpop_client_cannot_get_bearer_tokens_by_token_exchange(app, live_server, disco,  # noqa: F811
                                                                        citizen, make_client):
    """Token exchange by a require_dpop system: a proof is required and the new token is bound to it."""
    import requests

    from tests.idp.dpop_helpers import KEY_A, token_request

    make_client(client_id="te-target", name="目标", department="局", redirect_uris=[],
                grant_types=["client_credentials"], scopes=["openid", "profile"])
    a = make_client(client_id="te-dpop", name="发起", department="局", first_party=True, require_dpop=True,
                    grant_types=["authorization_code", TE], scopes=["openid", "profile"],
                    exchange_targets=["te-target"])
    from tests.idp.dpop_helpers import authorize_code
    from tests.idp.helpers import REDIRECT

    code, verifier = authorize_code(live_server, a[0])
    tok = token_request(live_server, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                      "code_verifier": verifier}, KEY_A, auth=a)
    assert tok.status_code == 200, tok.text
    at = tok.json()["access_token"]
    data = {"grant_type": TE, "subject_token": at, "subject_token_type": AT, "audience": "te-target"}
    plain = requests.post(disco["token_endpoint"], data=data, auth=a)
    assert plain.status_code == 400 and plain.json()["error"] == "invalid_dpop_proof", plain.text
    bound = token_request(live_server, data, KEY_A, auth=a)
    assert bound.status_code == 200, bound.text
    assert bound.json()["token_type"] == "DPoP"
    assert _claims(bound.json()["access_token"])["cnf"]["jkt"]


def test_request_object_seen_in_the_browser_is_not_a_client_assertion(live_server, make_client):
    """Cross-JWT confusion (RFC 8725 §2.8, RFC 9101 §10.8): a request object sent by value through
    the browser (iss = sub = client_id, aud = the issuer, a jti, a short exp) must not
    authenticate its client at the token endpoint."""
    import requests

    from tests.idp.test_oidc_modern import ASSERTION_TYPE, CLIENT_EC, public_jwks, request_object

    cid, _ = make_client(token_endpoint_auth_method="private_key_jwt", first_party=True,
                         jwks=public_jwks(CLIENT_EC))
    import time

    raw, _ = request_object(cid, live_server, sub=cid, exp=int(time.time()) + 120)
    resp = requests.post(f"{live_server}/oauth/token", data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "client_assertion": raw})
    assert resp.status_code in (400, 401) and resp.json()["error"] == "invalid_client", resp.text


def test_pushed_request_with_prompt_consent_survives_the_login(live_server, citizen, make_client):
    """After the log-in a pushed request comes back as request_uri only (nothing next to it)."""
    from urllib.parse import urlencode

    from tests.idp.helpers import Browser
    from tests.idp.test_oidc_modern import _pushed

    cid, secret = make_client()
    uri = _pushed(live_server, cid, secret, prompt="consent", code_challenge="x" * 43,
                  code_challenge_method="S256")
    step = Browser(live_server).authorize(f"{live_server}/oauth/authorize?" + urlencode(
        {"client_id": cid, "request_uri": uri}))
    assert step.kind == "callback" and "code" in step.params, (step.kind, getattr(step, "params", None))
