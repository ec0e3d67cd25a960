"""The identity provider: accounts, sessions, the OIDC provider, consent, the client register."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from . import account_views, admin_views, cli, models, views  # noqa: F401
    from .clients import init_usage
    from .server import init_server

    init_server(app)
    init_usage(app)
    views.init_app(app)
    app.register_blueprint(account_views.bp)
    app.register_blueprint(admin_views.bp)
    for group in (cli.users_cli, cli.orgs_cli, cli.staff_cli, cli.clients_cli):
        app.cli.add_command(group)
