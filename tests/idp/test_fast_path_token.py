"""The lean token answer (``idp.fast``): given without an application context while the register
and the key ring are current, with claims from the generator's own claim builder, and with Basic
credentials remembered per register by the exact header text. It must give the full stack's
answer byte for byte (but the signature and the per-request random values), fall back to an
application context when something must be loaded, and never accept what the full check would
refuse: a rotated secret, a disabled or changed system, another header, a failure."""

from __future__ import annotations

import base64
import io
import json
import threading
from urllib.parse import urlencode

import pytest

from tests.flask_flows import basic
from tests.idp.test_fast_path import both, not_lean

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
GOOD = "grant_type=client_credentials"


def _lean_token(client, fast, cid, secret, body=GOOD, headers=None):
    """A token request answered by the lean path (after the requests that teach it)."""
    headers = headers or {**basic(cid, secret), **FORM}
    for _ in range(2):
        client.post("/oauth/token", data=body, headers=headers)
    before = fast.answered
    resp = client.post("/oauth/token", data=body, headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert fast.answered == before + 1, "the lean path did not answer"
    return resp


def _wsgi_in_a_thread(app, body: bytes, headers: dict) -> tuple[str, dict, bytes]:
    """One WSGI call from a thread of its own: no application context pushed by anyone."""
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/oauth/token", "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
               "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(),
               "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0),
               "CONTENT_LENGTH": str(len(body))}
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key == "CONTENT_TYPE" else "HTTP_" + key] = value
    out: dict = {}

    def run():
        seen: list = []
        chunks = app.wsgi_app(environ, lambda status, hdrs, exc=None: seen.append((status, dict(hdrs))))
        out["body"] = b"".join(chunks)
        out["status"], out["headers"] = seen[0]

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    return out["status"], out["headers"], out["body"]


@pytest.fixture
def quick_calls(monkeypatch):
    """Which mode answered each lean token request: True (no application context), False (the
    handler, in one), with whether an application context was there."""
    from flask import has_app_context

    import idp.fast

    calls: list[tuple[bool, bool]] = []
    real = idp.fast._token

    def spy(req, quick):
        calls.append((quick, has_app_context()))
        return real(req, quick)

    monkeypatch.setattr(idp.fast, "_token", spy)
    return calls


# ---------------------------------------------------------------- the same answer


@pytest.mark.parametrize("scope", [None, "profile", "openid profile", "profile phone", "profile profile"])
def test_same_claims_header_and_body_as_the_full_stack(app, client, fast, make_client, monkeypatch, scope):
    """With the clock and the jti fixed, the two paths sign the very same header and claims, and
    answer the same object but for the signature."""
    import idp.tokens

    cid, secret = make_client(grant_types=["client_credentials"], scopes=["openid", "profile"])
    monkeypatch.setattr(idp.tokens, "epoch", lambda: 1_800_000_000)
    monkeypatch.setattr(idp.tokens, "token", lambda nbytes=32: "fixed-jti")
    body = urlencode({"grant_type": "client_credentials", **({"scope": scope} if scope else {})})
    lean, full = both(app, client, fast, "POST", "/oauth/token", data=body, headers={**basic(cid, secret), **FORM})
    a, b = lean.get_json()["access_token"], full.get_json()["access_token"]
    assert a.split(".")[:2] == b.split(".")[:2]  # header and claims, byte for byte
    assert a.split(".")[2] != b.split(".")[2]  # (ECDSA: a fresh signature each time)
    x, y = lean.get_json(), full.get_json()
    assert {**x, "access_token": "T"} == {**y, "access_token": "T"}
    # the lean answer as it always was spelt: json.dumps of the generator's dict, in its order
    # (the full stack's JSON provider sorts the keys: the same object, another spelling)
    assert list(x) == ["token_type", "access_token", "expires_in"] + (["scope"] if "scope" in x else [])
    assert lean.data == json.dumps(x).encode()
    assert lean.headers["Content-Type"] == full.headers["Content-Type"]
    claims = json.loads(base64.urlsafe_b64decode(a.split(".")[1] + "=="))
    assert claims["sub"] == claims["client_id"] == claims["aud"] == cid and claims["jti"] == "fixed-jti"


def test_token_body_is_json_dumps():
    from idp.fast import _token_body

    jws = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    for out in ({"token_type": "Bearer", "access_token": jws, "expires_in": 3600},
                {"token_type": "Bearer", "access_token": jws, "expires_in": 3600, "scope": "openid profile"},
                {"token_type": "Bearer", "access_token": jws, "expires_in": 3600.5},
                {"token_type": "Bearer", "access_token": jws, "expires_in": True},
                {"token_type": "DPoP", "access_token": jws, "expires_in": 60},
                {"token_type": "Bearer", "access_token": 'a"b.c\\d.e', "expires_in": 60},
                {"token_type": "Bearer", "access_token": jws, "expires_in": 60, "scope": 'a"b'},
                {"token_type": "Bearer", "access_token": jws, "expires_in": 60, "scope": "é"},
                {"token_type": "Bearer", "access_token": "a\x7fb", "expires_in": 60},
                {"token_type": "Bearer", "access_token": "a/b\tc", "expires_in": 60, "scope": "x\u2028"},
                {"token_type": "Bearer", "access_token": "a/b c", "expires_in": -5, "scope": "openid <x>"},
                {"token_type": "Bearer", "access_token": None, "expires_in": 60},
                {"token_type": "Bearer", "access_token": jws, "expires_in": 60, "refresh_token": "r"},
                {"access_token": jws, "token_type": "Bearer", "expires_in": 60}):
        assert _token_body(out) == json.dumps(out).encode(), out


# ---------------------------------------------------------------- no application context


def test_answered_without_an_application_context(app, client, fast, make_client, quick_calls, monkeypatch):
    import threading

    from idp import clients as registry

    cid, secret = make_client(grant_types=["client_credentials"])
    headers = {**basic(cid, secret), **FORM}
    _lean_token(client, fast, cid, secret)
    quick_calls.clear()
    before = fast.answered
    # the usage counter is one per process; another application's background thread in this test
    # process may flush it into its own database at any moment: the flush is watched, not the row
    flushes: list = []
    real = registry.usage.maybe_flush

    def watched(flask_app):
        flushes.append((threading.get_ident(), flask_app, registry.usage._counts.copy()))
        return real(flask_app)

    monkeypatch.setattr(registry.usage, "maybe_flush", watched)
    status, hdrs, body = _wsgi_in_a_thread(app, GOOD.encode(), headers)
    assert status.startswith("200") and json.loads(body)["token_type"] == "Bearer"
    assert fast.answered == before + 1
    assert quick_calls == [(True, False)]  # the quick handler answered, and no context was pushed
    assert hdrs["Content-Length"] == str(len(body)) and hdrs["X-Request-Id"]
    # the usage counts are flushed at its end when due, as the application context's end does
    # (every request, in the tests: TONGBAN_USAGE_FLUSH_SECONDS = 0), from the answering thread
    ours = [f for f in flushes if f[0] != threading.get_ident() and f[1] is app]
    assert ours and any(cid == key[0] for key in ours[0][2])  # this answer's count was there to flush


def test_a_register_to_load_falls_back_to_an_application_context(app, client, fast, make_client, quick_calls):
    """When the register moved (another process changed a system) the quick answer gives way to
    the handler in an application context, which loads it; the next request is quick again."""
    from idp.clients import CLIENTS_GENERATION

    cid, secret = make_client(grant_types=["client_credentials"])
    _lean_token(client, fast, cid, secret)
    CLIENTS_GENERATION.bump(app)  # another process: only the generation moves here
    quick_calls.clear()
    _lean_token(client, fast, cid, secret)
    assert quick_calls[0] == (True, True) and quick_calls[1] == (False, True)
    assert all(quick for quick, _ in quick_calls[2:])


def test_the_end_of_context_work_is_the_usage_flush_only(app):
    """A quick answer skips the application context, so it does itself what the context's end
    does after every request: the usage flush (``registry.flush_usage_if_due``). A new
    ``after_session`` hook or teardown function must be added there too (then update this test)."""
    from flask_sqlalchemy import SQLAlchemy

    hooks = app.extensions.get("tongban.after_session", [])
    assert [h.__qualname__ for h in hooks] == ["init_usage.<locals>._flush"]
    teardown = app.teardown_appcontext_funcs
    assert [getattr(f, "__qualname__", "") for f in teardown] == [
        "init_after_request_writes.<locals>._run", SQLAlchemy._teardown_session.__qualname__]


# ---------------------------------------------------------------- remembered credentials


def _basic_key(header: str) -> bytes:
    import idp.fast

    return idp.fast._basic_key(header)


def _held(cid=None):
    import idp.fast

    _register, held = idp.fast._basic_verified
    return held if cid is None else [h for h, c in held.items() if c.client_id == cid]


def test_a_rotated_secret_is_refused_at_once(app, client, fast, make_client):
    from idp import clients as registry
    from tongban.extensions import db

    cid, secret = make_client(grant_types=["client_credentials"])
    _lean_token(client, fast, cid, secret)
    assert _held(cid)
    new = registry.rotate_secret(cid, actor="test")
    db.session.commit()
    resp = client.post("/oauth/token", data=GOOD, headers={**basic(cid, secret), **FORM})
    assert resp.status_code == 401 and resp.get_json()["error"] == "invalid_client"
    assert _basic_key(basic(cid, secret)["Authorization"]) not in _held(cid)
    _lean_token(client, fast, cid, new)


def test_a_secret_rotated_by_another_process_is_refused(app, client, fast, make_client):
    """Another process rotates (the row changes, only the generation moves here): the
    remembered header is not used with the new register."""
    from sqlalchemy import update

    from idp.clients import CLIENTS_GENERATION
    from idp.models import Client
    from tongban.clock import digest
    from tongban.extensions import db

    cid, secret = make_client(grant_types=["client_credentials"])
    _lean_token(client, fast, cid, secret)
    db.session.execute(update(Client).where(Client.client_id == cid).values(secret_hash=digest("another")))
    db.session.commit()
    CLIENTS_GENERATION.bump(app)
    resp = client.post("/oauth/token", data=GOOD, headers={**basic(cid, secret), **FORM})
    assert resp.status_code == 401
    _lean_token(client, fast, cid, "another")


def test_a_disabled_or_changed_client_is_not_served_from_memory(app, client, fast, make_client):
    from idp import clients as registry
    from tongban.extensions import db

    cid, secret = make_client(grant_types=["client_credentials"], scopes=["openid", "profile"])
    headers = {**basic(cid, secret), **FORM}
    _lean_token(client, fast, cid, secret)
    registry.update_client(cid, actor="test", grant_types=["authorization_code"])
    db.session.commit()
    resp = not_lean(app, client, fast, "POST", "/oauth/token", data=GOOD, headers=headers)
    assert resp.status_code in (400, 401) and resp.get_json()["error"] == "unauthorized_client"
    registry.update_client(cid, actor="test", grant_types=["client_credentials"])
    db.session.commit()
    _lean_token(client, fast, cid, secret)
    registry.set_enabled(cid, False, actor="test")
    db.session.commit()
    resp = not_lean(app, client, fast, "POST", "/oauth/token", data=GOOD, headers=headers)
    assert resp.status_code == 401


def test_failures_are_never_remembered(app, client, fast, make_client):
    cid, secret = make_client(grant_types=["client_credentials"])
    _lean_token(client, fast, cid, secret)
    held = dict(_held())
    for wrong in (secret[:-1], secret + "x", "", secret.upper()):
        resp = not_lean(app, client, fast, "POST", "/oauth/token", data=GOOD, headers={**basic(cid, wrong), **FORM})
        assert resp.status_code == 401
    assert _held() == held


def test_header_variants_are_checked_each_on_their_own(app, client, fast, make_client):
    """The memory is keyed by the exact header: a variant of a remembered header (another
    spelling of the same client_id, another scheme's case, trailing bytes) is a new full check,
    and only the one that proves the secret is served."""
    cid, secret = make_client(grant_types=["client_credentials"])
    good = basic(cid, secret)["Authorization"]
    _lean_token(client, fast, cid, secret)
    raw = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    spelt = "%" + format(ord(cid[0]), "02X") + cid[1:]  # the client_id percent-encoded (RFC 6749 §2.3.1)
    variant = "Basic " + base64.b64encode(f"{spelt}:{secret}".encode()).decode()
    resp = _lean_token(client, fast, cid, secret, headers={"Authorization": variant, **FORM})
    assert resp.status_code == 200 and _basic_key(variant) in _held() and _basic_key(good) in _held()
    for header in ("basic " + raw, "Basic  " + raw, "Basic " + raw + "=", "Basic " + raw[:-1], "Basic " + raw[1:],
                   "Basic " + base64.b64encode(f"{spelt}:{secret}x".encode()).decode(), good + " ", good + "\t"):
        headers = {"Authorization": header, **FORM}
        app.config["TONGBAN_FAST_PATH"] = False
        full = client.post("/oauth/token", data=GOOD, headers=headers).status_code
        app.config["TONGBAN_FAST_PATH"] = True
        lean = client.post("/oauth/token", data=GOOD, headers=headers).status_code
        assert lean == full, header  # whoever answers, the full stack's verdict
        if full != 200:
            assert _basic_key(header) not in _held(), header


def test_remembered_credentials_hold_no_secret(app, client, fast, make_client):
    import idp.fast

    cid, secret = make_client(grant_types=["client_credentials"])
    header = basic(cid, secret)["Authorization"]
    _lean_token(client, fast, cid, secret)
    held = _held()
    assert _basic_key(header) in held and held[_basic_key(header)].client_id == cid
    for key in held:  # a digest, never the header nor the secret
        assert isinstance(key, bytes) and len(key) == 16 and secret.encode() not in key
    assert header not in held and header.split(" ", 1)[1] not in repr(idp.fast._basic_verified)


def test_remembered_credentials_are_bounded(app, client, fast, make_client, monkeypatch):
    import idp.fast

    monkeypatch.setattr(idp.fast, "_BASIC_MAX", 8)
    cid, secret = make_client(grant_types=["client_credentials"])
    _lean_token(client, fast, cid, secret)
    for i in range(20):  # as many spellings of one valid header as an attacker with the secret likes
        spelt = "".join("%" + format(ord(ch), "02X") if (i >> k) & 1 else ch for k, ch in enumerate(cid))
        header = "Basic " + base64.b64encode(f"{spelt}:{secret}".encode()).decode()
        assert client.post("/oauth/token", data=GOOD, headers={"Authorization": header, **FORM}).status_code == 200
        assert len(_held()) <= 8


def test_another_clients_header_never_matches(app, client, fast, make_client):
    """Each header is remembered with the system it proved: B's header gives B's token, and A's
    secret with B's id is refused."""
    a, a_secret = make_client(grant_types=["client_credentials"])
    b, b_secret = make_client(grant_types=["client_credentials"])
    _lean_token(client, fast, a, a_secret)
    resp = _lean_token(client, fast, b, b_secret)
    claims = json.loads(base64.urlsafe_b64decode(resp.get_json()["access_token"].split(".")[1] + "=="))
    assert claims["client_id"] == b
    resp = client.post("/oauth/token", data=GOOD, headers={**basic(b, a_secret), **FORM})
    assert resp.status_code == 401


def test_introspection_shares_the_memory_and_its_checks(app, client, fast, make_client):
    """Introspection authenticates through the same remembered headers: a rotated secret is
    refused there too."""
    from idp import clients as registry
    from tongban.extensions import db

    cid, secret = make_client(grant_types=["client_credentials"], introspection_allowed=True)
    tok = _lean_token(client, fast, cid, secret).get_json()["access_token"]
    auth = {**basic(cid, secret), **FORM}
    lean, _full = both(app, client, fast, "POST", "/oauth/introspect", data=urlencode({"token": tok}), headers=auth)
    assert lean.get_json()["active"] is True
    registry.rotate_secret(cid, actor="test")
    db.session.commit()
    resp = client.post("/oauth/introspect", data=urlencode({"token": tok}), headers=auth)
    assert resp.status_code == 401
