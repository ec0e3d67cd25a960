"""Fixed-window counters shared by every worker: Redis when configured, else the database.

The database backend is one atomic upsert (``INSERT ... ON CONFLICT DO UPDATE ...
RETURNING``), so parallel requests cannot both see a count under the limit.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Integer, String, bindparam, delete, literal_column
from sqlalchemy.orm import Mapped, mapped_column

from .cache import redis_client
from .extensions import db
from .upsert import execute_prebuilt, upsert


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

    ``conn``: with the database backend, count in that connection's transaction instead of a
    transaction of its own, for callers already writing in one (no second SQLite writer to wait
    for). With Redis the count is Redis's, at once, whatever the caller's transaction does."""
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


# the counting upsert, built once per dialect (bound parameters: nothing rebuilt per hit)
_UPSERTS: dict[str, Any] = {}
_PURGE = delete(RateCounter).where(RateCounter.window < bindparam("b_before", type_=BigInteger()))


def _upsert_for(bind) -> Any:
    name = bind.dialect.name
    stmt = _UPSERTS.get(name)
    if stmt is None:
        stmt = _UPSERTS[name] = upsert(
            bind, RateCounter, {"key": bindparam("b_key", type_=String()),
                                "window": bindparam("b_window", type_=BigInteger()), "count": 1},
            ["key", "window"], {"count": literal_column("rate_counters.count") + 1}).returning(RateCounter.count)
    return stmt


def _db_hit(key: str, start: int, conn=None) -> int:
    if conn is not None:
        return _count(conn, key, start)
    # its own transaction: a throttled request must count even when the request rolls back
    with db.engine.begin() as own:
        return _count(own, key, start)


def _count(conn, key: str, start: int) -> int:
    count = execute_prebuilt(conn, _upsert_for(conn), {"b_key": key, "b_window": start}).scalar_one()
    if count == 1:
        conn.execute(_PURGE, {"b_before": start - 3600})
    return count


def client_key(remote_addr: str | None) -> str:
    """The source a per-address limit counts: an IPv4 address (also when IPv4-mapped), or the
    /64 of an IPv6 address. One IPv6 host holds a whole /64 and picks any address in it, so
    counting the raw address would give it 2**64 fresh counters."""
    ip = (remote_addr or "").strip()
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def wide_client_key(remote_addr: str | None) -> str | None:
    """The /48 of an IPv6 address (the usual end-site allocation: 65536 /64s), else None."""
    try:
        addr = ipaddress.ip_address((remote_addr or "").strip())
    except ValueError:
        return None
    if not isinstance(addr, ipaddress.IPv6Address) or addr.ipv4_mapped is not None:
        return None
    return str(ipaddress.ip_network(f"{addr}/48", strict=False))


def hit_client(name: str, remote_addr: str | None, limit: int, window: int, *, conn=None) -> Hit:
    """Count one event of ``name`` for the client at ``remote_addr``: per ``client_key`` (the
    /64 for IPv6) within ``limit``, and for IPv6 also per /48 within ``limit`` times
    ``TONGBAN_RATE_IPV6_48_FACTOR`` (a site spreading over its /64s is still bounded).

    ``conn``: as for ``hit`` (with the database backend, both counts in that connection's
    transaction; with Redis, in Redis at once)."""
    from flask import current_app

    narrow = hit(f"{name}:{client_key(remote_addr)}", limit, window, conn=conn)
    wide = wide_client_key(remote_addr)
    if wide is None:
        return narrow
    factor = int(current_app.config.get("TONGBAN_RATE_IPV6_48_FACTOR", 16))
    broad = hit(f"{name}:{wide}", limit * max(1, factor), window, conn=conn)
    if not broad.allowed and narrow.allowed:
        return broad
    return narrow


__all__ = ["Hit", "RateCounter", "client_key", "hit", "hit_client", "wide_client_key"]
