"""Tongban's own services create rating events too (a couple of lines in their views)."""

from __future__ import annotations

import logging

from flask import flash, url_for
from flask_babel import gettext as _

from tongban.errors import TongbanError
from tongban.extensions import db

from . import services

log = logging.getLogger(__name__)
CLERK_CONSOLE = "tongban-clerk"  # the client_id recorded for events of the clerk console


def licence_issued(lic, org, clerk) -> None:
    """A licence issued at the clerk console is a completed window service: register the event in
    the same transaction and flash the page with the rating QR for the window's screen. A rating
    problem never stops the issuance."""
    citizen = lic.holder_id if lic.type.holder_kind == "citizen" else None
    try:
        with db.session.begin_nested():
            new = services.register_event(
                client_id=CLERK_CONSOLE, department_name=org.name, department_code=org.uscc,
                service_item_code=lic.type_code, service_item_name=f"{lic.type_name}核发", channel="01",
                id_number=citizen, staff=clerk.name, case_no=lic.identifier, actor=f"user:{clerk.sub}")
    except TongbanError as e:
        log.warning("no rating event for licence %s: %s", lic.identifier, e.message)
        return
    flash(_("Ask the holder to rate this service: show %(url)s on the window's screen.",
            url=url_for("rating.window_qr", link=new.link, _external=True)), "info")
