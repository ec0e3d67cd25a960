"""An adversarial review of the lean token answer given without an application context
(``idp.fast.quick_token``), the remembered Basic credentials, the direct form split and JSON
spelling, and the metric shortcuts. Each test is an attack or an audit of one shortcut: what
binds its verdict to the thing it speaks of."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from urllib.parse import urlencode

import pytest

from tests.flask_flows import basic
from tests.idp.test_fast_path import both
from tests.idp.test_fast_path_token import FORM, GOOD, _lean_token, _wsgi_in_a_thread


def _claims(jwt: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(jwt.split(".")[1] + "=="))


def _header(jwt: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(jwt.split(".")[0] + "=="))


# ---------------------------------------------------------------- remembered credentials and races


def test_a_request_in_flight_with_the_old_register_cannot_reseed_an_old_secret(app, client, fast, make_client):
    """A thread that took the register before a rotation and verifies the old secret against it
    afterwards (the in-flight race any cache has) resets the memory to the old register; the next
    request, with the new register, must not find the old secret there."""
    import idp.fast
    from idp import clients as registry
    from tongban.extensions import db
    from tongban.fastpath import Request

    cid, secret = make_client(grant_types=["client_credentials"])
    _lean_token(client, fast, cid, secret)
    old_register = registry.current_register(app)
    assert old_register is not None
    registry.rotate_secret(cid, actor="test")
    db.session.commit()
    # a request with the new register first, then the late thread with the old one
    assert client.post("/oauth/token", data=GOOD, headers={**basic(cid, secret), **FORM}).status_code == 401
    environ = {"HTTP_AUTHORIZATION": basic(cid, secret)["Authorization"]}
    late = idp.fast._basic_client(Request(environ, app), old_register)
    assert late is not None and late.client_id == cid  # legitimately verified against the old register
    assert idp.fast._basic_verified[0] is old_register  # it reset the memory to the old register
    for _ in range(3):
        resp = client.post("/oauth/token", data=GOOD, headers={**basic(cid, secret), **FORM})
        assert resp.status_code == 401, resp.get_data(as_text=True)
    status, _h, _b = _wsgi_in_a_thread(app, GOOD.encode(), {**basic(cid, secret), **FORM})
    assert status.startswith("401")


def test_threads_resetting_the_memory_never_serve_a_rotated_secret(app, client, fast, make_client):
    """Many threads answer quickly (no application context) while the secret is rotated between
    rounds: once the rotation is committed, no request with the old secret gets a token."""
    from idp import clients as registry
    from tongban.extensions import db

    cid, secret = make_client(grant_types=["client_credentials"])
    _lean_token(client, fast, cid, secret)
    for _round in range(3):
        results: list[str] = []

        def hammer(s=secret):
            for _ in range(5):
                status, _h, _b = _wsgi_in_a_thread(app, GOOD.encode(), {**basic(cid, s), **FORM})
                results.append(status)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results and all(s.startswith("200") for s in results), results
        old, secret = secret, registry.rotate_secret(cid, actor="test")
        db.session.commit()
        for _ in range(3):
            status, _h, _b = _wsgi_in_a_thread(app, GOOD.encode(), {**basic(cid, old), **FORM})
            assert status.startswith("401"), status


def test_a_deleted_client_is_not_served_from_memory(app, client, fast, make_client):
    """A system deleted by another process (its row gone, only the generation moves here)."""
    from sqlalchemy import delete

    from idp.clients import CLIENTS_GENERATION
    from idp.models import Client, ClientUsage
    from tongban.extensions import db

    cid, secret = make_client(grant_types=["client_credentials"])
    _lean_token(client, fast, cid, secret)
    db.session.execute(delete(ClientUsage).where(ClientUsage.client_id == cid))
    db.session.execute(delete(Client).where(Client.client_id == cid))
    db.session.commit()
    CLIENTS_GENERATION.bump(app)
    status, _h, _b = _wsgi_in_a_thread(app, GOOD.encode(), {**basic(cid, secret), **FORM})
    assert status.startswith("401")


def test_a_client_disabled_by_another_process_is_refused_quickly(app, client, fast, make_client):
    from sqlalchemy import update

    from idp.clients import CLIENTS_GENERATION
    from idp.models import Client
    from tongban.extensions import db

    cid, secret = make_client(grant_types=["client_credentials"])
    _lean_token(client, fast, cid, secret)
    db.session.execute(update(Client).where(Client.client_id == cid).values(enabled=False))
    db.session.commit()
    CLIENTS_GENERATION.bump(app)
    status, _h, _b = _wsgi_in_a_thread(app, GOOD.encode(), {**basic(cid, secret), **FORM})
    assert status.startswith("401")


@pytest.mark.parametrize("mangle", [
    lambda h: h.replace("Basic", "BASIC"),
    lambda h: h.replace("Basic ", "Basic\t"),
    lambda h: h + "\x00",
    lambda h: h + "é",
    lambda h: "Basic " + "A" * 6000,
    lambda h: h[:-2] + "%3D" if h.endswith("=") else h + "%3D",
])
def test_header_variants_get_the_full_stacks_verdict(app, client, fast, make_client, mangle):
    cid, secret = make_client(grant_types=["client_credentials"])
    good = basic(cid, secret)["Authorization"]
    _lean_token(client, fast, cid, secret)
    header = mangle(good)
    app.config["TONGBAN_FAST_PATH"] = False
    full = client.post("/oauth/token", data=GOOD, headers={"Authorization": header, **FORM}).status_code
    app.config["TONGBAN_FAST_PATH"] = True
    lean = client.post("/oauth/token", data=GOOD, headers={"Authorization": header, **FORM}).status_code
    assert lean == full
    import idp.fast

    if full != 200:
        assert idp.fast._basic_key(header) not in idp.fast._basic_verified[1]


# ---------------------------------------------------------------- claims: lean (quick) and full


@pytest.mark.parametrize("scope", ["phone", "offline_access", "openid", "phone openid profile phone"])
def test_scope_filtered_by_the_client_same_as_the_full_stack(app, client, fast, make_client, monkeypatch, scope):
    """A requested scope the client may not have (filtered to nothing or to part of it)."""
    import idp.tokens

    cid, secret = make_client(grant_types=["client_credentials"], scopes=["openid", "profile"])
    monkeypatch.setattr(idp.tokens, "epoch", lambda: 1_800_000_000)
    monkeypatch.setattr(idp.tokens, "token", lambda nbytes=32: "fixed-jti")
    body = urlencode({"grant_type": "client_credentials", "scope": scope})
    lean, full = both(app, client, fast, "POST", "/oauth/token", data=body, headers={**basic(cid, secret), **FORM})
    assert lean.status_code == full.status_code == 200
    a, b = lean.get_json()["access_token"], full.get_json()["access_token"]
    assert a.split(".")[:2] == b.split(".")[:2]
    assert {**lean.get_json(), "access_token": "T"} == {**full.get_json(), "access_token": "T"}
    assert lean.data == json.dumps(lean.get_json()).encode()


def test_a_key_due_later_signs_when_due_and_the_retired_one_never(app, client, fast, make_client, monkeypatch,
                                                                   restore_keys):
    """A rotation with a publication delay: the quick answer keeps the old key until the new one is
    due, then signs with the new one at once (without any reload of the ring)."""
    import keys.services as services
    from tongban.clock import utcnow
    from tongban.extensions import db

    cid, secret = make_client(grant_types=["client_credentials"])
    old_kid = _header(_lean_token(client, fast, cid, secret).get_json()["access_token"])["kid"]
    new_kid = services.rotate(("ES256",), delay=3600)[0].kid
    db.session.commit()
    _lean_token(client, fast, cid, secret)  # the ring reloaded (this process rotated)
    status, _h, body = _wsgi_in_a_thread(app, GOOD.encode(), {**basic(cid, secret), **FORM})
    assert status.startswith("200") and _header(json.loads(body)["access_token"])["kid"] == old_kid
    later = utcnow() + timedelta(seconds=3601)
    monkeypatch.setattr(services, "utcnow", lambda: later)
    for _ in range(3):
        status, _h, body = _wsgi_in_a_thread(app, GOOD.encode(), {**basic(cid, secret), **FORM})
        assert status.startswith("200") and _header(json.loads(body)["access_token"])["kid"] == new_kid


def test_a_key_added_by_another_process_is_used_after_the_rings_bound(app, client, fast, make_client,
                                                                     restore_keys):
    """Another process adds an immediately active key (only the generation moves here): past the
    ring's one-second bound, the quick answer must not keep signing with the one it held."""
    import keys.services as services
    from tongban.extensions import db

    cid, secret = make_client(grant_types=["client_credentials"])
    old_kid = _header(_lean_token(client, fast, cid, secret).get_json()["access_token"])["kid"]
    row = services.create_key("ES256")  # as another process: no after-commit reload here
    db.session.commit()
    services.KEYS_GENERATION.bump(app)
    services._ring._checked -= 2  # the one-second bound passed
    kids = set()
    for _ in range(3):
        _s, _h, body = _wsgi_in_a_thread(app, GOOD.encode(), {**basic(cid, secret), **FORM})
        kids.add(_header(json.loads(body)["access_token"])["kid"])
    assert kids == {row.kid} and old_kid != row.kid


# ---------------------------------------------------------------- the form and the JSON


@pytest.mark.parametrize("body", [
    "grant_type=client_credentials&",
    "&grant_type=client_credentials",
    "grant_type=client_credentials&&scope=openid",
    "grant_type=client_credentials;scope=openid",
    "grant_type=client_credentials&=x",
    "grant_type=client_credentials&scope=",
    "grant_type=client_credentials&scope=openid&scope=openid",
    "grant_type=client_credentials&scope=openid%20profile",
    "grant_type=client_credentials&scope=openid+profile",
    "grant_type=client_credentials&scope=openid  profile",
    "grant_type=client_credentials&scope= openid",
    "grant_type=client_credentials\x00",
    "grant_type=client_credentials&scope=openid\x7f",
    "grant_type=client_credentials&Scope=openid",
    "grant_type=client_credentials&scope=openid=profile",
])
def test_odd_forms_get_the_full_stacks_answer(app, client, fast, make_client, body):
    """Whatever the direct split accepts, the full stack answers the same way (status; the same
    object but for the token)."""
    cid, secret = make_client(grant_types=["client_credentials"], scopes=["openid", "profile"])
    headers = {**basic(cid, secret), **FORM}
    _lean_token(client, fast, cid, secret)
    before = fast.answered
    lean = client.post("/oauth/token", data=body.encode(), headers=headers)
    was_lean = fast.answered == before + 1
    app.config["TONGBAN_FAST_PATH"] = False
    full = client.post("/oauth/token", data=body.encode(), headers=headers)
    app.config["TONGBAN_FAST_PATH"] = True
    assert lean.status_code == full.status_code, (lean.get_data(as_text=True), full.get_data(as_text=True))
    if was_lean:
        x, y = lean.get_json(), full.get_json()
        assert {**x, "access_token": "T"} == {**y, "access_token": "T"}


# ---------------------------------------------------------------- metrics in multiprocess mode


_MULTIPROC = r"""
import math, os, sys, json
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import multiprocess
sys.path.insert(0, os.getcwd())
from tongban import metrics
shortcut = sys.argv[1] == "1"
reg = CollectorRegistry()
hist = Histogram("t_latency", "t", ["e"], buckets=metrics.BUCKETS, registry=reg).labels("x")
count = Counter("t_requests", "t", ["e"], registry=reg).labels("x")
observe = metrics.histogram_observe(hist) if shortcut else hist.observe
inc = metrics.counter_inc(count) if shortcut else count.inc
if shortcut:
    assert observe is not hist.observe and inc != count.inc
for amount in (0.0, 1e-9, 0.005, 0.0050001, 0.01, 0.3, 2.5, 29.999, 30.0, 30.5, 1e9, -1.0, math.nan, 0.0001):
    observe(amount)
    inc()
out = CollectorRegistry()
multiprocess.MultiProcessCollector(out)
print(json.dumps(sorted((s.name, sorted(s.labels.items()), repr(s.value)) for m in out.collect()
                        for s in m.samples if not s.name.endswith("_created"))))
"""


def test_metric_shortcuts_in_multiprocess_mode(tmp_path):
    """``PROMETHEUS_MULTIPROC_DIR`` set (as ``make serve`` sets it): the shortcuts write the same
    mmap'ed samples as the public methods."""
    seen = []
    for shortcut in ("0", "1"):
        folder = tmp_path / shortcut
        folder.mkdir()
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
        out = subprocess.run([sys.executable, "-c", _MULTIPROC, shortcut], env=env, capture_output=True, text=True,
                             timeout=120, cwd=os.getcwd())
        assert out.returncode == 0, out.stderr[-3000:]
        seen.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert seen[0] == seen[1]
    assert any(name == "t_requests_total" for name, _l, _v in seen[0])


# ---------------------------------------------------------------- the body's declared length


@pytest.mark.parametrize("declared", ["+{n}", "{underscored}", "{arabic}"])
def test_a_content_length_werkzeug_would_not_read_is_not_read_either(app, client, fast, make_client, declared):
    """``Content-Length`` is ``1*DIGIT`` (RFC 9110 §8.6). Python's ``int`` also takes a sign,
    underscores and non-ASCII digits, which Werkzeug refuses (it then reads no body): the lean
    path must not answer from a body the full stack would never see."""
    cid, secret = make_client(grant_types=["client_credentials"])
    _lean_token(client, fast, cid, secret)
    body = GOOD.encode()
    n = len(body)
    arabic = "".join(chr(0x660 + int(d)) for d in str(n))
    value = declared.format(n=n, arabic=arabic, underscored="_".join(str(n)))  # int("2_9") == 29
    environ_headers = {**basic(cid, secret), **FORM}
    results = []
    for on in (True, False):
        app.config["TONGBAN_FAST_PATH"] = on
        try:
            status, _h, _b = _wsgi_with_length(app, body, environ_headers, value)
        finally:
            app.config["TONGBAN_FAST_PATH"] = True
        results.append(status[:3])
    assert results[0] == results[1], (value, results)


def _wsgi_with_length(app, body: bytes, headers: dict, length: str):
    import io

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/oauth/token", "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
               "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(),
               "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0),
               "CONTENT_LENGTH": length}
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key == "CONTENT_TYPE" else "HTTP_" + key] = value
    seen: list = []
    chunks = app.wsgi_app(environ, lambda status, hdrs, exc=None: seen.append((status, dict(hdrs))))
    out = b"".join(chunks)
    return seen[0][0], seen[0][1], out


# ---------------------------------------------------------------- a generation handed out twice


@pytest.mark.parametrize("how", ["lost", "restored"])
def test_a_generation_value_is_never_handed_out_twice(app, client, fast, make_client, how):
    """Redis restarted empty (or the key evicted), or restored from an older RDB/AOF file or a
    lagging replica promoted: the clients' generation counter starts again below where it was. If
    another process then rotates a secret and ``INCR`` hands out the very value this process holds,
    the rotation is never seen here: the old secret keeps getting tokens (quick path, handler and
    full stack alike: they share the register). Each bump must give a value never given before."""
    from sqlalchemy import update

    from idp.clients import CLIENTS_GENERATION
    from idp.models import Client
    from tongban.cache import redis_client
    from tongban.clock import digest
    from tongban.extensions import db

    r = redis_client(app)
    if r is None:
        pytest.skip("needs Redis (TEST_REDIS_URL)")
    key = f"tongban:gen:{CLIENTS_GENERATION.name}"
    cid, secret = make_client(grant_types=["client_credentials"])
    _lean_token(client, fast, cid, secret)
    held = r.get(key)
    assert held is not None
    if how == "lost":
        r.delete(key)
    else:
        r.set(key, int(held) - 1)
    # another process rotates the secret (the row changes, its generation moves once, or as many
    # times as it takes to reach the old value again: other changes in the meantime)
    db.session.execute(update(Client).where(Client.client_id == cid).values(secret_hash=digest("rotated")))
    db.session.commit()
    CLIENTS_GENERATION.bump(app)
    while int(r.get(key)) < int(held):
        CLIENTS_GENERATION.bump(app)
    assert r.get(key) != held, "a generation value handed out twice"
    status, _h, _b = _wsgi_in_a_thread(app, GOOD.encode(), {**basic(cid, secret), **FORM})
    assert status.startswith("401")
    app.config["TONGBAN_FAST_PATH"] = False
    try:
        assert client.post("/oauth/token", data=GOOD, headers={**basic(cid, secret), **FORM}).status_code == 401
    finally:
        app.config["TONGBAN_FAST_PATH"] = True


def _rotate_with_a_failed_bump(app, client, fast, make_client, monkeypatch):
    """A system whose secret was rotated and committed while its after-commit bump failed
    (Redis unreachable from the writer for a moment); Redis is back afterwards."""
    from idp import clients as registry
    from tongban import cache
    from tongban.extensions import db

    if cache.redis_client(app) is None:
        pytest.skip("needs Redis (TEST_REDIS_URL)")
    cid, secret = make_client(grant_types=["client_credentials"])
    _lean_token(client, fast, cid, secret)
    held = (registry._register._value, registry._register._gen)
    real_bump = cache.Generation.bump

    def unreachable(self, app=None):
        raise ConnectionError("Redis unreachable")

    monkeypatch.setattr(cache.Generation, "bump", unreachable)
    registry.rotate_secret(cid, actor="test")
    with pytest.raises(ConnectionError):
        db.session.commit()  # committed; its after-commit bump failed
    monkeypatch.setattr(cache.Generation, "bump", real_bump)  # Redis is back
    return cid, secret, held


def test_a_rotation_whose_bump_failed_is_seen_by_its_own_process(app, client, fast, make_client, monkeypatch):
    """``CachedLoader.invalidate`` dropped the process's value only after a successful bump: the
    process that rotated the secret kept accepting the old one until some later change."""
    cid, secret, _held_before = _rotate_with_a_failed_bump(app, client, fast, make_client, monkeypatch)
    status, _h, _b = _wsgi_in_a_thread(app, GOOD.encode(), {**basic(cid, secret), **FORM})
    assert status.startswith("401")


def test_a_rotation_whose_bump_failed_is_seen_by_other_processes_within_the_max_age(app, client, fast, make_client,
                                                                                    monkeypatch):
    """Another process still holds the register it loaded before (its value and generation, put
    back here): nothing tells it of the change, but a register older than ``cache.MAX_AGE`` is
    loaded again, so the old secret stops getting tokens there within that bound."""
    import time

    from idp import clients as registry
    from tongban import cache

    cid, secret, (value, gen) = _rotate_with_a_failed_bump(app, client, fast, make_client, monkeypatch)
    registry._register._value, registry._register._gen = value, gen  # as the other process holds it
    registry._register._loaded = time.monotonic() - cache.MAX_AGE - 1  # loaded longer ago than the bound
    status, _h, _b = _wsgi_in_a_thread(app, GOOD.encode(), {**basic(cid, secret), **FORM})
    assert status.startswith("401")


def test_a_revocation_or_rotation_whose_bump_failed_is_seen_by_its_own_process(app, client, fast, make_client,
                                                                              monkeypatch, restore_keys):
    """The deny list and the key ring reloaded themselves only after a successful bump: a token
    revoked (or keys rotated) while Redis was unreachable for a moment stayed accepted (or
    unpublished) in the very process that revoked (or rotated)."""
    import keys.services as services
    from idp import tokens
    from tongban import cache
    from tongban.extensions import db

    if cache.redis_client(app) is None:
        pytest.skip("needs Redis (TEST_REDIS_URL)")
    cid, secret = make_client(grant_types=["client_credentials"])
    claims = _claims(_lean_token(client, fast, cid, secret).get_json()["access_token"])
    assert not tokens.is_denied(claims["jti"])
    ring = services.keyring()
    real_bump = cache.Generation.bump

    def unreachable(self, app=None):
        raise ConnectionError("Redis unreachable")

    monkeypatch.setattr(cache.Generation, "bump", unreachable)
    tokens.deny(claims["jti"], claims["exp"], "test", "test")
    with pytest.raises(ConnectionError):
        db.session.commit()
    db.session.close()  # as the request's end does
    new = services.rotate(("ES256",), delay=0)[0]
    with pytest.raises(ConnectionError):
        db.session.commit()
    db.session.close()
    monkeypatch.setattr(cache.Generation, "bump", real_bump)
    assert tokens.is_denied(claims["jti"])
    assert services.keyring() is not ring and services.keyring().find(new.kid) is not None
