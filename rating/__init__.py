"""好差评 (service ratings): every completed service rated, every bad rating handled, figures public."""

from __future__ import annotations

from flask import Flask
from flask_babel import lazy_gettext as _l


def init_app(app: Flask) -> None:
    from idp.protection import register_scope
    from tongban import openapi, outbox

    from . import api, models, views  # noqa: F401  (tables)
    from .cli import ratings_cli
    from .openapi import PATHS, SCHEMAS, SCOPES
    from .services import escalation_chore

    register_scope("rating:write", _l("Register completed services for rating (好差评)"), restricted=True)
    register_scope("rating:export", _l("Export service ratings (好差评) for the national platform"),
                   restricted=True)
    views.init_app(app)
    api.init_app(app)
    app.cli.add_command(ratings_cli)
    openapi.register_paths(PATHS, SCHEMAS, SCOPES)
    openapi.init_app(app)
    outbox.ensure_chore(escalation_chore, every=3600)
