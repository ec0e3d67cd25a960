"""E-licences (电子证照): catalogue, issuance, identifiers, PDFs, QR, status, sharing API."""

from __future__ import annotations

from flask import Flask
from flask_babel import lazy_gettext as _l


def init_app(app: Flask) -> None:
    from idp.protection import register_scope
    from seal.views import recognise_documents
    from tongban.bootstrap import on_bootstrap

    from . import api, cli, models, views  # noqa: F401
    from .services import seed_catalogue
    from .verification import licence_in

    register_scope("licence:read", _l("Your e-licences (电子证照): list, read and download them"), restricted=True)
    register_scope("licence:verify", _l("Verify e-licences (电子证照) presented to the system"))
    on_bootstrap(seed_catalogue)  # (registered once, however many apps are made)
    recognise_documents("licence", licence_in)  # the public seal verifier names a licence's status
    views.init_app(app)
    api.init_app(app)
    app.cli.add_command(cli.licences_cli)
    _register_openapi(app)


def _register_openapi(app: Flask) -> None:
    from tongban import openapi

    from .openapi import PATHS, SCOPES, USER_ONLY_SCOPES

    openapi.register_paths(PATHS, scopes=SCOPES, user_only_scopes=USER_ONLY_SCOPES)
    openapi.init_app(app)
