"""Liveness and readiness for load balancers and orchestrators.

``/healthz``: the process answers (no database touched). ``/readyz``: the database answers
``SELECT 1``, this server's secrets are the deployment's (``tongban.shared_secrets``: checked
when the database answers) and, when ``REDIS_URL`` is set, Redis answers ``PING``; 503 with the
failing component otherwise. Neither says why a component failed (no connection strings or
driver messages leave the server); the server log does. The one exception: secrets that differ
from the deployment's are named (``"differ": [...]`` and a ``reason``), never their values.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import text

from .extensions import db

log = logging.getLogger(__name__)

bp = Blueprint("tongban_health", __name__)


def check_database(then=None):
    """True when the database answers ``SELECT 1`` (False otherwise); with ``then``, also what
    ``then(conn)`` returns on the same connection, as ``(True, result)`` or ``(False, None)``."""
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            if then is None:
                return True
            return True, then(conn)
    except Exception:
        log.warning("readiness: the database is not reachable", exc_info=True)
        return False if then is None else (False, None)


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


def readiness() -> tuple[bool, dict[str, str], list[str]]:
    """(ready, checks, names of the secrets that differ from the deployment's)."""
    from .shared_secrets import readiness_check

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    database, secrets = check_database(lambda conn: readiness_check(app, conn))
    checks = {"database": "ok" if database else "unavailable"}
    differ: list[str] = []
    if database:
        checks["secrets"], differ = secrets
    redis_ok = check_redis()
    if redis_ok is not None:
        checks["redis"] = "ok" if redis_ok else "unavailable"
    return all(v == "ok" for v in checks.values()), checks, differ


@bp.route("/readyz")
def readyz():
    ready, checks, differ = readiness()
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    if differ:
        body["differ"] = differ
        body["reason"] = (f"this server's {', '.join(differ)} differ{'s' if len(differ) == 1 else ''} from "
                          "the deployment's (the other servers')")
    return jsonify(body), 200 if ready else 503, {"Cache-Control": "no-store"}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
