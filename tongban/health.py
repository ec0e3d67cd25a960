"""Liveness and readiness for load balancers and orchestrators.

``/healthz``: the process answers (no database touched). ``/readyz``: the database answers
``SELECT 1`` and, when ``REDIS_URL`` is set, Redis answers ``PING``; 503 with the failing
component otherwise. Neither says why a component failed (no connection strings or driver
messages leave the server); the server log does.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import text

from .extensions import db

log = logging.getLogger(__name__)

bp = Blueprint("tongban_health", __name__)


def check_database() -> bool:
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        log.warning("readiness: the database is not reachable", exc_info=True)
        return False


def check_redis() -> bool | None:
    """True/False, or None when no Redis is configured."""
    from .cache import redis_client

    r = redis_client(current_app)
    if r is None:
        return None
    try:
        return bool(r.ping())
    except Exception:
        log.warning("readiness: Redis is not reachable", exc_info=True)
        return False


def readiness() -> tuple[bool, dict[str, str]]:
    checks = {"database": "ok" if check_database() else "unavailable"}
    redis_ok = check_redis()
    if redis_ok is not None:
        checks["redis"] = "ok" if redis_ok else "unavailable"
    return all(v == "ok" for v in checks.values()), checks


@bp.route("/readyz")
def readyz():
    ready, checks = readiness()
    body = jsonify(status="ok" if ready else "unavailable", checks=checks)
    return body, 200 if ready else 503, {"Cache-Control": "no-store"}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
