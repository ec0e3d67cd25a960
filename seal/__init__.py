"""E-seals: seals of organisations, seal pictures, PAdES sealing and verification."""

from __future__ import annotations

from flask import Flask
from flask_babel import lazy_gettext as _l


def init_app(app: Flask) -> None:
    from idp.protection import register_scope
    from tongban import openapi

    from . import models, services  # noqa: F401  (tables; the authority seal's bootstrap step)
    from .cli import seals_cli
    from .console import init_console
    from .views import OPENAPI_PATHS, OPENAPI_SCHEMAS, OPENAPI_SCOPES, init_views

    app.config.setdefault("TONGBAN_SEAL_MAX_BYTES", 20 * 1024 * 1024)
    app.config.setdefault("TONGBAN_SEAL_VERIFY_RATE", 60)  # per client address per minute
    register_scope("seal:sign", _l("Apply the organisation's e-seal to documents"), restricted=True)
    init_views(app)
    init_console(app)
    openapi.register_paths(OPENAPI_PATHS, OPENAPI_SCHEMAS, OPENAPI_SCOPES)
    openapi.init_app(app)
    app.cli.add_command(seals_cli)
