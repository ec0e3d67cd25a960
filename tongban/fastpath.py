"""The lean path: the hot protocol endpoints answered before the full Flask stack.

Token (``client_credentials``), introspection, userinfo, JWKS, discovery and the online licence
check are asked thousands of times a second by machines; most of the time of such a request
used to go to machinery around the answer (request context, form parsing, Authlib's request
objects, a dozen ``before``/``after`` hooks). A package registers a *fast route* for the
common, well-formed case of one of its endpoints; the middleware installed here runs it inside
an application context only, with the same services, caches and validation as the view.

The rules that keep the two paths one service:

* **A fast route answers only the happy path.** It returns ``None`` for anything unusual
  (another grant, a DPoP proof, a browser's ``Origin``, a parameter it does not know, a
  failed check) and the request goes to the full stack, which answers it exactly as before:
  every error, every audit record of a refusal, every rate limit stays where it was. A fast
  route never writes before it is sure to answer.
* **The same headers.** The first successful answer of each route in each process comes
  from the full stack; its headers (security headers, caching, CORS, content type) are kept
  as the route's template, and later lean answers carry exactly those, plus a fresh
  ``X-Request-Id`` and ``Content-Length``. A response that set a cookie is never a template.
  The first request of each process also starts the background threads, as it always did.
* **The same records.** The access log line, the request counters and latency histogram,
  and the per-route business counters are written for lean answers too.

``TONGBAN_FAST_PATH=0`` turns it off (every request through Flask).
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from flask import Flask

from . import cache
from .logs import HEADER as REQUEST_ID_HEADER
from .logs import accept_request_id, write_access

log = logging.getLogger(__name__)

_SKIP_TEMPLATE = frozenset({"content-length", "x-request-id", "set-cookie", "date", "dpop-nonce"})
_FORM = "application/x-www-form-urlencoded"


@dataclass
class LeanResponse:
    """What a fast route answers: always a success (errors are the full stack's)."""

    body: bytes
    status: str = "200 OK"
    metric: Callable[[], None] | None = None  # a business counter to bump once answered


@dataclass
class FastRoute:
    method: str
    path: str  # exact path, or a prefix ending in "/" with ``prefix=True``
    rule: str  # the Flask URL rule it stands for (metrics and the access log name it so)
    handler: Callable[[Request], LeanResponse | None]
    prefix: bool = False
    eligible: Callable[[Request], bool] | None = None  # side-effect free: may this request be lean?
    # answers from what this process already holds, without an application context, or None
    # (then ``handler`` runs as usual): a cached public document still within its freshness bound
    quick: Callable[[Request], LeanResponse | None] | None = None
    templates: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    # this route's labelled metric children by status, looked up once (``Counter.labels`` is a
    # lock and a few dict operations per call): their observe and inc (``metrics.histogram_observe``,
    # ``metrics.counter_inc``)
    _metrics: dict[int, tuple] = field(default_factory=dict)


class Request:
    """The little a fast route needs of the WSGI environ, parsed at most once."""

    __slots__ = ("_body", "_form", "app", "environ")

    def __init__(self, environ: dict, app: Flask | None = None):
        self.environ = environ
        self.app = app  # for ``quick`` handlers, which run outside an application context
        self._form: dict[str, str] | None = None
        self._body: bytes | None = None

    def header(self, name: str) -> str | None:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"))

    @property
    def path(self) -> str:
        return self.environ.get("PATH_INFO", "")

    @property
    def query(self) -> str:
        return self.environ.get("QUERY_STRING", "")

    def body(self, limit: int = 8192) -> bytes | None:
        """The request body when it is small and its length declared (None otherwise)."""
        if self._body is None:
            declared = self.environ.get("CONTENT_LENGTH")
            if not declared:  # none declared (chunked, or no body): the stream is the full stack's, untouched
                return None
            # 1*DIGIT (RFC 9110 §8.6), as Werkzeug reads it: ``int`` also takes a sign, "_" and
            # non-ASCII digits, for which the full stack reads no body at all
            if not (declared.isascii() and declared.isdigit()):
                return None
            length = int(declared)
            if length > limit:
                return None
            raw = self.environ["wsgi.input"].read(length) if length else b""
            if len(raw) != length:
                return None
            self._body = raw
            # the full stack may still read it: put it back
            self.environ["wsgi.input"] = io.BytesIO(raw)
        return self._body

    def form(self) -> dict[str, str] | None:
        """The form body as a dict, or None when it is not a plain form, repeats a name, or holds
        anything a full-stack check would refuse (control characters, bad UTF-8)."""
        if self._form is not None:
            return self._form
        ctype = (self.environ.get("CONTENT_TYPE") or "").split(";", 1)
        if ctype[0].strip().lower() != _FORM:
            return None
        if len(ctype) > 1 and ctype[1].strip().lower().replace(" ", "") not in ("charset=utf-8", ""):
            return None
        raw = self.body()
        if raw is None:
            return None
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
        if "%" not in text and "+" not in text:
            # nothing to decode (the common small form): split exactly as ``parse_qsl`` does with
            # these options: "&" only, the first "=" splits, a field without one (an empty field
            # included) is an error, names and values as they stand (``unquote`` returns a string
            # without "%" unchanged)
            pairs: list[tuple[str, str]] = []
            if text:
                for field_ in text.split("&"):
                    name, sep, value = field_.partition("=")
                    if not sep:
                        return None
                    pairs.append((name, value))
        else:
            try:
                pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), encoding="utf-8",
                                  errors="strict")
            except (UnicodeDecodeError, ValueError):
                return None
        out: dict[str, str] = {}
        for k, v in pairs:
            if k in out or not k.isprintable() or not v.isprintable() or not v.isascii():
                return None
            out[k] = v
        self._form = out
        return out


class FastPath:
    """WSGI middleware: fast routes first, the Flask application for everything else."""

    def __init__(self, app: Flask, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app
        self.exact: dict[tuple[str, str], FastRoute] = {}
        self.prefixes: list[FastRoute] = []
        self._warm = False  # the first request of this process went to the full stack
        self.answered = 0  # lean answers given by this process (tests, debugging)
        if hasattr(os, "register_at_fork"):  # a forked worker learns again (its own first request)
            os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self._warm = False

    def add(self, route: FastRoute) -> None:
        if route.prefix:
            self.prefixes.append(route)
        else:
            self.exact[(route.method, route.path)] = route

    def _route(self, environ: dict) -> FastRoute | None:
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "")
        route = self.exact.get((method, path))
        if route is not None:
            return route
        for r in self.prefixes:
            if r.method == method and path.startswith(r.path) and "/" not in path[len(r.path):]:
                return r
        return None

    def __call__(self, environ: dict, start_response):
        # every request, lean or not: one look at the cache generations (cache.request_snapshot,
        # without a generator-based context manager's cost)
        token = cache.begin_snapshot()
        try:
            return self._call(environ, start_response)
        finally:
            cache.end_snapshot(token)

    def _call(self, environ: dict, start_response):
        route = self._route(environ) if (self.exact or self.prefixes) else None
        if (route is None or not self.app.config["TONGBAN_FAST_PATH"]
                or "HTTP_ORIGIN" in environ or "HTTP_DPOP" in environ):  # browsers (CORS), DPoP: full stack
            return self.wsgi_app(environ, start_response)
        if not self._warm:  # the first request of a process: the full stack
            self._warm = True
            return self.wsgi_app(environ, start_response)
        req = Request(environ, self.app)
        if route.eligible is not None and not route.eligible(req):  # another kind of answer: not learnt
            return self.wsgi_app(environ, start_response)
        key = environ.get("wsgi.url_scheme", "http")
        template = route.templates.get(key)
        if template is None:
            return self._learn(route, key, environ, start_response)
        start = time.perf_counter()
        try:
            answer = route.quick(req) if route.quick is not None else None
            if answer is None:
                with self.app.app_context():
                    answer = route.handler(req)
        except Exception:  # a fast route that fails leaves the request to the full stack
            log.exception("fast route %s failed; answering through the full stack", route.rule)
            answer = None
        if answer is None:
            return self.wsgi_app(environ, start_response)
        rid = accept_request_id(environ.get("HTTP_X_REQUEST_ID"))
        headers = [*template, ("Content-Length", str(len(answer.body))), (REQUEST_ID_HEADER, rid)]
        start_response(answer.status, headers)
        self.answered += 1
        self._record(route, environ, answer, rid, start)
        return [answer.body]

    def _learn(self, route: FastRoute, key: str, environ: dict, start_response) -> Iterable[bytes]:
        """Answer through the full stack and keep a successful answer's headers as the template."""

        def capture(status, headers, exc_info=None):
            if status.startswith("200") and not exc_info:
                names = {k.lower() for k, _ in headers}
                if "set-cookie" not in names:
                    route.templates[key] = [(k, v) for k, v in headers if k.lower() not in _SKIP_TEMPLATE]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        return self.wsgi_app(environ, capture)

    def _record(self, route: FastRoute, environ: dict, answer: LeanResponse, rid: str, start: float) -> None:
        method = route.method  # the route matched REQUEST_METHOD exactly
        status = int(answer.status[:3])
        elapsed = time.perf_counter() - start
        try:
            children = route._metrics.get(status)
            if children is None:
                from . import metrics

                latency, count = metrics.request_children(route.rule, method, status)
                children = route._metrics[status] = (metrics.histogram_observe(latency), metrics.counter_inc(count))
            children[0](elapsed)
            children[1]()
            if answer.metric is not None:
                answer.metric()
        except Exception:
            log.debug("metric update failed", exc_info=True)
        if self.app.config["TONGBAN_ACCESS_LOG"]:
            write_access(method, route.rule, status, round(elapsed * 1000, 2), rid)


def init_app(app: Flask) -> None:
    """Install the middleware innermost (a proxy fix, if any, wraps it and runs first)."""
    fast = FastPath(app, app.wsgi_app)
    app.wsgi_app = fast  # type: ignore[method-assign]
    app.extensions["tongban.fastpath"] = fast


def register(app: Flask, method: str, path: str, rule: str, handler: Callable[[Request], LeanResponse | None],
             *, prefix: bool = False, eligible: Callable[[Request], bool] | None = None,
             quick: Callable[[Request], LeanResponse | None] | None = None) -> None:
    """Give ``rule``'s common case a lean answer (see the module's rules). ``prefix``: ``path``
    ends in ``/`` and one more path segment follows. ``eligible``: when the route's answers come
    in several kinds (an HTML page and JSON), the kind the handler gives; only those are lean and
    only those teach the route its headers. ``quick``: tried first, outside any application
    context (``req.app`` is the application); it answers only from what the process already
    holds and knows to be current (the same bound the handler's caches keep), else None and
    ``handler`` runs."""
    fast: FastPath = app.extensions["tongban.fastpath"]
    fast.add(FastRoute(method, path, rule, handler, prefix=prefix, eligible=eligible, quick=quick))
