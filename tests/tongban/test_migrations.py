"""`flask db upgrade` on a fresh database (SQLite, and PostgreSQL when TEST_DATABASE_URL is
set): it works, creates the signing keys and the operating authority, is idempotent, and the
migrations match the models (autogenerate finds nothing to add)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from tongban.config import DEFAULTS, PROJECT_ROOT

FLASK = str(Path(sys.executable).with_name("flask"))
MIGRATIONS = PROJECT_ROOT / "tongban" / "migrations"


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        pytest.skip("TEST_DATABASE_URL is not set")
    import psycopg

    parts = urlsplit(base.replace("postgresql+psycopg://", "postgresql://"))
    name = f"{parts.path.lstrip('/')}_migrations_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(parts._replace(scheme="postgresql+psycopg", path=f"/{name}"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _upgrade(url: str, instance: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TONGBAN_", "FLASK_")) and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DATABASE_URL=url, TONGBAN_INSTANCE_DIR=str(instance))
    proc = subprocess.run([FLASK, "--app", "wsgi", "db", "upgrade"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _snapshot(engine) -> dict:
    with engine.connect() as conn:
        keys = sorted(conn.execute(text("SELECT alg, kid FROM signing_keys")).all())
        orgs = sorted(conn.execute(text("SELECT uscc, name FROM organisations")).all())
        version = set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    return {"keys": keys, "orgs": orgs, "version": version}


def test_upgrade_a_fresh_database(fresh_url, tmp_path, base_app):
    instance = tmp_path / "instance"
    _upgrade(fresh_url, instance)
    engine = create_engine(fresh_url)
    try:
        first = _snapshot(engine)
        heads = set(ScriptDirectory(str(MIGRATIONS)).get_heads())
        assert first["version"] == heads
        assert [alg for alg, _ in first["keys"]] == ["ES256", "RS256"]
        assert (DEFAULTS["TONGBAN_AUTHORITY_USCC"], DEFAULTS["TONGBAN_AUTHORITY_NAME"]) in first["orgs"]
        assert (instance / "kek").exists()  # the key-encryption key lives in the instance folder

        _upgrade(fresh_url, instance)  # idempotent: nothing new the second time
        assert _snapshot(engine) == first

        _assert_models_match_migrations(engine)
    finally:
        engine.dispose()


def _assert_models_match_migrations(engine) -> None:
    from tongban.extensions import db

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, db.metadata)
    assert diff == [], "models and migrations differ:\n" + "\n".join(map(str, diff))
