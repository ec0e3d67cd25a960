"""The security headers hook writes exactly what it wrote before its headers were built once
per case: the same headers, values and order, for every combination of framing, HTTPS, cache
settings and headers a view set itself."""

from __future__ import annotations

import itertools

import pytest
from flask import Response, g, request

from tongban.security import CSP, CSP_FRAMEABLE, _has_secure

COMMON = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(self), geolocation=(), microphone=()"),
]
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


def reference(response: Response, https: bool) -> Response:
    """The hook as it was (tongban/security.py before the headers were prebuilt)."""
    h = response.headers
    present = {k.lower() for k, _ in h.items()}
    framable = g.get("allow_framing", False)
    extra = list(COMMON)
    extra.append(("Content-Security-Policy", CSP_FRAMEABLE if framable else CSP))
    if not framable:
        extra.append(("X-Frame-Options", "DENY"))
    if https or request.is_secure:
        extra.append(HSTS)
    seconds = g.get("cache_seconds")
    if seconds is None and request.endpoint == "static":
        seconds = 3600
    if seconds:
        scope = "private" if g.get("cache_private") else "public"
        extra.append(("Cache-Control", f"{scope}, max-age={seconds}"))
    else:
        if "cache-control" in present:
            del h["Cache-Control"]
            present.discard("cache-control")
        extra.append(("Cache-Control", "no-store"))
        extra.append(("Pragma", "no-cache"))
    for k, v in extra:
        if k.lower() not in present:
            h.add(k, v)
    if https and "set-cookie" in present:
        cookies = h.getlist("Set-Cookie")
        fixed = [c if _has_secure(c) else c + "; Secure" for c in cookies]
        if fixed != cookies:
            h.setlist("Set-Cookie", fixed)
    return response


def _hook(app):
    hooks = [f for f in app.after_request_funcs[None] if f.__name__ == "_headers"]
    assert len(hooks) == 1
    return hooks[0]


SET_BY_VIEW = [
    [],
    [("Cache-Control", "max-age=60")],
    [("X-Frame-Options", "SAMEORIGIN"), ("Content-Security-Policy", "default-src 'none'")],
    [("Pragma", "x"), ("referrer-policy", "origin"), ("Set-Cookie", "a=1; Path=/"),
     ("Set-Cookie", "b=2; Secure; HttpOnly")],
]


@pytest.fixture(params=["http", "https"])
def issuer_app(request, app):
    """The test app (an http:// issuer), and one with an https:// issuer (HSTS, Secure cookies)."""
    if request.param == "http":
        return app
    from tests.tongban.test_input import KEEP
    from tongban import create_app

    return create_app({**{k: app.config[k] for k in KEEP}, "TONGBAN_ISSUER": "https://id.example",
                       "TONGBAN_OUTBOX_THREAD": False, "TONGBAN_USAGE_FLUSH_SECONDS": 0})


@pytest.mark.parametrize(("path", "base"), [("/login", "http://localhost/"), ("/static/css/tongban.css", "http://x/"),
                                            ("/login", "https://localhost/")])
def test_headers_as_before(issuer_app, path, base):
    app = issuer_app
    hook = _hook(app)
    https = app.config["TONGBAN_ISSUER"].startswith("https://")
    for framing, seconds, private, view_headers in itertools.product(
            (None, True), (None, 0, 300), (False, True), SET_BY_VIEW):
        got = []
        for fn in (hook, lambda r: reference(r, https)):
            with app.test_request_context(path, base_url=base):  # matched: request.endpoint is set
                for name in ("allow_framing", "cache_seconds", "cache_private"):  # g may be the fixture's
                    g.pop(name, None)
                if framing:
                    g.allow_framing = True
                if seconds is not None:
                    g.cache_seconds = seconds
                    g.cache_private = private
                got.append(list(fn(Response("x", headers=list(view_headers))).headers.items()))
        assert got[0] == got[1], (path, base, framing, seconds, private, view_headers)
        if path.startswith("/static/") and seconds is None and not view_headers:  # the static default
            assert ("Cache-Control", "public, max-age=3600") in got[0]


def test_headers_on_a_page(client):
    r = client.get("/login")
    h = r.headers
    assert h["Content-Security-Policy"] == CSP and h["X-Frame-Options"] == "DENY"
    assert h["Cache-Control"] == "no-store" and h["Pragma"] == "no-cache"
    assert [v for k, v in h.items() if k == "X-Content-Type-Options"] == ["nosniff"]
    assert "Strict-Transport-Security" not in h  # an http:// issuer, a plain request
