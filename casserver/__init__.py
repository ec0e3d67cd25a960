"""CAS 3.0 for legacy systems (Apereo CAS Protocol 3.0): log-in with service tickets, validation
with attributes, single logout through the outbox. Services live in the register of systems."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from idp.cli import register_protocol
    from people import signals
    from tongban import outbox
    from tongban.config import declare

    from . import cli, models, services, views  # noqa: F401  (tables, the SLO outbox handler)

    declare(app, {"TONGBAN_CAS_TICKET_SECONDS": 10}, {"TONGBAN_CAS_TICKET_SECONDS": "seconds"})
    views.init_app(app)
    register_protocol("cas", cli.create_cas)  # clients create --protocol cas
    signals.session_ended.connect(services.on_session_ended, weak=False)  # single logout (once per process)
    outbox.ensure_chore(services.purge_tickets, 600)
