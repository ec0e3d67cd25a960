"""The lean path (tongban.fastpath, idp.fast, keys.views.fast_jwks) gives the answers of the full
stack: same status, same headers, same body shape; and it leaves every refusal to the full stack.

Each comparison sends one request with ``TONGBAN_FAST_PATH`` on and the same request with it
off, and checks that the lean path (not the full stack) answered the first.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from tests.flask_flows import authorize_code, basic, exchange, login

VOLATILE = {"x-request-id", "content-length", "date"}


def _headers(resp) -> dict:
    return {k.lower(): v for k, v in resp.headers.items() if k.lower() not in VOLATILE}


def both(app, client, fast, method: str, path: str, **kw):
    """(lean response, full-stack response) of the same request; the lean one really lean."""
    app.config["TONGBAN_FAST_PATH"] = True
    for _ in range(2):  # the process's first request, then the route's first answer: full stack
        client.open(path, method=method, **kw)
    before = fast.answered
    lean = client.open(path, method=method, **kw)
    assert fast.answered == before + 1, "the lean path did not answer"
    app.config["TONGBAN_FAST_PATH"] = False
    full = client.open(path, method=method, **kw)
    app.config["TONGBAN_FAST_PATH"] = True
    return lean, full


def not_lean(app, client, fast, method: str, path: str, **kw):
    app.config["TONGBAN_FAST_PATH"] = True
    for _ in range(2):
        client.open(path, method=method, **kw)
    before = fast.answered
    resp = client.open(path, method=method, **kw)
    assert fast.answered == before, "the lean path answered a request it must leave to the full stack"
    return resp


def _same(lean, full, volatile_keys=()):
    assert lean.status_code == full.status_code == 200
    assert _headers(lean) == _headers(full)
    a, b = lean.get_json(), full.get_json()
    assert set(a) == set(b)
    for k in set(a) - set(volatile_keys):
        assert a[k] == b[k], k
    assert lean.headers["X-Request-Id"] and lean.headers["X-Request-Id"] != full.headers["X-Request-Id"]


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_client_credentials_same_answer(app, client, fast, make_client):
    cid, secret = make_client(grant_types=["client_credentials"], scopes=["openid", "profile"])
    for body in ({"grant_type": "client_credentials"}, {"grant_type": "client_credentials", "scope": "profile"}):
        lean, full = both(app, client, fast, "POST", "/oauth/token", data=urlencode(body),
                          headers={**basic(cid, secret), **FORM})
        _same(lean, full, volatile_keys=("access_token",))
        # the lean token is a token like any other: the same claims, and it introspects
        from idp.tokens import decode_access_token

        with app.app_context():
            a = decode_access_token(lean.get_json()["access_token"]).claims
            b = decode_access_token(full.get_json()["access_token"]).claims
        assert set(a) == set(b) and a["sub"] == b["sub"] == cid and a.get("scope") == b.get("scope")
        assert a["jti"] != b["jti"]


def test_introspection_and_userinfo_same_answer(app, client, fast, citizen, make_client):
    cid, secret = make_client(introspection_allowed=True)
    login(client)
    code = authorize_code(client, cid, scope="openid profile phone")
    tok = exchange(client, cid, secret, code).get_json()["access_token"]
    lean, full = both(app, client, fast, "POST", "/oauth/introspect", data=urlencode({"token": tok}),
                      headers={**basic(cid, secret), **FORM})
    _same(lean, full)
    assert lean.get_json()["active"] is True and lean.get_json()["sid"]
    lean, full = both(app, client, fast, "GET", "/oauth/userinfo", headers={"Authorization": f"Bearer {tok}"})
    _same(lean, full)
    assert lean.get_json()["phone_number"] == "+8613800138000"


def test_discovery_and_jwks_same_answer(app, client, fast):
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server", "/jwks.json"):
        lean, full = both(app, client, fast, "GET", path)
        assert lean.data == full.data
        assert _headers(lean) == _headers(full)
        assert lean.headers["Cache-Control"] == "public, max-age=300"
        assert lean.headers["Access-Control-Allow-Origin"] == "*"


def test_refusals_are_the_full_stacks(app, client, fast, make_client):
    cid, secret = make_client(grant_types=["client_credentials"])
    good = urlencode({"grant_type": "client_credentials"})
    cases = [
        ({**basic(cid, "wrong"), **FORM}, good, 401),
        ({**basic(cid, secret), **FORM}, "grant_type=client_credentials&grant_type=client_credentials", 400),
        ({**basic(cid, secret), **FORM}, good + "&scope=nonsense", 400),
        ({**basic(cid, secret), **FORM}, good + "&resource=https%3A%2F%2Fx.example", 400),
        ({**basic(cid, secret), **FORM, "DPoP": "not-a-proof"}, good, 400),
        ({**basic(cid, secret), "Content-Type": "application/json"}, json.dumps({"grant_type": "client_credentials"}),
         400),
    ]
    for headers, body, status in cases:
        resp = not_lean(app, client, fast, "POST", "/oauth/token", data=body, headers=headers)
        assert resp.status_code == status, (body, resp.get_json())
        assert "access_token" not in (resp.get_json() or {})
    # a browser's cross-origin request keeps its CORS answer from the full stack
    resp = not_lean(app, client, fast, "POST", "/oauth/token", data=good,
                    headers={**basic(cid, secret), **FORM, "Origin": "https://evil.example"})
    assert resp.status_code == 200 and "Access-Control-Allow-Origin" not in resp.headers


def test_dpop_bound_and_fapi_clients_never_lean(app, client, fast, make_client):
    cid, secret = make_client(grant_types=["client_credentials"], require_dpop=True)
    resp = not_lean(app, client, fast, "POST", "/oauth/token", data="grant_type=client_credentials",
                    headers={**basic(cid, secret), **FORM})
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_dpop_proof"


def test_revoked_token_is_not_active_even_when_verified_before(app, client, fast, citizen, make_client):
    cid, secret = make_client(introspection_allowed=True)
    login(client)
    tok = exchange(client, cid, secret, authorize_code(client, cid)).get_json()["access_token"]
    auth = {**basic(cid, secret), **FORM}
    lean, _full = both(app, client, fast, "POST", "/oauth/introspect", data=urlencode({"token": tok}), headers=auth)
    assert lean.get_json()["active"] is True
    assert client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {tok}"}).status_code == 200
    assert client.post("/oauth/revoke", data=urlencode({"token": tok}), headers=auth).status_code == 200
    resp = client.post("/oauth/introspect", data=urlencode({"token": tok}), headers=auth)
    assert resp.get_json() == {"active": False}
    assert client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {tok}"}).status_code == 401


def test_logged_out_session_ends_userinfo(app, client, fast, citizen, make_client):
    cid, secret = make_client()
    login(client)
    tok = exchange(client, cid, secret, authorize_code(client, cid)).get_json()["access_token"]
    bearer = {"Authorization": f"Bearer {tok}"}
    lean, _full = both(app, client, fast, "GET", "/oauth/userinfo", headers=bearer)
    assert lean.status_code == 200
    from people.models import LoginSession
    from people.sessions import end
    from tongban.extensions import db

    with app.app_context():
        sess = db.session.query(LoginSession).filter_by(ended_at=None).one()
        sess.last_seen = sess.last_seen.replace(year=2000)  # past its idle lifetime, not yet swept
        db.session.commit()
    resp = client.get("/oauth/userinfo", headers=bearer)
    assert resp.status_code == 401
    assert end  # (the full stack ends the expired session)


def test_disabled_client_tokens_refused(app, client, fast, make_client):
    from idp import clients as registry
    from tongban.extensions import db

    cid, secret = make_client(grant_types=["client_credentials"], introspection_allowed=True)
    auth = {**basic(cid, secret), **FORM}
    lean, _full = both(app, client, fast, "POST", "/oauth/token", data="grant_type=client_credentials", headers=auth)
    tok = lean.get_json()["access_token"]
    with app.app_context():
        registry.set_enabled(cid, False, actor="test")
        db.session.commit()
    resp = client.post("/oauth/token", data="grant_type=client_credentials", headers=auth)
    assert resp.status_code == 401
    resp = client.post("/oauth/introspect", data=urlencode({"token": tok}), headers=auth)
    assert resp.status_code == 401
