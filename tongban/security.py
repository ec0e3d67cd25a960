"""What every request and response goes through: security headers, Secure cookies, the
trusted-proxy count, and the refusal of control characters and bytes that are not UTF-8.

Input refused (400, before any view, before anything is read from the database):
- the path and the query string: any C0 control (tab, CR and LF included), DEL, C1 controls,
  or percent-encoded bytes that are not UTF-8;
- form (url-encoded or multipart, not file contents) and JSON values and keys: the same, except
  that tab, CR and LF are allowed in values (multi-line text: addresses, reasons);
- a JSON body nested too deeply to parse.
API, OAuth and ``.well-known`` paths answer JSON ``{"error": "invalid_request", ...}``;
pages answer the error page.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from flask import Flask, Response, g, request
from flask_babel import lazy_gettext as _l
from werkzeug.middleware.proxy_fix import ProxyFix

from .errors import ValidationError

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)
CSP_FRAMEABLE = CSP.replace("frame-ancestors 'none'", "frame-ancestors *")


def allow_framing() -> None:
    """For the few views whose point is to be framed (front-channel logout, session checks)."""
    g.allow_framing = True


def cacheable(seconds: int, *, private: bool = False) -> None:
    """Mark a response as cacheable: public (discovery, JWKS, static assets) or, with
    ``private``, only by the user's own browser (e.g. pictures behind a log-in)."""
    g.cache_seconds = seconds
    g.cache_private = private


class ControlCharacters(ValidationError):
    """The request holds a control character or bytes that are not UTF-8."""

    code = "invalid_request"


# C0 controls, DEL, C1 controls, and lone surrogates (never produced by valid UTF-8)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_FORM = "application/x-www-form-urlencoded"


def _refused() -> ControlCharacters:
    return ControlCharacters(str(_l("The request contains control characters or text that is not UTF-8.")))


def _decoded(raw: bytes, plus: bool) -> str:
    if plus:
        raw = raw.replace(b"+", b" ")
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _refused() from None


def check_input() -> None:
    """``before_request``: refuse control characters and non-UTF-8 anywhere a view may read."""
    env = request.environ
    path = env.get("PATH_INFO", "")
    try:  # WSGI hands the raw path bytes over as latin-1
        path = path.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise _refused() from None
    if _CONTROL.search(path):
        raise _refused()
    qs = request.query_string
    if qs and _CONTROL.search(_decoded(qs, True)):
        raise _refused()
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    mimetype = request.mimetype
    if mimetype == _FORM:
        # read the raw body (form parsing reuses the cached bytes) to see undecodable bytes
        for key, _sep, value in (part.partition(b"=") for part in request.get_data(cache=True).split(b"&")):
            if _CONTROL.search(_decoded(key, True)) or _CONTROL_IN_TEXT.search(_decoded(value, True)):
                raise _refused()
    elif mimetype == "multipart/form-data":
        for field, text in request.form.items(multi=True):
            # a part without a name (Content-Disposition: form-data, no name=) has the key None
            if _CONTROL.search(field or "") or _CONTROL_IN_TEXT.search(text or ""):
                raise _refused()
    elif request.is_json:
        try:
            data = request.get_json(silent=True)
        except RecursionError:
            raise _refused() from None
        _check_json(data)


def _check_json(data) -> None:
    stack = [data]  # every item: the body is already bounded by MAX_CONTENT_LENGTH
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _CONTROL_IN_TEXT.search(item):
                raise _refused()
        elif isinstance(item, dict):
            for k, v in item.items():
                if _CONTROL.search(k):
                    raise _refused()
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)


def _has_secure(cookie: str) -> bool:
    return any(attr.strip().lower() == "secure" for attr in cookie.split(";")[1:])


def init_app(app: Flask) -> None:
    https = app.config["TONGBAN_ISSUER"].startswith("https://")
    proxies = app.config.get("TONGBAN_TRUSTED_PROXIES", 0)
    if proxies:
        # the client address, scheme and host as the (trusted) proxies saw them; with 0 the
        # X-Forwarded-* headers are ignored and request.remote_addr is the socket peer
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]  # (Flask's documented way)
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    # first of all before_request hooks (CSRF protection reads the form too)
    app.before_request_funcs.setdefault(None, []).insert(0, check_input)

    common = [
        ("X-Content-Type-Options", "nosniff"),
        # no address leaves for another site (a page's URL may hold a code or an ID number), but
        # our own form posts carry their Referer: over HTTPS, Flask-WTF's CSRF check requires a
        # same-origin one (with no-referrer every form post over HTTPS was refused)
        ("Referrer-Policy", "same-origin"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Permissions-Policy", "camera=(self), geolocation=(), microphone=()"),
    ]
    hsts = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    # the headers every response gets, by (framable, HSTS): built once, each with its lower-case
    # name, in the order they were always added
    fixed: dict[tuple[bool, bool], tuple[tuple[str, str, str], ...]] = {}
    for framable in (False, True):
        for with_hsts in (False, True):
            extra = [*common, ("Content-Security-Policy", CSP_FRAMEABLE if framable else CSP)]
            if not framable:
                extra.append(("X-Frame-Options", "DENY"))
            if with_hsts:
                extra.append(hsts)
            fixed[framable, with_hsts] = tuple((k, k.lower(), v) for k, v in extra)
    no_store = (("Cache-Control", "cache-control", "no-store"), ("Pragma", "pragma", "no-cache"))

    @app.after_request
    def _headers(response: Response) -> Response:
        # one pass over the existing names: this runs on every hot-path response
        h = response.headers
        present = {k.lower() for k, _ in h.items()}
        for k, low, v in fixed[bool(g.get("allow_framing", False)), https or request.is_secure]:
            if low not in present:
                h.add(k, v)
        seconds = g.get("cache_seconds")
        if seconds is None and request.endpoint == "static":
            seconds = 3600
        if seconds:
            if "cache-control" not in present:
                scope = "private" if g.get("cache_private") else "public"
                h.add("Cache-Control", f"{scope}, max-age={seconds}")
        else:
            if "cache-control" in present:
                del h["Cache-Control"]
                present.discard("cache-control")
            for k, low, v in no_store:
                if low not in present:
                    h.add(k, v)
        if https and "set-cookie" in present:
            # the session cookie follows SESSION_COOKIE_SECURE (set from the issuer in
            # tongban.config); any other cookie is marked here
            cookies = h.getlist("Set-Cookie")
            fixed_cookies = [c if _has_secure(c) else c + "; Secure" for c in cookies]
            if fixed_cookies != cookies:
                h.setlist("Set-Cookie", fixed_cookies)
        return response
