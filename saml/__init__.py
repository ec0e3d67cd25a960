"""SAML 2.0 identity provider (pysaml2): metadata, SP-initiated SSO, single logout."""

from __future__ import annotations

import logging

from flask import Flask

# xmlschema (pysaml2's, loaded with it on the first SAML request: saml/pysaml.py) logs at INFO
# each schema it loads: that does not belong in every command's output
logging.getLogger("xmlschema").setLevel(logging.WARNING)


def init_app(app: Flask) -> None:
    from idp.cli import register_protocol
    from people import signals
    from tongban import outbox
    from tongban.config import declare

    from . import cli, models, services, views  # noqa: F401

    declare(app, {"TONGBAN_SAML_ASSERTION_SECONDS": 300, "TONGBAN_SAML_REQUEST_MAX_AGE": 300,
                  "TONGBAN_SAML_XMLSEC_BINARY": "/usr/bin/xmlsec1"},
            {"TONGBAN_SAML_ASSERTION_SECONDS": "seconds", "TONGBAN_SAML_REQUEST_MAX_AGE": "seconds",
             "TONGBAN_SAML_XMLSEC_BINARY": "str"})
    views.init_app(app)
    register_protocol("saml", cli.create_sp)  # clients create --protocol saml
    signals.session_ended.connect(services.on_session_ended, weak=False)  # single logout (once per process)
    outbox.handler(services.SLO_KIND)(services.deliver_logout)
    outbox.ensure_chore(services.purge_requests, 600)
