"""DPoP (RFC 9449) at the token endpoint and the resource servers, with the attacks refused."""

from __future__ import annotations

import time

import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.idp.dpop_helpers import KEY_A, KEY_B, code_tokens, nonce, proof, token_request
from tests.idp.helpers import REDIRECT


def _public(make_client, **kw):
    kw.setdefault("first_party", True)
    cid, _ = make_client(token_endpoint_auth_method="none", grant_types=["authorization_code", "refresh_token"],
                         **kw)
    return cid


def _claims(base, access_token):
    keys = KeySet.import_key_set(requests.get(f"{base}/jwks.json").json())
    return jwt.decode(access_token, keys, algorithms=["ES256"]).claims


def _userinfo(base, token, key=KEY_A, scheme="DPoP", method="GET", url=None, **kw):
    headers = {"Authorization": f"{scheme} {token}"}
    if key is not None:
        headers["DPoP"] = proof(key, method, url or f"{base}/oauth/userinfo", access_token=token, **kw)
    return requests.request(method, f"{base}/oauth/userinfo", headers=headers)


def _audit(action):
    from sqlalchemy import select

    from tongban.audit import AuditLog
    from tongban.extensions import db

    db.session.expire_all()
    return db.session.execute(select(AuditLog).where(AuditLog.action == action)).scalars().all()


def test_code_flow_binds_tokens_to_the_key(live_server, citizen, make_client):
    cid = _public(make_client)
    tok = code_tokens(live_server, cid)
    assert tok["token_type"] == "DPoP"
    claims = _claims(live_server, tok["access_token"])
    assert claims["cnf"] == {"jkt": KEY_A.thumbprint()}
    r = _userinfo(live_server, tok["access_token"])
    assert r.status_code == 200 and r.json()["name"] == "张三"
    # introspection (a resource server allowed to) reports the binding
    _rs, rs_secret = make_client(introspection_allowed=True, client_id="rs-1")
    r = requests.post(f"{live_server}/oauth/introspect", data={"token": tok["access_token"]}, auth=("rs-1", rs_secret))
    assert r.json()["active"] and r.json()["token_type"] == "DPoP" and r.json()["cnf"] == claims["cnf"]


def test_bound_token_as_bearer_or_with_another_key_is_refused(app, live_server, citizen, make_client):
    cid = _public(make_client)
    at = code_tokens(live_server, cid)["access_token"]
    r = requests.get(f"{live_server}/oauth/userinfo", headers={"Authorization": f"Bearer {at}"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    r = _userinfo(live_server, at, key=KEY_B)
    assert r.status_code == 401
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith("DPoP ") and 'error="invalid_token"' in challenge and 'algs="ES256' in challenge
    r = _userinfo(live_server, at, key=None)  # DPoP scheme without a proof
    assert r.status_code == 401 and 'error="invalid_dpop_proof"' in r.headers["WWW-Authenticate"]
    assert _audit("dpop.bound_token_as_bearer") and _audit("dpop.token_key_mismatch")


def test_proof_attacks_at_the_resource_server(live_server, citizen, make_client):
    cid = _public(make_client)
    at = code_tokens(live_server, cid)["access_token"]
    base = live_server
    # replayed proof
    p = proof(KEY_A, "GET", f"{base}/oauth/userinfo", access_token=at)
    h = {"Authorization": f"DPoP {at}", "DPoP": p}
    assert requests.get(f"{base}/oauth/userinfo", headers=h).status_code == 200
    r = requests.get(f"{base}/oauth/userinfo", headers=h)
    assert r.status_code == 401 and "used before" in r.headers["WWW-Authenticate"]
    # a proof for another method, another URL, stale, for another token, of the wrong type
    assert _userinfo(base, at, method="POST", url=None).status_code == 200  # POST proof for POST: fine
    bad = [
        {"Authorization": f"DPoP {at}", "DPoP": proof(KEY_A, "POST", f"{base}/oauth/userinfo", access_token=at)},
        {"Authorization": f"DPoP {at}", "DPoP": proof(KEY_A, "GET", f"{base}/oauth/token", access_token=at)},
        {"Authorization": f"DPoP {at}", "DPoP": proof(KEY_A, "GET", "https://evil.example/oauth/userinfo",
                                                      access_token=at)},
        {"Authorization": f"DPoP {at}", "DPoP": proof(KEY_A, "GET", f"{base}/oauth/userinfo", access_token=at,
                                                      iat=int(time.time()) - 3600)},
        {"Authorization": f"DPoP {at}", "DPoP": proof(KEY_A, "GET", f"{base}/oauth/userinfo", access_token=at,
                                                      iat=int(time.time()) + 3600)},
        {"Authorization": f"DPoP {at}", "DPoP": proof(KEY_A, "GET", f"{base}/oauth/userinfo", access_token="other")},
        {"Authorization": f"DPoP {at}", "DPoP": proof(KEY_A, "GET", f"{base}/oauth/userinfo", access_token=at,
                                                      typ="JWT")},
        {"Authorization": f"DPoP {at}", "DPoP": proof(KEY_A, "GET", f"{base}/oauth/userinfo", access_token=at,
                                                      jwk=KEY_A.as_dict(private=True))},
        {"Authorization": f"DPoP {at}", "DPoP": proof(KEY_A, "GET", f"{base}/oauth/userinfo", access_token=at,
                                                      jwk=KEY_B.as_dict(private=False))},  # signature fails
    ]
    for headers in bad:
        r = requests.get(f"{base}/oauth/userinfo", headers=headers)
        assert r.status_code == 401 and 'error="invalid_dpop_proof"' in r.headers["WWW-Authenticate"], r.headers
    # the query string is not part of htu; default ports are normalised away
    assert _userinfo(base, at, url=f"{base}/oauth/userinfo?x=1#f").status_code == 200


def test_token_endpoint_nonce_and_proof_checks(live_server, make_client):
    cid, secret = make_client(scopes=["openid"])
    url = f"{live_server}/oauth/token"
    data = {"grant_type": "client_credentials"}
    r = requests.post(url, data=data, auth=(cid, secret), headers={"DPoP": proof(KEY_A, "POST", url)})
    assert r.status_code == 400 and r.json()["error"] == "use_dpop_nonce" and r.headers["DPoP-Nonce"]
    n = r.headers["DPoP-Nonce"]
    for bad in (proof(KEY_A, "POST", url, nonce="forged.nonce"), proof(KEY_A, "GET", url, nonce=n),
                proof(KEY_A, "POST", f"{live_server}/oauth/revoke", nonce=n),
                proof(KEY_A, "POST", url, nonce=n, iat=int(time.time()) - 600)):
        r = requests.post(url, data=data, auth=(cid, secret), headers={"DPoP": bad})
        assert r.status_code == 400 and r.json()["error"] in ("invalid_dpop_proof", "use_dpop_nonce"), r.text
    good = proof(KEY_A, "POST", url, nonce=n)
    r = requests.post(url, data=data, auth=(cid, secret), headers={"DPoP": good})
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP" and r.headers["DPoP-Nonce"]
    r = requests.post(url, data=data, auth=(cid, secret), headers={"DPoP": good})  # replay
    assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof"
    # without DPoP: a Bearer token, as before
    r = requests.post(url, data=data, auth=(cid, secret))
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer"


def test_refresh_token_of_a_public_client_is_bound(live_server, citizen, make_client):
    cid = _public(make_client, scopes=["openid", "profile", "offline_access"])
    tok = code_tokens(live_server, cid)
    data = {"grant_type": "refresh_token", "refresh_token": tok["refresh_token"], "client_id": cid}
    r = token_request(live_server, data, KEY_B)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = token_request(live_server, data, with_proof=False)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = token_request(live_server, data, KEY_A)
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP", r.text
    assert _claims(live_server, r.json()["access_token"])["cnf"]["jkt"] == KEY_A.thumbprint()
    # the rotated refresh token stays bound
    data["refresh_token"] = r.json()["refresh_token"]
    assert token_request(live_server, data, KEY_B).status_code == 400


def test_dpop_jkt_binds_the_code(live_server, citizen, make_client):
    from tests.idp.dpop_helpers import authorize_code

    cid = _public(make_client)
    code, verifier = authorize_code(live_server, cid, dpop_jkt=KEY_A.thumbprint())
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
            "client_id": cid}
    r = token_request(live_server, data, KEY_B)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # a malformed dpop_jkt is refused at the authorization endpoint, back at the client
    from urllib.parse import urlencode

    from tests.idp.helpers import Browser

    step = Browser(live_server).walk(f"{live_server}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": cid, "redirect_uri": REDIRECT, "scope": "openid", "state": "x",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
        "dpop_jkt": "not-a-thumbprint"}))
    assert step.kind == "callback" and step.params["error"] == "invalid_request"


def test_client_that_requires_dpop(live_server, make_client):
    cid, secret = make_client(scopes=["openid"], require_dpop=True)
    r = requests.post(f"{live_server}/oauth/token", data={"grant_type": "client_credentials"}, auth=(cid, secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof"
    r = token_request(live_server, {"grant_type": "client_credentials"}, auth=(cid, secret))
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP"
    from idp import clients as registry
    from idp import dpop

    assert dpop.client_requires_dpop(registry.get_client(cid))
    assert dpop.token_is_sender_constrained(_claims(live_server, r.json()["access_token"]))


def test_discovery_and_unbound_token_with_dpop_scheme(live_server, citizen, make_client):
    disco = requests.get(f"{live_server}/.well-known/openid-configuration").json()
    assert disco["dpop_signing_alg_values_supported"] == ["ES256", "PS256", "RS256", "EdDSA"]
    assert disco["subject_types_supported"] == ["public", "pairwise"]
    cid, secret = make_client(first_party=True)
    from tests.idp.dpop_helpers import authorize_code

    code, verifier = authorize_code(live_server, cid)
    r = requests.post(f"{live_server}/oauth/token", auth=(cid, secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier})
    at = r.json()["access_token"]
    assert r.json()["token_type"] == "Bearer"
    assert _userinfo(live_server, at).status_code == 401  # a Bearer token cannot be sent as DPoP
    r = requests.get(f"{live_server}/oauth/userinfo")
    assert r.status_code == 401 and any(v.startswith("DPoP") for v in r.raw.headers.get_all("WWW-Authenticate"))


def test_replay_store_is_shared(app):
    """The replay store is the database (or Redis): another server process sees a spent proof."""
    from idp import dpop

    assert dpop._remember("jkt", "jti-1", 60)
    assert not dpop._remember("jkt", "jti-1", 60)
    assert dpop._remember("other-jkt", "jti-1", 60)


def test_nonce_is_stateless(app):
    from idp import dpop

    with app.test_request_context("/oauth/token"):
        n = dpop.current_nonce()
        assert dpop.nonce_is_valid(n) and not dpop.nonce_is_valid(n + "x")
    with app.test_request_context("/oauth/token"):
        assert dpop.nonce_is_valid(n)  # any server with the same secret key agrees
    assert nonce  # (the helper used by the HTTP tests)


def test_algorithm_allow_list(app):
    """EdDSA (Ed25519) proofs are accepted; HS256 (a shared key) and "none" are not."""
    import json

    from joserfc import jws
    from joserfc.jwk import OctKey, OKPKey

    from idp import dpop

    url = app.config["TONGBAN_ISSUER"] + "/oauth/token"
    ed = OKPKey.import_key({"crv": "Ed25519", "x": "Mx7fApF9FTsKIXAywAxe9f35FBz3dBp9l1N6MKPYCGI",
                            "d": "YypOf4P17qJBgx1v3GIktdI0oo5MxjVfgpZP2_4Nue8", "kty": "OKP"})
    claims = {"jti": "j-ed", "htm": "POST", "htu": url, "iat": time.time()}  # a fractional iat is a NumericDate
    with app.test_request_context("/oauth/token", method="POST"):
        good = jws.serialize_compact({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": ed.as_dict(private=False)},
                                     json.dumps(claims).encode(), ed, algorithms=["EdDSA"])
        assert dpop.verify_proof(good, method="POST", url=url) == ed.thumbprint()
        oct_key = OctKey.import_key("a-shared-secret-of-enough-length-32b")
        hs = jws.serialize_compact({"typ": "dpop+jwt", "alg": "HS256", "jwk": oct_key.as_dict(private=False)},
                                   json.dumps({**claims, "jti": "j-hs"}).encode(), oct_key, algorithms=["HS256"])
        none = ".".join([dpop._b64(json.dumps({"typ": "dpop+jwt", "alg": "none", "jwk": ed.as_dict(private=False)})
                                   .encode()), dpop._b64(json.dumps({**claims, "jti": "j-none"}).encode()), ""])
        for bad in (hs, none):
            try:
                dpop.verify_proof(bad, method="POST", url=url)
            except dpop.DPoPError as e:
                assert "signed with one of" in e.description
            else:
                raise AssertionError("accepted")


def test_licence_and_seal_apis_take_dpop_tokens(live_server, make_client):
    base = live_server
    cid, secret = make_client(scopes=["licence:verify", "seal:sign"], grant_types=["client_credentials"])
    r = token_request(base, {"grant_type": "client_credentials", "scope": "licence:verify seal:sign"},
                      auth=(cid, secret))
    at = r.json()["access_token"]
    why = {"purpose": "办理公积金提取", "service_item": "330100-GJJ-001"}
    url = f"{base}/api/v1/licence-types"
    r = requests.get(url, params=why, headers={"Authorization": f"DPoP {at}",
                                               "DPoP": proof(KEY_A, "GET", url, access_token=at)})
    assert r.status_code == 200, r.text
    r = requests.get(url, params=why, headers={"Authorization": f"Bearer {at}"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    r = requests.get(url, params=why, headers={"Authorization": f"DPoP {at}",
                                               "DPoP": proof(KEY_B, "GET", url, access_token=at)})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("DPoP ")
    sign = f"{base}/api/v1/seals/no-such-seal/sign"
    r = requests.post(sign, data={"purpose": "x"}, headers={"Authorization": f"Bearer {at}"})
    assert r.status_code == 401
    r = requests.post(sign, data={"purpose": "x"}, headers={"Authorization": f"DPoP {at}",
                                                            "DPoP": proof(KEY_A, "POST", sign, access_token=at)})
    assert r.status_code == 404, r.text  # past the token check: the seal does not exist


def test_htu_normalisation():
    from idp.dpop import normalise_url

    assert normalise_url("HTTPS://Tongban.Example.GOV.cn:443/oauth/token?x=1#y") == \
        normalise_url("https://tongban.example.gov.cn/oauth/token")
    assert normalise_url("http://127.0.0.1:80/a") == "http://127.0.0.1/a"
    assert normalise_url("https://h.example/oauth/token") != normalise_url("https://h.example/oauth/token/")
    assert normalise_url("https://h.example:8443/t") != normalise_url("https://h.example/t")
    for bad in ("/oauth/token", "ftp://h.example/t", "https://user:pw@h.example/t", "https://h.example:99999/t"):
        assert normalise_url(bad) is None
