"""What ``flask db upgrade`` creates once on a new instance (never per worker):
token-signing keys and the operating authority. Later issues add the seal CA."""

from __future__ import annotations

import functools

import click
from flask import Flask, current_app

from .extensions import db

_hooks: list = []


def on_bootstrap(fn):
    """Register a step run after every ``db upgrade`` (each step must be idempotent)."""
    _hooks.append(fn)
    return fn


def bootstrap() -> None:
    from keys.services import ensure_keys
    from people.accounts import ensure_org

    ensure_keys()
    cfg = current_app.config
    ensure_org(cfg["TONGBAN_AUTHORITY_USCC"], cfg["TONGBAN_AUTHORITY_NAME"])
    for hook in _hooks:
        hook()
    db.session.commit()


def init_app(app: Flask) -> None:
    from flask_migrate import cli as migrate_cli

    upgrade = migrate_cli.upgrade
    if getattr(upgrade.callback, "_tongban", False):
        return
    original = upgrade.callback

    @functools.wraps(original)
    def upgrade_then_bootstrap(*args, **kwargs):
        original(*args, **kwargs)
        bootstrap()
        click.echo("instance ready: keys and operating authority in place")

    upgrade_then_bootstrap._tongban = True
    upgrade.callback = upgrade_then_bootstrap
