"""The one entry point of the protocol layer for the packages whose APIs accept tokens
(``seal/``, ``licence/``, ``rating/``): bearer-token validation, step-up for APIs, the system
behind a validated token, a holder's consent, and API scopes. They import nothing else from
``idp/`` (``tests/tongban/test_layers_idp.py``); people come from ``people/``.
"""

from __future__ import annotations

from .clients import RegisteredClient, get_client, get_row
from .consents import covers as consent_covers
from .scopes import register_scope
from .server import require_oauth
from .stepup import require_acr

__all__ = ["RegisteredClient", "consent_covers", "get_client", "get_row", "register_scope", "require_acr",
           "require_oauth"]
