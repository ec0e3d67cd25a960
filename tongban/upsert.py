"""The one upsert helper: ``INSERT ... ON CONFLICT`` in the dialect of the connection
(SQLite and PostgreSQL spell it the same way in SQLAlchemy, from different modules).

An atomic upsert is how rows that many requests or servers create at once (counters,
throttle rows, usage figures) come into being without a read-then-write race."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult


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


# ---------------------------------------------------------------- prebuilt upserts, compiled once

# SQLAlchemy 2.0 never caches the compilation of a dialect's INSERT ... ON CONFLICT (its
# sqlite/postgresql ``Insert`` is not cacheable: ``inherit_cache = False``), so an upsert is
# compiled from scratch at every execution, a third of a millisecond each. The hot ones (the
# rate counter, the log-in slot, the session's systems) are built once at module level; this
# compiles such a statement once per dialect and reuses the compiled form.
# the compiled forms live on the dialect itself (a compiled statement refers to its dialect, so
# a memo beside it would keep every engine's dialect alive): they go when the engine goes
_MEMO = "_tongban_prebuilt"


def execute_prebuilt(conn: Connection, stmt: Any, params: Mapping[str, Any]) -> CursorResult:
    """Execute ``stmt`` — built ONCE (module level or a per-dialect memo: its identity keys the
    compiled form) with every value a named ``bindparam`` given in ``params`` — on ``conn``,
    compiled once per dialect. The same SQL, parameters and events (``before_cursor_execute``,
    ``commit``) as ``conn.execute(stmt, params)``."""
    run = getattr(conn, "_execute_compiled", None)
    if run is None:  # pragma: no cover - a SQLAlchemy without it: compiled every time, as before
        return conn.execute(stmt, dict(params))
    dialect = conn.dialect
    per_dialect = dialect.__dict__.get(_MEMO)
    if per_dialect is None:
        per_dialect = dialect.__dict__.setdefault(_MEMO, {})
    keys = tuple(sorted(params))
    held = per_dialect.get((id(stmt), keys))
    if held is None or held[0] is not stmt:
        held = per_dialect[(id(stmt), keys)] = (stmt, stmt.compile(dialect=dialect, column_keys=list(keys)))
    return run(held[1], [dict(params)])
