"""The pysaml2 side of the identity provider, imported on the first SAML request and not when
the app starts: pysaml2 brings xmlschema, elementpath and pyOpenSSL (over 15 MB of a worker's
memory that the OpenID hot paths never need).

``saml.services`` and ``saml.views`` import this module inside the functions that build or use
the pysaml2 server; the URIs they compare with are plain strings in ``saml.constants``.
"""

from __future__ import annotations

import warnings

# pysaml2 imports cryptography's CFB mode (deprecated there; SAML here never uses it)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="CFB has been moved")
    import saml2.cryptography.symmetric  # noqa: F401

from saml2.config import IdPConfig
from saml2.mdstore import MetadataStore
from saml2.sdb import SessionStorage
from saml2.server import Server

__all__ = ["MetadataStore", "NoSessionStorage", "Server", "make_server"]


class NoSessionStorage(SessionStorage):
    """pysaml2 keeps every assertion it issued in process memory (for artifact resolution and
    assertion queries, which are not offered here): it would grow without bound and be one
    server's alone. What single logout needs lives in the database (``saml_logins``)."""

    def store_assertion(self, assertion, to_sign):
        return None


def make_server(conf: dict) -> Server:
    cfg = IdPConfig()
    cfg.load(conf)
    srv = Server(config=cfg)
    srv.session_db = NoSessionStorage()
    return srv
