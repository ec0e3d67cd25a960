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


# ---------------------------------------------------------------- answers given without an application context


def _jwks_kids(client) -> set[str]:
    resp = client.get("/jwks.json")
    assert resp.status_code == 200
    return {k["kid"] for k in resp.get_json()["keys"]}


def _warm_jwks(client, fast) -> int:
    for _ in range(3):  # the process's first request and the route's first answer are the full stack's
        client.get("/jwks.json")
    before = fast.answered
    client.get("/jwks.json")
    assert fast.answered == before + 1, "the lean path did not answer"
    return fast.answered


def test_lean_jwks_publishes_this_process_rotation_at_once(app, client, fast, restore_keys):
    """The remembered JWKS body is dropped with the key ring: a key rotated here is published by
    the very next lean answer, not a second later."""
    from keys import services
    from tongban.extensions import db

    answered = _warm_jwks(client, fast)
    old = _jwks_kids(client)
    kid = services.rotate(("ES256",), delay=3600)[0].kid
    db.session.commit()
    kids = _jwks_kids(client)
    assert kid in kids and old <= kids
    assert fast.answered == answered + 2  # both lean


def test_lean_jwks_sees_another_process_rotation_within_the_key_rings_bound(app, client, fast, restore_keys):
    """Another process rotates (only the keys' generation moves here): once this process's key
    ring is due for its generation check (1 s), the lean answer publishes the new key, as the
    full stack does."""
    from datetime import timedelta

    from keys import services
    from tongban.clock import utcnow
    from tongban.extensions import db

    _warm_jwks(client, fast)
    kid = services.create_key("ES256", activates_at=utcnow() + timedelta(hours=1)).kid
    db.session.commit()  # no after-commit reload in this process: as if another one rotated
    services.KEYS_GENERATION.bump(app)
    services._ring._checked -= 2  # a second and more since this process read the generation
    assert kid in _jwks_kids(client)


def test_lean_jwks_never_serves_a_body_of_an_earlier_minute(app, client, fast):
    """Published keys change with time (a retired key leaves after its grace): a body remembered
    from an earlier minute is recomputed, never served."""
    from keys import services

    _warm_jwks(client, fast)
    ring = services._ring._value
    minute, body, _ = ring._jwks_cache
    ring._jwks_cache = (minute - 1, body, b'{"keys":[{"kid":"forged"}]}')
    assert "forged" not in _jwks_kids(client)


def test_quick_answers_are_per_application(app):
    """What one application remembers is never another's lean answer (tests run several)."""
    from flask import Flask

    from idp.views import discovery_bytes_if_cached
    from keys import services

    with app.app_context():
        services.keyring()
    other = Flask("other")
    assert services.fresh_keyring(app) is not None
    assert services.fresh_keyring(other) is None
    assert discovery_bytes_if_cached(other) is None


def test_lean_answers_are_counted(app, client, fast, make_client):
    """The metric children looked up once still count every lean answer."""
    from prometheus_client import REGISTRY

    def value(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    answered = _warm_jwks(client, fast)
    requests = value("tongban_http_requests_total", endpoint="/jwks.json", method="GET", status="200")
    client.get("/jwks.json")
    assert value("tongban_http_requests_total", endpoint="/jwks.json", method="GET", status="200") == requests + 1
    assert fast.answered == answered + 1

    cid, secret = make_client(grant_types=["client_credentials"])
    body = urlencode({"grant_type": "client_credentials"})
    for _ in range(2):
        client.post("/oauth/token", data=body, headers={**basic(cid, secret), **FORM})
    issued = value("tongban_tokens_issued_total", grant="client_credentials")
    before = fast.answered
    resp = client.post("/oauth/token", data=body, headers={**basic(cid, secret), **FORM})
    assert resp.status_code == 200 and fast.answered == before + 1
    assert value("tongban_tokens_issued_total", grant="client_credentials") == issued + 1
