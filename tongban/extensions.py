"""Flask extensions, created once and bound in ``create_app``."""

from __future__ import annotations

from typing import Any

from flask_babel import Babel
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData, and_, bindparam, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


db = SQLAlchemy(model_class=Base)
csrf = CSRFProtect()
babel = Babel()


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):  # pragma: no cover - driver hook
    module = type(dbapi_connection).__module__
    if "sqlite" in module:
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()


def after_commit(fn) -> None:
    """Run ``fn`` once the current transaction commits (e.g. cache invalidation); dropped on rollback.

    The outermost transaction: SQLAlchemy also fires ``after_commit`` when a savepoint
    (``begin_nested``) is released, when nothing is committed yet — a cache reloaded then would
    read the old rows and keep them. A savepoint rolled back drops only what was registered
    inside it; what the enclosing transaction registered before still runs at its commit."""
    db.session().info.setdefault("tongban_after_commit", []).append(fn)


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session, transaction):
    if transaction.nested:
        session.info.setdefault("tongban_after_commit_marks", []).append(
            len(session.info.get("tongban_after_commit", ())))


@event.listens_for(Session, "after_transaction_end")
def _unmark_savepoint(session, transaction):
    if transaction.nested:
        marks = session.info.get("tongban_after_commit_marks")
        if marks:
            marks.pop()


@event.listens_for(Session, "after_commit")
def _run_after_commit(session):
    if session.in_nested_transaction():  # a savepoint released: the real commit is still to come
        return
    session.info.pop("tongban_after_commit_marks", None)
    failed: BaseException | None = None
    for fn in session.info.pop("tongban_after_commit", []):
        try:  # the transaction is committed: one callback failing must not skip the others
            fn()
        except Exception as exc:
            failed = failed or exc
    if failed is not None:
        raise failed


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session):
    marks = session.info.get("tongban_after_commit_marks")
    if session.in_nested_transaction() and marks:  # a savepoint rolled back: only what it registered
        pending = session.info.get("tongban_after_commit")
        if pending is not None:
            del pending[marks[-1]:]
        return
    session.info.pop("tongban_after_commit", None)
    session.info.pop("tongban_after_commit_marks", None)


# ---------------------------------------------------------------- writes kept out of the request's transaction


def after_request_write(fn) -> None:
    """Run ``fn(connection)`` once this request's database session is closed, in its own short
    transaction (e.g. noting that a log-in session was seen). On SQLite a GET page that changed
    a row would otherwise hold the database's write lock until the page is rendered — and a
    page never commits, so the change would be lost as well. Outside a request: run now."""
    from flask import g, has_app_context

    if not has_app_context():
        fn_now(fn)
        return
    g.setdefault("_tongban_after_writes", []).append(fn)


def after_request_task(fn) -> None:
    """Run ``fn()`` once this request's session is closed, in a fresh app context and session
    that is committed (rolled back if ``fn`` raises): ORM work a reading page must not leave
    in its own never-committed transaction (e.g. ending a log-in session found expired)."""
    from flask import g, has_app_context

    if not has_app_context():
        raise RuntimeError("after_request_task needs an application context")
    g.setdefault("_tongban_after_tasks", []).append(fn)


def fn_now(fn) -> None:
    with db.engine.begin() as conn:
        fn(conn)


_WROTE = "tongban_wrote"


@event.listens_for(Session, "after_flush")
def _note_flush(session, flush_context):
    if session.new or session.dirty or session.deleted:
        session.info[_WROTE] = True


@event.listens_for(Session, "do_orm_execute")
def _note_dml(state):
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info[_WROTE] = True


def mark_written(session) -> None:
    """Note that a statement run on ``session.connection()`` (not through the ORM) wrote."""
    session.info[_WROTE] = True


@event.listens_for(Session, "after_transaction_end")
def _forget_writes(session, transaction):
    if transaction.parent is None:
        session.info.pop(_WROTE, None)


def release_connection() -> bool:
    """Before slow CPU work (Argon2): end the request session's transaction when it has only
    read, so this thread holds no pooled connection and no transaction (no snapshot or lock on
    PostgreSQL, no read lock on SQLite) while it works; loaded objects are refreshed on next
    use. Returns False and changes nothing when the session has written (the CLI creating
    accounts in one batch): those changes must commit or roll back together.
    tests/tongban/test_no_blocking.py checks that the web paths get here with nothing written."""
    session = db.session()
    if not session.in_transaction():
        return True
    if session.new or session.dirty or session.deleted or session.info.get(_WROTE):
        return False
    session.commit()
    return True


def session_holds_sqlite_write() -> bool:
    """True when the current session has written on SQLite: another connection would wait for it."""
    session = db.session()
    if not session.in_transaction() or db.engine.dialect.name != "sqlite":
        return False
    try:
        raw = session.connection().connection.dbapi_connection
    except Exception:
        return False
    return bool(getattr(raw, "in_transaction", False))


def init_after_request_writes(app) -> None:
    """Wire ``after_request_write`` (and ``after_session`` hooks) to run after the session is removed."""
    import logging

    from flask import g

    def _run(exc):
        for fn in g.pop("_tongban_after_writes", []):
            try:
                fn_now(fn)
            except Exception:  # bookkeeping must never fail the response
                logging.getLogger(__name__).exception("deferred write failed")
        for task in g.pop("_tongban_after_tasks", []):
            with app.app_context():
                try:
                    task()
                    db.session.commit()
                except Exception:
                    db.session.rollback()
                    logging.getLogger(__name__).exception("after-request task failed")
        for hook in app.extensions.get("tongban.after_session", []):
            try:
                hook()
            except Exception:
                logging.getLogger(__name__).exception("after-session hook %s failed", getattr(hook, "__name__", hook))

    # teardown_appcontext functions run last-registered first: this one runs after
    # Flask-SQLAlchemy has removed the request's session (its write lock is released)
    app.teardown_appcontext_funcs.insert(0, _run)


def after_session(app, fn) -> None:
    """Run ``fn()`` at the end of every app context, after its database session is removed."""
    app.extensions.setdefault("tongban.after_session", []).append(fn)


_READ_ENGINES: dict[int, object] = {}


def read_connection():
    """A pooled connection in autocommit mode for one read on a hot path (``/v/<code>``, the lean
    userinfo): a single statement needs no transaction, and without one PostgreSQL answers in one
    round trip instead of three (BEGIN, the query, ROLLBACK when the pool takes it back). The
    same pool as the ORM session's; use as a context manager."""
    engine = db.engine
    held = _READ_ENGINES.get(id(engine))
    if held is None or held[0] is not engine:  # type: ignore[index]
        held = _READ_ENGINES[id(engine)] = (engine, engine.execution_options(isolation_level="AUTOCOMMIT"))
    return held[1].connect()  # type: ignore[index]


# ---------------------------------------------------------------- hot look-ups by primary key

_BY_PK: dict[tuple[type, bool], tuple] = {}


def get_by_pk(model: type, ident, *, populate_existing: bool = False):
    """``db.session.get(model, ident)`` for the paths every log-in takes: what is already in the
    session's identity map is answered by ``Session.get`` itself (no query, the same checks);
    otherwise one prebuilt ``SELECT ... WHERE <primary key>`` (the same row, loaded the same
    way, autoflush included), without ``Session.get`` building and annotating a new statement
    for every call. ``ident``: the primary key value, or a tuple for a composite key."""
    session = db.session()
    values = ident if isinstance(ident, tuple) else (ident,)
    found = _BY_PK.get((model, populate_existing))
    if found is None:
        mapper = model.__mapper__  # type: ignore[attr-defined]
        names = tuple(f"b_pk_{i}" for i in range(len(mapper.primary_key)))
        stmt: Any = select(model).where(and_(*(col == bindparam(name, type_=col.type)
                                          for col, name in zip(mapper.primary_key, names, strict=True))))
        if populate_existing:
            stmt = stmt.execution_options(populate_existing=True)
        found = _BY_PK[(model, populate_existing)] = (mapper, names, stmt)
    mapper, names, stmt = found
    if len(values) != len(names) or any(v is None for v in values):
        return session.get(model, ident, populate_existing=populate_existing)  # its own error or None
    if not populate_existing and mapper.identity_key_from_primary_key(values) in session.identity_map:
        return session.get(model, ident)
    return session.execute(stmt, dict(zip(names, values, strict=True))).scalar_one_or_none()
