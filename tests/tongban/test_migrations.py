"""`flask db upgrade` on a fresh database (SQLite, and PostgreSQL when TEST_DATABASE_URL is
set): it works, creates the signing keys and the operating authority, is idempotent, and the
migrations match the models (autogenerate finds nothing to add). Two started at once do not
race (the upgrade lock); a migration marked ``phase = "expand"`` keeps the running release
working (read from its source with ``ast``; docs/deploy.md §10)."""

from __future__ import annotations

import ast
import contextlib
import fcntl
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

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


# ---------------------------------------------------------------- expand / contract (docs/deploy.md §10)

# Operations that break the code still running during a roll-out, or block its writes for the
# length of a table scan. A migration marked ``phase = "expand"`` may contain none of them.
_REMOVES = {"drop_table": "drops a table", "drop_column": "drops a column", "rename_table": "renames a table",
            "drop_constraint": "drops a constraint"}
_VALIDATES = {"create_unique_constraint", "create_foreign_key", "create_check_constraint", "create_primary_key"}
PHASES = ("expand", "contract")
# the migrations written before the rule (revision ids up to 0020): what the check finds in them,
# kept equal to the list in docs/deploy.md §10
LEGACY_LAST = "0020_legacy"
LEGACY_FINDINGS = {
    "0008_licence_binding": ["create_index: on an existing table without CONCURRENTLY",
                             "execute: rewrites rows in the migration's transaction"],
    "0011_audit_chainer": ["create_unique_constraint: validates an existing table under a write-blocking lock",
                           "execute: rewrites rows in the migration's transaction"],
}


def _kw(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _const(node):
    return node.value if isinstance(node, ast.Constant) else None


def live_hazards(source: str) -> list[str]:
    """What in ``upgrade()`` would break, or stall, servers of the previous release that are still
    running: ``"<operation>: <why>"``, each once, read from the source with ``ast``."""
    tree = ast.parse(source)
    up = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade")
    calls = [n for n in ast.walk(up) if isinstance(n, ast.Call)]
    created = {_const(c.args[0]) for c in calls if isinstance(c.func, ast.Attribute)
               and c.func.attr == "create_table" and c.args}
    # the table of each `with op.batch_alter_table(t) as b:` block's calls on b; `name = op.get_bind()`
    in_batch: dict[int, str | None] = {}
    binds: set[str] = set()
    for node in ast.walk(up):
        if isinstance(node, ast.With):
            for item in node.items:
                c = item.context_expr
                if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) \
                        and c.func.attr == "batch_alter_table" and isinstance(item.optional_vars, ast.Name):
                    table = _const(c.args[0]) if c.args else _const(_kw(c, "table_name"))
                    for inner in (n for stmt in node.body for n in ast.walk(stmt)):
                        if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute) \
                                and isinstance(inner.func.value, ast.Name) \
                                and inner.func.value.id == item.optional_vars.id:
                            in_batch[id(inner)] = table
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                and isinstance(node.value.func, ast.Attribute) and node.value.func.attr == "get_bind":
            binds.update(t.id for t in node.targets if isinstance(t, ast.Name))
    out: list[tuple[int, str]] = []
    for c in calls:
        if not (isinstance(c.func, ast.Attribute) and isinstance(c.func.value, ast.Name)):
            continue
        who, name = c.func.value.id, c.func.attr
        if who in binds and name in ("execute", "exec_driver_sql"):
            out.append((c.lineno, "execute: rewrites rows in the migration's transaction"))
            continue
        if who != "op" and id(c) not in in_batch:
            continue
        table = in_batch.get(id(c))
        if name in _REMOVES:
            out.append((c.lineno, f"{name}: {_REMOVES[name]}"))
        elif name == "alter_column":
            if _kw(c, "new_column_name") is not None:
                out.append((c.lineno, "alter_column: renames a column"))
            if _const(_kw(c, "nullable")) is False:
                out.append((c.lineno, "alter_column: makes a column NOT NULL"))
            if _kw(c, "type_") is not None:
                out.append((c.lineno, "alter_column: changes a column's type"))
        elif name == "add_column":
            col = c.args[-1] if c.args else None
            if isinstance(col, ast.Call) and _const(_kw(col, "nullable")) is False \
                    and _kw(col, "server_default") is None:
                out.append((c.lineno, "add_column: a NOT NULL column without a server default"))
        elif name == "create_index":
            if table is None:
                table = _const(c.args[1]) if len(c.args) > 1 else _const(_kw(c, "table_name"))
            if table not in created and _const(_kw(c, "postgresql_concurrently")) is not True:
                out.append((c.lineno, "create_index: on an existing table without CONCURRENTLY"))
        elif name in _VALIDATES:
            out.append((c.lineno, f"{name}: validates an existing table under a write-blocking lock"))
        elif name in ("execute", "exec_driver_sql"):
            sql = _const(c.args[0]) if c.args else None
            words = set(re.findall(r"[A-Z]+", sql.upper())) if isinstance(sql, str) else None
            if words is None:
                out.append((c.lineno, "execute: SQL the check cannot read"))
            elif words & {"DROP", "RENAME", "ALTER", "TRUNCATE"}:
                out.append((c.lineno, "execute: DDL in SQL text"))
            elif words & {"UPDATE", "DELETE"}:
                out.append((c.lineno, "execute: rewrites rows in the migration's transaction"))
    return list(dict.fromkeys(why for _, why in sorted(out)))  # each kind once, in source order


def _revisions() -> list[tuple[str, ast.Module, str]]:
    out = []
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        out.append((path.stem, ast.parse(source), source))
    return out


def _module_str(tree: ast.Module, name: str) -> str | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return _const(node.value)
    return None


def test_expand_migrations_keep_the_running_code_working():
    """Every migration after 0020 says its phase; an expand migration only adds (no drop, rename,
    NOT NULL, type change, blocking index or constraint, data rewrite); the older migrations
    hold exactly the hazards docs/deploy.md lists."""
    seen_legacy = {}
    for stem, tree, source in _revisions():
        revision, phase = _module_str(tree, "revision"), _module_str(tree, "phase")
        hazards = live_hazards(source)
        if revision <= LEGACY_LAST and phase is None:
            if hazards:
                seen_legacy[revision] = hazards
            continue
        assert phase in PHASES, f"{stem}: set phase = \"expand\" or \"contract\" (docs/deploy.md §10)"
        if phase == "expand":
            assert hazards == [], f"{stem} is marked expand but would break the running release: {hazards}"
    assert seen_legacy == LEGACY_FINDINGS


@pytest.mark.parametrize("body, found", [
    ("op.add_column('users', sa.Column('nick', sa.String(20), nullable=True))", []),
    ("op.add_column('users', sa.Column('nick', sa.String(20), nullable=False, server_default=''))", []),
    ("op.add_column('users', sa.Column('nick', sa.String(20), nullable=False))",
     ["add_column: a NOT NULL column without a server default"]),
    ("op.drop_column('users', 'phone')", ["drop_column: drops a column"]),
    ("with op.batch_alter_table('users') as b:\n        b.drop_column('phone')", ["drop_column: drops a column"]),
    ("with op.batch_alter_table('users') as b:\n        b.alter_column('phone', new_column_name='mobile')",
     ["alter_column: renames a column"]),
    ("op.alter_column('users', 'phone', nullable=False)", ["alter_column: makes a column NOT NULL"]),
    ("op.alter_column('users', 'phone', nullable=True)", []),
    ("op.rename_table('users', 'people')", ["rename_table: renames a table"]),
    ("with op.batch_alter_table('users') as b:\n        b.create_index('ix_u_name', ['name'])\n"
     "    op.create_table('t', sa.Column('id', sa.Integer))\n"
     "    with op.batch_alter_table('t') as b:\n        b.create_index('ix_t', ['id'])",
     ["create_index: on an existing table without CONCURRENTLY"]),
    ("op.create_index('ix_u_name', 'users', ['name'])",
     ["create_index: on an existing table without CONCURRENTLY"]),
    ("with op.get_context().autocommit_block():\n"
     "        op.create_index('ix_u_name', 'users', ['name'], postgresql_concurrently=True)", []),
    ("op.create_table('t', sa.Column('id', sa.Integer))\n    op.create_index('ix_t', 't', ['id'])", []),
    ("op.execute('ALTER TABLE users DROP COLUMN phone')", ["execute: DDL in SQL text"]),
    ("op.execute(sql)", ["execute: SQL the check cannot read"]),
    ("bind = op.get_bind()\n    bind.execute(sa.text('UPDATE users SET x = 1'))",
     ["execute: rewrites rows in the migration's transaction"]),
])
def test_live_hazards_finds(body, found):
    source = f"from alembic import op\nimport sqlalchemy as sa\n\n\ndef upgrade():\n    {body}\n"
    assert live_hazards(source) == found


# ---------------------------------------------------------------- two `db upgrade` at once


def _upgrade_proc(url: str, instance: Path, **extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TONGBAN_", "FLASK_")) and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DATABASE_URL=url, TONGBAN_INSTANCE_DIR=str(instance), **extra)
    return subprocess.Popen([FLASK, "--app", "wsgi", "db", "upgrade"], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_upgrades_at_once_do_not_race(fresh_url, tmp_path):
    """Two machines rolling out the same release both run `db upgrade`: the second waits for the
    first's lock and then finds nothing to do (without the lock, the second failed on a duplicate
    table, or both bootstrapped a second set of signing keys)."""
    instance = tmp_path / "instance"
    _upgrade(fresh_url, instance)  # the instance secrets first: two processes creating them is another race
    engine = create_engine(fresh_url)
    try:
        if engine.dialect.name == "postgresql":  # back to an empty database, the instance folder kept
            with engine.begin() as conn:
                tables = inspect(conn).get_table_names()
                conn.execute(text("DROP TABLE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE"))
        else:
            engine.dispose()
            Path(make_url(fresh_url).database).unlink()
        procs = [_upgrade_proc(fresh_url, instance) for _ in range(2)]
        outs = [p.communicate(timeout=300)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], "\n----\n".join(outs)
        snap = _snapshot(engine)
        assert snap["version"] == set(ScriptDirectory(str(MIGRATIONS)).get_heads())
        assert [alg for alg, _ in snap["keys"]] == ["ES256", "RS256"]  # bootstrapped once
    finally:
        engine.dispose()


def test_upgrade_refused_cleanly_while_another_holds_the_lock(fresh_url, tmp_path):
    from tongban.bootstrap import UPGRADE_LOCK_KEY

    engine = create_engine(fresh_url)
    try:
        with contextlib.ExitStack() as held:
            if engine.dialect.name == "postgresql":
                conn = held.enter_context(engine.connect())
                assert conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": UPGRADE_LOCK_KEY}).scalar()
                conn.commit()
            else:
                fd = os.open(f"{make_url(fresh_url).database}.upgrade-lock", os.O_RDWR | os.O_CREAT, 0o600)
                held.callback(os.close, fd)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            proc = _upgrade_proc(fresh_url, tmp_path / "instance", TONGBAN_MIGRATION_LOCK_WAIT="1")
            out = proc.communicate(timeout=120)[0]
        assert proc.returncode == 1, out
        assert "waiting for it (at most 1 s)" in out
        assert "held the lock for 1 s: nothing was changed" in out
        assert "Traceback" not in out
        with engine.connect() as conn:
            assert inspect(conn).get_table_names() == []  # not one migration ran
    finally:
        engine.dispose()
