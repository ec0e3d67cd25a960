"""What ``flask db upgrade`` creates once on a new instance (never per worker).

The shell knows no domain package: each package registers its own steps with
``on_bootstrap`` (token-signing keys, the operating authority, the CAs, the authority's
seal, the licence catalogue). Steps run in ``order`` (lower first; equal orders in the
order they were registered); each must be idempotent.

``db upgrade`` (the migrations, then these steps) holds a lock for the database while it runs,
so two started at once (two machines rolling out the same release) do not race: on
PostgreSQL a session-level advisory lock, on SQLite an exclusive ``flock`` on a file beside the
database. The second waits up to ``TONGBAN_MIGRATION_LOCK_WAIT`` seconds, then finds nothing
left to do; if the lock is still held then, it stops with an error and changes nothing."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import time
from collections.abc import Callable, Iterator

import click
from flask import Flask, current_app
from sqlalchemy import text
from sqlalchemy.engine import make_url

from . import migrating
from .extensions import db

# (order, sequence, step): registered once each, however often a package is set up
_hooks: list[tuple[int, int, Callable[[], object]]] = []

KEYS = 0  # the token-signing keys: everything signed afterwards needs them
AUTHORITY = 10  # the operating authority (an organisation): seals and licences belong to it
DEFAULT = 50


def on_bootstrap(fn: Callable[[], object] | None = None, *, order: int = DEFAULT):
    """Register a step run after every ``db upgrade`` (as a decorator, with or without ``order``)."""

    def register(f: Callable[[], object]) -> Callable[[], object]:
        if not any(step is f for _, _, step in _hooks):
            _hooks.append((order, len(_hooks), f))
        return f

    return register(fn) if fn is not None else register


def steps() -> list[Callable[[], object]]:
    """The registered steps, in the order ``bootstrap`` runs them."""
    return [step for _, _, step in sorted(_hooks, key=lambda h: (h[0], h[1]))]


def bootstrap() -> None:
    for step in steps():
        step()
    db.session.commit()


# pg_advisory_lock's key: the first 8 bytes of sha256("tongban db upgrade"), as a signed bigint
UPGRADE_LOCK_KEY = int.from_bytes(hashlib.sha256(b"tongban db upgrade").digest()[:8], "big", signed=True)


class UpgradeLocked(click.ClickException):
    """Another ``db upgrade`` held the lock for longer than the wait allowed."""


def _waiting(wait: float) -> None:
    click.echo(f"another `flask db upgrade` is running on this database: waiting for it (at most {wait:g} s)",
               err=True)


def _locked_out(wait: float) -> UpgradeLocked:
    return UpgradeLocked(f"another `flask db upgrade` held the lock for {wait:g} s: nothing was changed; "
                         "try again when it has finished (TONGBAN_MIGRATION_LOCK_WAIT sets the wait)")


@contextlib.contextmanager
def upgrade_lock() -> Iterator[None]:
    """Hold the database's migration lock for the ``with`` block (see the module's docstring)."""
    wait = float(current_app.config.get("TONGBAN_MIGRATION_LOCK_WAIT", 600))
    url = make_url(current_app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "postgresql":
        # its own connection, outside any transaction: the migrations run on another one
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": UPGRADE_LOCK_KEY}).scalar()
            if not got:
                _waiting(wait)
                deadline = time.monotonic() + wait
                while not got and time.monotonic() < deadline:
                    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                    got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": UPGRADE_LOCK_KEY}).scalar()
                if not got:
                    raise _locked_out(wait)
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": UPGRADE_LOCK_KEY})
        return
    database = url.database if url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:":
        yield  # one process owns an in-memory database; other engines: no lock of ours
        return
    # a file of its own: closing a descriptor of the database file itself would drop SQLite's locks
    fd = os.open(f"{database}.upgrade-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _waiting(wait)
            deadline = time.monotonic() + wait
            while True:
                time.sleep(0.2)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise _locked_out(wait) from None
        yield
    finally:
        os.close(fd)  # releases the flock


def init_app(app: Flask) -> None:
    migrating.on_load(_bootstrap_after_upgrade)  # when Flask-Migrate's `db` group is loaded


def _bootstrap_after_upgrade(group: click.Group) -> None:
    upgrade = group.commands["upgrade"]
    if getattr(upgrade.callback, "_tongban", False):
        return
    original = upgrade.callback

    @functools.wraps(original)
    def upgrade_then_bootstrap(*args, **kwargs):
        with upgrade_lock():
            original(*args, **kwargs)
            bootstrap()
        click.echo("instance ready: keys and operating authority in place")

    upgrade_then_bootstrap._tongban = True  # type: ignore[attr-defined]
    upgrade.callback = upgrade_then_bootstrap
