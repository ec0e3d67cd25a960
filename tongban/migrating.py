"""Flask-Migrate, loaded only when a ``flask db ...`` command runs.

Flask-Migrate imports Alembic, Mako and Pygments (about 10 MB of every worker's memory) when
it is imported; a server never migrates (``make serve`` does not: docs/commands.md). So the
app gets a stand-in: ``app.extensions["migrate"]`` answers what Flask-Migrate's functions and
``tongban/migrations/env.py`` read (``db``, ``directory``, ``configure_args``, ``migrate``: the
real ``Migrate``, made on first use), and the ``db`` command group is Flask-Migrate's own,
imported when the command line looks into it. ``on_load`` registers what must change in that
group once it is loaded (``tongban.bootstrap``: ``db upgrade`` then bootstraps the instance).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

import click
from flask import Flask

# Flask-Migrate's defaults, which its Migrate() passes to Alembic's context.configure
CONFIGURE_ARGS = {"compare_type": True, "render_as_batch": True}

# Alembic logs each of its plugins at INFO when it is imported: with Flask-Migrate imported after
# the app's logging is set up (tongban/logs.py), that would be every db command's output
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

_on_load: list[Callable[[click.Group], None]] = []


def on_load(fn: Callable[[click.Group], None]) -> Callable[[click.Group], None]:
    """Call ``fn(group)`` with Flask-Migrate's ``db`` group when it is loaded (once per process)."""
    if fn not in _on_load:
        _on_load.append(fn)
        if _db_group.cache_info().currsize:  # loaded already
            fn(_db_group())
    return fn


@functools.cache
def _db_group() -> click.Group:
    from flask_migrate.cli import db as group

    for fn in _on_load:
        fn(group)
    return group


class MigrateConfig:
    """What ``app.extensions["migrate"]`` holds: the interface of Flask-Migrate's ``_MigrateConfig``."""

    def __init__(self, db: Any, directory: str):
        self.db = db
        self.directory = directory
        self.configure_args = dict(CONFIGURE_ARGS)

    @functools.cached_property
    def migrate(self) -> Any:
        from flask_migrate import Migrate

        return Migrate(db=self.db, directory=self.directory, **self.configure_args)

    @property
    def metadata(self):
        return self.db.metadata


class LazyDbGroup(click.Group):
    """``flask db``: Flask-Migrate's group, imported when it is listed, asked for a command or run."""

    def __init__(self) -> None:
        super().__init__(name="db", help="Perform database migrations.")

    @property  # type: ignore[override]
    def commands(self) -> MutableMapping[str, click.Command]:
        return _db_group().commands

    @commands.setter
    def commands(self, value: MutableMapping[str, click.Command]) -> None:
        pass  # click.Group.__init__ sets an empty dict: the commands are Flask-Migrate's

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _db_group().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return _db_group().list_commands(ctx)

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        # the context (options -d/-x, the subcommand) is the real group's, which click then invokes
        return _db_group().make_context(info_name, args, parent=parent, **extra)


def init_app(app: Flask, db: Any, directory: str) -> None:
    app.extensions["migrate"] = MigrateConfig(db, str(directory))
    app.cli.add_command(LazyDbGroup())
