"""Layered configuration: defaults here -> ``instance/config.py`` -> environment.

The instance folder (database, private keys, local config) is created on first
run; a random Flask secret key and a key-encryption key (KEK) are generated in it
then and reused afterwards.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import Flask

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULTS: dict = {
    "TONGBAN_ISSUER": "http://127.0.0.1:5000",
    "REDIS_URL": "",
    "TONGBAN_LOCKOUT_THRESHOLD": 5,
    "TONGBAN_LOCKOUT_MINUTES": 15,
    # throttling per client address, separate from the per-account lockout
    "TONGBAN_LOGIN_RATE_PER_IP": 30,
    "TONGBAN_LOGIN_RATE_WINDOW": 60,
    "TONGBAN_AUTHORITY_NAME": "通办市政务服务和数据管理局",
    "TONGBAN_AUTHORITY_USCC": "11330800002724839W",
    # token lifetimes, seconds
    "TONGBAN_ACCESS_TOKEN_LIFETIME": 600,
    "TONGBAN_ID_TOKEN_LIFETIME": 600,
    "TONGBAN_AUTH_CODE_LIFETIME": 60,
    "TONGBAN_REFRESH_TOKEN_LIFETIME": 30 * 86400,
    # a rotated-in key is published this long before it signs anything
    "TONGBAN_KEY_ACTIVATION_DELAY": 3600,
    # login sessions
    "TONGBAN_SESSION_IDLE_MINUTES": 120,
    "TONGBAN_SESSION_ABSOLUTE_HOURS": 12,
    "TONGBAN_PASSWORD_MIN_LENGTH": 10,
    "TONGBAN_DORMANT_DAYS": 90,
    # how often each worker writes its in-memory usage counters to the database
    "TONGBAN_USAGE_FLUSH_SECONDS": 5,
    "TONGBAN_PUBLIC_REGISTRATION": True,
    # the outbox (back-channel logout deliveries): attempts before giving up, how often an
    # idle worker looks for due items, whether web processes run a worker thread, HTTP timeout
    "TONGBAN_OUTBOX_MAX_ATTEMPTS": 8,
    "TONGBAN_OUTBOX_POLL_SECONDS": 5,
    "TONGBAN_OUTBOX_THREAD": True,
    "TONGBAN_OUTBOX_TIMEOUT": 5,
    "TONGBAN_LOGOUT_TOKEN_LIFETIME": 120,
    # the public seal verifier: signatures examined per document, seconds one verification may
    # run (checked per signature and per revision compared), verifications at once per worker process
    "TONGBAN_VERIFY_MAX_SIGNATURES": 20,
    "TONGBAN_VERIFY_MAX_SECONDS": 20,
    "TONGBAN_VERIFY_CONCURRENCY": 2,
    "BABEL_DEFAULT_LOCALE": "zh_CN",
    "BABEL_DEFAULT_TIMEZONE": "Asia/Shanghai",
    "LANGUAGES": ["zh_CN", "en"],
    "WTF_CSRF_TIME_LIMIT": None,
    "SQLALCHEMY_TRACK_MODIFICATIONS": False,
    "MAX_CONTENT_LENGTH": 20 * 1024 * 1024,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_NAME": "tongban_ui",
    "SSO_COOKIE_NAME": "tongban_sso",
    "JSON_SORT_KEYS": False,
}

_PASSTHROUGH = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")
_NOT_CONFIG = ("TONGBAN_INSTANCE_DIR", "TONGBAN_SERVE_ISSUER")


def _set_in_instance_config(folder: Path, key: str) -> bool:
    path = folder / "config.py"
    return path.exists() and key in path.read_text(encoding="utf-8", errors="replace")


def _cast(default, raw: str):
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, list):
        return [x.strip() for x in raw.split(",") if x.strip()]
    return raw


def instance_dir(config: dict | None = None) -> Path:
    path = (config or {}).get("TONGBAN_INSTANCE_DIR") or os.environ.get("TONGBAN_INSTANCE_DIR")
    return Path(path or PROJECT_ROOT / "instance").resolve()


def _secret_file(folder: Path, name: str, nbytes: int) -> bytes:
    """Read or create (0600) a random secret in the instance folder."""
    path = folder / name
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker created it first
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(nbytes))
    return bytes.fromhex(path.read_text().strip())


def load(app: Flask, overrides: dict | None = None) -> None:
    folder = instance_dir(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    app.instance_path = str(folder)
    app.config.update(DEFAULTS)
    app.config["TONGBAN_INSTANCE_DIR"] = str(folder)
    app.config["DATABASE_URL"] = f"sqlite:///{folder / 'tongban.db'}"
    app.config.from_pyfile(str(folder / "config.py"), silent=True)
    for key, raw in os.environ.items():
        if key in _PASSTHROUGH or (key.startswith("TONGBAN_") and key not in _NOT_CONFIG):
            app.config[key] = _cast(app.config.get(key, ""), raw)
    if overrides:
        app.config.update(overrides)
    # `make serve` passes http://$HOST:$PORT, used only when nothing above set the issuer
    serve_issuer = os.environ.get("TONGBAN_SERVE_ISSUER")
    if serve_issuer and app.config["TONGBAN_ISSUER"] == DEFAULTS["TONGBAN_ISSUER"] and not (
        os.environ.get("TONGBAN_ISSUER") or (overrides or {}).get("TONGBAN_ISSUER")
        or _set_in_instance_config(folder, "TONGBAN_ISSUER")
    ):
        app.config["TONGBAN_ISSUER"] = serve_issuer
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_file(folder, "secret_key", 32).hex()
    kek = app.config.get("TONGBAN_KEK")
    app.config["TONGBAN_KEK"] = bytes.fromhex(kek) if isinstance(kek, str) and kek else (
        kek or _secret_file(folder, "kek", 32))
    app.config.setdefault("SQLALCHEMY_DATABASE_URI", app.config["DATABASE_URL"])
    if not overrides or "SQLALCHEMY_DATABASE_URI" not in overrides:
        app.config["SQLALCHEMY_DATABASE_URI"] = app.config["DATABASE_URL"]
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("postgresql://"):
        uri = "postgresql+psycopg://" + uri[len("postgresql://"):]
        app.config["SQLALCHEMY_DATABASE_URI"] = uri
    app.config["TONGBAN_ISSUER"] = app.config["TONGBAN_ISSUER"].rstrip("/")
    secure = app.config["TONGBAN_ISSUER"].startswith("https://")
    app.config.setdefault("SESSION_COOKIE_SECURE", secure)
    app.config["PREFERRED_URL_SCHEME"] = "https" if secure else "http"
    if uri.startswith("sqlite"):
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"connect_args": {"timeout": 30}})
    else:
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"pool_size": 10, "max_overflow": 20})
