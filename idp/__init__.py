"""The OpenID provider: the server and its grants, tokens, consent, the client register, logout
everywhere, and the pages (accounts, sessions and organisations are the people layer, people/)."""

from __future__ import annotations

from flask import Flask

from .resources_cli import resources_cli


def ensure_authority() -> None:
    """Bootstrap step: the operating authority's organisation (seals and licences belong to it)."""
    from flask import current_app

    from people.accounts import ensure_org

    cfg = current_app.config
    ensure_org(cfg["TONGBAN_AUTHORITY_USCC"], cfg["TONGBAN_AUTHORITY_NAME"])


def init_app(app: Flask) -> None:
    from tongban.bootstrap import AUTHORITY, on_bootstrap

    on_bootstrap(ensure_authority, order=AUTHORITY)
    from people.recovery import purge_phone_checks
    from tongban import outbox

    from .tokens import purge_expired

    # expired codes, refresh-token families, deny-list entries and phone checks (configurable)
    outbox.ensure_chore(purge_expired, every="TONGBAN_PURGE_INTERVAL_SECONDS")
    outbox.ensure_chore(purge_phone_checks, every="TONGBAN_PURGE_INTERVAL_SECONDS")
    # logout registers the back-channel logout delivery with the outbox
    from . import account_views, admin_views, cli, hooks, logout, models, views  # noqa: F401
    from .clients import init_usage
    from .server import init_server

    hooks.connect()  # the people layer's signals: session ended, credentials revoked, ...
    from tongban import shared_secrets

    from .pairwise import shared_salt

    # every server must give a relying party the same pairwise subject (tongban/shared_secrets.py)
    shared_secrets.register(app, "TONGBAN_PAIRWISE_SALT", shared_salt)
    init_server(app)
    init_usage(app)
    views.init_app(app)
    app.register_blueprint(account_views.bp)
    app.register_blueprint(admin_views.bp)
    from . import enterprise_views

    enterprise_views.init_app(app)
    from . import device_views, qrlogin_views  # scan-to-log-in and kiosks (RFC 8628)

    qrlogin_views.init_app(app)
    device_views.init_app(app)
    from . import ciba_views  # CIBA (poll mode): /oauth/bc-authorize and the citizen's /ciba page

    ciba_views.init_app(app)
    from . import mfa_views  # second factors and step-up

    mfa_views.init_app(app)
    from . import clerk_views  # identity desk: ID-number recovery, enterprise claim disputes

    clerk_views.init_app(app)
    from . import par  # pushed authorization requests (RFC 9126)

    par.init_app(app)
    for group in (cli.users_cli, cli.orgs_cli, cli.staff_cli, cli.clients_cli):
        app.cli.add_command(group)
    from . import cors, dpop, resources  # noqa: F401  (DPoP replay table, resources table)

    cors.init_app(app)  # CORS for browser-based clients
    from . import fast  # the lean path of token, introspection, userinfo, discovery (tongban.fastpath)

    fast.init_app(app)
    app.cli.add_command(resources_cli)
    from tongban import openapi

    from .openapi import PATHS as OPENAPI_PATHS

    openapi.init_app(app)
    openapi.register_paths(OPENAPI_PATHS)  # discovery, JWKS, token and its neighbours, userinfo, authorize
