"""What a strict relying party (openid-client, a security reviewer) checks of every answer:
``iss`` and ``state`` on every authorization response (RFC 9207, RFC 6749 §4.1.2.1), token hints
that only order the search (RFC 7009 §2.1, RFC 7662 §2.1), POSTed authorization requests
(OIDC Core §3.1.2.1), ``id_token_hint`` and ``max_age=0``, re-authentication that keeps the SSO
session, request objects and response modes refused, discovery that tells the truth. Driven by
pyoidc (``oic``) and Authlib's client over real HTTP."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
from oic.oauth2.message import ErrorResponse
from oic.oic.message import AuthorizationResponse

from tests.conftest import CITIZEN_ID, PASSWORD
from tests.idp.helpers import REDIRECT, REDIRECT_2, Browser, bearer, validate_id_token
from tests.idp.test_oidc_authlib import RP
from tests.idp.test_oidc_pyoidc import RP as PyoidcRP

OTHER_ID = "110105198001010016"


@pytest.fixture
def disco(live_server):
    return requests.get(f"{live_server}/.well-known/openid-configuration").json()


@pytest.fixture
def browser(live_server):
    return Browser(live_server)


def _error_callback(rp: PyoidcRP, step, error: str, *, parse: bool = True):
    """pyoidc parses the callback as an error response; it carries ``state`` and, exactly
    once, the provider's ``iss``. (``parse=False``: an error code newer than pyoidc's list.)"""
    assert step.kind == "callback", (step.kind, step.resp.text[:300] if step.resp is not None else "")
    pairs = parse_qsl(urlsplit(step.url).query)
    resp = rp.parse_callback(step.url) if parse else dict(pairs)
    if parse:
        assert isinstance(resp, ErrorResponse) and not isinstance(resp, AuthorizationResponse), resp
    assert resp["error"] == error, resp
    assert resp["state"] == rp.state
    assert [v for k, v in pairs if k == "iss"] == [rp.provider["issuer"]], step.url
    assert "code" not in dict(pairs)
    return resp


# ---------------------------------------------------------------- RFC 9207 on every error


def test_iss_and_state_on_every_authorization_error(live_server, browser, citizen, make_client):
    first, fs = make_client(first_party=True)
    third, ts = make_client(first_party=False)
    rp = PyoidcRP(live_server, first, fs)
    # no session
    _error_callback(rp, browser.walk(rp.auth_url(prompt="none")), "login_required")
    _error_callback(rp, browser.walk(rp.auth_url(prompt="none login")), "invalid_request")
    _error_callback(rp, browser.walk(rp.auth_url() + "&max_age=soon"), "invalid_request")
    _error_callback(rp, browser.walk(rp.auth_url() + "&max_age=-1"), "invalid_request")
    _error_callback(rp, browser.walk(rp.auth_url(scope="openid no_such_scope")), "invalid_scope")
    _error_callback(rp, browser.walk(rp.auth_url(response_type="token")), "unsupported_response_type")
    _error_callback(rp, browser.walk(rp.auth_url() + "&request=eyJhbGciOiJub25lIn0.e30."),
                    "request_not_supported")
    _error_callback(rp, browser.walk(rp.auth_url() + "&request_uri=https%3A%2F%2Frp.example%2Freq%2F1"),
                    "request_uri_not_supported")
    for mode in ("form_post", "fragment", "jwt", "query.jwt"):
        _error_callback(rp, browser.walk(rp.auth_url(response_mode=mode)), "invalid_request")
    # a parameter given twice (RFC 6749 §3.1) — here nonce, which Authlib does not check itself
    url = rp.auth_url() + "&nonce=second"
    _error_callback(rp, browser.walk(url), "invalid_request")
    # with a session
    assert browser.login().status_code == 302
    rp3 = PyoidcRP(live_server, third, ts)
    _error_callback(rp3, browser.walk(rp3.auth_url(prompt="none")), "consent_required")
    _error_callback(rp, browser.walk(rp.auth_url(prompt="none", acr_values="L3")), "interaction_required")
    claims = {"id_token": {"acr": {"essential": True, "values": ["L5"]}}}
    _error_callback(rp, browser.walk(rp.auth_url(claims=claims)), "unmet_authentication_requirements",
                    parse=False)
    # access_denied (consent refused) keeps one iss, not two
    step = browser.walk(rp3.auth_url())
    assert step.kind == "consent"
    _error_callback(rp3, browser.submit_consent(step, "deny"), "access_denied")
    # and a success: iss once, state echoed
    step = browser.walk(rp.auth_url(response_mode="query"))
    resp = rp.parse_callback(step.url)
    assert isinstance(resp, AuthorizationResponse) and resp["state"] == rp.state
    assert [v for k, v in parse_qsl(urlsplit(step.url).query) if k == "iss"] == [rp.provider["issuer"]]


def test_errors_for_unknown_clients_or_uris_are_never_redirected(live_server, browser, make_client):
    """The attack: use the provider as an open redirector through an error response."""
    cid, _secret = make_client(first_party=True)
    for params in ({"client_id": cid, "response_type": "token", "redirect_uri": "https://evil.example/cb"},
                   {"client_id": "tb_nobody", "response_type": "token", "redirect_uri": REDIRECT},
                   {"client_id": cid, "response_type": "code", "redirect_uri": "https://evil.example/cb",
                    "request_uri": "https://evil.example/r"},
                   [("client_id", cid), ("client_id", "tb_nobody"), ("response_type", "token"),
                    ("redirect_uri", REDIRECT)]):
        r = requests.get(f"{live_server}/oauth/authorize", params=params, allow_redirects=False)
        assert r.status_code in (400, 401), (params, r.status_code)
        assert "evil.example" not in r.headers.get("Location", "")


# ---------------------------------------------------------------- POST authorize, hints, max_age


def test_authorization_request_by_post(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=False)
    rp = RP(disco, cid, secret)
    url = rp.auth_url()
    params = dict(parse_qsl(urlsplit(url).query))
    step = browser.walk(disco["authorization_endpoint"], method="POST", data=params)
    assert step.kind == "login"
    step = browser.submit_login(step)
    assert step.kind == "consent"
    step = browser.submit_consent(step)
    assert step.params["state"] == rp.state and step.params["iss"] == disco["issuer"]
    token = rp.exchange(step.url)
    validate_id_token(token["id_token"], disco=disco, client_id=cid, nonce=rp.nonce,
                      access_token=token["access_token"])
    # the consent form itself cannot be forged: a POST without its CSRF token grants nothing
    rp2 = RP(disco, cid, secret, scope="openid profile phone")
    forged = browser.http.post(rp2.auth_url(), data={"decision": "approve"}, allow_redirects=False)
    assert forged.status_code == 400 and "code=" not in forged.headers.get("Location", "")
    # a POSTed request with a parameter also in the query is a repeated parameter
    step = browser.walk(disco["authorization_endpoint"] + "?" + urlencode({"nonce": "q"}), method="POST",
                        data=dict(parse_qsl(urlsplit(rp2.auth_url()).query)))
    assert step.kind == "callback" and step.params["error"] == "invalid_request" and "code" not in step.params


def test_id_token_hint_for_another_user_with_prompt_none(disco, live_server, citizen, make_client):
    from people import accounts
    from tongban.extensions import db

    accounts.create_user(OTHER_ID, "李四", PASSWORD, "13900139000")
    db.session.commit()
    cid, secret = make_client(first_party=True)
    other_cid, other_secret = make_client(first_party=True, redirect_uris=[REDIRECT_2])
    zhang = Browser(live_server)
    token, zhang_claims = RP(disco, cid, secret).login(zhang)
    li = Browser(live_server)
    assert li.login(OTHER_ID).status_code == 302
    li_token, li_claims = RP(disco, cid, secret).login(li)
    assert li_claims["sub"] != zhang_claims["sub"]
    # 李四's browser, a hint naming 张三: login_required, no code
    pyrp = PyoidcRP(live_server, cid, secret)
    _error_callback(pyrp, li.walk(pyrp.auth_url(prompt="none", id_token_hint=token["id_token"])), "login_required")
    # the hint naming 李四: silently a code for 李四
    rp = RP(disco, cid, secret)
    step = li.walk(rp.auth_url(prompt="none", id_token_hint=li_token["id_token"]))
    assert "code" in step.params
    assert validate_id_token(rp.exchange(step.url)["id_token"], disco=disco, client_id=cid,
                             nonce=rp.nonce)["sub"] == li_claims["sub"]
    # without prompt=none, a hint for someone else asks for a log-in
    assert li.walk(rp.auth_url(id_token_hint=token["id_token"])).kind == "login"
    # a forged hint (payload changed to 李四, signature kept) and another system's hint are refused
    head, _payload, sig = token["id_token"].split(".")
    import base64

    forged_payload = base64.urlsafe_b64encode(json.dumps(
        {**zhang_claims, "sub": li_claims["sub"]}).encode()).rstrip(b"=").decode()
    forged = f"{head}.{forged_payload}.{sig}"
    _error_callback(pyrp, li.walk(pyrp.auth_url(prompt="none", id_token_hint=forged)), "invalid_request")
    other_rp = RP(disco, other_cid, other_secret, redirect_uri=REDIRECT_2)
    other_token, _ = other_rp.login(li)
    _error_callback(pyrp, li.walk(pyrp.auth_url(prompt="none", id_token_hint=other_token["id_token"])),
                    "invalid_request")


def test_max_age_zero_in_the_same_second_and_reauth_keeps_the_session(disco, live_server, browser, citizen,
                                                                       make_client):
    a, sa = make_client(first_party=True)
    b, sb = make_client(first_party=True, redirect_uris=[REDIRECT_2])
    rp_a, rp_b = RP(disco, a, sa), RP(disco, b, sb, redirect_uri=REDIRECT_2)
    _token_a, first = rp_a.login(browser)
    token_b, _ = rp_b.login(browser)
    old_cookie = dict(browser.http.cookies)
    # max_age=0 right after the log-in (same second): still a log-in
    url = rp_a.auth_url(max_age="0")
    assert browser.walk(url).kind == "login", "max_age=0 always asks for the password"
    # going back to the request without logging in does not satisfy it
    step = browser.walk(url)
    assert step.kind == "login"
    step = browser.submit_login(step)
    assert step.kind == "callback" and step.seen == ["login"]
    token = rp_a.exchange(step.url)
    claims = validate_id_token(token["id_token"], disco=disco, client_id=a, nonce=rp_a.nonce, max_age=5)
    # the same session: same sid, a new auth_time; system B is not logged out
    assert claims["sid"] == first["sid"] and claims["auth_time"] >= first["auth_time"]
    assert rp_b.refresh(token_b["refresh_token"]).status_code == 200
    assert rp_b.userinfo(token_b["access_token"]).status_code == 200
    # the cookie was replaced: the value from before the log-in no longer opens the session
    stale = Browser(live_server)
    stale.http.cookies.update(old_cookie)
    assert stale.walk(rp_a.auth_url(prompt="none")).params["error"] == "login_required"
    # another person logging in in this browser does end the first session
    from people import accounts
    from tongban.extensions import db

    accounts.create_user(OTHER_ID, "李四", PASSWORD, "13900139000")
    db.session.commit()
    step = browser.walk(rp_a.auth_url(prompt="login"))
    step = browser.submit_login(step, login=OTHER_ID)
    other = validate_id_token(rp_a.exchange(step.url)["id_token"], disco=disco, client_id=a, nonce=rp_a.nonce)
    assert other["sid"] != first["sid"] and other["sub"] != first["sub"]
    assert rp_b.refresh(token_b["refresh_token"]).status_code == 400


# ---------------------------------------------------------------- token hints, bearer errors, scope


def test_token_type_hint_only_orders_the_search(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True)
    rp = RP(disco, cid, secret, scope="openid profile")
    token, _ = rp.login(browser)
    at, rt = token["access_token"], token["refresh_token"]
    # the wrong hint still finds the token
    assert rp.introspect(at, token_type_hint="refresh_token")["active"] is True
    assert rp.introspect(rt, token_type_hint="access_token")["active"] is True
    # an unknown hint: 400 unsupported_token_type, and nothing is revoked
    r = rp.revoke(at, token_type_hint="id_token")
    assert r.status_code == 400 and r.json()["error"] == "unsupported_token_type"
    r = requests.post(disco["introspection_endpoint"], data={"token": at, "token_type_hint": "jwt"},
                      auth=(cid, secret))
    assert r.status_code == 400 and r.json()["error"] == "unsupported_token_type"
    assert rp.userinfo(at).status_code == 200
    # revoking the access token with the refresh-token hint revokes it
    assert rp.revoke(at, token_type_hint="refresh_token").status_code == 200
    assert rp.introspect(at) == {"active": False}
    assert rp.userinfo(at).status_code == 401
    # and the refresh token with the access-token hint
    assert rp.revoke(rt, token_type_hint="access_token").status_code == 200
    assert rp.introspect(rt) == {"active": False}
    assert rp.refresh(rt).status_code == 400


def test_bearer_error_codes(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True)
    token, _ = RP(disco, cid, secret).login(browser)
    # no token at all: the challenge, without an error code (RFC 6750 §3.1)
    r = requests.get(disco["userinfo_endpoint"])
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer") and "error" not in r.headers["WWW-Authenticate"]
    assert "error" not in r.json()
    # a bad token: invalid_token
    r = requests.get(disco["userinfo_endpoint"], headers=bearer(token["access_token"][:-4] + "AAAA"))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert requests.get(disco["userinfo_endpoint"], headers=bearer(token["access_token"])).status_code == 200


def test_token_response_names_the_scope_granted(disco, browser, citizen, make_client):
    """RFC 6749 §5.1: the scope is in the response when it differs from the one asked for."""
    cid, secret = make_client(first_party=True, scopes=["openid", "profile"])
    rp = RP(disco, cid, secret, scope="openid profile phone")
    token, claims = rp.login(browser)
    assert token["scope"].split() == ["openid", "profile"] and "phone_number" not in claims
    narrowed = rp.refresh(token["refresh_token"])
    assert narrowed.status_code == 200 and narrowed.json()["scope"].split() == ["openid", "profile"]


def test_repeated_token_parameter_refused(disco, browser, citizen, make_client):
    cid, secret = make_client(first_party=True)
    rp = RP(disco, cid, secret)
    token, _ = rp.login(browser)
    body = [("grant_type", "refresh_token"), ("refresh_token", token["refresh_token"]),
            ("refresh_token", token["refresh_token"])]
    r = requests.post(disco["token_endpoint"], data=body, auth=(cid, secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert rp.refresh(token["refresh_token"]).status_code == 200, "the refused request changed nothing"


# ---------------------------------------------------------------- discovery


def test_discovery_tells_the_truth(disco):
    assert disco["response_modes_supported"] == ["query"]
    # request objects: signed by clients with registered keys (docs/oidc-modern.md); request_uri: PAR's only
    assert disco["request_parameter_supported"] is True and disco["request_uri_parameter_supported"] is False
    assert "select_account" in disco["prompt_values_supported"]
    assert "create" not in disco["prompt_values_supported"]
    assert "userinfo_signing_alg_values_supported" not in disco
    assert disco["authorization_response_iss_parameter_supported"] is True


def test_pyoidc_accepts_a_post_with_login_credentials_sent_by_form(live_server, browser, citizen, make_client):
    """pyoidc's own POST of the authorization request (``method="POST"``) gets through too."""
    cid, secret = make_client(first_party=True)
    rp = PyoidcRP(live_server, cid, secret)
    url = rp.auth_url()
    endpoint, query = url.split("?", 1)
    step = browser.walk(endpoint, method="POST", data=dict(parse_qsl(query)))
    step = browser.submit_login(step, CITIZEN_ID, PASSWORD)
    resp = rp.parse_callback(step.url)
    assert isinstance(resp, AuthorizationResponse) and resp["iss"] == rp.provider["issuer"]
    assert rp.exchange(resp["code"])["id_token"]["sub"]


def test_claims_parameter_releases_the_claims_asked_for(live_server, disco, browser, citizen, make_client):
    """OIDC Core §5.5: claims asked for one by one, released as the scope that carries them would
    be, within what the system may ask for; a malformed ``claims`` is invalid_request."""
    assert disco["claims_parameter_supported"] is True
    cid, secret = make_client(first_party=True, scopes=["openid", "profile", "phone"])
    rp = RP(disco, cid, secret, scope="openid")
    claims = {"id_token": {"name": {"essential": True}}, "userinfo": {"phone_number": None,
                                                                      "id_number": None, "shoe_size": None}}
    token, id_claims = rp.login(browser, claims=json.dumps(claims))
    assert id_claims["name"] == "张三"
    info = rp.userinfo(token["access_token"]).json()
    assert info["phone_number"] == "+8613800138000"
    assert "id_number" not in info and "id_number" not in id_claims, "not a scope this system may ask for"
    assert set(token["scope"].split()) == {"openid", "profile", "phone"}
    # without claims, scope openid alone releases nothing but sub
    rp2 = RP(disco, cid, secret, scope="openid")
    token2, id2 = rp2.login(browser)
    assert "name" not in id2 and set(rp2.userinfo(token2["access_token"]).json()) == {"sub"}
    # malformed: back at the client as invalid_request, with iss and state
    pyrp = PyoidcRP(live_server, cid, secret)
    for bad in ("[1]", "not json", '{"userinfo": ["name"]}', '{"id_token": {"name": 1}}'):
        _error_callback(pyrp, browser.walk(pyrp.auth_url() + "&" + urlencode({"claims": bad})),
                        "invalid_request")
