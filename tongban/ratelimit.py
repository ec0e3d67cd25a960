"""Fixed-window counters shared by every worker: Redis when configured, else the database.

The database backend is one atomic upsert (``INSERT ... ON CONFLICT DO UPDATE ...
RETURNING``), so parallel requests cannot both see a count under the limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import BigInteger, Integer, String, delete, literal_column
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column

from .cache import redis_client
from .extensions import db


class RateCounter(db.Model):
    __tablename__ = "rate_counters"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


@dataclass
class Hit:
    allowed: bool
    count: int
    retry_after: int


def hit(key: str, limit: int, window: int, *, conn=None) -> Hit:
    """Count one event under ``key``; allowed while the count in this window is <= limit.

    ``conn``: count in that connection's transaction (without Redis) instead of a transaction
    of its own, for callers already writing in one (no second SQLite writer to wait for)."""
    now = time.time()
    start = int(now // window) * window
    retry_after = max(1, int(start + window - now) + 1)
    r = redis_client()
    if r is not None:
        rkey = f"tongban:rl:{key}:{start}"
        pipe = r.pipeline()
        pipe.incr(rkey)
        pipe.expire(rkey, window + 5)
        count = int(pipe.execute()[0])
    else:
        count = _db_hit(key, start, conn)
    return Hit(count <= limit, count, retry_after)


def _db_hit(key: str, start: int, conn=None) -> int:
    dialect = db.engine.dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(RateCounter).values(key=key, window=start, count=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=["key", "window"], set_={"count": literal_column("rate_counters.count") + 1}
    ).returning(RateCounter.count)
    if conn is not None:
        return _count(conn, stmt, start)
    # its own transaction: a throttled request must count even when the request rolls back
    with db.engine.begin() as own:
        return _count(own, stmt, start)


def _count(conn, stmt, start: int) -> int:
    count = conn.execute(stmt).scalar_one()
    if count == 1:
        conn.execute(delete(RateCounter).where(RateCounter.window < start - 3600))
    return count


def reset(key: str) -> None:
    r = redis_client()
    if r is not None:
        for k in r.scan_iter(f"tongban:rl:{key}:*"):
            r.delete(k)
        return
    with db.engine.begin() as conn:
        conn.execute(delete(RateCounter).where(RateCounter.key == key))


__all__ = ["Hit", "RateCounter", "hit", "reset"]
