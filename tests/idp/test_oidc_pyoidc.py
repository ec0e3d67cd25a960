"""The OpenID Connect provider over real HTTP, driven by pyoidc (``oic``): a second, independent
relying-party implementation that fetches the discovery document and the JWKS itself and
verifies every ID token (signature, iss, aud, exp, nonce, at_hash) on its own."""

from __future__ import annotations

import json

import pytest
import requests
from oic import rndstr
from oic.oauth2.message import ErrorResponse, TokenErrorResponse
from oic.oic import Client
from oic.oic.message import AccessTokenResponse, AuthorizationResponse, OpenIDSchema, RegistrationResponse
from oic.utils.authn.client import CLIENT_AUTHN_METHOD
from oic.utils.settings import OicClientSettings

from tests.conftest import CITIZEN_ID
from tests.idp.helpers import LOGOUT_REDIRECT, REDIRECT, REDIRECT_2, Browser, bearer, validate_id_token


@pytest.fixture
def browser(live_server):
    return Browser(live_server)


class RP:
    """A pyoidc relying party registered statically (client id and secret from the register)."""

    def __init__(self, issuer, client_id, secret, redirect_uri=REDIRECT, scope="openid profile",
                 auth_method="client_secret_basic", alg="RS256"):
        self.client = Client(client_authn_method=CLIENT_AUTHN_METHOD,
                             settings=OicClientSettings(verify_ssl=False))
        self.provider = self.client.provider_config(issuer)
        info = {"client_id": client_id, "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": auth_method, "id_token_signed_response_alg": alg}
        if secret:
            info["client_secret"] = secret
        self.client.store_registration_info(RegistrationResponse(**info))
        self.client.redirect_uris = [redirect_uri]
        self.scope, self.auth_method, self.alg = scope, auth_method, alg

    @property
    def disco(self) -> dict:
        return self.provider.to_dict()

    def auth_url(self, **extra) -> str:
        self.state, self.nonce = rndstr(24), rndstr(24)
        pkce, self.verifier = self.client.add_code_challenge()
        args = {"client_id": self.client.client_id, "response_type": "code", "scope": self.scope,
                "nonce": self.nonce, "state": self.state, "redirect_uri": self.client.redirect_uris[0], **pkce, **extra}
        req = self.client.construct_AuthorizationRequest(request_args=args)
        self.client.state2nonce[self.state] = self.nonce
        return req.request(self.client.authorization_endpoint)

    def parse_callback(self, url: str) -> AuthorizationResponse | ErrorResponse:
        query = url.split("?", 1)[1]
        return self.client.parse_response(AuthorizationResponse, info=query, sformat="urlencoded")

    def exchange(self, code: str, *, verifier: str | None = None):
        args = {"code": code, "redirect_uri": self.client.redirect_uris[0],
                "code_verifier": verifier if verifier is not None else self.verifier}
        if verifier == "":
            del args["code_verifier"]
        if self.auth_method == "none":  # a public client: identified, not authenticated
            args["client_id"] = self.client.client_id
        return self.client.do_access_token_request(
            state=self.state, request_args=args,
            authn_method="" if self.auth_method == "none" else self.auth_method)

    def login(self, browser: Browser, **extra) -> AccessTokenResponse:
        step = browser.authorize(self.auth_url(**extra))
        resp = self.parse_callback(step.url)
        assert isinstance(resp, AuthorizationResponse), resp
        assert resp["state"] == self.state and resp["iss"] == self.provider["issuer"]
        token = self.exchange(resp["code"])
        assert isinstance(token, AccessTokenResponse), token.to_dict()
        # pyoidc verified the ID token when parsing the response (signature, iss, aud, exp,
        # at_hash) and compared the nonce; check what it accepted, and validate independently
        idt = token["id_token"]
        assert idt.jws_header["alg"] == self.alg
        assert idt["nonce"] == self.nonce and self.client.client_id in idt["aud"]
        assert idt["iss"] == self.provider["issuer"]
        validate_id_token(idt.jwt, disco=self.disco, client_id=self.client.client_id, nonce=self.nonce,
                          access_token=token["access_token"], alg=self.alg)
        self.raw_id_token = idt.jwt
        return token

    def userinfo(self, method="GET"):
        return self.client.do_user_info_request(state=self.state, method=method)


def test_code_flow_userinfo_refresh(live_server, browser, citizen, make_client):
    cid, secret = make_client(first_party=True)
    rp = RP(live_server, cid, secret, scope="openid profile phone")
    assert rp.provider["issuer"] == live_server
    token = rp.login(browser)
    idt = token["id_token"]
    assert idt["sub"] and idt["sid"] and idt["auth_time"] and idt["azp"] == cid
    assert idt["name"] == "张三" and idt["birthdate"] == "1949-12-31" and idt["gender"] == "female"
    assert "id_number" not in idt.to_dict()
    for method in ("GET", "POST"):
        info = rp.userinfo(method)
        assert isinstance(info, OpenIDSchema), info
        assert info["sub"] == idt["sub"] and info["name"] == "张三"
        assert info["phone_number"] == "+8613800138000", method
    old_refresh = token["refresh_token"]
    new = rp.client.do_access_token_refresh(state=rp.state, authn_method="client_secret_basic")
    assert isinstance(new, AccessTokenResponse), new.to_dict()
    assert new["refresh_token"] != old_refresh and new["access_token"] != token["access_token"]
    info = rp.userinfo()
    assert info["sub"] == idt["sub"]
    # the rotated-out refresh token is refused, and its reuse kills the family
    r = requests.post(rp.provider["token_endpoint"], data={"grant_type": "refresh_token",
                                                           "refresh_token": old_refresh},
                      auth=(cid, secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    again = rp.client.do_access_token_refresh(state=rp.state, authn_method="client_secret_basic")
    assert isinstance(again, TokenErrorResponse) and again["error"] == "invalid_grant"


def test_sso_between_two_pyoidc_systems(live_server, browser, citizen, make_client):
    a, sa = make_client(first_party=True)
    b, sb = make_client(first_party=False, redirect_uris=[REDIRECT_2])
    rp_a, rp_b = RP(live_server, a, sa), RP(live_server, b, sb, redirect_uri=REDIRECT_2)
    ta = rp_a.login(browser)
    step = browser.walk(rp_b.auth_url())
    assert step.kind == "consent" and "login" not in step.seen, "no password asked the second time"
    step = browser.submit_consent(step)
    assert step.kind == "callback" and step.url.startswith(REDIRECT_2)
    resp = rp_b.parse_callback(step.url)
    tb = rp_b.exchange(resp["code"])
    assert isinstance(tb, AccessTokenResponse), tb.to_dict()
    assert tb["id_token"]["sub"] == ta["id_token"]["sub"] and tb["id_token"]["sid"] == ta["id_token"]["sid"]
    assert tb["id_token"]["aud"] == [b]


def test_es256_id_token(live_server, browser, citizen, make_client):
    cid, secret = make_client(first_party=True, id_token_signed_response_alg="ES256")
    rp = RP(live_server, cid, secret, alg="ES256")
    token = rp.login(browser)
    assert token["id_token"].jws_header["alg"] == "ES256"
    # pyoidc checks the signature against the JWKS: a tampered token is refused
    head, body, sig = rp.raw_id_token.split(".")
    forged = json.dumps({"access_token": token["access_token"], "token_type": "Bearer",
                         "id_token": f"{head}.{body}.{sig[:-6]}AAAAAA"})
    with pytest.raises(Exception) as refused:
        rp.client.parse_response(AccessTokenResponse, info=forged, sformat="json", state=rp.state)
    assert type(refused.value).__name__ in ("BadSignature", "VerificationError", "NoSuitableSigningKeys"), \
        repr(refused.value)
    rs, rsecret = make_client(first_party=True)
    token = RP(live_server, rs, rsecret).login(browser)
    assert token["id_token"].jws_header["alg"] == "RS256"


def test_id_number_scope_only_when_registered(live_server, browser, citizen, make_client):
    plain, ps = make_client(first_party=True)  # openid profile phone offline_access
    rp = RP(live_server, plain, ps, scope="openid profile id_number")
    token = rp.login(browser)
    assert "id_number" not in token["id_token"].to_dict()
    assert "id_number" not in rp.userinfo().to_dict()
    assert "id_number" not in token["scope"]
    allowed, als = make_client(first_party=True, scopes=["openid", "profile", "id_number"])
    rp = RP(live_server, allowed, als, scope="openid profile id_number")
    token = rp.login(browser)
    assert token["id_token"]["id_number"] == CITIZEN_ID
    assert rp.userinfo()["id_number"] == CITIZEN_ID


def test_errors_seen_by_pyoidc(live_server, browser, citizen, make_client):
    cid, secret = make_client(first_party=True)
    rp = RP(live_server, cid, secret)
    step = browser.authorize(rp.auth_url())
    code = rp.parse_callback(step.url)["code"]
    # wrong PKCE verifier: invalid_grant
    bad = rp.exchange(code, verifier=rndstr(64))
    assert isinstance(bad, TokenErrorResponse) and bad["error"] == "invalid_grant"
    # wrong secret: invalid_client (HTTP 401)
    r = requests.post(rp.provider["token_endpoint"], data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": rp.verifier}, auth=(cid, secret + "x"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # the right request works once...
    ok = rp.exchange(code)
    assert isinstance(ok, AccessTokenResponse), ok.to_dict()
    assert isinstance(rp.userinfo(), OpenIDSchema)
    # ...and a replay is refused and revokes what the code gave
    replay = rp.exchange(code)
    assert isinstance(replay, TokenErrorResponse) and replay["error"] == "invalid_grant"
    r = requests.get(rp.provider["userinfo_endpoint"], headers=bearer(ok["access_token"]))
    assert r.status_code == 401
    # prompt=none with the session but for a system needing consent: consent_required
    third, ts = make_client(first_party=False)
    rp3 = RP(live_server, third, ts)
    step = browser.walk(rp3.auth_url(prompt="none"))
    err = rp3.parse_callback(step.url)
    assert isinstance(err, ErrorResponse) and err["error"] == "consent_required"
    assert err["state"] == rp3.state
    # an unregistered redirect URI: an error page, never a redirect
    r = browser.http.get(RP(live_server, cid, secret, redirect_uri="http://127.0.0.1:9/other").auth_url(),
                         allow_redirects=False)
    assert r.status_code == 400 and "Location" not in r.headers


def test_client_secret_post_and_public_client(live_server, browser, citizen, make_client):
    cid, secret = make_client(first_party=True, token_endpoint_auth_method="client_secret_post")
    token = RP(live_server, cid, secret, auth_method="client_secret_post").login(browser)
    assert token["id_token"]["aud"] == [cid]
    pub, _ = make_client(first_party=True, token_endpoint_auth_method="none",
                         grant_types=["authorization_code", "refresh_token"])
    rp = RP(live_server, pub, None, auth_method="none")
    rp.client.client_secret = ""
    token = rp.login(browser)
    assert token["id_token"]["aud"] == [pub]


def test_logout_with_pyoidc_id_token(live_server, browser, citizen, make_client):
    cid, secret = make_client(first_party=True, post_logout_redirect_uris=[LOGOUT_REDIRECT])
    rp = RP(live_server, cid, secret, scope="openid profile")
    token = rp.login(browser)
    offline = RP(live_server, cid, secret, scope="openid offline_access")
    t_off = offline.login(browser)
    r = browser.http.get(rp.provider["end_session_endpoint"], params={
        "id_token_hint": rp.raw_id_token, "post_logout_redirect_uri": LOGOUT_REDIRECT, "state": "xyz"},
        allow_redirects=False)
    assert r.status_code in (302, 303) and r.headers["Location"] == LOGOUT_REDIRECT + "?state=xyz"
    dead = rp.client.do_access_token_refresh(state=rp.state, authn_method="client_secret_basic")
    assert isinstance(dead, TokenErrorResponse) and dead["error"] == "invalid_grant"
    alive = offline.client.do_access_token_refresh(state=offline.state, authn_method="client_secret_basic")
    assert isinstance(alive, AccessTokenResponse), alive.to_dict()
    assert token["refresh_token"] != t_off["refresh_token"]
