"""Resource indicators (RFC 8707): the token's audience, and the resource servers' check of it."""

from __future__ import annotations

from urllib.parse import urlencode

import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.idp.dpop_helpers import authorize_code, pkce
from tests.idp.helpers import REDIRECT, Browser

WHY = {"purpose": "办理公积金提取", "service_item": "330100-GJJ-001"}
DEPT_API = "https://api.gjj.example.gov.cn/v1"


def _claims(base, access_token):
    keys = KeySet.import_key_set(requests.get(f"{base}/jwks.json").json())
    return jwt.decode(access_token, keys, algorithms=["ES256"]).claims


def _cc(base, cid, secret, *resources, scope="licence:verify seal:sign"):
    return requests.post(f"{base}/oauth/token", auth=(cid, secret),
                         data=[("grant_type", "client_credentials"), ("scope", scope)]
                         + [("resource", r) for r in resources])


def _machine(make_client, **kw):
    return make_client(scopes=["licence:verify", "seal:sign"], grant_types=["client_credentials"], **kw)


def test_token_for_licence_api_is_refused_at_seal_api(live_server, make_client):
    base = live_server
    cid, secret = _machine(make_client)
    licence_api, seal_api = f"{base}/api/v1/licences", f"{base}/api/v1/seals"
    r = _cc(base, cid, secret, licence_api)
    assert r.status_code == 200, r.text
    at = r.json()["access_token"]
    assert _claims(base, at)["aud"] == [licence_api]
    auth = {"Authorization": f"Bearer {at}"}
    assert requests.get(f"{base}/api/v1/licence-types", headers=auth, params=WHY).status_code == 200
    r = requests.post(f"{base}/api/v1/seals/1/sign", headers=auth, data={"purpose": "x"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    # and the other way round
    at = _cc(base, cid, secret, seal_api).json()["access_token"]
    r = requests.get(f"{base}/api/v1/licence-types", headers={"Authorization": f"Bearer {at}"}, params=WHY)
    assert r.status_code == 401
    # a token without resource keeps the default audience and works at both (existing clients)
    at = _cc(base, cid, secret).json()["access_token"]
    assert _claims(base, at)["aud"] == cid
    assert requests.get(f"{base}/api/v1/licence-types", headers={"Authorization": f"Bearer {at}"},
                        params=WHY).status_code == 200
    # two resources: both
    at = _cc(base, cid, secret, licence_api, seal_api).json()["access_token"]
    assert _claims(base, at)["aud"] == [licence_api, seal_api]
    # introspection reports aud
    r = requests.post(f"{base}/oauth/introspect", data={"token": at}, auth=(cid, secret))
    assert r.json()["aud"] == [licence_api, seal_api]


def test_unknown_or_malformed_resource_is_invalid_target(app, live_server, make_client):
    cid, secret = _machine(make_client)
    for bad in (DEPT_API, "relative/path", f"{live_server}/api/v1/licences#frag", "urn:x:y"):
        r = _cc(live_server, cid, secret, bad)
        assert r.status_code == 400 and r.json()["error"] == "invalid_target", (bad, r.text)


def test_registered_department_api_and_client_limits(app, live_server, make_client):
    from idp import resources
    from tongban.extensions import db

    resources.add(DEPT_API, "公积金接口", "市住房公积金中心")
    db.session.commit()
    cid, secret = _machine(make_client)
    r = _cc(live_server, cid, secret, DEPT_API)
    assert r.status_code == 200 and _claims(live_server, r.json()["access_token"])["aud"] == [DEPT_API]
    # a client limited to the licence API may not ask for the department API
    limited, limited_secret = _machine(make_client, allowed_resources=[f"{live_server}/api/v1/licences"])
    r = _cc(live_server, limited, limited_secret, DEPT_API)
    assert r.status_code == 400 and r.json()["error"] == "invalid_target"
    assert _cc(live_server, limited, limited_secret, f"{live_server}/api/v1/licences").status_code == 200
    # a resource with a scope: only for clients registered for it
    resources.add("https://api.tax.example.gov.cn/", "税务接口", "市税务局", scope="phone")
    db.session.commit()
    assert _cc(live_server, cid, secret, "https://api.tax.example.gov.cn/").json()["error"] == "invalid_target"
    # disabled: refused from then on
    resources.disable(DEPT_API)
    db.session.commit()
    r = _cc(live_server, cid, secret, DEPT_API)
    assert r.status_code == 400 and r.json()["error"] == "invalid_target"


def test_resource_at_authorize_binds_the_code(live_server, citizen, make_client):
    base = live_server
    licence_api, seal_api = f"{base}/api/v1/licences", f"{base}/api/v1/seals"
    cid, secret = make_client(first_party=True)
    code, verifier = authorize_code(base, cid, resource=[licence_api, seal_api])
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
            "resource": licence_api}
    r = requests.post(f"{base}/oauth/token", data=data, auth=(cid, secret))
    assert r.status_code == 200, r.text
    assert _claims(base, r.json()["access_token"])["aud"] == [licence_api]  # narrowed at the token endpoint
    # refresh: the grant's resources, narrowed again; one not granted is refused
    rt = r.json()["refresh_token"]
    r = requests.post(f"{base}/oauth/token", auth=(cid, secret), data={
        "grant_type": "refresh_token", "refresh_token": rt, "resource": f"{base}/oauth/userinfo"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_target"
    r = requests.post(f"{base}/oauth/token", auth=(cid, secret), data={"grant_type": "refresh_token",
                                                                       "refresh_token": rt})
    assert r.status_code == 200 and _claims(base, r.json()["access_token"])["aud"] == [licence_api, seal_api]


def test_unknown_resource_at_authorize_goes_back_to_client(live_server, citizen, make_client):
    cid, _secret = make_client(first_party=True)
    _verifier, challenge = pkce()
    step = Browser(live_server).walk(f"{live_server}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": cid, "redirect_uri": REDIRECT, "scope": "openid", "state": "st",
        "code_challenge": challenge, "code_challenge_method": "S256", "resource": DEPT_API}))
    assert step.kind == "callback" and step.params["error"] == "invalid_target" and step.params["state"] == "st"


def test_userinfo_refuses_a_token_for_another_resource(live_server, citizen, make_client):
    base = live_server
    cid, secret = make_client(first_party=True)
    code, verifier = authorize_code(base, cid, resource=f"{base}/api/v1/licences")
    r = requests.post(f"{base}/oauth/token", auth=(cid, secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier})
    at = r.json()["access_token"]
    assert requests.get(f"{base}/oauth/userinfo", headers={"Authorization": f"Bearer {at}"}).status_code == 401
    code, verifier = authorize_code(base, cid, resource=[f"{base}/api/v1/licences", f"{base}/oauth/userinfo"])
    r = requests.post(f"{base}/oauth/token", auth=(cid, secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier})
    at = r.json()["access_token"]
    assert requests.get(f"{base}/oauth/userinfo", headers={"Authorization": f"Bearer {at}"}).status_code == 200
