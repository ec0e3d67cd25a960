"""CORS for browser-based clients (single-page apps) on the endpoints they call directly.

Discovery and the JWKS are public documents: any origin (``*``). The token, userinfo and
revocation endpoints answer a cross-origin request only from a registered web origin: one given
with ``clients create --web-origin`` or, for public clients, the origin of a redirect URI. The
answer echoes that origin (never ``*``, never a reflected unknown one) with ``Vary: Origin``;
preflights (OPTIONS) are answered the same way, with the methods and the request headers a
client needs (Authorization, DPoP, Content-Type), exposing DPoP-Nonce and WWW-Authenticate.
PAR and introspection are server-to-server: no CORS.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, request

from . import clients as registry

PUBLIC_PATHS = frozenset({"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server",
                          "/jwks.json"})
CLIENT_PATHS = {"/oauth/token": "POST", "/oauth/userinfo": "GET, POST", "/oauth/revoke": "POST"}
ALLOW_HEADERS = "Authorization, DPoP, Content-Type"
EXPOSE_HEADERS = "DPoP-Nonce, WWW-Authenticate"
MAX_AGE = "600"


def _origin_of(uri: str) -> str | None:
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def client_origins(client) -> set[str]:
    origins = set(getattr(client, "web_origins", ()) or ())
    if client.is_public:
        origins.update(o for o in (_origin_of(u) for u in client.redirect_uris) if o)
    return origins


def registered_origins() -> frozenset[str]:
    snapshot = registry._register.get()
    held = _CACHE.get("snapshot")
    if held is None or held[0] is not snapshot:  # the register changed: recompute (held keeps it alive)
        held = (snapshot, frozenset(o for c in snapshot.values() if c.enabled for o in client_origins(c)))
        _CACHE["snapshot"] = held
    return held[1]


_CACHE: dict[str, tuple] = {}


def _add_vary(response) -> None:
    vary = [v.strip() for v in response.headers.get("Vary", "").split(",") if v.strip()]
    if "Origin" not in vary:
        response.headers["Vary"] = ", ".join([*vary, "Origin"])


def apply(response):
    path = request.path
    if path not in PUBLIC_PATHS and path not in CLIENT_PATHS:
        return response
    origin = request.headers.get("Origin")
    if path in PUBLIC_PATHS:
        response.headers["Access-Control-Allow-Origin"] = "*"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET"
            response.headers["Access-Control-Max-Age"] = MAX_AGE
        return response
    _add_vary(response)
    if not origin or origin not in registered_origins():
        return response
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = CLIENT_PATHS[path]
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = MAX_AGE
    return response


def init_app(app: Flask) -> None:
    app.after_request(apply)
