"""The modern profile (docs/oidc-modern.md): private_key_jwt (RFC 7523), PAR (RFC 9126), JAR
(RFC 9101) and the fapi2 client profile, over real HTTP, with the attacks that must be refused.

Client assertions and request objects are made with joserfc from fixed test keys
(tests/idp/modern_keys.json); the flows are driven with requests and the scripted browser.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tests.idp.dpop_helpers import token_request as dpop_token_request
from tests.idp.helpers import REDIRECT, Browser, discover

KEYS = json.loads((Path(__file__).parent / "modern_keys.json").read_text())
CLIENT_EC = ECKey.import_key(KEYS["client_ec"])
CLIENT_RSA = RSAKey.import_key(KEYS["client_rsa"])
ATTACKER_EC = ECKey.import_key(KEYS["attacker_ec"])
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def b64(data) -> str:
    import base64

    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(claims: dict) -> str:
    return f"{b64({'alg': 'none'})}.{b64(claims)}."


def hmac_with_public_key(claims: dict, public_key) -> str:
    """HS256 keyed with the client's *public* key (PEM): the classic algorithm-confusion forgery."""
    import hashlib
    import hmac

    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims)}"
    mac = hmac.new(public_key.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def public_jwks(*keys) -> dict:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def sign(claims: dict, key=CLIENT_EC, alg: str = "ES256", kid: str | None = "default") -> str:
    header = {"alg": alg}
    if kid == "default":
        kid = key.kid
    if kid:
        header["kid"] = kid
    return jwt.encode(header, claims, key, algorithms=[alg])


def assertion(cid: str, aud: str, *, key=CLIENT_EC, alg="ES256", **over) -> str:
    now = int(time.time())
    claims = {"iss": cid, "sub": cid, "aud": aud, "iat": now, "exp": now + 60, "jti": secrets.token_urlsafe(16)}
    claims.update(over)
    return sign({k: v for k, v in claims.items() if v is not None}, key, alg)


def auth_form(cid: str, aud: str, **kw) -> dict:
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion(cid, aud, **kw)}


@pytest.fixture
def browser(live_server):
    return Browser(live_server)


@pytest.fixture
def pkjwt(make_client):
    """A private_key_jwt client (first party: no consent screen)."""
    cid, secret = make_client(token_endpoint_auth_method="private_key_jwt", first_party=True,
                              jwks=public_jwks(CLIENT_EC, CLIENT_RSA))
    assert secret is None
    return cid


def token_request(base: str, data: dict, **kw) -> requests.Response:
    return requests.post(f"{base}/oauth/token", data=data, **kw)


# ---------------------------------------------------------------- private_key_jwt


def test_discovery_lists_what_works(live_server):
    disco = discover(live_server)
    assert "private_key_jwt" in disco["token_endpoint_auth_methods_supported"]
    assert "private_key_jwt" in disco["introspection_endpoint_auth_methods_supported"]
    assert "private_key_jwt" in disco["revocation_endpoint_auth_methods_supported"]
    assert disco["token_endpoint_auth_signing_alg_values_supported"] == ["ES256", "PS256", "RS256"]
    assert disco["pushed_authorization_request_endpoint"] == f"{live_server}/oauth/par"
    assert disco["require_pushed_authorization_requests"] is False
    assert disco["request_parameter_supported"] is True
    assert disco["request_uri_parameter_supported"] is False
    assert "none" not in disco["request_object_signing_alg_values_supported"]


@pytest.mark.parametrize("key,alg", [(CLIENT_EC, "ES256"), (CLIENT_RSA, "PS256"), (CLIENT_RSA, "RS256")])
def test_private_key_jwt_client_credentials(live_server, pkjwt, key, alg):
    for aud in (live_server, f"{live_server}/oauth/token"):
        resp = token_request(live_server, {"grant_type": "client_credentials",
                                           **auth_form(pkjwt, aud, key=key, alg=alg)})
        assert resp.status_code == 200, resp.text
        assert resp.json()["token_type"] == "Bearer"


def _refused(resp, error="invalid_client"):
    assert resp.status_code in (400, 401), resp.text
    assert resp.json()["error"] == error, resp.text


def test_replayed_assertion_is_refused(app, live_server, pkjwt):
    form = {"grant_type": "client_credentials", **auth_form(pkjwt, live_server)}
    assert token_request(live_server, form).status_code == 200
    _refused(token_request(live_server, form))
    from sqlalchemy import select

    from tongban.audit import AuditLog
    from tongban.extensions import db

    for _ in range(50):
        db.session.expire_all()
        if db.session.execute(select(AuditLog).where(AuditLog.action == "client_assertion.replayed")).first():
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no client_assertion.replayed audit event")


@pytest.mark.parametrize("over", [
    {"aud": "https://elsewhere.example/oauth/token"},  # another server's assertion
    {"exp": int(time.time()) - 120, "iat": int(time.time()) - 180},  # expired
    {"exp": None},  # no exp
    {"exp": int(time.time()) + 3600},  # too far ahead
    {"iat": int(time.time()) + 600},  # issued in the future
    {"jti": None},  # no jti: cannot be one-time
    {"iss": "someone-else"},  # iss != sub
])
def test_bad_assertion_claims_are_refused(live_server, pkjwt, over):
    over = dict(over)
    aud = over.pop("aud", live_server)
    _refused(token_request(live_server, {"grant_type": "client_credentials", **auth_form(pkjwt, aud, **over)}))


def test_assertion_signed_by_another_key_is_refused(live_server, pkjwt):
    for kid in ("default", CLIENT_EC.kid, None):
        raw = assertion(pkjwt, live_server, key=ATTACKER_EC) if kid == "default" else sign(
            {"iss": pkjwt, "sub": pkjwt, "aud": live_server, "exp": int(time.time()) + 60,
             "jti": secrets.token_hex(8)}, ATTACKER_EC, kid=kid)
        _refused(token_request(live_server, {"grant_type": "client_credentials",
                                             "client_assertion_type": ASSERTION_TYPE, "client_assertion": raw}))


def test_alg_none_and_hmac_assertions_are_refused(live_server, pkjwt):
    claims = {"iss": pkjwt, "sub": pkjwt, "aud": live_server, "exp": int(time.time()) + 60,
              "jti": secrets.token_hex(8)}
    for raw in (unsigned(claims), hmac_with_public_key(claims, CLIENT_RSA),
                hmac_with_public_key(claims, CLIENT_EC)):
        _refused(token_request(live_server, {"grant_type": "client_credentials",
                                             "client_assertion_type": ASSERTION_TYPE, "client_assertion": raw}))


def test_secret_client_cannot_use_an_assertion_and_vice_versa(live_server, make_client, pkjwt):
    cid, _secret = make_client()
    # a client_secret_basic client has no keys: an assertion in its name is refused
    _refused(token_request(live_server, {"grant_type": "client_credentials", **auth_form(cid, live_server)}))
    # a private_key_jwt client cannot fall back to a secret (it has none; nothing else works)
    _refused(token_request(live_server, {"grant_type": "client_credentials"}, auth=(pkjwt, "guess")))
    _refused(token_request(live_server, {"grant_type": "client_credentials", "client_id": pkjwt}))


def test_introspection_and_revocation_with_private_key_jwt(live_server, make_client, pkjwt):
    from idp import clients as registry
    from tongban.extensions import db

    registry.update_client(pkjwt, introspection_allowed=True)
    db.session.commit()
    tok = token_request(live_server, {"grant_type": "client_credentials",
                                      **auth_form(pkjwt, live_server)}).json()["access_token"]
    intro = requests.post(f"{live_server}/oauth/introspect",
                          data={"token": tok, **auth_form(pkjwt, f"{live_server}/oauth/introspect")})
    assert intro.status_code == 200 and intro.json()["active"] is True, intro.text
    rev = requests.post(f"{live_server}/oauth/revoke",
                        data={"token": tok, "token_type_hint": "access_token", **auth_form(pkjwt, live_server)})
    assert rev.status_code == 200, rev.text
    intro = requests.post(f"{live_server}/oauth/introspect", data={"token": tok, **auth_form(pkjwt, live_server)})
    assert intro.json() == {"active": False}
    # the introspection endpoint also refuses a replayed assertion
    form = {"token": tok, **auth_form(pkjwt, live_server)}
    assert requests.post(f"{live_server}/oauth/introspect", data=form).status_code == 200
    _refused(requests.post(f"{live_server}/oauth/introspect", data=form))


class _JwksServer:
    """A client's jwks_uri, served on loopback."""

    def __init__(self, doc: dict):
        self.doc, self.hits = doc, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                body = json.dumps(outer.doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def private_fetch(app, monkeypatch):
    """The test servers of jwks_uri documents are on loopback: allow fetching from it."""
    monkeypatch.setitem(app.config, "TONGBAN_FETCH_ALLOW_PRIVATE", True)


def test_jwks_uri_fetched_and_cached(app, private_fetch, live_server, make_client):
    from idp import client_auth

    client_auth._fetched.clear()
    keys = _JwksServer(public_jwks(CLIENT_EC))
    try:
        cid, _ = make_client(token_endpoint_auth_method="private_key_jwt", jwks_uri=keys.url)
        for _ in range(2):
            resp = token_request(live_server, {"grant_type": "client_credentials", **auth_form(cid, live_server)})
            assert resp.status_code == 200, resp.text
        assert keys.hits == 1  # cached
        # a key not (yet) published: a refetch (at most every REFETCH_AFTER seconds), then refused
        client_auth._fetched[keys.url] = (*client_auth._fetched[keys.url][:2], time.monotonic() - 60)
        for _ in range(3):
            _refused(token_request(live_server, {"grant_type": "client_credentials",
                                                 **auth_form(cid, live_server, key=ATTACKER_EC)}))
        assert keys.hits == 2  # an attacker's unknown kids do not make the provider fetch again and again
        # the client rotates its key: published, then used after the refetch interval
        keys.doc = public_jwks(CLIENT_EC, ATTACKER_EC)
        client_auth._fetched[keys.url] = (*client_auth._fetched[keys.url][:2], time.monotonic() - 60)
        resp = token_request(live_server, {"grant_type": "client_credentials",
                                           **auth_form(cid, live_server, key=ATTACKER_EC)})
        assert resp.status_code == 200 and keys.hits == 3
    finally:
        keys.httpd.shutdown()
        client_auth._fetched.clear()


def test_registration_refuses_bad_keys(app, make_client):
    from tongban.errors import ValidationError

    with pytest.raises(ValidationError, match="public keys"):
        make_client(token_endpoint_auth_method="private_key_jwt")
    with pytest.raises(ValidationError, match="private"):
        make_client(token_endpoint_auth_method="private_key_jwt", jwks={"keys": [KEYS["client_ec"]]})
    with pytest.raises(ValidationError, match="JWKS"):
        make_client(token_endpoint_auth_method="private_key_jwt", jwks={"keys": []})
    with pytest.raises(ValidationError, match="https"):
        make_client(token_endpoint_auth_method="private_key_jwt", jwks_uri="http://keys.example/jwks")


def test_cli_registers_a_private_key_jwt_client(app, tmp_path):
    good = tmp_path / "jwks.json"
    good.write_text(json.dumps(public_jwks(CLIENT_EC)))
    runner = app.test_cli_runner()
    out = runner.invoke(args=["clients", "create", "--name", "新系统", "--department", "测试局", "--redirect-uri",
                              REDIRECT, "--auth-method", "private_key_jwt", "--jwks", str(good), "--require-par",
                              "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["client_secret"] is None and data["require_par"] is True
    assert data["jwks"]["keys"][0]["kid"] == CLIENT_EC.kid
    shown = runner.invoke(args=["clients", "show", data["client_id"], "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["token_endpoint_auth_method"] == "private_key_jwt"
    bad = tmp_path / "private.json"
    bad.write_text(json.dumps({"keys": [KEYS["client_ec"]]}))
    out = runner.invoke(args=["clients", "create", "--name", "x", "--department", "y", "--redirect-uri", REDIRECT,
                              "--auth-method", "private_key_jwt", "--jwks", str(bad)])
    assert out.exit_code != 0 and "private" in out.output
    out = runner.invoke(args=["clients", "create", "--name", "x", "--department", "y", "--redirect-uri", REDIRECT,
                              "--auth-method", "private_key_jwt", "--profile", "fapi2", "--jwks",
                              str(tmp_path / "missing.json")])
    assert out.exit_code != 0


# ---------------------------------------------------------------- PAR


def _pkce():
    verifier = secrets.token_urlsafe(48)
    return verifier, {"code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256"}


def _code_params(cid: str, **extra) -> dict:
    return {"client_id": cid, "response_type": "code", "redirect_uri": REDIRECT, "scope": "openid profile",
            "state": secrets.token_hex(8), "nonce": secrets.token_hex(8), **extra}


def push(base: str, params: dict, auth=None, **kw) -> requests.Response:
    return requests.post(f"{base}/oauth/par", data=params, auth=auth, **kw)


def test_par_code_flow_with_a_secret_client(live_server, citizen, make_client, browser):
    cid, secret = make_client(first_party=True)
    verifier, pkce = _pkce()
    params = _code_params(cid, **pkce)
    resp = push(live_server, params, auth=(cid, secret))
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["expires_in"] == 60 and body["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
    assert resp.headers["Cache-Control"] == "no-store"
    url = f"{live_server}/oauth/authorize?" + urlencode({"client_id": cid, "request_uri": body["request_uri"]})
    step = browser.authorize(url)
    got = step.params
    assert got["state"] == params["state"] and got["iss"] == live_server and "code" in got
    tokens = token_request(live_server, {"grant_type": "authorization_code", "code": got["code"],
                                         "redirect_uri": REDIRECT, "code_verifier": verifier}, auth=(cid, secret))
    assert tokens.status_code == 200, tokens.text
    # one-time: the same request_uri again is refused, even in the same browser
    again = browser.http.get(url, allow_redirects=False)
    assert again.status_code == 400 and "invalid_request_uri" in again.text
    # the stored value is a digest, not the request_uri
    from sqlalchemy import select

    from idp.models import PushedAuthorizationRequest
    from tongban.extensions import db

    stored = db.session.execute(select(PushedAuthorizationRequest.uri_hash)).scalars().all()
    assert body["request_uri"] not in stored and all(len(s) == 64 for s in stored)


def test_par_requires_client_authentication(live_server, make_client):
    cid, _secret = make_client()
    resp = push(live_server, _code_params(cid))
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    resp = push(live_server, _code_params(cid), auth=(cid, "wrong"))
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    public, _ = make_client(token_endpoint_auth_method="none", grant_types=["authorization_code"])
    resp = push(live_server, _code_params(public))
    assert resp.status_code == 401


@pytest.mark.parametrize("change,error", [
    ({"redirect_uri": "https://attacker.example/cb"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"request_uri": "urn:ietf:params:oauth:request_uri:x"}, "invalid_request"),
])
def test_par_refuses_bad_requests(live_server, make_client, change, error):
    cid, secret = make_client()
    resp = push(live_server, {**_code_params(cid), **change}, auth=(cid, secret))
    assert resp.status_code == 400 and resp.json()["error"] == error, resp.text


def test_par_client_id_must_be_the_authenticated_client(live_server, make_client):
    cid, secret = make_client()
    other, _ = make_client()
    resp = push(live_server, _code_params(other), auth=(cid, secret))
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"


def _pushed(live_server, cid, secret, **extra) -> str:
    resp = push(live_server, _code_params(cid, **extra), auth=(cid, secret))
    assert resp.status_code == 201, resp.text
    return resp.json()["request_uri"]


def test_request_uri_of_another_client_is_refused(live_server, citizen, make_client, browser):
    cid, secret = make_client(first_party=True)
    other, _ = make_client(first_party=True)
    uri = _pushed(live_server, cid, secret)
    resp = browser.http.get(f"{live_server}/oauth/authorize", params={"client_id": other, "request_uri": uri},
                            allow_redirects=False)
    assert resp.status_code == 400 and "invalid_request_uri" in resp.text
    # ... and was not spent: its own client can still use it
    browser.login()
    step = browser.authorize(f"{live_server}/oauth/authorize?" + urlencode({"client_id": cid, "request_uri": uri}))
    assert "code" in step.params


def test_expired_request_uri_is_refused(app, live_server, citizen, make_client, browser):
    from datetime import timedelta

    from sqlalchemy import update

    from idp.models import PushedAuthorizationRequest
    from tongban.clock import utcnow
    from tongban.extensions import db

    cid, secret = make_client(first_party=True)
    uri = _pushed(live_server, cid, secret)
    db.session.execute(update(PushedAuthorizationRequest).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    resp = browser.http.get(f"{live_server}/oauth/authorize", params={"client_id": cid, "request_uri": uri},
                            allow_redirects=False)
    assert resp.status_code == 400 and "invalid_request_uri" in resp.text


def test_request_uri_cannot_be_continued_by_another_browser(live_server, citizen, make_client, browser):
    cid, secret = make_client(first_party=True)
    uri = _pushed(live_server, cid, secret)
    url = f"{live_server}/oauth/authorize?" + urlencode({"client_id": cid, "request_uri": uri})
    assert browser.walk(url).kind == "login"  # the victim's browser claimed it
    thief = Browser(live_server)
    thief.login()
    resp = thief.http.get(url, allow_redirects=False)
    assert resp.status_code == 400 and "invalid_request_uri" in resp.text
    step = browser.authorize(url)  # the first browser finishes
    assert "code" in step.params


def test_only_client_id_may_accompany_request_uri(live_server, citizen, make_client, browser):
    cid, secret = make_client(first_party=True)
    uri = _pushed(live_server, cid, secret)
    for extra in ({"redirect_uri": "https://attacker.example/cb"}, {"scope": "openid phone"}, {"prompt": "none"}):
        resp = browser.http.get(f"{live_server}/oauth/authorize",
                                params={"client_id": cid, "request_uri": uri, **extra}, allow_redirects=False)
        assert resp.status_code == 400 and "invalid_request" in resp.text


def test_other_request_uris_are_not_fetched(live_server, make_client, browser):
    cid, _ = make_client()
    fetched = _JwksServer({"keys": []})  # would count a fetch
    try:
        step = browser.walk(f"{live_server}/oauth/authorize?" + urlencode(
            {"client_id": cid, "request_uri": fetched.url, "response_type": "code", "redirect_uri": REDIRECT}))
        assert step.params["error"] == "request_uri_not_supported" and fetched.hits == 0
        # with an unknown client the error is shown, not redirected
        resp = browser.http.get(f"{live_server}/oauth/authorize", params={"client_id": "nobody",
                                                                          "request_uri": fetched.url},
                                allow_redirects=False)
        assert resp.status_code == 400 and fetched.hits == 0
    finally:
        fetched.httpd.shutdown()


def test_par_with_prompt_login_logs_in_once(live_server, citizen, make_client, browser):
    cid, secret = make_client(first_party=True)
    browser.login()
    uri = _pushed(live_server, cid, secret, prompt="login")
    step = browser.walk(f"{live_server}/oauth/authorize?" + urlencode({"client_id": cid, "request_uri": uri}))
    assert step.kind == "login"
    step = browser.submit_login(step)
    assert step.kind == "callback" and "code" in step.params


def test_par_with_prompt_login_and_consent_logs_in_once(live_server, citizen, make_client, browser):
    """A pushed prompt=login for a client that asks for consent: the log-in that answered it also
    counts for the consent form of the same request (no second log-in page)."""
    cid, secret = make_client(first_party=False)
    browser.login()
    uri = _pushed(live_server, cid, secret, prompt="login")
    url = f"{live_server}/oauth/authorize?" + urlencode({"client_id": cid, "request_uri": uri})
    step = browser.walk(url)
    assert step.kind == "login"
    step = browser.submit_login(step)
    assert step.kind == "consent"
    step = browser.submit_consent(step)
    assert step.kind == "callback" and "code" in step.params, (step.kind, step.url)
    assert step.seen == ["login", "consent"]
    # the answered log-in is spent with the request: a new pushed prompt=login asks again
    uri = _pushed(live_server, cid, secret, prompt="login")
    step = browser.walk(f"{live_server}/oauth/authorize?" + urlencode({"client_id": cid, "request_uri": uri}))
    assert step.kind == "login"


def test_par_required_per_client_and_globally(app, live_server, citizen, make_client, browser):
    cid, _secret = make_client(first_party=True, require_par=True)
    plain = f"{live_server}/oauth/authorize?" + urlencode(_code_params(cid))
    resp = browser.http.get(plain, allow_redirects=False)
    assert resp.status_code == 400 and "invalid_request" in resp.text
    other, other_secret = make_client(first_party=True)
    plain = f"{live_server}/oauth/authorize?" + urlencode(_code_params(other))
    assert browser.walk(plain).kind == "login"
    app.config["TONGBAN_REQUIRE_PAR"] = True
    try:
        resp = browser.http.get(plain, allow_redirects=False)
        assert resp.status_code == 400 and "invalid_request" in resp.text
        uri = _pushed(live_server, other, other_secret)
        step = browser.authorize(f"{live_server}/oauth/authorize?" + urlencode({"client_id": other,
                                                                                  "request_uri": uri}))
        assert "code" in step.params
    finally:
        app.config["TONGBAN_REQUIRE_PAR"] = False


def test_error_answers_spend_the_request_uri(live_server, make_client, browser):
    cid, secret = make_client(first_party=True)
    uri = _pushed(live_server, cid, secret, prompt="none")
    url = f"{live_server}/oauth/authorize?" + urlencode({"client_id": cid, "request_uri": uri})
    step = browser.walk(url)
    assert step.kind == "callback" and step.params["error"] == "login_required"
    resp = browser.http.get(url, allow_redirects=False)
    assert resp.status_code == 400 and "invalid_request_uri" in resp.text


# ---------------------------------------------------------------- JAR


def request_object(cid: str, aud: str, *, key=CLIENT_EC, alg="ES256", **params) -> tuple[str, dict]:
    now = int(time.time())
    claims = {"iss": cid, "aud": aud, "exp": now + 300, "nbf": now, "iat": now, "jti": secrets.token_hex(8),
              **_code_params(cid)}
    claims.update(params)
    claims = {k: v for k, v in claims.items() if v is not None}
    return sign(claims, key, alg), claims


def test_signed_request_object_by_value(live_server, citizen, make_client, browser):
    cid, secret = make_client(first_party=True, jwks=public_jwks(CLIENT_EC))
    raw, claims = request_object(cid, live_server)
    url = f"{live_server}/oauth/authorize?" + urlencode({"client_id": cid, "request": raw,
                                                        "response_type": "code", "scope": "openid profile"})
    step = browser.authorize(url)
    assert step.params["state"] == claims["state"] and "code" in step.params
    tokens = token_request(live_server, {"grant_type": "authorization_code", "code": step.params["code"],
                                         "redirect_uri": REDIRECT}, auth=(cid, secret))
    assert tokens.status_code == 200, tokens.text
    id_token = jwt.decode(tokens.json()["id_token"], _provider_keys(live_server))
    assert id_token.claims["nonce"] == claims["nonce"]


def _provider_keys(base):
    from tests.idp.helpers import jwks

    return jwks(discover(base))


@pytest.mark.parametrize("attack", ["other_key", "alg_none", "hs256", "wrong_iss", "wrong_aud", "expired",
                                    "no_exp", "too_long", "not_yet", "nested_request_uri", "other_client_id"])
def test_bad_request_objects_are_refused(live_server, citizen, make_client, browser, attack):
    cid, _ = make_client(first_party=True, jwks=public_jwks(CLIENT_EC))
    now = int(time.time())
    over = {"wrong_iss": {"iss": "attacker"}, "wrong_aud": {"aud": "https://other-op.example"},
            "expired": {"exp": now - 120, "nbf": now - 400}, "no_exp": {"exp": None},
            "too_long": {"exp": now + 7200, "nbf": now}, "not_yet": {"nbf": now + 600, "exp": now + 900},
            "nested_request_uri": {"request_uri": "https://attacker.example/r"},
            "other_client_id": {"client_id": "someone-else"}}.get(attack, {})
    if attack == "other_key":
        raw, _ = request_object(cid, live_server, key=ATTACKER_EC)
    elif attack in ("alg_none", "hs256"):
        _, claims = request_object(cid, live_server)
        raw = unsigned(claims) if attack == "alg_none" else hmac_with_public_key(claims, CLIENT_EC)
    else:
        over = dict(over)
        raw, _ = request_object(cid, over.pop("aud", live_server), **over)
    resp = browser.http.get(f"{live_server}/oauth/authorize", params={"client_id": cid, "request": raw},
                            allow_redirects=False)
    assert resp.status_code == 400, (resp.status_code, resp.headers.get("Location"))
    assert "invalid_request" in resp.text  # invalid_request_object or invalid_request, shown, not redirected


def test_parameters_outside_the_request_object_are_refused(live_server, citizen, make_client, browser):
    cid, _ = make_client(first_party=True, jwks=public_jwks(CLIENT_EC))
    raw, _ = request_object(cid, live_server)
    for extra in ({"redirect_uri": "https://attacker.example/cb"}, {"scope": "openid phone"},
                  {"response_type": "token"}, {"state": "x"}):
        resp = browser.http.get(f"{live_server}/oauth/authorize", params={"client_id": cid, "request": raw, **extra},
                                allow_redirects=False)
        assert resp.status_code == 400 and "invalid_request" in resp.text, extra


def test_signed_request_object_through_par(live_server, citizen, make_client, browser):
    cid, secret = make_client(first_party=True, jwks=public_jwks(CLIENT_EC), require_signed_request_object=True)
    # unsigned pushes are refused for this client, and so are plain authorization requests
    resp = push(live_server, _code_params(cid), auth=(cid, secret))
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"
    resp = browser.http.get(f"{live_server}/oauth/authorize?" + urlencode(_code_params(cid)), allow_redirects=False)
    assert resp.status_code == 400
    raw, claims = request_object(cid, live_server)
    # parameters next to the request object in the push are refused
    resp = push(live_server, {"request": raw, "scope": "openid phone"}, auth=(cid, secret))
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"
    bad, _ = request_object(cid, live_server, key=ATTACKER_EC)
    resp = push(live_server, {"request": bad}, auth=(cid, secret))
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request_object"
    resp = push(live_server, {"request": raw}, auth=(cid, secret))
    assert resp.status_code == 201, resp.text
    step = browser.authorize(f"{live_server}/oauth/authorize?" + urlencode(
        {"client_id": cid, "request_uri": resp.json()["request_uri"]}))
    assert step.params["state"] == claims["state"] and "code" in step.params


# ---------------------------------------------------------------- fapi2


@pytest.fixture
def fapi_client(make_client):
    cid, _secret = make_client(token_endpoint_auth_method="private_key_jwt", first_party=True, profile="fapi2",
                              jwks=public_jwks(CLIENT_EC), grant_types=["authorization_code", "refresh_token"])
    return cid


def test_fapi2_registration_rules(app, make_client):
    from idp import clients as registry
    from tongban.errors import ValidationError

    with pytest.raises(ValidationError, match="private_key_jwt"):
        make_client(profile="fapi2")
    with pytest.raises(ValidationError, match="device_code"):
        make_client(profile="fapi2", token_endpoint_auth_method="private_key_jwt", jwks=public_jwks(CLIENT_EC),
                    grant_types=["authorization_code", "urn:ietf:params:oauth:grant-type:device_code"])
    with pytest.raises(ValidationError, match="profile"):
        make_client(profile="fapi1")
    cid, _ = make_client(profile="fapi2", token_endpoint_auth_method="private_key_jwt",
                         jwks=public_jwks(CLIENT_EC), grant_types=["authorization_code"])
    client = registry.get_client(cid)
    assert client.require_par and client.profile == "fapi2"
    with pytest.raises(ValidationError):
        registry.update_client(cid, token_endpoint_auth_method="client_secret_basic")


def test_fapi2_sender_constraint_hook(app, fapi_client, make_client):
    from idp import clients as registry
    from idp.fapi import requires_sender_constraint

    plain, _ = make_client()
    assert requires_sender_constraint(registry.get_client(fapi_client)) is True
    assert requires_sender_constraint(registry.get_client(plain)) is False


def test_fapi2_client_cannot_use_plain_authorize(live_server, citizen, fapi_client, browser):
    _, pkce = _pkce()
    resp = browser.http.get(f"{live_server}/oauth/authorize?" + urlencode(_code_params(fapi_client, **pkce)),
                            allow_redirects=False)
    assert resp.status_code == 400 and "invalid_request" in resp.text
    raw, _ = request_object(fapi_client, live_server, **pkce)  # nor JAR by value: PAR only
    resp = browser.http.get(f"{live_server}/oauth/authorize", params={"client_id": fapi_client, "request": raw},
                            allow_redirects=False)
    assert resp.status_code == 400


@pytest.mark.parametrize("change,needle", [
    ({"code_challenge": None, "code_challenge_method": None}, "PKCE"),
    ({"code_challenge_method": "plain"}, "S256"),
    ({"redirect_uri": None}, "redirect_uri"),
    ({"response_mode": "fragment"}, "response_mode"),
])
def test_fapi2_pushed_request_rules(live_server, fapi_client, change, needle):
    _, pkce = _pkce()
    params = {k: v for k, v in {**_code_params(fapi_client, **pkce), **change}.items() if v is not None}
    resp = push(live_server, {**params, **auth_form(fapi_client, live_server)})
    assert resp.status_code == 400 and needle in resp.json()["error_description"], resp.text


def test_fapi2_client_cannot_use_a_secret(live_server, fapi_client):
    _, pkce = _pkce()
    resp = push(live_server, _code_params(fapi_client, **pkce), auth=(fapi_client, "anything"))
    assert resp.status_code == 401
    _refused(token_request(live_server, {"grant_type": "refresh_token", "refresh_token": "x"},
                           auth=(fapi_client, "anything")))


def test_fapi2_full_flow(live_server, citizen, fapi_client, browser):
    verifier, pkce = _pkce()
    params = _code_params(fapi_client, **pkce, scope="openid profile offline_access")
    resp = push(live_server, {**params, **auth_form(fapi_client, live_server)})
    assert resp.status_code == 201, resp.text
    step = browser.authorize(f"{live_server}/oauth/authorize?" + urlencode(
        {"client_id": fapi_client, "request_uri": resp.json()["request_uri"]}))
    got = step.params
    assert got["iss"] == live_server and got["state"] == params["state"]
    # no code_verifier: refused (PKCE is bound to the code)
    resp = token_request(live_server, {"grant_type": "authorization_code", "code": got["code"],
                                       "redirect_uri": REDIRECT, **auth_form(fapi_client, live_server)})
    assert resp.status_code == 400
    step = browser.authorize(f"{live_server}/oauth/authorize?" + urlencode(
        {"client_id": fapi_client, "request_uri": push(live_server, {
            **params, "nonce": secrets.token_hex(8), **auth_form(fapi_client, live_server)}).json()["request_uri"]}))
    # FAPI 2.0 §5.3.2.1: sender-constrained tokens; without a DPoP proof, no tokens
    bare = token_request(live_server, {"grant_type": "authorization_code", "code": step.params["code"],
                                       "redirect_uri": REDIRECT, "code_verifier": verifier,
                                       **auth_form(fapi_client, live_server)})
    assert bare.status_code == 400 and bare.json()["error"] == "invalid_dpop_proof", bare.text
    tokens = dpop_token_request(live_server, {"grant_type": "authorization_code", "code": step.params["code"],
                                              "redirect_uri": REDIRECT, "code_verifier": verifier,
                                              **auth_form(fapi_client, live_server)})
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["token_type"] == "DPoP"
    refresh = tokens.json()["refresh_token"]
    rotated = dpop_token_request(live_server, {"grant_type": "refresh_token", "refresh_token": refresh,
                                               **auth_form(fapi_client, live_server)})
    assert rotated.status_code == 200 and rotated.json()["refresh_token"] != refresh
    # the old refresh token is spent (rotation with reuse detection)
    reused = dpop_token_request(live_server, {"grant_type": "refresh_token", "refresh_token": refresh,
                                              **auth_form(fapi_client, live_server)})
    assert reused.status_code == 400


def test_admin_page_shows_keys_and_profile(app, make_client):
    from people import accounts
    from tests.conftest import OTHER_ID, PASSWORD
    from tests.idp.test_admin import Browser as AdminBrowser
    from tests.idp.test_admin import login
    from tongban.extensions import db

    accounts.create_staff(OTHER_ID, "王五", PASSWORD, app.config["TONGBAN_AUTHORITY_USCC"], "admin")
    db.session.commit()
    fapi, _ = make_client(token_endpoint_auth_method="private_key_jwt", profile="fapi2",
                          jwks=public_jwks(CLIENT_EC, CLIENT_RSA), grant_types=["authorization_code"])
    web = AdminBrowser(app, app.response_class, use_cookies=True)
    login(web)
    page = web.get(f"/admin/clients/{fapi}").get_data(as_text=True)
    assert "已登记 2 个公钥" in page and "FAPI 2.0" in page
    assert f"/admin/clients/{fapi}/rotate" not in page  # no secret to rotate


def test_step_up_comes_back_to_the_request_uri(live_server, citizen, make_client, browser):
    from urllib.parse import parse_qs, urlsplit

    cid, secret = make_client(first_party=True)
    uri = _pushed(live_server, cid, secret, acr_values="L2")
    url = f"{live_server}/oauth/authorize?" + urlencode({"client_id": cid, "request_uri": uri})
    step = browser.walk(url)
    step = browser.submit_login(step)
    assert step.kind == "page" and "/mfa/verify" in step.url, step.url
    back = parse_qs(urlsplit(step.url).query)["next"][0]
    assert parse_qs(urlsplit(back).query) == {"client_id": [cid], "request_uri": [uri]}


def test_fapi2_request_object_needs_nbf(live_server, fapi_client):
    _, pkce = _pkce()
    raw, _ = request_object(fapi_client, live_server, nbf=None, **pkce)
    resp = push(live_server, {"request": raw, **auth_form(fapi_client, live_server)})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request_object", resp.text
    raw, _ = request_object(fapi_client, live_server, **pkce)
    assert push(live_server, {"request": raw, **auth_form(fapi_client, live_server)}).status_code == 201


def test_old_pushed_requests_are_cleaned_up(app, live_server, make_client):
    from datetime import timedelta

    from sqlalchemy import func, select, update

    from idp.models import PushedAuthorizationRequest
    from tongban.clock import utcnow
    from tongban.extensions import db

    cid, secret = make_client()
    _pushed(live_server, cid, secret)
    db.session.execute(update(PushedAuthorizationRequest).values(expires_at=utcnow() - timedelta(hours=2)))
    db.session.commit()
    _pushed(live_server, cid, secret)
    db.session.expire_all()
    assert db.session.execute(select(func.count()).select_from(PushedAuthorizationRequest)).scalar() == 1


def test_jwks_uri_too_large_or_down_is_refused(app, private_fetch, live_server, make_client):
    from idp import client_auth

    client_auth._fetched.clear()
    big = _JwksServer({"keys": [KEYS["client_ec"] | {"x5c": ["A" * 1000]}] * 100})  # > 64 KiB
    try:
        cid, _ = make_client(token_endpoint_auth_method="private_key_jwt", jwks_uri=big.url)
        _refused(token_request(live_server, {"grant_type": "client_credentials", **auth_form(cid, live_server)}))
    finally:
        big.httpd.shutdown()
    down, _ = make_client(token_endpoint_auth_method="private_key_jwt", jwks_uri="http://127.0.0.1:9/jwks.json")
    _refused(token_request(live_server, {"grant_type": "client_credentials", **auth_form(down, live_server)}))
    client_auth._fetched.clear()


def test_private_jwks_uri_and_sector_identifier_uri_are_refused(app, live_server, make_client):
    """By default (TONGBAN_FETCH_ALLOW_PRIVATE false) a client-registered URL on a loopback,
    private, link-local... address is never fetched (SSRF): refused before connecting."""
    from idp import client_auth, pairwise
    from tongban.errors import ValidationError

    assert not app.config.get("TONGBAN_FETCH_ALLOW_PRIVATE")
    client_auth._fetched.clear()
    keys = _JwksServer(public_jwks(CLIENT_EC))
    try:
        cid, _ = make_client(token_endpoint_auth_method="private_key_jwt", jwks_uri=keys.url)
        _refused(token_request(live_server, {"grant_type": "client_credentials", **auth_form(cid, live_server)}))
        with pytest.raises(ValidationError, match=r"sector_identifier_uri.*public address"):
            pairwise.fetch_sector_uris(f"http://127.0.0.1:{keys.httpd.server_port}/uris.json")
        assert keys.hits == 0  # neither was fetched
    finally:
        keys.httpd.shutdown()
        client_auth._fetched.clear()
    for uri in ("https://10.0.0.1/jwks.json", "https://169.254.169.254/latest", "https://[::1]/jwks.json",
                "https://0.0.0.0/jwks.json", "https://[::ffff:127.0.0.1]/jwks.json", "https://224.0.0.1/x"):
        with pytest.raises(client_auth.KeysUnavailable, match="public address"):
            client_auth._fetch(uri)
        with pytest.raises(ValidationError, match="public address"):
            pairwise.fetch_sector_uris(uri)


def test_jwks_uri_is_never_fetched_inside_a_write_transaction(app, make_client):
    from idp import client_auth
    from idp import clients as registry
    from tongban.extensions import db

    cid, _ = make_client(token_endpoint_auth_method="private_key_jwt", jwks_uri="https://keys.example/jwks.json",
                         first_party=False)
    client = registry.get_client(cid)
    registry.update_client(cid, name="改名")  # a pending write
    with pytest.raises(RuntimeError, match="write transaction"):
        client_auth.client_keyset(client)
    db.session.rollback()
