"""The one upsert helper: ``INSERT ... ON CONFLICT`` in the dialect of the connection
(SQLite and PostgreSQL spell it the same way in SQLAlchemy, from different modules).

An atomic upsert is how rows that many requests or servers create at once (counters,
throttle rows, usage figures) come into being without a read-then-write race."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite


def _dialect(bind: Any) -> str:
    if hasattr(bind, "dialect"):  # Connection, Engine
        return bind.dialect.name
    return bind.get_bind().dialect.name  # Session


def upsert(bind: Any, model: Any, values: Mapping[str, Any], keys: Sequence[str],
           update: Mapping[str, Any] | Callable[[Any], Mapping[str, Any]] | None = None, *, where: Any = None):
    """The statement inserting ``values`` into ``model``'s table, or on a conflict on the unique
    ``keys``: nothing (``update`` None), or ``update`` — a mapping of column to new value, or a
    callable given the ``excluded`` row (the values that were not inserted) returning one —
    only where ``where`` holds for the existing row, if given (else the row is left as it is;
    with ``RETURNING`` nothing is returned then).

    ``bind`` (a Connection, Engine or Session) chooses the dialect; execute the statement on it."""
    insert = postgresql.insert if _dialect(bind) == "postgresql" else sqlite.insert
    stmt = insert(model).values(**values)
    if update is None:
        return stmt.on_conflict_do_nothing(index_elements=list(keys))
    set_ = update(stmt.excluded) if callable(update) else update
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=dict(set_), where=where)
