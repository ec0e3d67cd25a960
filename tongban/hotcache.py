"""A per-process cache of the lean hot answers (userinfo, ``/v/<code>`` JSON) that every change
invalidates at once, on every process and every server.

The lean userinfo and the lean licence check each cost one database round trip; the rest of
such a request is in memory. This module keeps the answer itself, keyed by what the request
names (the access token's exact text, the verification code), together with the *dependencies*
it was read from (``sub:<sub>``, ``sid:<sid>``, ``vcode:<code>``) and a check of anything that
changes with time alone (the session's idle and absolute lifetimes, the licence's expiry date).

**The invalidation log.** Every committed write that touches a watched table (accounts, log-in
sessions, enterprise selections, licences) is published after its commit:

* with Redis, one Lua call moves ``tongban:gen:hotcache`` (a ``Generation``, so it is part of
  the one MGET every request already does) to max(counter + 1, the clock in µs), never a value
  handed out before, and adds the changed keys to the sorted set ``tongban:hotcache:log``
  scored by the new counter value; the log keeps ``_KEEP`` members. A process that sees the
  counter move reads the log since the value it last processed (one transaction: the counter
  and ``ZRANGEBYSCORE``) and evicts those keys; ``*``, too much to read, a position behind the
  trimmed log, a counter below the position or a log of another epoch (Redis restarted empty,
  a key evicted: see ``_PUBLISH``) clear everything. Every
  ``TONGBAN_HOT_CACHE_REDIS_CHECK_SECONDS`` a process compares Redis's ``run_id`` and
  ``master_replid`` with what it saw: a Redis restored from a backup or a promoted replica
  (the last publishes lost) clears everything.
* without Redis (one machine), the generation is a file: any move clears everything. With a
  database other than SQLite (several servers may share it) the cache is then off unless
  ``TONGBAN_HOT_CACHE_WITHOUT_REDIS`` says one machine serves it.

**Finding the writes.** Not by call sites but by SQLAlchemy events: ``after_flush`` names the
precise keys of the watched ORM objects flushed (published at the outermost ``after_commit``,
before any other callback, and also at a rollback: on a driver-level autocommit connection the
statements committed as they ran; a released savepoint publishes nothing); every other
statement naming a watched table that is not one plain SELECT (``_is_read``: a Core statement,
``text()`` even behind a comment, a bulk ORM update through the session, legacy
``bulk_update_mappings``) is seen by ``before_cursor_execute`` and publishes ``*`` once its
transaction is over, committed or rolled back (at the next ``begin`` or when the connection
goes back to the pool; at once on an autocommit connection).
A statement may instead declare the keys of the rows it changes, or that it is harmless, with
``execution_options(tongban_hotcache=...)`` (see ``_declared``).

**The store race.** A reader that queried the database before a write committed must not
keep its stale answer after the invalidation was processed: the position (counter) is taken
before the query and the answer is stored only if the counter, read again at store time
(one extra read on a miss), has not moved.

``TONGBAN_HOT_CACHE=0`` turns it off; ``TONGBAN_HOT_CACHE_SIZE`` bounds it (the least recently
used answer goes when full); ``TONGBAN_HOT_CACHE_SECONDS`` bounds how long one answer is kept.
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flask import Flask, current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, attributes
from sqlalchemy.pool import Pool

from .cache import Generation, redis_client

log = logging.getLogger(__name__)

class _LogGeneration(Generation):
    """The counter of the invalidation log: bumping it (a restored backup bumps every
    generation) publishes ``*``, so that no move of the counter comes without its log entry."""

    def bump(self, app: Flask | None = None) -> None:
        publish([ALL], app)

    def bump_counter(self, app: Flask) -> None:
        super().bump(app)


GENERATION = _LogGeneration("hotcache")
LOG_KEY = "tongban:hotcache:log"
_GEN_KEY = f"tongban:gen:{GENERATION.name}"
_KEEP = 100_000  # log members kept in Redis; a process further behind clears everything
_READ_AT_MOST = 5_000  # a process with more log members to read than this clears everything instead
_PUBLISH_AT_MOST = 1_000  # a publish naming more keys than this publishes "*"
_FLOOR = "floor"
ALL = "*"
_EPOCH = "epoch:"

# the tables whose rows a cached answer is read from (tongban/hotcache.py's docstring)
WATCHED_TABLES = ("users", "login_sessions", "enterprise_acting", "licences")
_TABLES = re.compile(r"\b(?:" + "|".join(WATCHED_TABLES) + r")\b", re.I)
# what may open a read, once leading whitespace, comments and parentheses are stripped
_LEAD = re.compile(r"(?:\s+|\(|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
_SELECT = re.compile(r"select\b", re.I)
_WITH = re.compile(r"with\b", re.I)
_MODIFYING = re.compile(r"\b(?:insert|update|delete|merge|truncate|copy|call|do|into)\b", re.I)

# KEYS: the counter, the log. ARGV: a new epoch's name, how many log members to keep, the
# publisher's clock in microseconds, the keys. The log always holds one "epoch:<name>" member
# scored +inf, started anew whenever the counter or the log itself was lost (Redis restarted
# empty, a key evicted): a process that finds another epoch (or none) than the one it knew
# cannot trust the log, and clears everything.
#
# The counter never hands out a value twice, not even after Redis went back in time (restored
# from its RDB/AOF file, a replica promoted that had not received the last publishes): each
# publish sets it to max(counter + 1, the clock in microseconds), so a counter restored to an
# older value jumps past every value handed out before (as long as publishes do not outrun the
# clock for longer than Redis was away). A process never takes a new publish for one it has
# already processed.
#
# The log is trimmed by size, not by score (the counter follows the clock): the highest score
# trimmed is kept as the member "floor"; a process behind it finds "floor" in what it reads and
# clears everything.
_PUBLISH = """
local n = redis.call('INCR', KEYS[1])
local fresh = n == 1
local clock = tonumber(ARGV[3])
if n < clock then
  redis.call('SET', KEYS[1], ARGV[3])
  n = clock
end
if fresh or redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('ZADD', KEYS[2], '+inf', 'epoch:' .. ARGV[1])
end
local score = string.format('%d', n)
for i = 4, #ARGV do redis.call('ZADD', KEYS[2], score, ARGV[i]) end
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[2])
if excess > 0 then
  local last = redis.call('ZRANGE', KEYS[2], excess - 1, excess - 1, 'WITHSCORES')
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
  redis.call('ZADD', KEYS[2], last[2], 'floor')
end
return n
"""

@dataclass(slots=True)
class Entry:
    body: bytes
    deps: tuple[str, ...]
    still_valid: Callable[[], bool] | None  # time-dependent validity, checked on every hit
    born: float  # time.monotonic()
    extra: object = None  # what the caller checks again on a hit (e.g. the client's record)


class HotCache:
    """One application's cache (``app.extensions['tongban.hotcache']``)."""

    def __init__(self, app: Flask):
        self.app = app
        self._entries: OrderedDict[object, Entry] = OrderedDict()  # least recently used first
        self._by_dep: dict[str, set[object]] = {}
        self._lock = threading.Lock()
        self._seen: object = None  # the generation value processed (int with Redis, a stat tuple without)
        self._epoch: str | None = None  # the Redis log's epoch member this process knows
        self._identity: tuple[str, str] | None = None  # Redis's run_id and master_replid
        self._identity_checked = float("-inf")  # time.monotonic() of the last look at them
        self._identity_warned = False
        self._off_said = False
        self._sqlite_uri: object = None  # the SQLite URI the cache was found allowed with
        self.hits = 0
        self.misses = 0
        self.cleared = 0

    # ------------------------------------------------------------ settings

    @property
    def enabled(self) -> bool:
        cfg = self.app.config
        if not cfg["TONGBAN_HOT_CACHE"]:
            return False
        if cfg["REDIS_URL"] or cfg["TONGBAN_HOT_CACHE_WITHOUT_REDIS"]:
            return True
        uri = cfg.get("SQLALCHEMY_DATABASE_URI")
        if uri is self._sqlite_uri:  # decided before for this very value
            return True
        return self._one_machine(uri)

    def _one_machine(self, uri: object) -> bool:
        """Without Redis the invalidation is a file in the instance folder: it reaches the
        processes of one machine only. SQLite is one machine's; any other database may be shared
        by several servers, which would never hear of each other's changes: the cache is off
        (said once) unless ``TONGBAN_HOT_CACHE_WITHOUT_REDIS`` says this machine is the only one."""
        if str(uri or "").startswith("sqlite"):
            self._sqlite_uri = uri
            return True
        if not self._off_said:
            self._off_said = True
            log.warning("hot cache: off, the database is not SQLite and REDIS_URL is not set: several servers "
                        "would not invalidate each other's answers (TONGBAN_HOT_CACHE_WITHOUT_REDIS=1 if this "
                        "machine alone serves the database)")
        return False

    # ------------------------------------------------------------ reading

    def position(self) -> object:
        """Process the invalidation log up to the generation this request sees; returns the
        position to hand to ``put`` (taken before the database is read)."""
        gen = GENERATION.current(self.app)
        if redis_client(self.app) is not None:
            if time.monotonic() - self._identity_checked >= self.app.config["TONGBAN_HOT_CACHE_REDIS_CHECK_SECONDS"]:
                self._check_redis_identity()
            n = int(gen or 0)  # type: ignore[call-overload]
            if n == self._seen:
                return n
            # moved (or went back: Redis restarted empty), or an older snapshot than a concurrent
            # request's: the log and the counter, read fresh, decide
            with self._lock:
                if n != self._seen:
                    seen = self._seen
                    self._sync_redis(seen if isinstance(seen, int) else None)
                return self._seen
        if gen != self._seen:
            with self._lock:
                if gen != self._seen:
                    self._clear()
                    self._seen = gen
        return gen

    def _sync_redis(self, seen: int | None) -> None:
        r = redis_client(self.app)
        p = r.pipeline(transaction=True)
        p.get(_GEN_KEY)
        p.zrangebyscore(LOG_KEY, f"({seen if seen is not None else 0}", "+inf", start=0, num=_READ_AT_MOST + 1)
        p.zrangebyscore(LOG_KEY, "+inf", "+inf")
        raw, changed, tops = p.execute()
        now = int(raw or 0)
        names = [c.decode() if isinstance(c, bytes) else c for c in changed]
        epochs = [t.decode() if isinstance(t, bytes) else t for t in tops]
        epoch = epochs[0] if epochs and epochs[0].startswith(_EPOCH) else None
        if (seen is None or seen > now  # first look; the counter went back (Redis restored or restarted)
                or len(names) > _READ_AT_MOST or _FLOOR in names  # too far behind; behind the trimmed log
                or epoch is None or epoch != self._epoch or ALL in names):  # log lost or restarted; "*"
            self._clear()
        else:
            for name in names:
                self._evict_dep(name)
        self._epoch = epoch
        self._seen = now

    def _check_redis_identity(self) -> None:
        """Every ``TONGBAN_HOT_CACHE_REDIS_CHECK_SECONDS``: whether Redis is still the same
        instance with the same history (``run_id``, ``master_replid`` from INFO). A Redis
        restarted from its RDB/AOF file, or a replica promoted, may have lost the last publishes
        and come back with a counter this process has already processed: everything is cleared."""
        self._identity_checked = time.monotonic()
        try:
            identity = _redis_identity(redis_client(self.app))
        except Exception:
            if not self._identity_warned:
                self._identity_warned = True
                log.warning("hot cache: INFO is refused by Redis; a Redis restored from a backup or a promoted "
                            "replica is noticed only by its counter", exc_info=True)
            return
        with self._lock:
            if self._identity is not None and identity != self._identity:
                log.warning("hot cache: Redis is another instance or history (%s -> %s): cleared",
                            self._identity, identity)
                self._clear()
                self._seen = None  # the log is read anew, as at the first look
            self._identity = identity

    def get(self, key: object) -> Entry | None:
        e = self._entries.get(key)
        if e is None:
            self.misses += 1
            return None
        if (time.monotonic() - e.born > self.app.config["TONGBAN_HOT_CACHE_SECONDS"]
                or (e.still_valid is not None and not e.still_valid())):
            with self._lock:
                if self._entries.get(key) is e:
                    self._drop(key, e)
            self.misses += 1
            return None
        try:  # noqa: SIM105  (no context manager on the hot path)
            self._entries.move_to_end(key)  # the most recently used: evicted last
        except KeyError:  # evicted meanwhile by another thread
            pass
        self.hits += 1
        return e

    # ------------------------------------------------------------ storing

    def put(self, key: object, position: object, body: bytes, deps: Iterable[str],
            still_valid: Callable[[], bool] | None = None, extra: object = None) -> bool:
        """Keep ``body`` unless anything was invalidated since ``position`` (read again now,
        bypassing the request's snapshot): an answer read before a write committed is never
        kept once that write's invalidation could have been processed."""
        if self._fresh_generation() != position:
            return False
        entry = Entry(body, tuple(deps), still_valid, time.monotonic(), extra)
        with self._lock:
            if self._seen != position:  # processed a move since: the answer may be stale
                return False
            old = self._entries.get(key)
            if old is not None:
                self._drop(key, old)
            while self._entries and len(self._entries) >= max(1, int(self.app.config["TONGBAN_HOT_CACHE_SIZE"])):
                self._drop(*next(iter(self._entries.items())))  # full: the least recently used goes
            self._entries[key] = entry
            for d in entry.deps:
                self._by_dep.setdefault(d, set()).add(key)
        return True

    def _fresh_generation(self) -> object:
        r = redis_client(self.app)
        if r is not None:
            return int(r.get(_GEN_KEY) or 0)  # not the request's snapshot: now
        return GENERATION.current(self.app)  # the file generation is a stat, never snapshotted

    # ------------------------------------------------------------ evicting (lock held)

    def _drop(self, key: object, e: Entry) -> None:
        del self._entries[key]
        for d in e.deps:
            keys = self._by_dep.get(d)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_dep[d]

    def _evict_dep(self, dep: str) -> None:
        for key in list(self._by_dep.get(dep, ())):
            e = self._entries.get(key)
            if e is not None:
                self._drop(key, e)
        self._by_dep.pop(dep, None)

    def _clear(self) -> None:
        self._entries.clear()
        self._by_dep.clear()
        self.cleared += 1

    def clear(self) -> None:
        with self._lock:
            self._clear()

    def __len__(self) -> int:
        return len(self._entries)


def _redis_identity(r) -> tuple[str, str]:
    """The Redis server's ``run_id`` (a new one at every start) and ``master_replid`` (a new
    history when a replica is promoted)."""
    p = r.pipeline(transaction=False)
    p.info("server")
    p.info("replication")
    info, repl = p.execute()
    return str(info.get("run_id", "")), str(repl.get("master_replid", ""))


def for_app(app: Flask | None = None) -> HotCache | None:
    """The application's cache when it is on, else None."""
    app = app or current_app
    hc = app.extensions.get("tongban.hotcache")
    return hc if hc is not None and hc.enabled else None


# ---------------------------------------------------------------- publishing

_apps: weakref.WeakSet[Flask] = weakref.WeakSet()


def publish(keys: Iterable[str], app: Flask | None = None) -> None:
    """Tell every process that answers depending on ``keys`` (or ``*``) are stale. Called after
    the write committed; a failure is logged and this process's own cache emptied."""
    keys = sorted(set(keys))
    if not keys:
        return
    targets = [app] if app is not None else ([current_app._get_current_object()] if has_app_context()  # type: ignore[attr-defined]
                                             else list(_apps))
    for a in targets:
        try:
            r = redis_client(a)
            if r is not None:
                if ALL in keys or len(keys) > _PUBLISH_AT_MOST:
                    keys = [ALL]
                r.eval(_PUBLISH, 2, _GEN_KEY, LOG_KEY, secrets.token_hex(8), str(_KEEP), str(time.time_ns() // 1000),
                       *keys)
            else:
                GENERATION.bump_counter(a)
        except Exception:
            log.exception("hot cache: publishing an invalidation failed (%s); other processes keep their "
                          "answers at most TONGBAN_HOT_CACHE_SECONDS", ",".join(keys[:5]))
            hc = a.extensions.get("tongban.hotcache")
            if hc is not None:
                hc.clear()
        from .cache import forget_snapshot

        forget_snapshot()


def _keys_of(obj) -> list[str]:
    """The dependency keys a watched ORM object names, before and after the change."""
    name = type(obj).__tablename__ if hasattr(type(obj), "__tablename__") else ""
    attr = {"users": ("sub", "sub"), "login_sessions": ("sid", "sid"), "enterprise_acting": ("sid", "sid"),
            "licences": ("verify_code", "vcode")}.get(name)
    if attr is None:
        return []
    col, prefix = attr
    try:
        values = {getattr(obj, col, None)}
        hist = attributes.get_history(obj, col, passive=attributes.PASSIVE_NO_INITIALIZE)
        values.update(hist.deleted or ())
    except Exception:  # an expired attribute of a deleted row, ...: cannot name it, so clear all
        return [ALL]
    return [f"{prefix}:{v}" for v in values if v] or [ALL]


_PENDING = "tongban_hotcache_keys"


@event.listens_for(Session, "after_flush")
def _note_flush(session, flush_context):
    keys: set[str] | None = None
    for group in (session.new, session.dirty, session.deleted):
        for obj in group:
            if getattr(type(obj), "__tablename__", None) in WATCHED_TABLES:
                if group is session.dirty and not session.is_modified(obj, include_collections=False):
                    continue
                if keys is None:
                    keys = session.info.setdefault(_PENDING, set())
                keys.update(_keys_of(obj))


@event.listens_for(Session, "do_orm_execute")
def _note_orm_dml(state):
    """ORM statements through the session (``session.execute(update(User)...)``, bulk inserts and
    updates by primary key): their statements may come with the mapper's compiled cache, as a
    flush's do, but no ``after_flush`` names their rows: ``*`` (or the keys they declare) at
    commit."""
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) not in WATCHED_TABLES:
        return
    declared = _declared(state.execution_options)
    if declared == []:
        return
    state.session.info.setdefault(_PENDING, set()).update(declared or [ALL])


@event.listens_for(Session, "after_commit", insert=True)  # before any other: one that raises skips the rest
def _publish_flushed(session):
    if session.in_nested_transaction():
        return  # a savepoint released (SQLAlchemy calls after_commit for it too): nothing is committed yet
    keys = session.info.pop(_PENDING, None)
    if keys:
        publish(keys)


@event.listens_for(Session, "after_transaction_end")
def _end_flushed(session, transaction):
    """The outermost transaction ended: committed (published above) or rolled back. Keys left
    after a rollback are published all the same: on a driver-level autocommit connection (an
    engine created with ``isolation_level="AUTOCOMMIT"``) the statements were committed by
    the database as they ran, and the rollback undid nothing. An extra invalidation is harmless."""
    if transaction.parent is None:
        keys = session.info.pop(_PENDING, None)
        if keys:
            publish(keys)


# statements outside an ORM flush: "*" (or the keys they declare) once their transaction is over

_CONN_PENDING = "tongban_hotcache_pending"  # keys written in the open transaction
_CONN_COMMITTED = "tongban_hotcache_committed"  # committed; published when the connection is done with it


def _flush_caches() -> set[int]:
    from .extensions import db

    return {id(m._compiled_cache) for m in db.Model.registry.mappers  # type: ignore[attr-defined]
            if getattr(m.local_table, "name", None) in WATCHED_TABLES}


_FLUSH_CACHES: list[set[int]] = []


_FLUSHING: contextvars.ContextVar[bool] = contextvars.ContextVar("tongban_hotcache_flushing", default=False)


@event.listens_for(Session, "before_flush")
def _flush_starts(session, flush_context, instances):
    _FLUSHING.set(True)


@event.listens_for(Session, "after_flush_postexec")
def _flush_ends(session, flush_context):
    _FLUSHING.set(False)


@event.listens_for(Session, "after_soft_rollback")
def _flush_failed(session, previous_transaction):
    _FLUSHING.set(False)


def _is_flush(context) -> bool:
    """Whether the statement is an ORM flush's: inside a flush (``before_flush`` to
    ``after_flush_postexec``, in this thread or task) and with the mapper's compiled cache (only
    passed by ``orm.persistence``): ``after_flush`` names its precise keys. The legacy
    ``Session.bulk_update_mappings``/``bulk_save_objects`` pass the same cache but are no flush:
    taken for other writes (``*``). Should SQLAlchemy ever stop passing the cache, flushes are
    taken for other writes too: slower, never wrong."""
    if not _FLUSHING.get():
        return False
    cache = context.execution_options.get("compiled_cache") if context is not None else None
    if cache is None:
        return False
    if not _FLUSH_CACHES:
        _FLUSH_CACHES.append(_flush_caches())
    return id(cache) in _FLUSH_CACHES[0]


def _declared(opts) -> list[str] | None:
    """What a statement says it changes: ``execution_options(tongban_hotcache=...)`` is
    ``"neutral"`` (nothing a cached answer assumed: a ``last_seen`` moved later) or the keys of
    the rows it changes (``("sid:<sid>",)``); None when it says nothing (then ``*``)."""
    declared = opts.get("tongban_hotcache")
    if declared == "neutral":
        return []
    if isinstance(declared, tuple | list) and declared and all(isinstance(k, str) and ":" in k for k in declared):
        return list(declared)
    return None


def _is_read(statement: str) -> bool:
    """Whether the statement can change no row: one SELECT (after leading whitespace, comments
    and parentheses), or a WITH ... SELECT naming no data-modifying keyword. Everything else that
    names a watched table is taken for a write: UPDATE, a comment then UPDATE, EXPLAIN ANALYZE,
    DO, CALL, COPY, several statements in one text, DDL. (Taken wrongly for a write, a read only
    empties the caches once.)"""
    if statement[:6] in ("SELECT", "select") and ";" not in statement:  # what SQLAlchemy writes: at once
        return True
    rest = statement[_LEAD.match(statement).end():].rstrip().rstrip(";")  # type: ignore[union-attr]
    if ";" in rest:  # several statements (or a semicolon in a literal: taken for a write, harmless)
        return False
    if _SELECT.match(rest):
        return True
    return bool(_WITH.match(rest)) and not _MODIFYING.search(rest)


@event.listens_for(Engine, "before_cursor_execute")
def _watch_statement(conn, cursor, statement, parameters, context, executemany):
    if not _TABLES.search(statement) or _is_read(statement):
        return
    opts = context.execution_options if context is not None else {}
    if _is_flush(context):
        return
    declared = _declared(opts)
    if declared == []:
        return
    keys = declared or [ALL]
    if "AUTOCOMMIT" in (opts.get("isolation_level"), conn.get_execution_options().get("isolation_level")):
        if context is not None:  # committed by the statement itself: published right after it
            context._tongban_hotcache = keys
        else:  # pragma: no cover - every DBAPI execution through the engine has a context
            publish(keys)
        return
    conn.info.setdefault(_CONN_PENDING, set()).update(keys)


@event.listens_for(Engine, "after_cursor_execute")
def _after_statement(conn, cursor, statement, parameters, context, executemany):
    keys = getattr(context, "_tongban_hotcache", None)
    if keys:
        publish(keys)


@event.listens_for(Engine, "handle_error")
def _failed_statement(ctx):
    keys = getattr(ctx.execution_context, "_tongban_hotcache", None)
    if keys:
        publish(keys)  # it may have half-happened: say so


def _info(conn) -> dict | None:
    """The connection's info, or None when it was invalidated (the database went away in the
    middle of a transaction): reading it then raises, and these hooks run inside SQLAlchemy's own
    rollback, which must not fail for them."""
    try:
        return conn.info
    except Exception:
        return None


@event.listens_for(Engine, "commit")
def _committing(conn):
    info = _info(conn)
    if info is None:  # keys parked on a connection that is gone: whatever they were, say all
        publish([ALL])
        return
    keys = info.pop(_CONN_PENDING, None)
    if keys:
        info.setdefault(_CONN_COMMITTED, set()).update(keys)


@event.listens_for(Engine, "rollback")
def _rolled_back(conn):
    """Published all the same once the connection is done with it: on a driver-level autocommit
    connection (``create_engine(..., isolation_level="AUTOCOMMIT")``, psycopg's
    ``autocommit=True``) the statements were committed as they ran, and SQLAlchemy's rollback
    of its (empty) transaction undid nothing. An extra invalidation is harmless."""
    info = _info(conn)
    if info is None:  # invalidated (see _info): its parked keys are lost with it, so say all
        publish([ALL])
        return
    keys = info.pop(_CONN_PENDING, None)
    if keys:
        info.setdefault(_CONN_COMMITTED, set()).update(keys)


@event.listens_for(Engine, "begin")
def _next_transaction(conn):
    info = _info(conn)
    keys = info.pop(_CONN_COMMITTED, None) if info is not None else None
    if keys:
        publish(keys)


@event.listens_for(Pool, "checkin")
def _returned(dbapi_connection, record):
    keys = record.info.pop(_CONN_COMMITTED, None) if record is not None else None
    if keys:
        publish(keys)


def init_app(app: Flask) -> None:
    app.extensions["tongban.hotcache"] = HotCache(app)
    _apps.add(app)
