"""Structured logs: one JSON object per line, each carrying the request id.

``X-Request-Id``: a client's (or the proxy's) id is kept when it is 1–64 characters of
``A-Z a-z 0-9 . _ : -``; anything else is replaced by a fresh random id. The id is answered
in ``X-Request-Id`` and written on every log line of that request. An access line per
request names the endpoint by its URL rule (never the raw path or query: codes, tokens and
identity numbers travel there), the method, status and duration.

No personal data: every message and exception text passes through ``masking.mask_text``
(ID numbers and mobile numbers masked). ``TONGBAN_LOG_FORMAT``: ``json`` (default) or
``text``; ``TONGBAN_ACCESS_LOG``: the per-request line (on by default).
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import sys
import time
from datetime import UTC, datetime

from flask import Flask, has_request_context, request

from .masking import mask_text

HEADER = "X-Request-Id"
_VALID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
_ENV_KEY = "tongban.request_id"
access_log = logging.getLogger("tongban.access")


def current_request_id() -> str:
    if has_request_context():
        return request.environ.get(_ENV_KEY, "")
    return ""


def accept_request_id(raw: str | None) -> str:
    """The caller's id when well-formed, else a new one (a forged id cannot inject log lines)."""
    if raw and _VALID.fullmatch(raw):
        return raw
    return secrets.token_hex(16)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id", ...extra fields, "exception"}``."""

    EXTRA = ("method", "endpoint", "status", "duration_ms", "remote")

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_text(record.getMessage()),
        }
        rid = getattr(record, "request_id", "") or current_request_id()
        if rid:
            out["request_id"] = rid
        for key in self.EXTRA:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exception"] = mask_text(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record))


_configured: dict[str, logging.Handler] = {}


def configure(fmt: str = "json", stream=None, level: int = logging.INFO) -> logging.Handler:
    """Install one handler on the root logger (idempotent per process; replaces the previous one)."""
    root = logging.getLogger()
    old = _configured.pop("handler", None)
    if old is not None:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root.addHandler(handler)
    access_log.disabled = False  # logging.config.fileConfig (alembic's) disables existing loggers
    if access_log.level == logging.NOTSET or access_log.level > level:
        access_log.setLevel(level)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    _configured["handler"] = handler
    return handler


def init_app(app: Flask) -> None:
    fmt = str(app.config["TONGBAN_LOG_FORMAT"]).strip().lower()
    if not app.testing:  # tests capture logs with their own handlers (and configure() on purpose)
        configure("text" if fmt == "text" else "json")

    @app.before_request
    def _request_id():
        request.environ[_ENV_KEY] = accept_request_id(request.headers.get(HEADER))
        request.environ["tongban.log_start"] = time.perf_counter()

    @app.after_request
    def _answer_id(response):
        rid = request.environ.get(_ENV_KEY)
        if rid:
            response.headers[HEADER] = rid
        if app.config["TONGBAN_ACCESS_LOG"]:
            start = request.environ.get("tongban.log_start")
            rule = request.url_rule
            write_access(request.method, rule.rule if rule is not None else "(unmatched)", response.status_code,
                         round((time.perf_counter() - start) * 1000, 2) if start else None, rid or "")
        return response


def write_access(method: str, endpoint: str, status: int, duration_ms: float | None, rid: str) -> None:
    """The access line of one request. When the JSON handler installed by ``configure`` is the
    only one, the line is written straight to its stream: the same JSON object the formatter
    would write, without a log record per request (it was a third of a hot request's time).
    Otherwise (text format, tests' own handlers) it goes through ``logging`` as any line."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    handler = _configured.get("handler")
    root = logging.getLogger()
    if (handler is not None and type(handler.formatter) is JsonFormatter and not access_log.handlers
            and access_log.propagate and len(root.handlers) == 1 and root.handlers[0] is handler
            and not access_log.filters
            and handler.level <= logging.INFO and isinstance(handler, logging.StreamHandler)):
        line = access_json(method, endpoint, status, duration_ms, rid)
        with handler.lock:  # type: ignore[union-attr]
            try:
                handler.stream.write(line + "\n")
                handler.stream.flush()
            except (OSError, ValueError):  # a closed or broken stream never fails a request
                pass
        return
    access_log.info("%s %s %s", method, endpoint, status,
                    extra={"method": method, "endpoint": endpoint, "status": status, "duration_ms": duration_ms,
                           "request_id": rid or current_request_id()})


# The constant parts of an access line, by (method, endpoint, status): the line is spelt
# exactly as ``json.dumps`` spells the object (tests/tongban/test_hooks.py compares the two),
# with only the time, the request id and the duration filled in per request. Bounded: a
# method is whatever a client sends.
_ACCESS_PARTS: dict[tuple[str, str, int], tuple[str, str]] = {}
_ACCESS_PARTS_MAX = 1024


def _access_parts(method: str, endpoint: str, status: int) -> tuple[str, str]:
    key = (method, endpoint, status)
    parts = _ACCESS_PARTS.get(key)
    if parts is None:
        head = ('", "level": "INFO", "logger": "tongban.access", "message": '
                + json.dumps(f"{method} {endpoint} {status}", ensure_ascii=False) + ', "request_id": ')
        tail = (', "method": ' + json.dumps(method, ensure_ascii=False) + ', "endpoint": '
                + json.dumps(endpoint, ensure_ascii=False) + ', "status": ' + json.dumps(status)
                + ', "duration_ms": ')
        parts = (head, tail)
        if len(_ACCESS_PARTS) < _ACCESS_PARTS_MAX and type(status) is int:
            _ACCESS_PARTS[key] = parts
    return parts


def access_json(method: str, endpoint: str, status: int, duration_ms: float | None, rid: str) -> str:
    """The access line's JSON, as ``json.dumps({"time", "level", "logger", "message",
    "request_id", "method", "endpoint", "status", "duration_ms"}, ensure_ascii=False)``."""
    head, tail = _access_parts(method, endpoint, status)
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    # an id accepted by accept_request_id needs no escaping; anything else is encoded
    quoted = f'"{rid}"' if _VALID.fullmatch(rid) else json.dumps(rid, ensure_ascii=False)
    if duration_ms is None:
        duration = "null"
    elif type(duration_ms) is float and math.isfinite(duration_ms):
        duration = float.__repr__(duration_ms)
    else:
        duration = json.dumps(duration_ms)
    return f'{{"time": "{now}{head}{quoted}{tail}{duration}}}'
