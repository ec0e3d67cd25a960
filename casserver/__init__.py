"""CAS 3.0 for legacy systems (Apereo CAS Protocol 3.0): log-in with service tickets, validation
with attributes, single logout through the outbox. Services live in the register of systems."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from idp import logout as everywhere
    from tongban import outbox
    from tongban.config import declare

    from . import models, services, views  # noqa: F401  (tables, the SLO outbox handler)

    declare(app, {"TONGBAN_CAS_TICKET_SECONDS": 10}, {"TONGBAN_CAS_TICKET_SECONDS": "seconds"})
    views.init_app(app)
    everywhere.on_session_end(services.session_ended)
    outbox.ensure_chore(services.purge_tickets, 600)
