"""The people layer: accounts, organisations and their roles, staff roles, log-in sessions and
the log-in helpers (``people.auth``). It imports nothing from ``idp/`` (the OpenID protocol);
what the protocol must learn it hears through ``people.signals``. See docs/architecture-idp.md.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    # the tables, and the outbox handlers and chores the modules register when imported
    from . import accounts, enterprise, identity, mfa, models, recovery, sessions  # noqa: F401
