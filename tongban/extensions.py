"""Flask extensions, created once and bound in ``create_app``."""

from __future__ import annotations

from flask_babel import Babel
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData, event
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
migrate = Migrate()
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
    """Run ``fn`` once the current transaction commits (e.g. cache invalidation); dropped on rollback."""
    db.session().info.setdefault("tongban_after_commit", []).append(fn)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session):
    for fn in session.info.pop("tongban_after_commit", []):
        fn()


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session):
    session.info.pop("tongban_after_commit", None)
