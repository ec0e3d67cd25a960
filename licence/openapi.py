"""OpenAPI 3.0 paths of the licence sharing API (merged into /api/v1/openapi.json)."""

from __future__ import annotations

from typing import Any

_PURPOSE = [
    {"name": "purpose", "in": "query", "required": True,
     "schema": {"type": "string", "minLength": 1, "maxLength": 500},
     "description": "事由: why the department needs the licence, in words"},
    {"name": "service_item", "in": "query", "required": True,
     "schema": {"type": "string", "minLength": 1, "maxLength": 100},
     "description": "事项编码: the government service item's code"},
]
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
       "description": "GB/T 36904 identifier, e.g. 1.2.156.3005.2.<type>.<issuer>.<serial>.<version>.<check>"}
_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_BODY_PURPOSE = {"purpose": {"type": "string", "minLength": 1, "maxLength": 500},
                 "service_item": {"type": "string", "minLength": 1, "maxLength": 100}}
_PUBLIC_LICENCE = {"type": "object", "properties": {
    "id": {"type": "string"}, "type": {"type": "string"}, "type_name": {"type": "string"},
    "holder_name": {"type": "string", "description": "masked"}, "issuer": {"type": "string"},
    "issued_at": {"type": "string", "format": "date"}, "valid_until": {"type": "string", "nullable": True}}}
_LICENCE = {"type": "object", "properties": {
    "id": {"type": "string"}, "type": {"type": "string"}, "type_name": {"type": "string"},
    "status": {"enum": ["valid", "suspended", "revoked", "expired"]}, "holder_id": {"type": "string"},
    "holder_name": {"type": "string"}, "issuer": {"type": "string"}, "issued_at": {"type": "string"},
    "valid_until": {"type": "string", "nullable": True}, "version": {"type": "string"}, "data": {"type": "object"},
    "metadata": {"type": "object", "description": "GB/T 36903 keys: ZZMC, ZZLXDM, ZZBH, ZZBS, ZZBFJG, "
                                                    "ZZBFJGDM, ZZBFRQ, ZZYXQQSRQ, ZZYXQJZRQ, CZZT, CZZTDM, CZZTDMLX"}}}
_VERDICT: dict[str, Any] = {"type": "object", "properties": {
    "valid": {"type": "boolean"}, "status": {"enum": ["valid", "suspended", "revoked", "expired", "unknown"]},
    "licence": {**_PUBLIC_LICENCE, "nullable": True}, "seal": {"type": "object", "nullable": True}}}
# a file's verdict names every check (licence/verification.py); failed ones carry a message
_CHECK_CODES = ["sealed", "identifier_signed", "issuer_seal", "nothing_after", "issued_version", "status"]
_FILE_VERDICT = {"type": "object", "properties": {
    **_VERDICT["properties"], "copy": {"type": "boolean"}, "superseded_by": {"type": "string"},
    "failed": {"type": "array", "items": {"enum": _CHECK_CODES}},
    "checks": {"type": "array", "items": {"type": "object", "required": ["check", "ok"], "properties": {
        "check": {"enum": _CHECK_CODES}, "ok": {"type": "boolean"},
        "message": {"type": "string", "description": "Chinese"}, "message_en": {"type": "string"}}}}}}


def _ok(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _page(schema: dict, description: str = "OK") -> dict:
    """A page for people, JSON for programs that ask for it (Accept: application/json)."""
    return {"description": description, "content": {"application/json": {"schema": schema},
                                                    "text/html": {"schema": {"type": "string"}}}}


PATHS: dict = {
    "/api/v1/licence-types": {"get": {
        "tags": ["licences"], "summary": "The e-licence catalogue",
        "security": [{"oauth2": ["licence:read"]}, {"oauth2": ["licence:verify"]}], "parameters": _PURPOSE,
        "responses": {"200": _ok({"type": "array", "items": {"type": "object", "properties": {
            "code": {"type": "string", "minLength": 21, "maxLength": 21}, "name": {"type": "string"},
            "holder_kind": {"enum": ["citizen", "organisation"]}}}}), "400": _ERR, "401": _ERR,
            "403": _ERR}}},
    "/api/v1/licences": {"get": {
        "tags": ["licences"], "summary": "The licences of the token's consenting holder",
        "description": "Needs a user token (authorization code flow) whose holder granted licence:read to "
                       "this system; client-credentials tokens get 403.",
        "security": [{"oauth2": ["licence:read"]}],
        "parameters": [*_PURPOSE, {"name": "type", "in": "query", "schema": {"type": "string"}},
                       {"name": "holder_id", "in": "query", "schema": {"type": "string"},
                        "description": "the citizen's ID number or the USCC of an enterprise they act for"}],
        "responses": {"200": _ok({"type": "array", "items": _LICENCE}), "400": _ERR, "401": _ERR,
                      "403": _ERR}}},
    "/api/v1/licences/{id}": {"get": {
        "tags": ["licences"], "summary": "One licence's data and GB/T 36903 metadata",
        "security": [{"oauth2": ["licence:read"]}], "parameters": [_ID, *_PURPOSE],
        "responses": {"200": _ok(_LICENCE), "400": _ERR, "401": _ERR, "403": _ERR, "404": _ERR}}},
    "/api/v1/licences/{id}/download": {"post": {
        "tags": ["licences"], "summary": "A one-time link (a few minutes) to the PDF watermarked with the "
                                         "department and purpose",
        "security": [{"oauth2": ["licence:read"]}], "parameters": [_ID],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["purpose", "service_item"], "properties": _BODY_PURPOSE}}}},
        "responses": {"200": _ok({"type": "object", "properties": {
            "url": {"type": "string"}, "expires_at": {"type": "string", "format": "date-time"}}}),
            "400": _ERR, "401": _ERR, "403": _ERR, "404": _ERR}}},
    "/api/v1/licences/download/{token}": {"get": {
        "tags": ["licences"], "summary": "Fetch a one-time download link (works once)", "security": [],
        "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "the sealed PDF", "content": {"application/pdf": {}}},
                      "404": _ERR}}},
    "/api/v1/licences/verify": {"post": {
        "tags": ["licences"], "summary": "Verify a licence by identifier or file: status plus seal check",
        "security": [{"oauth2": ["licence:verify"]}, {"oauth2": ["licence:read"]}],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "object", "required": ["id", "purpose", "service_item"],
                                            "properties": {"id": {"type": "string"}, **_BODY_PURPOSE}}},
            "multipart/form-data": {"schema": {"type": "object", "required": ["file", "purpose", "service_item"],
                                               "properties": {"file": {"type": "string", "format": "binary"},
                                                              **_BODY_PURPOSE}}}}},
        "description": "A file is checked as POST /api/v1/seals/verify checks it, with the same limits: "
                       "422 for too many signatures or too long a verification, 503 (Retry-After) when "
                       "the verifier is busy.",
        "responses": {"200": _ok({"anyOf": [_FILE_VERDICT, _VERDICT]}), "400": _ERR, "401": _ERR, "403": _ERR,
                      "413": _ERR, "422": _ERR, "429": _ERR, "503": _ERR}}},
    "/api/v1/licences/status-list": {"get": {
        "tags": ["licences"], "summary": "Signed status list (IETF Token Status List, 2 bits per licence)",
        "security": [], "responses": {"200": {"description": "statuslist+jwt",
                                              "content": {"application/statuslist+jwt": {}}}}}},
    "/api/v1/licences/offline/keys": {"get": {
        "tags": ["licences"], "summary": "Public keys (JWK set) that sign offline licence codes",
        "security": [], "responses": {"200": {"description": "JWK set",
                                              "content": {"application/jwk-set+json": {}}}}}},
    "/v/{code}": {"get": {
        "tags": ["licences"], "summary": "What a licence's QR code points to (HTML; JSON with Accept)",
        "security": [], "parameters": [{"name": "code", "in": "path", "required": True,
                                        "schema": {"type": "string"}}],
        "responses": {"200": _page(_VERDICT), "404": _page(_VERDICT, "unknown code")}}},
}

SCOPES = {"licence:read": "a consenting holder's e-licences (authorization code flow)",
          "licence:verify": "verify e-licences (client credentials are enough)"}
USER_ONLY_SCOPES = ("licence:read",)  # not in the client credentials flow: client tokens get 403
