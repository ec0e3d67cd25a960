"""Key store, JWKS and rotation, the project CA (seal certificates, CRLs, TSA) and signers."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from tongban import fastpath
    from tongban.bootstrap import KEYS, on_bootstrap
    from tongban.extensions import csrf

    from . import ca, models, saml, sm2ca  # noqa: F401  (register tables; the CAs register their bootstrap steps)
    from .cli import keys_cli
    from .services import ensure_keys
    from .views import bp, fast_jwks, quick_jwks, tsa

    app.config.setdefault("TONGBAN_CA_KEY_ALG", "ec")
    app.config.setdefault("TONGBAN_SEAL_KEY_BACKEND", "local")
    app.config.setdefault("TONGBAN_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
    app.config.setdefault("TONGBAN_PKCS11_TOKEN", "")
    app.config.setdefault("TONGBAN_PKCS11_PIN", "")
    on_bootstrap(ensure_keys, order=KEYS)  # first: a new instance signs with them
    csrf.exempt(tsa)
    fastpath.register(app, "GET", "/jwks.json", "/jwks.json", fast_jwks, quick=quick_jwks)
    app.register_blueprint(bp)
    app.cli.add_command(keys_cli)
