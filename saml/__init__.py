"""SAML 2.0 identity provider (pysaml2): metadata, SP-initiated SSO, single logout."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from . import models  # noqa: F401
