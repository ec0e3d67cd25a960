"""The department API's OpenAPI 3 document, served at ``GET /api/v1/openapi.json``.

Each package adds its paths (and components) in its ``init_app``::

    from tongban import openapi
    openapi.register_paths({"/api/v1/...": {...}}, schemas={"Name": {...}}, scopes={"x:y": "..."})

``init_app`` registers the route once per app (whichever package calls it first).
"""

from __future__ import annotations

import copy

from flask import Blueprint, Flask, current_app, jsonify

_PATHS: dict[str, dict] = {}
_SCHEMAS: dict[str, dict] = {}
_SCOPES: dict[str, str] = {}

bp = Blueprint("openapi", __name__)


def register_paths(paths: dict, schemas: dict | None = None, scopes: dict | None = None) -> None:
    """Merge OpenAPI path items (by path, then by method), component schemas and OAuth scopes."""
    _SCOPES.update(scopes or {})
    for path, item in paths.items():
        _PATHS.setdefault(path, {}).update(copy.deepcopy(item))
    for name, schema in (schemas or {}).items():
        _SCHEMAS[name] = copy.deepcopy(schema)


def document() -> dict:
    cfg = current_app.config
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Tongban (通办) department API",
            "version": "1",
            "description": "E-seal and e-licence services for government systems. OAuth 2.0 bearer tokens "
                           "from the token endpoint; scopes per operation.",
        },
        "servers": [{"url": cfg["TONGBAN_ISSUER"]}],
        "paths": dict(sorted(_PATHS.items())),
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"}, "error_description": {"type": "string"}}}, **_SCHEMAS},
            "securitySchemes": {"oauth2": {"type": "oauth2", "flows": {
                "clientCredentials": {"tokenUrl": cfg["TONGBAN_ISSUER"] + "/oauth/token", "scopes": dict(_SCOPES)},
            }}},
        },
    }


@bp.route("/api/v1/openapi.json")
def openapi_json():
    from .security import cacheable

    cacheable(300)
    return jsonify(document())


def init_app(app: Flask) -> None:
    if "openapi" not in app.blueprints:
        app.register_blueprint(bp)
