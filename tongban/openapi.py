"""The department API's OpenAPI 3 document, served at ``GET /api/v1/openapi.json``.

Each package adds its paths (and components) in its ``init_app``::

    from tongban import openapi
    openapi.register_paths({"/api/v1/...": {...}}, schemas={"Name": {...}}, scopes={"x:y": "..."})

``init_app`` registers the route once per app (whichever package calls it first).

The document says what the endpoints do, including how they fail: every operation lists 400
(control characters or non-UTF-8, ``tongban.security``) and 405 (another method; the ``Allow``
header names the path's methods), every one with a body 413 (larger than ``MAX_CONTENT_LENGTH``),
every one behind OAuth 401 (an empty object without a token) and 403. A test walks the document
against the routes and sends bad requests to each operation (``tests/tongban/test_openapi.py``);
schemathesis fuzzes every operation against it (``tests/tongban/test_fuzz_api.py``,
docs/testing.md).
"""

from __future__ import annotations

import copy

from flask import Blueprint, Flask, current_app, jsonify

_PATHS: dict[str, dict] = {}
_SCHEMAS: dict[str, dict] = {}
_SCOPES: dict[str, str] = {}
_USER_ONLY_SCOPES: set[str] = set()
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

bp = Blueprint("openapi", __name__)

ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_ALLOW = {"Allow": {"description": "The methods this path accepts", "schema": {"type": "string"}}}
_COMMON = {
    # tongban.security.check_input, before any view: every operation, whatever its parameters
    "400": {"description": "Control characters, or bytes that are not UTF-8, in the path, the query or the body "
                           "(JSON invalid_request under /api/, /oauth/ and /.well-known/, else an HTML page)",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}},
                        "text/html": {"schema": {"type": "string"}}}},
    "405": {"description": "Another method than the path's; the Allow header lists them (JSON under /api/, "
                           "else an HTML page unless JSON is asked for)", "headers": _ALLOW,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}},
                        "text/html": {"schema": {"type": "string"}}}},
}
_WITH_BODY = {"413": {"description": "The request body is larger than the server accepts", **ERROR}}
_SECURED = {
    # RFC 6750 §3.1: a request with no token at all gets the WWW-Authenticate challenge and no error code
    "401": {"description": "No access token (an empty object; the WWW-Authenticate header challenges), or not "
                           "a valid one (an error)",
            "headers": {"WWW-Authenticate": {"description": "Bearer (and DPoP) challenges",
                                             "schema": {"type": "string"}}},
            "content": {"application/json": {"schema": {"anyOf": [
                {"$ref": "#/components/schemas/Error"},
                {"type": "object", "maxProperties": 0}]}}}},
    "403": {"description": "The token lacks the scope, or its system or user may not do this", **ERROR},
}


# the platform's own public paths (the shell's health check, this document, the seal CA and TSA of
# keys/), used by relying parties as they use the API; the OpenID provider's endpoints are idp's (idp/openapi.py)
_PLATFORM_PATHS = {
    "/healthz": {"get": {
        "tags": ["platform"], "summary": "Liveness: the process answers", "operationId": "health", "security": [],
        "responses": {"200": {"description": "Alive", "content": {"application/json": {"schema": {
            "type": "object", "required": ["status"], "properties": {"status": {"enum": ["ok"]}}}}}}}}},
    "/api/v1/openapi.json": {"get": {
        "tags": ["platform"], "summary": "This document", "operationId": "openapi", "security": [],
        "responses": {"200": {"description": "OpenAPI 3.0 document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    "/ca/root.pem": {"get": {
        "tags": ["seal CA"], "summary": "The seal CA's root certificate (the trust anchor relying parties install)",
        "operationId": "caRoot", "security": [],
        "responses": {"200": {"description": "PEM certificate", "content": {"application/x-pem-file": {
            "schema": {"type": "string"}}}}}}},
    "/ca/issuing.pem": {"get": {
        "tags": ["seal CA"], "summary": "The issuing CA's certificate (signs the seal certificates)",
        "operationId": "caIssuing", "security": [],
        "responses": {"200": {"description": "PEM certificate", "content": {"application/x-pem-file": {
            "schema": {"type": "string"}}}}}}},
    "/ca/crl": {"get": {
        "tags": ["seal CA"], "summary": "The issuing CA's certificate revocation list (revoked seals)",
        "operationId": "caCrl", "security": [],
        "responses": {"200": {"description": "DER CRL", "content": {"application/pkix-crl": {
            "schema": {"type": "string", "format": "binary"}}}}}}},
    "/ca/root.crl": {"get": {
        "tags": ["seal CA"], "summary": "The root CA's certificate revocation list", "operationId": "caRootCrl",
        "security": [],
        "responses": {"200": {"description": "DER CRL", "content": {"application/pkix-crl": {
            "schema": {"type": "string", "format": "binary"}}}}}}},
    "/tsa": {"post": {
        "tags": ["seal CA"], "summary": "RFC 3161 time-stamping authority", "operationId": "timestamp",
        "security": [],
        "requestBody": {"required": True, "content": {"application/timestamp-query": {
            "schema": {"type": "string", "format": "binary", "maxLength": 65536}}}},
        "responses": {"200": {"description": "A time-stamp response (its status says granted or rejected)",
                              "content": {"application/timestamp-reply": {
                                  "schema": {"type": "string", "format": "binary"}}}},
                      "413": {"description": "A query larger than 64 KiB",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
}


def register_paths(paths: dict, schemas: dict | None = None, scopes: dict | None = None,
                   user_only_scopes: tuple[str, ...] = ()) -> None:
    """Merge OpenAPI path items (by path, then by method), component schemas and OAuth scopes.

    ``user_only_scopes`` are granted only through the authorization code flow (a consenting
    user), not to client-credentials tokens.
    """
    _SCOPES.update(scopes or {})
    _USER_ONLY_SCOPES.update(user_only_scopes)
    for path, item in paths.items():
        _PATHS.setdefault(path, {}).update(copy.deepcopy(item))
    for name, schema in (schemas or {}).items():
        _SCHEMAS[name] = copy.deepcopy(schema)


def _with_failures(paths: dict) -> dict:
    """Each operation with the failures every endpoint of its kind can answer (see the module doc)."""
    out = copy.deepcopy(paths)
    for item in out.values():
        for method, op in item.items():
            if method not in METHODS:
                continue
            responses = op.setdefault("responses", {})
            extra = dict(_COMMON)
            if "requestBody" in op:
                extra.update(_WITH_BODY)
            secured = bool(op.get("security", [{}]))  # [] is public; absent means the document's default (none)
            if secured:
                extra.update(_SECURED)
            for code, response in extra.items():
                responses.setdefault(code, copy.deepcopy(response))
            if secured:  # the bearer-token check answers alike whatever the package wrote
                responses["401"] = copy.deepcopy(_SECURED["401"])
            op["responses"] = dict(sorted(responses.items()))
    return out


def document() -> dict:
    cfg = current_app.config
    issuer = cfg["TONGBAN_ISSUER"]
    paths = {**_PLATFORM_PATHS, **_PATHS}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Tongban (通办) department API",
            "version": "1",
            "description": "E-seal and e-licence services for government systems. OAuth 2.0 bearer tokens "
                           "from the token endpoint (parameters in the form body); scopes per operation. "
                           "System tokens come from the client credentials flow; reading a citizen's "
                           "licences (licence:read) needs a token from the authorization code flow "
                           "(with PKCE) of a holder who consented. Errors are JSON "
                           "{\"error\", \"error_description\"}.",
        },
        "servers": [{"url": issuer}],
        "security": [],
        "paths": dict(sorted(_with_failures(paths).items())),
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"}, "error_description": {"type": "string"}}}, **_SCHEMAS},
            "securitySchemes": {"oauth2": {"type": "oauth2", "flows": {
                "clientCredentials": {"tokenUrl": issuer + "/oauth/token", "scopes": {
                    k: v for k, v in _SCOPES.items() if k not in _USER_ONLY_SCOPES}},
                "authorizationCode": {"authorizationUrl": issuer + "/oauth/authorize",
                                      "tokenUrl": issuer + "/oauth/token", "refreshUrl": issuer + "/oauth/token",
                                      "scopes": dict(_SCOPES)},
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
