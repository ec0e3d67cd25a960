"""Attacks on the brokering, against a fake upstream built with joserfc whose answers the test
shapes: forged or misdirected ID tokens, replayed or foreign state, and forged, replayed or
malformed back-channel logout tokens. Each is refused, changes nothing and is audited."""

from __future__ import annotations

import time
import uuid

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from sqlalchemy import func, select

from tests.federation.conftest import CLIENT_ID, NEW_ID
from tests.federation.test_node_upstream import _audit, _sessions, _user

EVENT = "http://schemas.openid.net/event/backchannel-logout"


def _count(model):
    from tongban.extensions import db

    db.session.expire_all()
    return db.session.execute(select(func.count()).select_from(model)).scalar()


def test_the_fake_upstream_logs_in_when_everything_is_right(fake, fed_browser):
    resp = fake.login(fed_browser())
    assert resp.status_code == 302 and resp.headers["Location"] == "/account"
    assert _user(NEW_ID).assurance_level == 3
    # the token request carried the PKCE verifier of the challenge, and Tongban's credentials
    [req] = fake.token_requests
    assert req["form"]["grant_type"] == "authorization_code" and len(req["form"]["code_verifier"]) >= 43
    assert req["auth"].username == CLIENT_ID
    assert fake.last_auth["code_challenge_method"] == "S256" and fake.last_auth["nonce"]


def _wrong_key():
    return RSAKey.generate_key(2048, parameters={"kid": "fake-1"})  # the published kid, another key


@pytest.mark.parametrize("case", ["bad_signature", "bad_nonce", "bad_aud", "bad_iss", "expired", "alg_none",
                                  "hs256_with_secret", "bad_azp", "bad_at_hash", "no_nonce", "future_iat"])
def test_forged_or_misdirected_id_tokens_are_refused(fake, fed_browser, case):
    from people.models import User

    now = int(time.time())
    if case == "bad_signature":
        fake.sign_with = _wrong_key()
    elif case == "bad_nonce":
        fake.claims = {"nonce": "not-the-one-sent"}
    elif case == "no_nonce":
        fake.claims = {"nonce": None}
    elif case == "bad_aud":
        fake.claims = {"aud": "another-client"}
    elif case == "bad_azp":
        fake.claims = {"aud": [CLIENT_ID, "another-client"], "azp": "another-client"}
    elif case == "bad_iss":
        fake.claims = {"iss": "http://127.0.0.1:1"}
    elif case == "expired":
        fake.claims = {"iat": now - 4000, "exp": now - 3000}
    elif case == "future_iat":
        fake.claims = {"iat": now + 3600, "exp": now + 7200}
    elif case == "bad_at_hash":
        fake.claims = {"at_hash": "AAAAAAAAAAAAAAAAAAAAAA"}
    elif case == "alg_none":
        fake.sign_with = OctKey.import_key(b"x" * 32)
        fake.header = {"alg": "none"}
    elif case == "hs256_with_secret":
        from tests.federation.conftest import CLIENT_SECRET

        fake.sign_with = OctKey.import_key(CLIENT_SECRET.encode())
        fake.header = {"alg": "HS256", "kid": "fake-1"}
    if case == "alg_none":
        import base64
        import json

        def b64(d):
            return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

        fake.sign = lambda claims, header=None, key=None: f"{b64({'alg': 'none'})}.{b64(claims)}."
    b = fed_browser()
    resp = fake.login(b)
    assert resp.status_code == 502, resp.text[:300]
    assert "测试上游暂时无法登录，请使用密码登录" in resp.text
    assert _count(User) == 0
    [failed] = _audit("federation.login_failed")
    assert "bad_id_token" in failed.detail
    assert b.http.get(b._abs("/account"), allow_redirects=False).status_code == 302  # not logged in


def test_unknown_kid_fetches_the_jwks_once_more(fake, fed_browser):
    b = fed_browser()
    assert fake.login(b).status_code == 302  # the JWKS is cached now
    rotated = RSAKey.generate_key(2048, parameters={"kid": "fake-2", "alg": "RS256", "use": "sig"})
    fake.published = [fake.key, rotated]
    fake.sign_with = rotated
    from federation import metadata

    metadata._REFETCH_FLOOR, floor = 0.0, metadata._REFETCH_FLOOR
    try:
        assert fake.login(fed_browser()).status_code == 302
        fake.sign_with = RSAKey.generate_key(2048, parameters={"kid": "fake-3"})  # never published
        assert fake.login(fed_browser()).status_code == 502
    finally:
        metadata._REFETCH_FLOOR = floor
    assert "unknown_kid" in _audit("federation.login_failed")[0].detail


def test_state_is_one_time_and_bound_to_the_browser(fake, fed_browser, live_server):
    victim, attacker = fed_browser(), fed_browser()
    # the attacker starts a log-in and has the victim's browser complete it (login CSRF): refused
    start = attacker.start_upstream("fake")
    from urllib.parse import parse_qs, urlsplit

    auth = {k: v[0] for k, v in parse_qs(urlsplit(start.headers["Location"]).query).items()}
    fake.last_auth = auth
    url = f"{live_server}/federation/fake/callback"
    params = {"code": "c0de", "state": auth["state"], "iss": fake.issuer}
    resp = victim.http.get(url, params=params, allow_redirects=False)
    assert resp.status_code == 400 and "无法与本浏览器对应" in resp.text
    # ... and the state is spent: the attacker's own browser cannot use it either
    assert attacker.http.get(url, params=params, allow_redirects=False).status_code == 400
    # an invented state, and none at all
    assert victim.http.get(url, params={**params, "state": "invented"}, allow_redirects=False).status_code == 400
    assert victim.http.get(url, params={"code": "c0de"}, allow_redirects=False).status_code == 400
    # a callback replayed after a successful log-in
    b = fed_browser()
    ok = fake.login(b)
    assert ok.status_code == 302
    replay = b.http.get(url, params={"code": "c0de", "state": fake.last_auth["state"], "iss": fake.issuer},
                        allow_redirects=False)
    assert replay.status_code == 400
    assert fake.token_requests and len(fake.token_requests) == 1  # no code was redeemed for the refusals
    reasons = [e.detail for e in _audit("federation.login_failed")]
    assert any("state_mismatch" in r for r in reasons)


def test_mix_up_iss_parameter_is_refused(fake, fed_browser, live_server):
    b = fed_browser()
    start = b.start_upstream("fake")
    from urllib.parse import parse_qs, urlsplit

    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    resp = b.http.get(f"{live_server}/federation/fake/callback",
                      params={"code": "c", "state": state, "iss": "http://127.0.0.1:1"}, allow_redirects=False)
    assert resp.status_code == 400 and not fake.token_requests


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/token", "/jwks"])
def test_a_slow_upstream_times_out_into_a_clear_page(app, fake, fed_browser, citizen, path):
    app.config["TONGBAN_FEDERATION_HTTP_TIMEOUT"] = 0.3
    fake.delay[path] = 1.5
    try:
        b = fed_browser()
        resp = fake.login(b) if path != "/.well-known/openid-configuration" else b.start_upstream("fake")
    finally:
        app.config["TONGBAN_FEDERATION_HTTP_TIMEOUT"] = 5.0
    assert resp.status_code == 502 and "测试上游暂时无法登录，请使用密码登录" in resp.text
    assert _count_users() == 1  # only 张三
    [failed] = _audit("federation.login_failed")
    assert ("timeout" in failed.detail) or ("Timeout" in failed.detail)
    assert b.login().status_code == 302  # the password log-in works


def _count_users():
    from people.models import User

    return _count(User)


def test_bad_discovery_is_a_clear_page(fake, fed_browser):
    fake.discovery_extra = {"issuer": "http://evil.example"}
    resp = fed_browser().start_upstream("fake")
    assert resp.status_code == 502 and "测试上游暂时无法登录" in resp.text
    assert "bad_discovery" in _audit("federation.login_failed")[0].detail


# ---------------------------------------------------------------- back-channel logout from the upstream


def _logout_token(fake, **over):
    now = int(time.time())
    claims = {"iss": fake.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex,
              "sid": "fake-sid-1", "sub": "fake-sub-1", "events": {EVENT: {}}}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _post(live_server, token):
    return requests.post(f"{live_server}/federation/fake/backchannel-logout", data={"logout_token": token})


def test_backchannel_logout_token_checks(fake, fed_browser, live_server):
    assert fake.login(fed_browser()).status_code == 302
    user = _user(NEW_ID)
    forged = [
        fake.sign(_logout_token(fake), key=_wrong_key()),  # bad signature
        fake.sign(_logout_token(fake, aud="another-client")),
        fake.sign(_logout_token(fake, iss="http://127.0.0.1:1")),
        fake.sign(_logout_token(fake, events=None)),
        fake.sign(_logout_token(fake, events={"http://example/other": {}})),
        fake.sign(_logout_token(fake, nonce="n")),
        fake.sign(_logout_token(fake, sid=None, sub=None)),
        fake.sign(_logout_token(fake, jti=None)),
        fake.sign(_logout_token(fake, iat=int(time.time()) - 3600)),
        fake.sign(_logout_token(fake), header={"typ": "JWT+id"}),
        jwt.encode({"alg": "HS256"}, _logout_token(fake), OctKey.import_key(b"upstream-test-secret-0123456789abcdef")),
        "not-a-jwt",
    ]
    for token in forged:
        resp = _post(live_server, token)
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_request", token
        assert resp.headers["Cache-Control"] == "no-store"
    assert [s.ended_at for s in _sessions(user)] == [None]
    # a good one ends the session; the same token again is refused (jti one-time)
    good = fake.sign(_logout_token(fake), header={"typ": "logout+jwt"})
    assert _post(live_server, good).status_code == 200
    [sess] = _sessions(user)
    assert sess.ended_at is not None and sess.end_reason == "upstream_logout"
    assert _post(live_server, good).status_code == 400
    refusals = [e for e in _audit("federation.backchannel_logout") if e.outcome == "failure"]
    assert any("jti_reused" in e.detail for e in refusals) and any("bad_signature" in e.detail for e in refusals)


def test_backchannel_logout_by_sub_only_ends_only_that_persons_sessions(fake, fed_browser, live_server, citizen):
    assert fake.login(fed_browser()).status_code == 302
    assert fake.login(fed_browser()).status_code == 302
    other = fed_browser()
    assert other.login().status_code == 302  # 张三 by password: not the upstream's to end
    resp = _post(live_server, fake.sign(_logout_token(fake, sid=None, sub="someone-else")))
    assert resp.status_code == 200
    assert all(s.ended_at is None for s in _sessions(_user(NEW_ID)))
    assert _post(live_server, fake.sign(_logout_token(fake, sid=None))).status_code == 200
    assert [s.ended_at is not None for s in _sessions(_user(NEW_ID))] == [True, True]
    assert [s.ended_at for s in _sessions(citizen)] == [None]
