"""Test fixtures: the app built from a config dict, on SQLite by default or PostgreSQL
when TEST_DATABASE_URL is set (one scratch database per xdist worker).

The schema is created with the real migrations once per worker; each test starts
from empty tables (signing keys are kept: fixed per run, generated once).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import text
from werkzeug.serving import make_server

PASSWORD = "Test-Passw0rd!"
CITIZEN_ID = "11010519491231002X"
OTHER_ID = "110105198001010016"
USCC = "91350100M000100Y43"


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        return
    import psycopg

    parts = urlsplit(base.replace("postgresql+psycopg://", "postgresql://"))
    name = f"{parts.path.lstrip('/')}_{_worker()}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(parts._replace(scheme="postgresql+psycopg", path=f"/{name}"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _redis_url() -> str:
    """TEST_REDIS_URL: one Redis database per xdist worker (1..15), flushed at the start."""
    base = os.environ.get("TEST_REDIS_URL", "")
    if not base:
        return ""
    worker = _worker()
    index = 1 + (int(worker[2:]) % 15 if worker.startswith("gw") else 0)
    url = urlunsplit(urlsplit(base)._replace(path=f"/{index}"))
    import redis

    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def live_port():
    return _free_port()


@pytest.fixture(scope="session")
def base_app(database_url, tmp_path_factory, live_port):
    from flask_migrate import upgrade

    from tongban import create_app
    from tongban.bootstrap import bootstrap

    instance = tmp_path_factory.mktemp("instance")
    from flask.testing import FlaskClient

    class FreshContextClient(FlaskClient):
        """Each request gets its own app context (and ``g``, and DB session), as in production,
        even though the test itself holds one open."""

        def open(self, *args, **kwargs):
            from tongban.extensions import db

            with self.application.app_context():
                response = super().open(*args, **kwargs)
            db.session.expire_all()  # the test's own session sees what the request committed
            return response

    app = create_app({
        "TESTING": True,
        "TONGBAN_INSTANCE_DIR": str(instance),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "TONGBAN_ISSUER": f"http://127.0.0.1:{live_port}",
        "SECRET_KEY": "test-secret-key",
        "TONGBAN_KEK": bytes(range(32)),
        "TONGBAN_LOGIN_RATE_PER_IP": 1000,
        "TONGBAN_USAGE_FLUSH_SECONDS": 0,
        # audit rows are chained by audit.chain()/verify() in tests (tests/tongban/test_audit.py runs
        # the thread on purpose), so no chainer races the per-test reset
        "TONGBAN_AUDIT_CHAIN_THREAD": False,
        "REDIS_URL": _redis_url(),
    })
    app.test_client_class = FreshContextClient
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory, revision="heads")
        bootstrap()
    return app


def _reset(app) -> None:
    from idp.clients import CLIENTS_GENERATION, usage
    from idp.tokens import DENYLIST_GENERATION
    from keys.services import KEYS_GENERATION
    from tongban.bootstrap import bootstrap
    from tongban.extensions import db

    usage._counts.clear()
    from tongban.cache import redis_client

    r = redis_client(app)
    if r is not None:
        r.flushdb()
    keep = {"signing_keys", "alembic_version", *KEEP_TABLES}
    tables = [t.name for t in reversed(db.metadata.sorted_tables) if t.name not in keep]
    from sqlalchemy.exc import OperationalError

    for attempt in range(5):
        try:
            with db.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
                else:
                    for t in tables:
                        conn.execute(text(f'DELETE FROM "{t}"'))
                conn.execute(text("INSERT INTO audit_head (id, seq, last_hash) VALUES (1, 0, :h)"), {"h": "0" * 64})
            break
        except OperationalError as e:
            # a background chore (outbox, purge, chainer) of an earlier test's app may hold row locks
            # the TRUNCATE's table locks wait for; PostgreSQL picks one side to abort: try again
            if "deadlock" not in str(e).lower() or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    from tongban.audit import reset_witness

    reset_witness(app)  # the instance folder's witness of the (now emptied) audit chain
    from federation.registry import UPSTREAMS_GENERATION

    for gen in (CLIENTS_GENERATION, DENYLIST_GENERATION, KEYS_GENERATION, UPSTREAMS_GENERATION):
        gen.bump(app)
    bootstrap()


@pytest.fixture
def app(base_app):
    from tongban.extensions import db

    with base_app.app_context():
        _reset(base_app)
        db.session.remove()
    ctx = base_app.app_context()
    ctx.push()
    yield base_app
    db.session.remove()
    ctx.pop()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def _live_server(base_app, live_port):
    server = make_server("127.0.0.1", live_port, base_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{live_port}"
    server.shutdown()


@pytest.fixture
def live_server(app, _live_server):
    """The app served over real HTTP (for OAuth/OIDC client libraries)."""
    return _live_server


@pytest.fixture
def citizen(app):
    from people import accounts
    from tongban.extensions import db

    user = accounts.create_user(CITIZEN_ID, "张三", PASSWORD, "13800138000")
    db.session.commit()
    return user


@pytest.fixture
def make_client(app):
    """Register a system; returns (client_id, secret)."""
    from idp import clients as registry
    from tongban.extensions import db

    def _make(**kw):
        kw.setdefault("name", "测试系统")
        kw.setdefault("department", "测试局")
        kw.setdefault("redirect_uris", ["http://127.0.0.1:9/callback"])
        kw.setdefault("grant_types", ["authorization_code", "refresh_token", "client_credentials"])
        kw.setdefault("scopes", ["openid", "profile", "phone", "offline_access"])
        row, secret = registry.create_client(**kw)
        db.session.commit()
        return row.client_id, secret

    return _make


@pytest.fixture
def restore_keys(app):
    """Signing keys survive between tests: undo what a test rotated or re-dated."""
    from sqlalchemy import delete, select, update

    from keys import services
    from keys.models import SigningKey
    from tongban.extensions import db

    saved = dict(db.session.execute(select(SigningKey.kid, SigningKey.activates_at)).all())
    yield saved
    db.session.rollback()
    db.session.execute(delete(SigningKey).where(SigningKey.kid.not_in(list(saved))))
    for kid, activates_at in saved.items():
        db.session.execute(update(SigningKey).where(SigningKey.kid == kid).values(activates_at=activates_at))
    db.session.commit()
    services.KEYS_GENERATION.bump(app)
    services._ring._value = None


@pytest.fixture
def browser(app):
    """A factory of test clients whose every request runs in its own app context (its own
    ``g`` and database session), as in production: the ``app`` fixture's context would
    otherwise be shared by every request, and with it ``g`` (the CSRF token, the memoised
    log-in session) across clients."""
    import contextvars

    from flask.testing import FlaskClient

    class IsolatedClient(FlaskClient):
        def open(self, *args, **kwargs):
            return contextvars.Context().run(super().open, *args, **kwargs)

    def _make(lang: str | None = None) -> FlaskClient:
        c = IsolatedClient(app, app.response_class, use_cookies=True)
        if lang:
            c.set_cookie("lang", lang)
        return c

    return _make


# tables kept between tests like signing_keys (generated once per run): the seal CA's own keys
KEEP_TABLES = {"ca_keys"}
