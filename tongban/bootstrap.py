"""What ``flask db upgrade`` creates once on a new instance (never per worker).

The shell knows no domain package: each package registers its own steps with
``on_bootstrap`` (token-signing keys, the operating authority, the CAs, the authority's
seal, the licence catalogue). Steps run in ``order`` (lower first; equal orders in the
order they were registered); each must be idempotent."""

from __future__ import annotations

import functools
from collections.abc import Callable

import click
from flask import Flask

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


def init_app(app: Flask) -> None:
    migrating.on_load(_bootstrap_after_upgrade)  # when Flask-Migrate's `db` group is loaded


def _bootstrap_after_upgrade(group: click.Group) -> None:
    upgrade = group.commands["upgrade"]
    if getattr(upgrade.callback, "_tongban", False):
        return
    original = upgrade.callback

    @functools.wraps(original)
    def upgrade_then_bootstrap(*args, **kwargs):
        original(*args, **kwargs)
        bootstrap()
        click.echo("instance ready: keys and operating authority in place")

    upgrade_then_bootstrap._tongban = True  # type: ignore[attr-defined]
    upgrade.callback = upgrade_then_bootstrap
