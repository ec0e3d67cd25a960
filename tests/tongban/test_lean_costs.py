"""What was made cheaper per request gives exactly what it replaced: the access line spelt as
``json.dumps`` spells it, JWT claims as ``json.dumps`` would encode them, Flask's
``ensure_sync`` answers, the per-process caches read without an application context."""

from __future__ import annotations

import asyncio
import io
import json
import math

import pytest


@pytest.mark.parametrize(("method", "endpoint", "status", "duration", "rid"), [
    ("POST", "/oauth/token", 200, 1.23, "0123abcd"),
    ("GET", "/v/<code>", 404, None, "req-1.a_b:c"),
    ("GET", "/x", 200, 3, ""),
    ("GET", "/x", 500, 1e-7, "z"),
    ("GET", "/x", 200, 12345678.5, "x" * 64),
    ("BREW", '/"quoted"\\é', 418, 0.0, 'a"b\n{"forged": 1}'),  # a hostile id or method is encoded, not pasted
    ("GET", "/x", 200, math.nan, "\u2028\x00"),
])
def test_access_line_is_json_dumps(method, endpoint, status, duration, rid):
    from tongban.logs import access_json

    for _ in range(2):  # built, then from the remembered parts
        line = access_json(method, endpoint, status, duration, rid)
        when = line.split('"')[3]
        assert line == json.dumps({"time": when, "level": "INFO", "logger": "tongban.access",
                                   "message": f"{method} {endpoint} {status}", "request_id": rid, "method": method,
                                   "endpoint": endpoint, "status": status, "duration_ms": duration},
                                  ensure_ascii=False)
        assert "\n" not in line


def test_access_line_parts_are_bounded():
    from tongban import logs

    for i in range(logs._ACCESS_PARTS_MAX + 50):
        logs.access_json(f"M{i}", "/x", 405, 0.1, "r")
    assert len(logs._ACCESS_PARTS) <= logs._ACCESS_PARTS_MAX


def test_write_access_through_the_json_handler():
    import logging

    from tongban import logs

    stream = io.StringIO()
    handler = logs.configure("json", stream=stream)
    try:
        logs.write_access("GET", "/jwks.json", 200, 0.42, "abc")
    finally:
        logging.getLogger().removeHandler(handler)
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["logger"] == "tongban.access" and line["request_id"] == "abc" and line["duration_ms"] == 0.42
    assert line["message"] == "GET /jwks.json 200" and line["status"] == 200


@pytest.mark.parametrize("claims", [
    {"iss": "http://127.0.0.1:5000", "sub": "c1", "aud": "c1", "client_id": "c1", "iat": 1, "exp": 2,
     "jti": "abc_-", "scope": "openid profile"},
    {"aud": ["a", "b"], "cnf": {"jkt": "x"}, "acr": "L3", "name": "张三", "odd": "\u2028\u2029\x7f\x00\x1f\"\\/"},
    {"big": 2**70, "neg": -(2**63), "nested": [[1, {"k": None}], True, False]},  # 2**70: orjson refuses, json does
])
def test_compact_json_is_json_dumps(claims):
    from keys.jws import compact_json

    assert compact_json(claims) == json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()


def test_signed_claims_decode_to_themselves(app):
    from idp.tokens import ACCESS_TOKEN_ALG, decode_access_token, sign_jwt

    claims = {"iss": app.config["TONGBAN_ISSUER"], "sub": "张三", "aud": "c", "client_id": "c", "iat": 1,
              "exp": 2**31, "jti": "j-compact"}
    tok = decode_access_token(sign_jwt(claims, ACCESS_TOKEN_ALG, typ="at+jwt"))
    assert tok is not None and tok.claims == claims


def test_ensure_sync_remembers_plain_functions_only(app):
    from tongban import _SYNC_CODE, App

    assert isinstance(app, App)

    def make():
        def hook(x):
            return x
        return hook

    first, second = make(), make()
    assert app.ensure_sync(first) is first
    size = len(_SYNC_CODE)
    assert app.ensure_sync(second) is second  # another closure of the same code: no new entry
    assert len(_SYNC_CODE) == size

    async def coro(x):
        await asyncio.sleep(0)
        return x * 2

    for _ in range(2):  # remembered as a coroutine: still handed to Flask's wrapping, every time
        with pytest.raises(RuntimeError, match="async"):  # (Flask without its async extra refuses it)
            app.ensure_sync(coro)
    class Holder:
        def teardown(self, exc):
            return exc

        async def ateardown(self, exc):
            return exc

    bound = Holder().teardown
    assert app.ensure_sync(bound) is bound  # a bound method of a plain function: as it is
    with pytest.raises(RuntimeError, match="async"):
        app.ensure_sync(Holder().ateardown)  # one of a coroutine function: Flask's, every time
    with pytest.raises(RuntimeError, match="async"):
        app.ensure_sync(Holder().ateardown)
    marked = make()
    marked.__dict__["anything"] = 1  # markcoroutinefunction and functools.wraps write here: asked of Flask
    assert app.ensure_sync(marked) is marked


def test_cached_loader_fresh_needs_no_context_and_keeps_the_bound(app):
    from flask import Flask

    from tongban.cache import CachedLoader, Generation

    loads = []
    loader = CachedLoader(Generation("test-lean-fresh"), lambda: loads.append(1) or len(loads), check_every=1.0)
    assert loader.fresh(app) is None  # nothing loaded yet
    with app.app_context():
        assert loader.get() == 1
    assert loader.fresh(app) == 1
    assert loader.fresh(Flask("other")) is None  # another application's value is never given
    loader._checked -= 2  # due for its generation check: get() must look
    assert loader.fresh(app) is None
    with app.app_context():
        loader.get()
        loader.invalidate()
    assert loader.fresh(app) is None


def test_snapshot_begin_end_nest():
    from tongban import cache

    outer = cache.begin_snapshot()
    cache._request_snapshot.get()["x"] = 1
    inner = cache.begin_snapshot()
    assert cache._request_snapshot.get() == {}
    cache.end_snapshot(inner)
    assert cache._request_snapshot.get() == {"x": 1}
    cache.end_snapshot(outer)
    assert cache._request_snapshot.get() is None


def test_full_stack_requests_counted_through_remembered_children(client, monkeypatch):
    """The full stack's metric children, remembered per (rule, method, status), still count every
    request; a method no route knows does not grow the memory past its bound."""
    from prometheus_client import REGISTRY

    from tongban import metrics

    def count():
        labels = {"endpoint": "/healthz", "method": "GET", "status": "200"}
        return REGISTRY.get_sample_value("tongban_http_requests_total", labels) or 0.0

    before = count()
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    assert count() == before + 3
    monkeypatch.setattr(metrics, "_CHILDREN", {})
    monkeypatch.setattr(metrics, "_CHILDREN_MAX", 4)
    try:
        for i in range(10):
            metrics.request_children("(unmatched)", f"TEST-M{i}", 405)
        assert len(metrics._CHILDREN) == 4
    finally:
        for i in range(10):
            metrics.LATENCY.remove("(unmatched)", f"TEST-M{i}")
            metrics.REQUESTS.remove("(unmatched)", f"TEST-M{i}", "405")


def test_cached_loader_current_checks_the_generation_without_a_context(app):
    """``current(app)``: what ``get()`` would return when that loads nothing, read from any
    thread without an application context; None (and nothing loaded) when ``get()`` would load."""
    import threading

    from flask import Flask

    from tongban.cache import CachedLoader, Generation

    def outside(fn):
        out: list = []
        thread = threading.Thread(target=lambda: out.append(fn()))
        thread.start()
        thread.join(10)
        return out[0]

    gen = Generation("test-lean-current")
    loads: list = []
    loader = CachedLoader(gen, lambda: loads.append(1) or len(loads), check_every=0.0)
    assert outside(lambda: loader.current(app)) is None  # nothing loaded yet
    with app.app_context():
        assert loader.get() == 1
    assert outside(lambda: loader.current(app)) == 1
    assert outside(lambda: loader.current(Flask("other"))) is None  # never another application's
    gen.bump(app)  # another process changed what it holds
    assert outside(lambda: loader.current(app)) is None and loads == [1]
    with app.app_context():
        assert loader.get() == 2
    assert outside(lambda: loader.current(app)) == 2
    with app.app_context():
        loader.invalidate()
    assert outside(lambda: loader.current(app)) is None

    bounded = CachedLoader(gen, lambda: "ring", check_every=1.0)
    with app.app_context():
        bounded.get()
    gen.bump(app)
    assert outside(lambda: bounded.current(app)) == "ring"  # within its bound, as get() answers
    bounded._checked -= 2  # due for its generation check
    assert outside(lambda: bounded.current(app)) is None


def _form_as_parse_qsl(body: bytes) -> dict | None:
    """``Request.form`` as it was: every body through ``parse_qsl``."""
    from urllib.parse import parse_qsl

    try:
        text = body.decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    out: dict[str, str] = {}
    for k, v in pairs:
        if k in out or not k.isprintable() or not v.isprintable() or not v.isascii():
            return None
        out[k] = v
    return out


def _form(body: bytes) -> dict | None:
    from tongban.fastpath import Request

    return Request({"CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(body)),
                    "wsgi.input": io.BytesIO(body)}).form()


@pytest.mark.parametrize("body", [
    b"", b"a", b"a=", b"=a", b"=", b"&", b"a=b&", b"&a=b", b"a=b&&c=d", b"a==b", b"a=b=c", b"a=1&a=2",
    b"grant_type=client_credentials", b"grant_type=client_credentials&scope=openid", b"scope=a+b", b"a=%20",
    b"a=%zz", b"a=%C3%A9", b"a=%00", b"a=\x01", b"a=\xc3\xa9", b"a b=c", b"a=b;c=d", b"a=b\n", b"a\t=b",
])
def test_small_form_split_is_parse_qsl(body):
    assert _form(body) == _form_as_parse_qsl(body)


def test_small_form_split_is_parse_qsl_generated():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=400, deadline=None)
    @given(st.text(alphabet="ab=&%+2F0 ;\x00\t\x7fé", max_size=24))
    def check(text):
        body = text.encode()
        assert _form(body) == _form_as_parse_qsl(body)

    check()


def test_metric_shortcuts_write_what_the_public_methods_write():
    """``metrics.histogram_observe`` and ``metrics.counter_inc`` (the lean path's) leave the same
    samples as ``observe`` and ``inc`` on twin metrics, bucket bounds and odd amounts included."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from tongban import metrics

    samples = []
    for shortcut in (False, True):
        registry = CollectorRegistry()
        hist = Histogram("t_latency", "t", ["e"], buckets=metrics.BUCKETS, registry=registry).labels("x")
        count = Counter("t_requests", "t", ["e"], registry=registry).labels("x")
        observe = metrics.histogram_observe(hist) if shortcut else hist.observe
        inc = metrics.counter_inc(count) if shortcut else count.inc
        assert (observe is not hist.observe and inc != count.inc) if shortcut else True  # the shortcuts in use
        for amount in (0.0, 1e-9, 0.005, 0.0050001, 0.01, 0.3, 2.5, 29.999, 30.0, 30.5, 1e9, -1.0, math.nan, 0.0001):
            observe(amount)
            inc()
        samples.append(sorted((s.name, tuple(sorted(s.labels.items())), repr(s.value))
                              for m in registry.collect() for s in m.samples if not s.name.endswith("_created")))
    assert samples[0] == samples[1]
