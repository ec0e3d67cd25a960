"""Upstream identity providers (brokering): people log in to Tongban with an account at another
OpenID provider (the province's unified identity system, the national platform).

Tongban is then a relying party of that provider: the authorization code flow with PKCE,
``state`` and ``nonce``, the ID token validated fully, the person linked by the upstream's
verified ID number. Logging out at Tongban logs out at the upstream; the upstream's
back-channel logout ends the Tongban sessions it started. See docs/federation.md.
"""

from __future__ import annotations

from flask import Flask

DEFAULTS = {
    # HTTP timeout (seconds) of every request to an upstream: discovery, JWKS, token endpoint
    "TONGBAN_FEDERATION_HTTP_TIMEOUT": 5.0,
    # how long an upstream's discovery document and JWKS are reused before they are fetched again
    "TONGBAN_FEDERATION_METADATA_TTL": 3600,
    # how long a log-in started at an upstream may take before its state is refused
    "TONGBAN_FEDERATION_REQUEST_LIFETIME": 600,
    # the clock skew allowed on iat/exp of ID tokens and logout tokens, seconds
    "TONGBAN_FEDERATION_CLOCK_SKEW": 60,
    # the oldest iat a logout token may have (seconds ago)
    "TONGBAN_FEDERATION_LOGOUT_TOKEN_MAX_AGE": 300,
    # signature algorithms accepted from upstreams (never "none", never HMAC with the secret)
    "TONGBAN_FEDERATION_ALGS": ["RS256", "PS256", "ES256", "EdDSA"],
    # the level of a person whose upstream acr is not in the upstream's acr map
    "TONGBAN_FEDERATION_UNMAPPED_LEVEL": "L1",
}
TYPES = {
    "TONGBAN_FEDERATION_HTTP_TIMEOUT": "float",
    "TONGBAN_FEDERATION_METADATA_TTL": "seconds",
    "TONGBAN_FEDERATION_REQUEST_LIFETIME": "seconds",
    "TONGBAN_FEDERATION_CLOCK_SKEW": "seconds",
    "TONGBAN_FEDERATION_LOGOUT_TOKEN_MAX_AGE": "seconds",
    "TONGBAN_FEDERATION_ALGS": "list",
}


def init_app(app: Flask) -> None:
    from tongban.config import declare

    from . import models  # noqa: F401  (tables)

    declare(app, DEFAULTS, TYPES)
    from . import chores, cli, views  # noqa: F401  (chores: registered with the worker)

    views.init_app(app)
    app.cli.add_command(cli.upstreams_cli)
