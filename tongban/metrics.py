"""Prometheus metrics at ``/metrics`` (prometheus-client).

Across worker processes: when ``PROMETHEUS_MULTIPROC_DIR`` is set before the server starts
(``make serve`` sets it to a fresh folder), every process writes its values to files there
and a scrape of any worker adds them up. Without it the values are this process's.

Not public: a scrape needs ``Authorization: Bearer <TONGBAN_METRICS_TOKEN>`` (when a token
is set) or a client address in ``TONGBAN_METRICS_ALLOW`` (CIDR list, loopback by default;
behind a proxy the address ``TONGBAN_TRUSTED_PROXIES`` resolves).

What is counted: requests and their latency per endpoint (the URL rule, never the raw path,
so the label set stays small and carries no codes or personal data), log-ins by outcome
(the audit events ``login.*``), tokens issued by grant, licences issued, seals used, errors
(5xx responses and unhandled exceptions), and at scrape time the outbox depth and the age
of its oldest pending item. The per-request cost is two dictionary look-ups and two
additions under a lock (a memory-mapped file write in multiprocess mode).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import os
import time
from bisect import bisect_left
from collections.abc import Callable
from functools import partial

from flask import Flask, Response, current_app, got_request_exception, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

# latency buckets (seconds): the token endpoint answers in milliseconds, sealing in seconds
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter("tongban_http_requests_total", "HTTP requests answered",
                   ["endpoint", "method", "status"])
LATENCY = Histogram("tongban_http_request_duration_seconds", "Time to answer a request",
                    ["endpoint", "method"], buckets=BUCKETS)
LOGINS = Counter("tongban_logins_total", "Log-in attempts by outcome", ["outcome"])
TOKENS = Counter("tongban_tokens_issued_total", "Tokens issued at the token endpoint by grant", ["grant"])
LICENCES = Counter("tongban_licences_issued_total", "Licences issued")
SEALS = Counter("tongban_seals_used_total", "Seal uses (documents sealed)")
ERRORS = Counter("tongban_errors_total", "Server errors: 5xx responses and unhandled exceptions", ["kind"])

# grant_type values counted by name; anything else is "other" (a client cannot grow the label set)
GRANTS = {
    "authorization_code": "authorization_code",
    "refresh_token": "refresh_token",
    "client_credentials": "client_credentials",
    "urn:ietf:params:oauth:grant-type:device_code": "device_code",
    "urn:ietf:params:oauth:grant-type:token-exchange": "token_exchange",
    "urn:ietf:params:oauth:grant-type:jwt-bearer": "jwt_bearer",
}
LOGIN_OUTCOMES = {"login.success": "success", "login.failure": "failure",
                  "login.refused_locked": "locked", "login.throttled": "throttled"}
_START = "tongban.metrics.start"


def observe_audit(action: str, outcome: str) -> None:
    """Count a committed audit event that is also a business metric (called by tongban.audit)."""
    try:
        if action in LOGIN_OUTCOMES:
            LOGINS.labels(LOGIN_OUTCOMES[action]).inc()
        elif action == "licence.issued":
            LICENCES.inc()
        elif action == "seal.used" and outcome == "success":
            SEALS.inc()
    except Exception:  # metrics never break the work they count
        log.debug("metric update failed", exc_info=True)


# ---------------------------------------------------------------- the outbox, read at scrape time


class OutboxCollector:
    """Pending and failed outbox items, and the age of the oldest pending one (one query per scrape)."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self):
        from sqlalchemy import func, select

        from .clock import utcnow
        from .extensions import db
        from .outbox import FAILED, PENDING, SENDING, OutboxItem

        depth = GaugeMetricFamily("tongban_outbox_depth", "Outbox items by status (not yet delivered)",
                                  labels=["status"])
        age = GaugeMetricFamily("tongban_outbox_oldest_pending_seconds",
                                "Age of the oldest undelivered (pending or sending) outbox item")
        try:
            with self.app.app_context():
                rows = db.session.execute(
                    select(OutboxItem.status, func.count(), func.min(OutboxItem.created_at))
                    .where(OutboxItem.status.in_((PENDING, SENDING, FAILED)))
                    .group_by(OutboxItem.status)).all()
                db.session.remove()
        except Exception:
            log.warning("metrics: could not read the outbox", exc_info=True)
            return
        found = {status: (n, oldest) for status, n, oldest in rows}
        oldest = None
        for status in (PENDING, SENDING, FAILED):
            n, first = found.get(status, (0, None))
            depth.add_metric([status], n)
            if status != FAILED and first is not None and (oldest is None or first < oldest):
                oldest = first
        age.add_metric([], max(0.0, (utcnow() - oldest).total_seconds()) if oldest else 0.0)
        yield depth
        yield age


# ---------------------------------------------------------------- access


def _networks(app: Flask) -> list:
    allow = app.config["TONGBAN_METRICS_ALLOW"]
    allow = tuple([allow] if isinstance(allow, str) else allow)
    cached = app.extensions.get("tongban.metrics_nets")
    if cached is not None and cached[0] == allow:
        return cached[1]
    nets = []
    for raw in allow:
        try:
            nets.append(ipaddress.ip_network(str(raw).strip(), strict=False))
        except ValueError:
            log.warning("TONGBAN_METRICS_ALLOW: %r is not a network, ignored", raw)
    app.extensions["tongban.metrics_nets"] = (allow, nets)
    return nets


def allowed() -> bool:
    token = current_app.config["TONGBAN_METRICS_TOKEN"]
    auth = request.headers.get("Authorization", "")
    if token and auth[:7].lower() == "bearer " and hmac.compare_digest(auth[7:].strip().encode(), token.encode()):
        return True
    try:
        addr = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr in net for net in _networks(current_app._get_current_object()))  # type: ignore[attr-defined]


def registry_for_scrape(app: Flask):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return registry


def metrics_view():
    if not allowed():
        return jsonify(error="forbidden", error_description="metrics are not public"), 403
    app = current_app._get_current_object()
    registry = registry_for_scrape(app)
    body = generate_latest(registry)
    # the outbox gauges are read from the shared database, once, by whichever process is scraped
    extra = CollectorRegistry(auto_describe=False)
    extra.register(OutboxCollector(app))
    body += generate_latest(extra)
    return Response(body, 200, {"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


# ---------------------------------------------------------------- per request


# (endpoint, method, status) -> the LATENCY and REQUESTS children: ``labels()`` takes a lock
# and builds its key on every call, twice per request. Bounded: a method is what a client sends.
_CHILDREN: dict[tuple[str, str, int], tuple] = {}
_CHILDREN_MAX = 1024


def request_children(endpoint: str, method: str, status: int) -> tuple:
    key = (endpoint, method, status)
    children = _CHILDREN.get(key)
    if children is None:
        children = (LATENCY.labels(endpoint, method), REQUESTS.labels(endpoint, method, str(status)))
        if len(_CHILDREN) < _CHILDREN_MAX:
            _CHILDREN[key] = children
    return children


def counter_inc(child) -> Callable[[], None]:
    """``child.inc()`` for a labelled counter's child, without what ``inc`` checks on every call
    (that the child is observable, that 1 is not negative, an exemplar): the child's value's own
    ``inc(1)``, the same write (prometheus-client's ``Counter`` internals, pinned in
    pyproject.toml; checked here once, else the public method)."""
    value = getattr(child, "_value", None)
    if type(child) is Counter and child._is_observable() and callable(getattr(value, "inc", None)):
        return partial(value.inc, 1)  # type: ignore[union-attr]
    return child.inc


def histogram_observe(child) -> Callable[[float], None]:
    """``child.observe`` for a labelled histogram's child, without its per-call checks: the sum,
    and the first bucket whose bound is not below the amount (bisect over the sorted bounds, the
    last +Inf), as ``Histogram.observe`` adds them (its internals, checked here once, else the
    public method). A NaN, which no bucket takes, goes through the public method."""
    total, buckets = getattr(child, "_sum", None), getattr(child, "_buckets", None)
    bounds = tuple(getattr(child, "_upper_bounds", ()) or ())
    if (type(child) is not Histogram or not child._is_observable() or not callable(getattr(total, "inc", None))
            or not isinstance(buckets, list) or len(buckets) != len(bounds) or not bounds
            or bounds[-1] != math.inf or list(bounds) != sorted(bounds)):
        return child.observe

    def observe(amount: float) -> None:
        if amount >= 0.0:
            total.inc(amount)  # type: ignore[union-attr]
            buckets[bisect_left(bounds, amount)].inc(1)
        else:
            child.observe(amount)

    return observe


def init_app(app: Flask) -> None:
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])

    @app.before_request
    def _start_timer():
        request.environ[_START] = time.perf_counter()

    @app.after_request
    def _count(response):
        start = request.environ.get(_START)
        if start is None:
            return response
        rule = request.url_rule
        endpoint = rule.rule if rule is not None else "(unmatched)"
        method = request.method
        status = response.status_code
        try:
            latency, requests = request_children(endpoint, method, status)
            latency.observe(time.perf_counter() - start)
            requests.inc()
            if status >= 500:
                ERRORS.labels("http_5xx").inc()
            elif status == 200 and endpoint == "/oauth/token" and method == "POST":
                TOKENS.labels(GRANTS.get(request.form.get("grant_type", ""), "other")).inc()
        except Exception:
            log.debug("metric update failed", exc_info=True)
        return response

    def _exception(sender, exception, **extra):
        ERRORS.labels("exception").inc()

    got_request_exception.connect(_exception, app, weak=False)
