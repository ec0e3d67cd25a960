"""The OpenID Connect provider over real HTTP, driven by Authlib's client (OAuth2Session)
with ID tokens validated strictly by joserfc against the published JWKS."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jws import extract_compact

from tests.conftest import CITIZEN_ID, PASSWORD
from tests.idp.helpers import (
    LOGOUT_REDIRECT,
    REDIRECT,
    REDIRECT_2,
    Browser,
    _input_value,
    bearer,
    discover,
    jwks,
    validate_id_token,
)


@pytest.fixture
def disco(live_server):
    return discover(live_server)


@pytest.fixture
def browser(live_server):
    return Browser(live_server)


class RP:
    """A relying party: Authlib's OAuth2Session plus the raw token responses it saw."""

    def __init__(self, disco, client_id, secret, scope="openid profile", redirect_uri=REDIRECT, **kw):
        self.disco, self.client_id, self.secret, self.redirect_uri = disco, client_id, secret, redirect_uri
        kw.setdefault("code_challenge_method", "S256")
        if secret is None:
            kw.setdefault("token_endpoint_auth_method", "none")
        self.oauth = OAuth2Session(client_id, secret, scope=scope, redirect_uri=redirect_uri, **kw)
        self.responses: list[requests.Response] = []
        self.oauth.register_compliance_hook("access_token_response", self._seen)
        self.oauth.register_compliance_hook("refresh_token_response", self._seen)

    def _seen(self, resp):
        self.responses.append(resp)
        return resp

    def auth_url(self, **params):
        self.verifier = secrets.token_urlsafe(48)
        self.nonce = secrets.token_urlsafe(12)
        params.setdefault("nonce", self.nonce)
        self.nonce = params["nonce"]
        url, self.state = self.oauth.create_authorization_url(
            self.disco["authorization_endpoint"], code_verifier=self.verifier, **params)
        return url

    def exchange(self, callback_url: str) -> dict:
        return self.oauth.fetch_token(self.disco["token_endpoint"], authorization_response=callback_url,
                                      code_verifier=self.verifier)

    def token_post(self, **data) -> requests.Response:
        auth = (self.client_id, self.secret) if self.secret else None
        if not self.secret:
            data["client_id"] = self.client_id
        return requests.post(self.disco["token_endpoint"], data=data, auth=auth)

    def login(self, browser, **params) -> tuple[dict, dict]:
        """Authorize (log in/approve as asked), exchange the code, validate the ID token."""
        step = browser.authorize(self.auth_url(**params))
        q = step.params
        assert q["state"] == self.state and q["iss"] == self.disco["issuer"]
        token = self.exchange(step.url)
        alg = params.pop("_alg", "RS256")
        claims = validate_id_token(token["id_token"], disco=self.disco, client_id=self.client_id,
                                   nonce=self.nonce, access_token=token["access_token"], alg=alg)
        self.step = step
        return token, claims

    def userinfo(self, access_token, method="GET") -> requests.Response:
        if method == "GET":
            return requests.get(self.disco["userinfo_endpoint"], headers=bearer(access_token))
        return requests.post(self.disco["userinfo_endpoint"], headers=bearer(access_token))

    def refresh(self, refresh_token) -> requests.Response:
        return self.token_post(grant_type="refresh_token", refresh_token=refresh_token)

    def introspect(self, token, **hint) -> dict:
        r = requests.post(self.disco["introspection_endpoint"], data={"token": token, **hint},
                          auth=(self.client_id, self.secret))
        assert r.status_code == 200, r.text
        return r.json()

    def revoke(self, token, **hint) -> requests.Response:
        return requests.post(self.disco["revocation_endpoint"], data={"token": token, **hint},
                             auth=(self.client_id, self.secret))


def _error(resp: requests.Response, status: int, error: str):
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.json()["error"] == error, resp.text
    assert "no-store" in resp.headers.get("Cache-Control", "")


# ---------------------------------------------------------------- the happy path


def test_code_flow_pkce_strict_id_token_userinfo_refresh(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True)
    rp = RP(disco, cid, secret, scope="openid profile phone")
    url = rp.auth_url()
    assert "code_challenge_method=S256" in url and "code_challenge=" in url
    step = browser.walk(url)
    assert step.kind == "login"
    step = browser.submit_login(step)
    assert step.kind == "callback" and step.seen == ["login"], "a first-party system needs no consent"
    assert step.params["state"] == rp.state and step.params["iss"] == disco["issuer"]
    token = rp.exchange(step.url)
    resp = rp.responses[-1]
    assert resp.status_code == 200 and "no-store" in resp.headers["Cache-Control"]
    assert token["token_type"].lower() == "bearer" and token["expires_in"] > 0
    assert set(token["scope"].split()) == {"openid", "profile", "phone"}

    claims = validate_id_token(token["id_token"], disco=disco, client_id=cid, nonce=rp.nonce,
                               access_token=token["access_token"], alg="RS256", max_age=60)
    assert claims["azp"] == cid and claims["aud"] == [cid]
    assert claims["name"] == "张三" and claims["gender"] == "female" and claims["birthdate"] == "1949-12-31"
    assert claims["phone_number"] == "+8613800138000"
    assert "id_number" not in claims
    # the access token is an RFC 9068 JWT bound to the same log-in session
    at = jwt.decode(token["access_token"], jwks(disco), algorithms=["ES256"])
    assert at.header["typ"] == "at+jwt"
    assert at.claims["sub"] == claims["sub"] and at.claims["sid"] == claims["sid"]
    assert at.claims["auth_time"] == claims["auth_time"] and at.claims["client_id"] == cid

    # userinfo, GET and POST, through the session and raw
    info = rp.oauth.get(disco["userinfo_endpoint"]).json()
    assert info["sub"] == claims["sub"] and info["name"] == "张三"
    assert info["phone_number"] == "+8613800138000"
    for method in ("GET", "POST"):
        r = rp.userinfo(token["access_token"], method)
        assert r.status_code == 200 and r.json() == info, method

    # refresh with rotation
    new = rp.oauth.refresh_token(disco["token_endpoint"], refresh_token=token["refresh_token"])
    assert "no-store" in rp.responses[-1].headers["Cache-Control"]
    assert new["refresh_token"] != token["refresh_token"] and new["access_token"] != token["access_token"]
    assert set(new["scope"].split()) == {"openid", "profile", "phone"}
    assert rp.userinfo(new["access_token"]).json()["sub"] == claims["sub"]
    newer = rp.refresh(new["refresh_token"])
    assert newer.status_code == 200 and newer.json()["refresh_token"] not in (new["refresh_token"],
                                                                             token["refresh_token"])


def test_token_endpoint_client_secret_post_and_public_client(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True, token_endpoint_auth_method="client_secret_post")
    rp = RP(disco, cid, secret, token_endpoint_auth_method="client_secret_post")
    token, claims = rp.login(browser)
    assert claims["sub"]
    # basic auth is not what this client registered
    r = requests.post(disco["token_endpoint"], data={"grant_type": "refresh_token",
                                                     "refresh_token": token["refresh_token"]},
                      auth=(cid, secret))
    _error(r, 401, "invalid_client")

    pub, none_secret = make_client(first_party=True, token_endpoint_auth_method="none",
                                   grant_types=["authorization_code", "refresh_token"])
    assert none_secret is None
    rp2 = RP(disco, pub, None)
    _, claims2 = rp2.login(browser)
    assert claims2["sub"] == claims["sub"] and claims2["aud"] == [pub]


def test_sso_across_two_systems(disco, browser, citizen, make_client):
    a, sa = make_client(first_party=True, name="系统甲")
    b, sb = make_client(first_party=True, name="系统乙", redirect_uris=[REDIRECT_2])
    c, sc = make_client(first_party=False, name="系统丙")
    rp_a, rp_b, rp_c = RP(disco, a, sa), RP(disco, b, sb, redirect_uri=REDIRECT_2), RP(disco, c, sc)
    _, ca = rp_a.login(browser)
    assert rp_a.step.seen == ["login"]
    # the second system: straight to its callback, no password asked
    step = browser.walk(rp_b.auth_url())
    assert step.kind == "callback" and step.seen == [] and step.url.startswith(REDIRECT_2)
    tb = rp_b.exchange(step.url)
    cb = validate_id_token(tb["id_token"], disco=disco, client_id=b, nonce=rp_b.nonce,
                           access_token=tb["access_token"])
    assert cb["sub"] == ca["sub"] and cb["sid"] == ca["sid"] and cb["auth_time"] == ca["auth_time"]
    # a third-party system: the consent page, but never the login page
    step = browser.walk(rp_c.auth_url())
    assert step.kind == "consent"
    step = browser.submit_consent(step)
    assert step.kind == "callback" and step.seen == ["consent"]
    tc = rp_c.exchange(step.url)
    cc = validate_id_token(tc["id_token"], disco=disco, client_id=c, nonce=rp_c.nonce,
                           access_token=tc["access_token"])
    assert cc["sid"] == ca["sid"]


def test_a_second_app_in_the_process_does_not_double_the_hooks(disco, browser, citizen, make_client, app):
    """The Authlib server object is shared by the process; wiring another app (a CLI command,
    a test) must not register its grants and hooks twice (``iss`` twice breaks RFC 9207 clients)."""
    from flask import Flask

    from idp.server import init_server

    init_server(Flask("another"))
    cid, secret = make_client(first_party=True)
    rp = RP(disco, cid, secret)
    step = browser.authorize(rp.auth_url())
    assert parse_qs(urlsplit(step.url).query)["iss"] == [disco["issuer"]]
    token = rp.exchange(step.url)
    assert token["id_token"]


# ---------------------------------------------------------------- authorization request errors


def test_unregistered_redirect_uri_is_never_redirected(disco, browser, live_server, citizen, make_client):
    cid, secret = make_client(first_party=True)
    evil = "http://127.0.0.1:9/evil"
    for logged_in in (False, True):
        if logged_in:
            assert browser.login().status_code == 302
        rp = RP(disco, cid, secret, redirect_uri=evil)
        r = browser.http.get(rp.auth_url(), allow_redirects=False)
        assert r.status_code == 400 and "Location" not in r.headers
        assert "invalid_request" in r.text or "redirect" in r.text.lower()
    # an unknown client: the same
    rp = RP(disco, "tb_nobody", "x")
    r = browser.http.get(rp.auth_url(), allow_redirects=False)
    assert r.status_code in (400, 401) and "Location" not in r.headers
    # a redirect URI that only shares a prefix with the registered one
    rp = RP(disco, cid, secret, redirect_uri=REDIRECT + "/../x")
    r = browser.http.get(rp.auth_url(), allow_redirects=False)
    assert r.status_code == 400 and "Location" not in r.headers


def test_plain_pkce_refused_and_public_client_needs_pkce(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True)
    assert browser.login().status_code == 302
    rp = RP(disco, cid, secret, code_challenge_method=None)
    verifier = secrets.token_urlsafe(48)
    url, state = rp.oauth.create_authorization_url(disco["authorization_endpoint"], nonce="n-plain",
                                                   code_challenge=verifier, code_challenge_method="plain")
    step = browser.walk(url)
    assert step.kind == "callback"
    assert step.params["error"] == "invalid_request" and step.params["state"] == state
    assert "code" not in step.params
    # a challenge with no method means plain (RFC 7636 §4.3): refused as well
    url, state = rp.oauth.create_authorization_url(disco["authorization_endpoint"], nonce="n-plain2",
                                                   code_challenge=verifier)
    step = browser.walk(url)
    assert step.params["error"] == "invalid_request" and step.params["state"] == state

    pub, _ = make_client(first_party=True, token_endpoint_auth_method="none",
                         grant_types=["authorization_code", "refresh_token"])
    plain = OAuth2Session(pub, None, scope="openid", redirect_uri=REDIRECT)  # no PKCE at all
    url, state = plain.create_authorization_url(disco["authorization_endpoint"], nonce="n-pub")
    step = browser.walk(url)
    assert step.kind == "callback"
    assert step.params["error"] == "invalid_request" and step.params["state"] == state
    assert "code" not in step.params


def test_prompt_none(disco, browser, citizen, make_client):
    first, fs = make_client(first_party=True)
    third, ts = make_client(first_party=False)
    # no session: login_required, back at the client with its state
    rp = RP(disco, first, fs)
    step = browser.walk(rp.auth_url(prompt="none"))
    assert step.kind == "callback" and step.seen == []
    assert step.params["error"] == "login_required" and step.params["state"] == rp.state
    # a session but no consent for this system: consent_required
    assert browser.login().status_code == 302
    rp3 = RP(disco, third, ts)
    step = browser.walk(rp3.auth_url(prompt="none"))
    assert step.kind == "callback" and step.seen == []
    assert step.params["error"] == "consent_required" and step.params["state"] == rp3.state
    # session and consent: a code, silently
    rp3.login(browser)
    step = browser.walk(rp3.auth_url(prompt="none"))
    assert step.kind == "callback" and step.seen == [] and "code" in step.params
    rp3.exchange(step.url)


def test_prompt_login_forces_the_form(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True)
    rp = RP(disco, cid, secret)
    _, first = rp.login(browser)
    step = browser.walk(rp.auth_url(prompt="login"))
    assert step.kind == "login", "prompt=login must show the log-in form even with a session"
    step = browser.submit_login(step)
    assert step.kind == "callback" and step.seen == ["login"]
    token = rp.exchange(step.url)
    second = validate_id_token(token["id_token"], disco=disco, client_id=cid, nonce=rp.nonce,
                               access_token=token["access_token"])
    # forced re-authentication keeps the SSO session (the other systems stay signed in)
    assert second["sid"] == first["sid"], "a log-in again by the same person keeps the session"
    assert second["auth_time"] >= first["auth_time"] and second["sub"] == first["sub"]


@pytest.mark.parametrize("max_age", ["0", "1"])
def test_max_age_forces_relogin(disco, browser, citizen, make_client, max_age):
    from datetime import timedelta

    from people.models import LoginSession
    from tongban.extensions import db

    cid, secret = make_client(first_party=True)
    rp = RP(disco, cid, secret)
    _, first = rp.login(browser)
    # the log-in happened a while ago (moved back rather than waiting)
    row = db.session.execute(db.select(LoginSession).where(LoginSession.sid == first["sid"])).scalar_one()
    row.auth_time -= timedelta(seconds=30)
    db.session.commit()
    step = browser.walk(rp.auth_url(max_age=max_age))
    assert step.kind == "login"
    step = browser.submit_login(step)
    assert step.kind == "callback", f"after logging in again the flow continues ({step.kind})"
    token = rp.exchange(step.url)
    claims = validate_id_token(token["id_token"], disco=disco, client_id=cid, nonce=rp.nonce,
                               access_token=token["access_token"], max_age=int(max_age))
    assert claims["auth_time"] > first["auth_time"] - 30 and claims["sid"] == first["sid"]
    # a generous max_age does not ask again
    step = browser.walk(rp.auth_url(max_age="3600"))
    assert step.kind == "callback" and step.seen == []


def test_max_age_zero_continues_after_a_slow_login(disco, browser, citizen, make_client):
    """The log-in made in answer to max_age=0 satisfies it even when a clock second (or more)
    passes between the log-in and the authorization request that continues."""
    from datetime import timedelta

    from people.models import LoginSession
    from tongban.extensions import db

    cid, secret = make_client(first_party=True)
    rp = RP(disco, cid, secret)
    step = browser.walk(rp.auth_url(max_age="0"))
    assert step.kind == "login"
    posted = browser._post_login(step.resp, CITIZEN_ID, PASSWORD, follow=False)
    assert posted.status_code == 302
    for row in db.session.execute(db.select(LoginSession)).scalars():
        row.auth_time -= timedelta(seconds=3)
    db.session.commit()
    step = browser.walk(posted.headers["Location"])
    assert step.kind == "callback", ("the fresh log-in must not be asked for again", step.resp.text[:800])
    token = rp.exchange(step.url)
    validate_id_token(token["id_token"], disco=disco, client_id=cid, nonce=rp.nonce,
                      access_token=token["access_token"], max_age=5)
    # but the next request with max_age=0 asks again
    assert browser.walk(rp.auth_url(max_age="0")).kind == "login"


def test_login_hint_prefills_the_login_field(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True)
    rp = RP(disco, cid, secret)
    step = browser.walk(rp.auth_url(login_hint="13800138000"))
    assert step.kind == "login"
    assert _input_value(step.resp.text, "login") == "13800138000"
    step = browser.submit_login(step, login="13800138000")
    assert step.kind == "callback" and "code" in step.params


# ---------------------------------------------------------------- consent


def test_consent_remembered_per_client_and_scope(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=False)
    other, osecret = make_client(first_party=False, name="另一系统")
    assert browser.login().status_code == 302
    rp = RP(disco, cid, secret, scope="openid profile")
    step = browser.walk(rp.auth_url())
    assert step.kind == "consent"
    assert ("profile" in step.resp.text and "同意" in step.resp.text) or "Approve" in step.resp.text
    step = browser.submit_consent(step)
    assert step.kind == "callback" and "code" in step.params
    rp.exchange(step.url)
    # same scopes: remembered
    step = browser.walk(rp.auth_url())
    assert step.kind == "callback" and step.seen == []
    rp.exchange(step.url)
    # prompt=consent: asked again even though remembered
    step = browser.walk(rp.auth_url(prompt="consent"))
    assert step.kind == "consent"
    step = browser.submit_consent(step)
    assert step.kind == "callback" and "code" in step.params
    # a new scope: asked again
    rp_phone = RP(disco, cid, secret, scope="openid profile phone")
    step = browser.walk(rp_phone.auth_url())
    assert step.kind == "consent" and "phone" in step.resp.text
    token = rp_phone.exchange(browser.submit_consent(step).url)
    assert set(token["scope"].split()) == {"openid", "profile", "phone"}
    # another system: its own consent
    rp_other = RP(disco, other, osecret, scope="openid profile")
    assert browser.walk(rp_other.auth_url()).kind == "consent"


def test_consent_denied_is_access_denied(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=False)
    rp = RP(disco, cid, secret)
    step = browser.walk(rp.auth_url())
    step = browser.submit_login(step)
    assert step.kind == "consent"
    step = browser.submit_consent(step, "deny")
    assert step.kind == "callback"
    assert step.params["error"] == "access_denied" and step.params["state"] == rp.state
    assert "code" not in step.params
    # nothing remembered
    assert browser.walk(rp.auth_url()).kind == "consent"


# ---------------------------------------------------------------- token endpoint errors


def test_reused_code_is_refused_and_revokes_its_tokens(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True)
    rp = RP(disco, cid, secret)
    step = browser.authorize(rp.auth_url())
    code = step.params["code"]
    first = rp.token_post(grant_type="authorization_code", code=code, redirect_uri=REDIRECT,
                          code_verifier=rp.verifier)
    assert first.status_code == 200
    tok = first.json()
    assert rp.userinfo(tok["access_token"]).status_code == 200
    again = rp.token_post(grant_type="authorization_code", code=code, redirect_uri=REDIRECT,
                          code_verifier=rp.verifier)
    _error(again, 400, "invalid_grant")
    assert "id_token" not in again.json()
    r = rp.userinfo(tok["access_token"])
    assert r.status_code == 401 and "invalid_token" in r.headers.get("WWW-Authenticate", "")
    _error(rp.refresh(tok["refresh_token"]), 400, "invalid_grant")
    assert rp.introspect(tok["access_token"]) == {"active": False}


def test_pkce_verifier_checked(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True)
    rp = RP(disco, cid, secret)
    assert browser.login().status_code == 302
    step = browser.walk(rp.auth_url())
    code = step.params["code"]
    wrong = rp.token_post(grant_type="authorization_code", code=code, redirect_uri=REDIRECT,
                          code_verifier=secrets.token_urlsafe(48))
    _error(wrong, 400, "invalid_grant")
    step = browser.walk(rp.auth_url())
    missing = rp.token_post(grant_type="authorization_code", code=step.params["code"], redirect_uri=REDIRECT)
    assert missing.status_code == 400 and missing.json()["error"] in ("invalid_request", "invalid_grant")
    assert "access_token" not in missing.json()
    # a code issued without a challenge is refused a verifier, and codes are bound to their client
    other, osecret = make_client(first_party=True)
    step = browser.walk(rp.auth_url())
    stolen = requests.post(disco["token_endpoint"], data={
        "grant_type": "authorization_code", "code": step.params["code"], "redirect_uri": REDIRECT,
        "code_verifier": rp.verifier}, auth=(other, osecret))
    _error(stolen, 400, "invalid_grant")
    # and a redirect_uri differing from the authorization request's is refused
    step = browser.walk(rp.auth_url())
    r = rp.token_post(grant_type="authorization_code", code=step.params["code"],
                      redirect_uri=REDIRECT + "x", code_verifier=rp.verifier)
    _error(r, 400, "invalid_grant")


def test_public_client_missing_verifier(disco, browser, citizen, make_client):
    pub, _ = make_client(first_party=True, token_endpoint_auth_method="none",
                         grant_types=["authorization_code", "refresh_token"])
    rp = RP(disco, pub, None)
    step = browser.authorize(rp.auth_url())
    r = rp.token_post(grant_type="authorization_code", code=step.params["code"], redirect_uri=REDIRECT)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = rp.token_post(grant_type="authorization_code", code=step.params["code"], redirect_uri=REDIRECT,
                      code_verifier=rp.verifier)
    assert r.status_code == 200 and r.json()["id_token"]


def test_reused_refresh_token_revokes_the_family(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True)
    rp = RP(disco, cid, secret)
    t0, _ = rp.login(browser)
    r1 = rp.refresh(t0["refresh_token"])
    assert r1.status_code == 200
    t1 = r1.json()
    r2 = rp.refresh(t1["refresh_token"])
    assert r2.status_code == 200
    t2 = r2.json()
    # an attacker replays the first one
    _error(rp.refresh(t0["refresh_token"]), 400, "invalid_grant")
    # the whole family is dead: the newest refresh token and the newest access token
    _error(rp.refresh(t2["refresh_token"]), 400, "invalid_grant")
    assert rp.userinfo(t2["access_token"]).status_code == 401
    assert rp.introspect(t2["refresh_token"], token_type_hint="refresh_token") == {"active": False}
    assert rp.introspect(t2["access_token"]) == {"active": False}
    # another family of the same user and system is untouched
    t3, _ = rp.login(browser)
    assert rp.refresh(t3["refresh_token"]).status_code == 200


def test_wrong_client_secret(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True)
    rp = RP(disco, cid, secret)
    step = browser.authorize(rp.auth_url())
    bad = requests.post(disco["token_endpoint"], data={
        "grant_type": "authorization_code", "code": step.params["code"], "redirect_uri": REDIRECT,
        "code_verifier": rp.verifier}, auth=(cid, secret + "x"))
    _error(bad, 401, "invalid_client")
    assert "WWW-Authenticate" in bad.headers
    _error(requests.post(disco["token_endpoint"], data={"grant_type": "client_credentials"},
                         auth=(cid, "")), 401, "invalid_client")
    _error(requests.post(disco["token_endpoint"], data={"grant_type": "client_credentials"},
                         auth=("tb_unknown", secret)), 401, "invalid_client")
    # the code was not burnt by the failed attempt's client: the right secret still works
    ok = rp.token_post(grant_type="authorization_code", code=step.params["code"], redirect_uri=REDIRECT,
                       code_verifier=rp.verifier)
    assert ok.status_code == 200


# ---------------------------------------------------------------- revocation & introspection


def test_revoked_access_token(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True)
    rp = RP(disco, cid, secret)
    token, _ = rp.login(browser)
    info = rp.introspect(token["access_token"])
    assert info["active"] is True and info["client_id"] == cid
    r = rp.revoke(token["access_token"], token_type_hint="access_token")
    assert r.status_code == 200
    r = rp.userinfo(token["access_token"])
    assert r.status_code == 401 and "invalid_token" in r.headers["WWW-Authenticate"]
    assert rp.introspect(token["access_token"]) == {"active": False}
    # revoking again, or an unknown token, is still 200 (RFC 7009 §2.2)
    assert rp.revoke(token["access_token"]).status_code == 200
    assert rp.revoke("not-a-token").status_code == 200
    # revocation authenticates the client
    r = requests.post(disco["revocation_endpoint"], data={"token": token["refresh_token"]},
                      auth=(cid, "wrong"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # the refresh token is separate and still works
    assert rp.refresh(token["refresh_token"]).status_code == 200


def test_revoked_refresh_token(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True)
    other, osecret = make_client(first_party=True)
    rp = RP(disco, cid, secret)
    token, _ = rp.login(browser)
    assert rp.introspect(token["refresh_token"], token_type_hint="refresh_token")["active"] is True
    # another system cannot revoke it
    r = requests.post(disco["revocation_endpoint"], data={"token": token["refresh_token"]},
                      auth=(other, osecret))
    assert r.status_code in (200, 400)
    assert rp.introspect(token["refresh_token"], token_type_hint="refresh_token")["active"] is True
    assert rp.revoke(token["refresh_token"], token_type_hint="refresh_token").status_code == 200
    _error(rp.refresh(token["refresh_token"]), 400, "invalid_grant")
    assert rp.introspect(token["refresh_token"], token_type_hint="refresh_token") == {"active": False}


# ---------------------------------------------------------------- algorithms & claims


def test_id_token_algorithms(disco, browser, citizen, make_client):
    es, es_secret = make_client(first_party=True, id_token_signed_response_alg="ES256")
    rs, rs_secret = make_client(first_party=True)
    rp_es, rp_rs = RP(disco, es, es_secret), RP(disco, rs, rs_secret)
    t_es, c_es = rp_es.login(browser, _alg="ES256")
    assert extract_compact(t_es["id_token"].encode()).headers()["alg"] == "ES256"
    t_rs, c_rs = rp_rs.login(browser)
    assert extract_compact(t_rs["id_token"].encode()).headers()["alg"] == "RS256"
    assert c_es["sub"] == c_rs["sub"]
    assert {"RS256", "ES256"} <= set(disco["id_token_signing_alg_values_supported"])
    # the token signed with the other algorithm does not validate under the wrong one
    with pytest.raises(Exception):
        jwt.decode(t_es["id_token"], jwks(disco), algorithms=["RS256"])


def test_scopes_release_claims(disco, browser, citizen, make_client):
    basic, bs = make_client(first_party=True, scopes=["openid"])
    rp = RP(disco, basic, bs, scope="openid")
    token, claims = rp.login(browser)
    info = rp.userinfo(token["access_token"]).json()
    for c in ("name", "gender", "birthdate", "phone_number", "id_number"):
        assert c not in claims and c not in info
    assert info["sub"] == claims["sub"]

    prof, ps = make_client(first_party=True, scopes=["openid", "profile", "phone"])
    rp = RP(disco, prof, ps, scope="openid profile phone id_number")  # id_number not registered
    token, claims = rp.login(browser)
    info = rp.userinfo(token["access_token"]).json()
    for src in (claims, info):
        assert src["name"] == "张三" and src["gender"] == "female" and src["birthdate"] == "1949-12-31"
        assert src["phone_number"] == "+8613800138000"
        assert "id_number" not in src and "id_number_verified" not in src
    assert "id_number" not in token["scope"].split()

    full, fs = make_client(first_party=True, scopes=["openid", "profile", "id_number"])
    rp = RP(disco, full, fs, scope="openid id_number")
    token, claims = rp.login(browser)
    info = rp.userinfo(token["access_token"]).json()
    assert claims["id_number"] == CITIZEN_ID and info["id_number"] == CITIZEN_ID
    assert "name" not in info and "phone_number" not in info


# ---------------------------------------------------------------- client credentials & the register


def test_client_credentials_and_introspection(disco, browser, citizen, make_client):
    from idp import clients as registry
    from tongban.extensions import db

    svc, ssecret = make_client(scopes=["openid", "profile"], grant_types=["client_credentials"])
    rs, rsecret = make_client(introspection_allowed=True, grant_types=["client_credentials"])
    nosy, nsecret = make_client(grant_types=["client_credentials"])
    r = requests.post(disco["token_endpoint"], data={"grant_type": "client_credentials", "scope": "profile"},
                      auth=(svc, ssecret))
    assert r.status_code == 200 and "no-store" in r.headers["Cache-Control"]
    body = r.json()
    assert "refresh_token" not in body and "id_token" not in body
    tok = jwt.decode(body["access_token"], jwks(disco), algorithms=["ES256"])
    assert tok.header["alg"] == "ES256" and tok.header["typ"] == "at+jwt"
    c = tok.claims
    assert c["sub"] == svc and c["client_id"] == svc and c["aud"] == svc and c["iss"] == disco["issuer"]
    assert c["jti"] and c["exp"] > c["iat"] and c["scope"] == "profile"
    # a resource server allowed to introspect
    info = requests.post(disco["introspection_endpoint"], data={"token": body["access_token"]},
                         auth=(rs, rsecret)).json()
    assert info["active"] is True and info["sub"] == svc and info["client_id"] == svc
    assert info["scope"] == "profile" and info["jti"] == c["jti"] and info["exp"] == c["exp"]
    # a system not allowed to introspect others' tokens learns nothing
    info = requests.post(disco["introspection_endpoint"], data={"token": body["access_token"]},
                         auth=(nosy, nsecret)).json()
    assert info == {"active": False}
    # wrong credentials at introspection: 401
    r = requests.post(disco["introspection_endpoint"], data={"token": body["access_token"]},
                      auth=(rs, "wrong"))
    assert r.status_code == 401
    # a client-credentials token carries no user: userinfo refuses it
    r = requests.get(disco["userinfo_endpoint"], headers=bearer(body["access_token"]))
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    r = requests.post(disco["token_endpoint"], data={"grant_type": "client_credentials", "scope": "openid"},
                      auth=(svc, ssecret))
    r = requests.get(disco["userinfo_endpoint"], headers=bearer(r.json()["access_token"]))
    assert r.status_code == 401 and "invalid_token" in r.headers["WWW-Authenticate"]

    # disabling the system ends its tokens at once
    app_rp = RP(disco, *make_client(first_party=True))
    user_token, _ = app_rp.login(browser)
    assert app_rp.userinfo(user_token["access_token"]).status_code == 200
    registry.set_enabled(app_rp.client_id, False)
    registry.set_enabled(svc, False)
    db.session.commit()
    assert app_rp.userinfo(user_token["access_token"]).status_code == 401
    info = requests.post(disco["introspection_endpoint"], data={"token": body["access_token"]},
                         auth=(rs, rsecret)).json()
    assert info == {"active": False}
    info = requests.post(disco["introspection_endpoint"], data={"token": user_token["access_token"]},
                         auth=(rs, rsecret)).json()
    assert info == {"active": False}
    _error(app_rp.refresh(user_token["refresh_token"]), 401, "invalid_client")
    registry.set_enabled(svc, True)
    db.session.commit()

    # rotating the secret: the old one fails, the new one works
    new_secret = registry.rotate_secret(svc)
    db.session.commit()
    _error(requests.post(disco["token_endpoint"], data={"grant_type": "client_credentials"},
                         auth=(svc, ssecret)), 401, "invalid_client")
    r = requests.post(disco["token_endpoint"], data={"grant_type": "client_credentials"},
                      auth=(svc, new_secret))
    assert r.status_code == 200
    # a grant the system is not registered for
    _error(requests.post(disco["token_endpoint"], data={"grant_type": "client_credentials"},
                         auth=(app_rp.client_id, app_rp.secret)), 401, "invalid_client")


def test_client_credentials_not_registered(disco, make_client):
    cid, secret = make_client(grant_types=["authorization_code"])
    r = requests.post(disco["token_endpoint"], data={"grant_type": "client_credentials"}, auth=(cid, secret))
    _error(r, 400, "unauthorized_client")


# ---------------------------------------------------------------- discovery


def test_discovery_lists_endpoints_that_answer(disco, live_server):
    assert disco["issuer"] == live_server
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
                 "revocation_endpoint", "introspection_endpoint", "end_session_endpoint"):
        assert disco[name].startswith(live_server + "/"), name
    assert "S256" in disco["code_challenge_methods_supported"]
    assert "plain" not in disco["code_challenge_methods_supported"]
    assert disco["response_types_supported"] == ["code"]
    keys = requests.get(disco["jwks_uri"])
    assert keys.status_code == 200 and keys.json()["keys"]
    assert all("d" not in k for k in keys.json()["keys"]), "private key material in the JWKS"
    r = requests.get(disco["authorization_endpoint"], allow_redirects=False)
    assert r.status_code == 400 and "Location" not in r.headers
    r = requests.post(disco["token_endpoint"], data={"grant_type": "authorization_code"})
    assert r.status_code in (400, 401) and "error" in r.json()
    r = requests.get(disco["userinfo_endpoint"])
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].lower().startswith("bearer")
    for ep in ("revocation_endpoint", "introspection_endpoint"):
        r = requests.post(disco[ep], data={"token": "x"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", ep
    r = requests.get(disco["end_session_endpoint"], allow_redirects=False)
    assert r.status_code == 200
    assert requests.get(f"{live_server}/.well-known/oauth-authorization-server").json() == disco


# ---------------------------------------------------------------- logout and offline access


def test_logout_ends_session_bound_refresh_tokens_not_offline_ones(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True, post_logout_redirect_uris=[LOGOUT_REDIRECT])
    online = RP(disco, cid, secret, scope="openid profile")
    offline = RP(disco, cid, secret, scope="openid profile offline_access")
    t_on, c_on = online.login(browser)
    t_off, c_off = offline.login(browser)
    assert c_on["sid"] == c_off["sid"]
    # unregistered post-logout URI: logged out, but never redirected there
    unreg = requests.post(disco["end_session_endpoint"], data={
        "id_token_hint": t_on["id_token"], "post_logout_redirect_uri": "http://127.0.0.1:9/elsewhere",
        "state": "s1"}, allow_redirects=False)
    assert unreg.status_code == 200 and "Location" not in unreg.headers
    # the browser logs out with the hint and the registered URI: exact match, state echoed
    r = browser.http.post(disco["end_session_endpoint"], data={
        "id_token_hint": t_on["id_token"], "post_logout_redirect_uri": LOGOUT_REDIRECT,
        "state": "af0ifjsldkj"}, allow_redirects=False)
    assert r.status_code in (302, 303)
    assert r.headers["Location"] == LOGOUT_REDIRECT + "?state=af0ifjsldkj"
    # the session is over: prompt=none now needs a log-in
    step = browser.walk(online.auth_url(prompt="none"))
    assert step.params["error"] == "login_required"
    # the session-bound refresh token died with it, the offline one did not
    _error(online.refresh(t_on["refresh_token"]), 400, "invalid_grant")
    r = offline.refresh(t_off["refresh_token"])
    assert r.status_code == 200
    assert offline.userinfo(r.json()["access_token"]).status_code == 200
    # a near-miss post-logout URI is not followed either
    b2 = Browser(browser.base)
    t2, _ = online.login(b2)
    r = b2.http.post(disco["end_session_endpoint"], data={
        "id_token_hint": t2["id_token"], "post_logout_redirect_uri": LOGOUT_REDIRECT + "/", "state": "x"},
        allow_redirects=False)
    assert r.status_code == 200 and "Location" not in r.headers
    assert browser.login(CITIZEN_ID, PASSWORD).status_code == 302


def test_logout_with_forged_hint_is_refused(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True, post_logout_redirect_uris=[LOGOUT_REDIRECT])
    rp = RP(disco, cid, secret)
    token, _ = rp.login(browser)
    head, body, sig = token["id_token"].split(".")
    forged = f"{head}.{body}.{sig[:-4]}AAAA"
    r = browser.http.post(disco["end_session_endpoint"], data={
        "id_token_hint": forged, "post_logout_redirect_uri": LOGOUT_REDIRECT}, allow_redirects=False)
    assert r.status_code == 400 and "Location" not in r.headers
    # still logged in
    step = browser.walk(rp.auth_url(prompt="none"))
    assert "code" in step.params
    assert create_s256_code_challenge("x")  # the helper is importable (PKCE as the client computes it)
