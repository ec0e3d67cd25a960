"""Step-up over real HTTP with independent clients: Authlib's OAuth2Session asks with
acr_values, joserfc validates the ID token (acr, amr, auth_time); RFC 9470 from the API."""

from __future__ import annotations

import base64
import json
import re
import secrets
import time

import pyotp
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session

from tests.idp.helpers import REDIRECT, Browser, callback_params, discover, validate_id_token

_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@pytest.fixture
def rp(live_server, make_client):
    client_id, secret = make_client(scopes=["openid", "profile", "licence:read"], redirect_uris=[REDIRECT],
                                    first_party=True)
    disco = discover(live_server)
    return disco, client_id, secret


def _session(disco, client_id, secret) -> OAuth2Session:
    return OAuth2Session(client_id, secret, scope="openid profile licence:read", redirect_uri=REDIRECT,
                         code_challenge_method="S256")


def _authorize_url(oauth: OAuth2Session, disco: dict, verifier: str, **extra) -> str:
    oauth.last_nonce = secrets.token_urlsafe(12)  # a nonce once only (replays are refused)
    url, _state = oauth.create_authorization_url(disco["authorization_endpoint"], code_verifier=verifier,
                                                 nonce=oauth.last_nonce, **extra)
    return url


def _verified_l3_with_totp(citizen) -> pyotp.TOTP:
    """The account is identity-verified (L3) and has an authenticator app (enrolled elsewhere)."""
    from people import mfa
    from tongban.extensions import db

    citizen.assurance_level = 3
    row = mfa.begin_totp(citizen)
    totp = pyotp.TOTP(mfa.totp_secret(row))
    db.session.commit()
    mfa.confirm_totp(citizen, totp.now())
    db.session.commit()
    return totp


def _payload(jwt: str) -> dict:
    part = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_acr_l3_steps_up_with_totp(live_server, rp, citizen):
    disco, client_id, secret = rp
    assert disco["acr_values_supported"] == ["L1", "L2", "L3", "L4", "L5"]
    browser = Browser(live_server)
    assert browser.login().status_code == 302  # a password session, before the app was set up
    totp = _verified_l3_with_totp(citizen)

    oauth = _session(disco, client_id, secret)
    verifier = "v" * 64
    step = browser.walk(_authorize_url(oauth, disco, verifier, acr_values="L3 L2"))
    # L2 would do, but L3 is preferred and reachable: the password session at L2 satisfies "L2"
    assert step.kind == "callback"
    assert _payload_of(oauth, disco, step, verifier, client_id)["acr"] == "L2"

    step = browser.walk(_authorize_url(oauth, disco, verifier, acr_values="L3"))
    assert step.kind == "page" and "/mfa/verify" in step.url and "acr=L3" in step.url, step.url
    csrf = _CSRF.search(step.resp.text).group(1)
    code = totp.at(time.time() + totp.interval)
    action = re.search(r'action="(/mfa/verify/totp[^"]*)"', step.resp.text).group(1).replace("&amp;", "&")
    done = browser.walk(action, method="POST", data={"csrf_token": csrf, "code": code})
    assert done.kind == "callback", done.url
    params = callback_params(done.url)
    assert "code" in params and params["iss"] == disco["issuer"]
    token = oauth.fetch_token(disco["token_endpoint"], code=params["code"], code_verifier=verifier)
    claims = validate_id_token(token["id_token"], disco=disco, client_id=client_id, nonce=oauth.last_nonce,
                               access_token=token["access_token"])
    assert claims["acr"] == "L3"
    assert claims["amr"][:2] == ["pwd", "otp"] and "mfa" in claims["amr"]
    assert abs(claims["auth_time"] - time.time()) < 30  # the step-up is a fresh authentication
    assert _payload(token["access_token"])["acr"] == "L3"

    # the stepped-up session satisfies the next request without asking again
    again = browser.walk(_authorize_url(oauth, disco, verifier, acr_values="L3", prompt="none"))
    assert again.kind == "callback" and "code" in callback_params(again.url)


def _payload_of(oauth, disco, step, verifier, client_id) -> dict:
    params = callback_params(step.url)
    token = oauth.fetch_token(disco["token_endpoint"], code=params["code"], code_verifier=verifier)
    return validate_id_token(token["id_token"], disco=disco, client_id=client_id, nonce=oauth.last_nonce)


def test_prompt_none_too_weak_is_interaction_required(live_server, rp, citizen):
    disco, client_id, secret = rp
    browser = Browser(live_server)
    assert browser.login().status_code == 302
    oauth = _session(disco, client_id, secret)
    step = browser.walk(_authorize_url(oauth, disco, "w" * 64, acr_values="L3", prompt="none", state="s1"))
    assert step.kind == "callback"
    params = callback_params(step.url)
    assert params["error"] == "interaction_required" and params["state"] == "s1" and "code" not in params


def test_unreachable_levels(live_server, rp, citizen):
    disco, client_id, secret = rp
    browser = Browser(live_server)
    assert browser.login().status_code == 302
    oauth = _session(disco, client_id, secret)
    verifier = "x" * 64
    # voluntary L4 (face match) cannot be reached online: issued at the session's level
    step = browser.walk(_authorize_url(oauth, disco, verifier, acr_values="L4"))
    assert _payload_of(oauth, disco, step, verifier, client_id)["acr"] == "L1"
    # as an essential claim: unmet_authentication_requirements
    claims = json.dumps({"id_token": {"acr": {"essential": True, "values": ["L4", "L5"]}}})
    step = browser.walk(_authorize_url(oauth, disco, verifier, claims=claims, state="s2"))
    params = callback_params(step.url)
    assert params["error"] == "unmet_authentication_requirements" and params["state"] == "s2"


def test_step_up_identity_then_cancel(live_server, rp, citizen, app):
    """An L1 account asked for L3 is offered identity verification first; cancelling ends the
    request with an error to the system."""
    disco, client_id, secret = rp
    browser = Browser(live_server)
    assert browser.login().status_code == 302
    oauth = _session(disco, client_id, secret)
    step = browser.walk(_authorize_url(oauth, disco, "y" * 64, acr_values="L3", state="s3"))
    assert step.kind == "page" and "/mfa/verify/identity" in step.resp.text
    csrf = _CSRF.search(step.resp.text).group(1)
    action = re.search(r'action="(/mfa/verify/cancel[^"]*)"', step.resp.text).group(1).replace("&amp;", "&")
    done = browser.walk(action, method="POST", data={"csrf_token": csrf})
    params = callback_params(done.url)
    assert params["error"] == "unmet_authentication_requirements" and params["state"] == "s3"


def test_api_require_acr_rfc9470(live_server, rp, citizen, app):
    disco, client_id, secret = rp
    browser = Browser(live_server)
    assert browser.login().status_code == 302
    oauth = _session(disco, client_id, secret)
    verifier = "z" * 64
    step = browser.walk(_authorize_url(oauth, disco, verifier))
    token = oauth.fetch_token(disco["token_endpoint"], code=callback_params(step.url)["code"],
                              code_verifier=verifier)
    assert _payload(token["access_token"])["acr"] == "L1"
    api = f"{live_server}/api/v1/licences"
    query = {"purpose": "测试", "service_item": "T-1"}
    r = requests.get(api, params=query, headers={"Authorization": f"Bearer {token['access_token']}"})
    assert r.status_code == 401
    header = r.headers["WWW-Authenticate"]
    assert header.startswith('Bearer error="insufficient_user_authentication"')
    assert 'acr_values="L2"' in header and "error_description=" in header
    assert r.json()["error"] == "insufficient_user_authentication"

    # a configurable level: at L3 an L2 token is also too weak
    from tongban.extensions import db

    citizen.assurance_level = 2
    db.session.commit()
    browser2 = Browser(live_server)
    assert browser2.login().status_code == 302
    step = browser2.walk(_authorize_url(oauth, disco, verifier))
    token = oauth.fetch_token(disco["token_endpoint"], code=callback_params(step.url)["code"],
                              code_verifier=verifier)
    assert _payload(token["access_token"])["acr"] == "L2"
    r = requests.get(api, params=query, headers={"Authorization": f"Bearer {token['access_token']}"})
    assert r.status_code != 401  # L2 is enough by default (the holder's consent is checked next)
    app.config["TONGBAN_LICENCE_READ_ACR"] = "L3"
    try:
        r = requests.get(api, params=query, headers={"Authorization": f"Bearer {token['access_token']}"})
        assert r.status_code == 401 and 'acr_values="L3"' in r.headers["WWW-Authenticate"]
    finally:
        app.config["TONGBAN_LICENCE_READ_ACR"] = "L2"
