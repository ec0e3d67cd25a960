"""Shared state across workers and servers: Redis when ``REDIS_URL`` is set.

``Generation`` is a cheap cross-process invalidation counter: each worker caches
what rarely changes (registered systems, signing keys, the token deny list) and
reloads it when the generation moves. Without Redis the counter is a file in the
instance folder (one ``stat`` per check), which serves every worker of one
machine; several machines sharing a database need Redis.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import time
from pathlib import Path

from flask import Flask, current_app

_redis_clients: dict[str, object] = {}
_lock = threading.Lock()


def redis_client(app: Flask | None = None):
    """The shared Redis client, or None when REDIS_URL is unset."""
    app = app or current_app
    url = app.config.get("REDIS_URL")
    if not url:
        return None
    client = _redis_clients.get(url)
    if client is None:
        import redis

        with _lock:
            client = _redis_clients.get(url)
            if client is None:
                client = redis.Redis.from_url(url, socket_timeout=5, health_check_interval=30)
                _redis_clients[url] = client
    return client


_generations: dict[str, Generation] = {}

# With Redis, the generations as one request first saw them: one MGET per request instead of a
# GET per cached thing it asks about (client register, keys, deny list, ...). A change made by
# another server is seen by the next request, as before; one made by this request itself bumps
# and reloads its own cache (``CachedLoader.invalidate``, after-commit reloads).
_request_snapshot: contextvars.ContextVar[dict | None] = contextvars.ContextVar("tongban_generations",
                                                                               default=None)


@contextlib.contextmanager
def request_snapshot():
    """Read each generation at most once within the block (one request)."""
    token = _request_snapshot.set({})
    try:
        yield
    finally:
        _request_snapshot.reset(token)


def begin_snapshot() -> contextvars.Token:
    """``request_snapshot`` for a caller that pairs it with ``end_snapshot`` in ``finally`` (the
    WSGI middleware, every request: a generator-based context manager costs more than this)."""
    return _request_snapshot.set({})


def end_snapshot(token: contextvars.Token) -> None:
    _request_snapshot.reset(token)


def forget_snapshot() -> None:
    """A bump inside the request: later reads in it ask Redis again."""
    seen = _request_snapshot.get()
    if seen:
        seen.clear()


def generations() -> list[Generation]:
    """Every generation counter the packages declared (a restored backup bumps them all)."""
    return list(_generations.values())


# KEYS: the counter; ARGV: the bumping process's clock in microseconds. The counter becomes
# max(counter + 1, clock): never a value handed out before, even when Redis lost the key (restarted
# empty, the key evicted) or went back in time (restored from its RDB/AOF file, a lagging replica
# promoted). A plain INCR would count again from there, and a process still holding the value
# reached again would never see the change that reached it (a secret rotated, a system disabled,
# a key retired, a token revoked), as long as publishes do not outrun the clock for longer than
# Redis was away (``tongban.hotcache`` does the same for its own counter).
_BUMP = """
local n = redis.call('INCR', KEYS[1])
if n < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"""


class Generation:
    """A counter that any process can bump and every process can read cheaply.

    Declaring one registers it: a restore (``tongban/backup.py``) bumps every one, so each
    process re-reads what the restored data changed without the shell knowing the packages."""

    def __init__(self, name: str):
        self.name = name
        self._paths: dict[str, str] = {}
        _generations[name] = self

    def _path(self, app: Flask) -> str:
        folder = app.config["TONGBAN_INSTANCE_DIR"]
        held = self._paths.get(folder)
        if held is None:
            held = self._paths[folder] = str(Path(folder) / f".gen-{self.name}")
        return held

    def current(self, app: Flask | None = None) -> object:
        app = app or current_app
        r = redis_client(app)
        if r is not None:
            seen = _request_snapshot.get()
            if seen is None:
                return r.get(f"tongban:gen:{self.name}")
            if not seen:  # the request's first look: every generation in one round trip
                names = list(_generations)
                seen.update(zip(names, r.mget([f"tongban:gen:{n}" for n in names]), strict=True))
            if self.name not in seen:
                seen[self.name] = r.get(f"tongban:gen:{self.name}")
            return seen[self.name]
        try:
            st = os.stat(self._path(app))
        except FileNotFoundError:
            return 0
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def bump(self, app: Flask | None = None) -> None:
        app = app or current_app
        r = redis_client(app)
        if r is not None:
            r.eval(_BUMP, 1, f"tongban:gen:{self.name}", str(time.time_ns() // 1000))
            forget_snapshot()
            return
        path = self._path(app)
        # append a byte so size changes even within the filesystem's mtime granularity
        with open(path, "ab") as f:
            f.write(b".")
            if f.tell() > 4096:
                f.truncate(0)
                f.write(b"..")
        os.utime(path, ns=(time.time_ns(), time.time_ns()))


# the longest a process serves a cached value without loading it again (CachedLoader.max_age)
MAX_AGE = 60.0


class CachedLoader:
    """Per-process cache of ``loader()``'s result, reloaded when a generation moves.

    ``check_every`` bounds how often the generation itself is read (seconds);
    0 checks on every access. ``max_age``: a value loaded longer ago than this is loaded again
    even when the generation has not moved (seconds, default ``MAX_AGE``). A change whose
    bump was lost (Redis unreachable from the writer for a moment, after its commit) is
    therefore seen by every process within that bound, not only at the next change.
    """

    def __init__(self, generation: Generation, loader, check_every: float = 0.0, max_age: float | None = None):
        self.generation = generation
        self.loader = loader
        self.check_every = check_every
        self.max_age = MAX_AGE if max_age is None else max_age
        self._value = None
        self._gen: object = None
        self._checked = 0.0
        self._loaded = 0.0  # time.monotonic() of the last load
        self._app_key = None
        self._lock = threading.Lock()

    def get(self):
        app = current_app._get_current_object()
        now = time.monotonic()
        key = id(app)
        young = 0 <= now - self._loaded < self.max_age
        if (self._app_key == key and self._value is not None and young
                and 0 <= now - self._checked < self.check_every):
            return self._value
        gen = self.generation.current(app)
        self._checked = now
        if self._app_key != key or self._value is None or gen != self._gen or not young:
            with self._lock:
                self._value = self.loader()
                self._gen = gen
                self._app_key = key
                self._loaded = now
        return self._value

    def fresh(self, app: Flask):
        """The cached value when ``get()`` would return it without reading the generation (the
        same application, checked less than ``check_every`` ago); None otherwise. Needs no
        application context: for answers given before one is pushed (``tongban.fastpath``)."""
        value = self._value
        now = time.monotonic()
        if (value is not None and self._app_key == id(app) and 0 <= now - self._loaded < self.max_age
                and 0 <= now - self._checked < self.check_every):
            return value
        return None

    def current(self, app: Flask):
        """What ``get()`` would return when that needs no loading: the cached value of this
        application, its generation checked as ``get()`` checks it (read now, unless it was read
        less than ``check_every`` ago); None when ``get()`` would load. Needs no application
        context (``app`` is passed): for lean answers given before one is pushed, which fall back
        to one on None (``tongban.fastpath``)."""
        key = id(app)
        if self._app_key != key:
            return None
        now = time.monotonic()
        if not 0 <= now - self._loaded < self.max_age:
            return None
        if self._value is not None and 0 <= now - self._checked < self.check_every:
            return self._value
        gen = self.generation.current(app)
        # _gen before _value: a reload in another thread sets _value first, then _gen, so a value
        # read after its generation matched is that generation's or a newer one
        if self._app_key == key and gen == self._gen:
            value = self._value
            if value is not None:
                self._checked = now
                return value
        return None

    def invalidate(self) -> None:
        # this process drops its value even when the bump fails (Redis unreachable for a moment):
        # it never keeps serving what it has just changed
        try:
            self.generation.bump()
        finally:
            self._value = None
