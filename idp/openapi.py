"""OpenAPI 3.0 paths of the OpenID provider's endpoints (merged into /api/v1/openapi.json by
``idp.init_app``): what a department system calls besides the API (discovery, JWKS, the token
endpoint and its neighbours, userinfo), and the authorization endpoint a browser is sent to.

Client authentication (token, introspection, revocation, PAR, device authorization, CIBA) is
HTTP Basic (client_secret_basic), client_id/client_secret in the form body (client_secret_post)
or a client_assertion (private_key_jwt): described in words, as OAuth clients read it from
discovery, so these operations are ``security: []`` and document their own 401.
"""

from __future__ import annotations

from typing import Any

_ERR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_NO_STORE = {"Cache-Control": {"description": "no-store", "schema": {"type": "string"}}}
_STRING = {"type": "string"}
_CLIENT_AUTH = ("Client authentication: HTTP Basic (client_secret_basic), client_id and client_secret in the "
                "body (client_secret_post) or a client_assertion (private_key_jwt), as the client is registered. "
                "Parameters in the form body only; each at most once.")
_AUTH_PARAMS = {"client_id": _STRING, "client_secret": _STRING, "client_assertion": _STRING,
                "client_assertion_type": _STRING}


def _form(properties: dict, required: tuple[str, ...] = ()) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": {**properties, **_AUTH_PARAMS}}
    if required:
        schema["required"] = list(required)
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": schema}}}


def _json(schema: dict, description: str, headers: dict | None = None) -> dict:
    out = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _error(description: str) -> dict:
    return {"description": description, **_ERR}


_INVALID_CLIENT = _error("invalid_client: the client is unknown or did not authenticate")
_TOKEN_TYPES = {"token": {"type": "string"}, "token_type_hint": {"type": "string",
                                                                  "enum": ["access_token", "refresh_token"]}}
_DISCOVERY = {"type": "object", "required": ["issuer", "authorization_endpoint", "token_endpoint", "jwks_uri",
                                             "response_types_supported", "subject_types_supported",
                                             "id_token_signing_alg_values_supported"],
              "properties": {"issuer": _STRING, "authorization_endpoint": _STRING, "token_endpoint": _STRING,
                             "jwks_uri": _STRING, "userinfo_endpoint": _STRING,
                             "scopes_supported": {"type": "array", "items": _STRING},
                             "response_types_supported": {"type": "array", "items": _STRING},
                             "grant_types_supported": {"type": "array", "items": _STRING}}}
_HTML = {"text/html": {"schema": {"type": "string"}}}
_LOCATION = {"Location": {"description": "where the browser goes next", "schema": {"type": "string"}}}
_AUTHORIZE_PARAMS = [
    {"name": name, "in": "query", "schema": schema, **({"required": True} if name == "client_id" else {})}
    for name, schema in (
        ("response_type", {"type": "string", "enum": ["code"]}), ("client_id", _STRING),
        ("redirect_uri", _STRING), ("scope", _STRING), ("state", _STRING), ("nonce", _STRING),
        ("code_challenge", _STRING), ("code_challenge_method", {"type": "string", "enum": ["S256"]}),
        ("prompt", _STRING), ("max_age", _STRING), ("login_hint", _STRING), ("id_token_hint", _STRING),
        ("acr_values", _STRING), ("claims", _STRING), ("ui_locales", _STRING), ("request_uri", _STRING),
        ("request", _STRING), ("resource", _STRING))]
_AUTHORIZE_RESPONSES = {
    "200": {"description": "A page: the consent (or the enterprise chooser) for the logged-in user",
            "content": _HTML},
    "302": {"description": "To the log-in (or step-up) page, or back to the client's redirect_uri with the code "
                           "or an OAuth error (and iss)", "headers": _LOCATION},
    "400": {"description": "An error page: the client or its redirect_uri is unknown, so nothing is redirected",
            "content": {**_HTML, **_ERR["content"]}},
}

PATHS: dict = {
    "/.well-known/openid-configuration": {"get": {
        "tags": ["oauth"], "summary": "OpenID Connect discovery (OpenID Connect Discovery 1.0 §4)",
        "operationId": "discovery", "security": [],
        "responses": {"200": _json(_DISCOVERY, "The provider's metadata")}}},
    "/.well-known/oauth-authorization-server": {"get": {
        "tags": ["oauth"], "summary": "OAuth 2.0 authorization server metadata (RFC 8414): the same document",
        "operationId": "oauthMetadata", "security": [],
        "responses": {"200": _json(_DISCOVERY, "The provider's metadata")}}},
    "/jwks.json": {"get": {
        "tags": ["oauth"], "summary": "The public keys that sign ID tokens and access tokens (JWK set)",
        "operationId": "jwks", "security": [],
        "responses": {"200": {"description": "JWK set", "content": {"application/jwk-set+json": {"schema": {
            "type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": {
                "type": "object", "required": ["kty"], "properties": {"kty": _STRING, "kid": _STRING}}}}}}}}}}},
    "/oauth/authorize": {
        "get": {"tags": ["oauth"], "summary": "Authorization endpoint (OIDC Core §3.1.2), for browsers",
                "operationId": "authorize", "security": [], "parameters": _AUTHORIZE_PARAMS,
                "responses": _AUTHORIZE_RESPONSES},
        "post": {"tags": ["oauth"], "summary": "A POSTed authorization request (303 to the same request as a GET), "
                                              "or the consent form's answer (CSRF-protected)",
                 "operationId": "authorizePost", "security": [],
                 "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
                     "type": "object", "properties": {p["name"]: p["schema"] for p in _AUTHORIZE_PARAMS}}}}},
                 "responses": {**_AUTHORIZE_RESPONSES,
                               "303": {"description": "The authorization request as a GET", "headers": _LOCATION}}}},
    "/oauth/token": {"post": {
        "tags": ["oauth"], "summary": "OAuth 2.0 token endpoint (RFC 6749): client credentials, authorization "
                                      "code with PKCE, refresh token, device code, token exchange, CIBA",
        "operationId": "token", "security": [],
        "description": "A query string is refused (400 invalid_request). " + _CLIENT_AUTH + " A DPoP header "
                       "(RFC 9449) binds the token to the client's key.",
        "parameters": [{"name": "DPoP", "in": "header", "required": False, "schema": _STRING}],
        "requestBody": _form({
            "grant_type": {"type": "string", "enum": [
                "client_credentials", "authorization_code", "refresh_token",
                "urn:ietf:params:oauth:grant-type:device_code", "urn:ietf:params:oauth:grant-type:token-exchange",
                "urn:openid:params:grant-type:ciba"]},
            "scope": _STRING, "code": _STRING, "redirect_uri": _STRING, "code_verifier": _STRING,
            "refresh_token": _STRING, "device_code": _STRING, "auth_req_id": _STRING, "resource": _STRING,
            "subject_token": _STRING, "subject_token_type": _STRING, "audience": _STRING,
            "requested_token_type": _STRING}, ("grant_type",)),
        "responses": {
            "200": _json({"type": "object", "required": ["access_token", "token_type"], "properties": {
                "access_token": _STRING, "token_type": {"enum": ["Bearer", "DPoP", "N_A"]},
                "expires_in": {"type": "integer"}, "scope": _STRING, "refresh_token": _STRING,
                "id_token": _STRING, "issued_token_type": _STRING}}, "Tokens", _NO_STORE),
            "400": _error("invalid_request, invalid_grant, invalid_scope, unauthorized_client, "
                          "unsupported_grant_type, authorization_pending, slow_down, expired_token, "
                          "access_denied, invalid_dpop_proof, use_dpop_nonce, invalid_target"),
            "401": _INVALID_CLIENT}}},
    "/oauth/introspect": {"post": {
        "tags": ["oauth"], "summary": "Token introspection (RFC 7662), for registered systems",
        "operationId": "introspect", "security": [], "description": _CLIENT_AUTH,
        "requestBody": _form(_TOKEN_TYPES, ("token",)),
        "responses": {
            "200": _json({"type": "object", "required": ["active"], "properties": {
                "active": {"type": "boolean"}, "scope": _STRING, "client_id": _STRING, "sub": _STRING,
                "exp": {"type": "integer"}, "iat": {"type": "integer"}, "token_type": _STRING}},
                "Whether the token is active, and its claims when it is"),
            "400": _error("invalid_request, unsupported_token_type"), "401": _INVALID_CLIENT}}},
    "/oauth/revoke": {"post": {
        "tags": ["oauth"], "summary": "Token revocation (RFC 7009): a refresh token (and its family) or an access "
                                      "token", "operationId": "revoke", "security": [], "description": _CLIENT_AUTH,
        "requestBody": _form(_TOKEN_TYPES, ("token",)),
        "responses": {"200": _json({"type": "object"}, "Revoked, or the token was not valid (RFC 7009 §2.2)"),
                      "400": _error("invalid_request, unsupported_token_type"), "401": _INVALID_CLIENT}}},
    "/oauth/par": {"post": {
        "tags": ["oauth"], "summary": "Pushed authorization request (RFC 9126)", "operationId": "par",
        "security": [], "description": _CLIENT_AUTH + " The authorization request's parameters (or a signed "
                                                      "request object in request) are checked at once.",
        "requestBody": _form({p["name"]: p["schema"] for p in _AUTHORIZE_PARAMS if p["name"] != "request_uri"},
                             ("response_type",)),
        "responses": {
            "201": _json({"type": "object", "required": ["request_uri", "expires_in"], "properties": {
                "request_uri": _STRING, "expires_in": {"type": "integer"}}}, "The request_uri to authorize with",
                _NO_STORE),
            "400": _error("invalid_request, invalid_request_object, unsupported_response_type, invalid_scope"),
            "401": _INVALID_CLIENT}}},
    "/oauth/device_authorization": {"post": {
        "tags": ["oauth"], "summary": "Device authorization (RFC 8628 §3.1): a kiosk or television asks for codes",
        "operationId": "deviceAuthorization", "security": [], "description": _CLIENT_AUTH,
        "requestBody": _form({"scope": _STRING}),
        "responses": {
            "200": _json({"type": "object", "required": ["device_code", "user_code", "verification_uri",
                                                          "expires_in"], "properties": {
                "device_code": _STRING, "user_code": _STRING, "verification_uri": _STRING,
                "verification_uri_complete": _STRING, "expires_in": {"type": "integer"},
                "interval": {"type": "integer"}}}, "The codes"),
            "400": _error("invalid_request, invalid_scope, unauthorized_client"), "401": _INVALID_CLIENT}}},
    "/oauth/bc-authorize": {"post": {
        "tags": ["oauth"], "summary": "CIBA backchannel authentication (poll mode): ask a citizen to confirm "
                                      "who they are on their own device", "operationId": "backchannelAuthorize",
        "security": [], "description": _CLIENT_AUTH,
        "requestBody": _form({"scope": _STRING, "login_hint": _STRING, "login_hint_token": _STRING,
                              "id_token_hint": _STRING, "binding_message": _STRING, "acr_values": _STRING,
                              "requested_expiry": _STRING, "user_code": _STRING}, ("scope",)),
        "responses": {
            "200": _json({"type": "object", "required": ["auth_req_id", "expires_in"], "properties": {
                "auth_req_id": _STRING, "expires_in": {"type": "integer"}, "interval": {"type": "integer"}}},
                "The request to poll the token endpoint with"),
            "400": _error("invalid_request, invalid_scope, unknown_user_id, invalid_binding_message, "
                          "expired_login_hint_token, unauthorized_client"),
            "401": _INVALID_CLIENT, "403": _error("access_denied"),
            "429": {"description": "Too many requests for this citizen; Retry-After says when to try again",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}}, **_ERR}}}},
    "/oauth/userinfo": {method: {
        "tags": ["oauth"], "summary": "UserInfo (OIDC Core §5.3): the claims of the token's user, by its scopes",
        "operationId": f"userinfo{method.capitalize()}", "security": [{"oauth2": ["openid"]}],
        "responses": {"200": _json({"type": "object", "required": ["sub"], "properties": {"sub": _STRING}},
                                   "The user's claims")}} for method in ("get", "post")},
}
