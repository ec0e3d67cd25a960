"""Attacks on the lean path (tongban.fastpath, idp.fast, idp.tokens' verified-token cache): it
must never answer where the full stack refuses, nor answer differently from it."""

from __future__ import annotations

import io
import time
from urllib.parse import urlencode

import pytest

from tests.flask_flows import basic

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def fast(app):
    path = app.extensions["tongban.fastpath"]
    app.config["TONGBAN_FAST_PATH"] = True
    yield path
    app.config["TONGBAN_FAST_PATH"] = True


@pytest.fixture
def salted(app):
    app.config["TONGBAN_PAIRWISE_SALT"] = b"fast-path-attack-salt-0123456789"
    app.extensions.pop("tongban.pairwise_salt", None)
    yield
    app.extensions.pop("tongban.pairwise_salt", None)


def _mint(app, **claims) -> str:
    from idp.tokens import ACCESS_TOKEN_ALG, sign_jwt

    now = int(time.time())
    base = {"iss": app.config["TONGBAN_ISSUER"], "iat": now, "exp": now + 300, "jti": f"j{now}{id(claims)}"}
    with app.app_context():
        return sign_jwt({**base, **claims}, ACCESS_TOKEN_ALG, typ="at+jwt")


def test_exchanged_token_introspected_by_its_pairwise_audience(app, client, fast, salted, citizen, make_client):
    """A client allowed to introspect and the pairwise target of an exchanged token sees the
    citizen by its pairwise sub on the full stack: the lean answer must not leak the local sub."""
    a, _ = make_client(grant_types=["client_credentials"])
    p, p_secret = make_client(subject_type="pairwise", introspection_allowed=True,
                              grant_types=["client_credentials"])
    raw = _mint(app, sub=citizen.sub, client_id=a, aud=p, act={"sub": a}, scope="openid profile")
    kw = {"data": urlencode({"token": raw}), "headers": {**basic(p, p_secret), **FORM}}
    app.config["TONGBAN_FAST_PATH"] = False
    full = client.post("/oauth/introspect", **kw).get_json()
    app.config["TONGBAN_FAST_PATH"] = True
    assert full["active"] and full["sub"] != citizen.sub
    for _ in range(3):
        lean = client.post("/oauth/introspect", **kw).get_json()
        assert lean["sub"] == full["sub"] != citizen.sub


def test_cached_verified_token_rechecks_issuer(app, make_client):
    """A token verified under one issuer is not accepted from the cache once the issuer differs."""
    from idp.tokens import decode_access_token

    cid, _ = make_client(grant_types=["client_credentials"])
    raw = _mint(app, sub=cid, client_id=cid, aud=cid)
    old = app.config["TONGBAN_ISSUER"]
    with app.app_context():
        assert decode_access_token(raw) is not None  # cached now
        app.config["TONGBAN_ISSUER"] = "https://other.example.gov.cn"
        try:
            assert decode_access_token(raw) is None
        finally:
            app.config["TONGBAN_ISSUER"] = old


def test_chunked_token_request_keeps_its_body(app, client, fast, make_client):
    """A body without Content-Length (chunked) is the full stack's, and reaches it intact."""
    cid, secret = make_client(grant_types=["client_credentials"], scopes=["openid", "profile"])
    body = urlencode({"grant_type": "client_credentials"}).encode()
    for on in (False, True, True, True):
        app.config["TONGBAN_FAST_PATH"] = on
        resp = client.post("/oauth/token", input_stream=io.BytesIO(body),
                           headers={**basic(cid, secret), **FORM, "Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
        assert resp.status_code == 200, resp.get_data(as_text=True)


def test_undeclared_body_left_to_the_full_stack():
    """No Content-Length (chunked): the lean path reads nothing and leaves the stream untouched."""
    from tongban.fastpath import Request

    stream = io.BytesIO(b"grant_type=client_credentials")
    environ = {"CONTENT_TYPE": FORM["Content-Type"], "wsgi.input": stream, "wsgi.input_terminated": True,
               "HTTP_TRANSFER_ENCODING": "chunked"}
    req = Request(environ)
    assert req.form() is None
    assert environ["wsgi.input"] is stream and stream.read() == b"grant_type=client_credentials"
