"""JWT-Secured Authorization Requests (RFC 9101): signed request objects, by value
(``request=``) at the authorization endpoint or inside a pushed request (idp/par.py).

A request object is accepted only when (docs/oidc-modern.md):

- signed (ES256, PS256, RS256; never ``none``) by one of the client's registered keys
  (the same set as private_key_jwt, idp/client_auth.py);
- ``iss`` is the client_id, ``aud`` the issuer identifier, ``client_id`` (if present) the
  client_id; ``exp`` is required and no further than TONGBAN_REQUEST_OBJECT_MAX_LIFETIME ahead;
  ``nbf`` (required of FAPI 2.0 clients) not in the future and ``exp - nbf`` at most that long;
- it holds neither ``request`` nor ``request_uri``; every parameter value is a string (``claims``
  may be a JSON object, OIDC Core §6.1; ``max_age`` a number).

The authorization request's parameters are then those of the request object only (RFC 9101 §5):
outside it only ``client_id``, and ``response_type`` / ``scope`` when equal to the object's
(OpenID Connect clients repeat them), may appear; anything else is refused.
"""

from __future__ import annotations

import json
import time

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc9101.errors import InvalidRequestObjectError
from flask import current_app

from . import client_auth, fapi
from .errors import shown

# parameters that may accompany ``request`` at the authorization endpoint (RFC 9101 §5, OIDC §6.1)
OUTSIDE_ALLOWED = ("client_id", "request")
OUTSIDE_IF_EQUAL = ("response_type", "scope")
LEEWAY = client_auth.LEEWAY


def _as_param(name: str, value) -> str:
    if isinstance(value, str):
        return value
    if name == "claims" and isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if name == "max_age" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InvalidRequestObjectError(description=f"the request object's '{shown(name)}' is not a string")


def decode(raw: str, client, *, outer_client_id: str | None = None) -> dict[str, str]:
    """The authorization parameters of a request object signed by ``client``; InvalidRequestObjectError
    (or InvalidRequestError) if it is not acceptable."""
    if not isinstance(raw, str) or not raw:
        raise InvalidRequestObjectError(description="the request object is empty")
    token = client_auth.verify_signed(raw, client, InvalidRequestObjectError)
    claims = token.claims
    cfg = current_app.config
    if claims.get("iss") != client.client_id:
        raise InvalidRequestObjectError(description="iss must be the client_id")
    aud = claims.get("aud")
    if cfg["TONGBAN_ISSUER"] not in (aud if isinstance(aud, list) else [aud]):
        raise InvalidRequestObjectError(description="aud must be the issuer identifier")
    if "client_id" in claims and claims["client_id"] != client.client_id:
        raise InvalidRequestError("the request object's client_id does not match")
    if outer_client_id is not None and outer_client_id != client.client_id:
        raise InvalidRequestError("client_id does not match the request object")
    now = int(time.time())
    longest = int(cfg["TONGBAN_REQUEST_OBJECT_MAX_LIFETIME"])
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise InvalidRequestObjectError(description="exp is required")
    if exp <= now - LEEWAY:
        raise InvalidRequestObjectError(description="the request object has expired")
    if exp > now + longest + LEEWAY:
        raise InvalidRequestObjectError(description="exp is too far in the future")
    if nbf is None and fapi.is_fapi2(client):
        raise InvalidRequestObjectError(description="nbf is required (FAPI 2.0)")
    if nbf is not None:
        if not isinstance(nbf, int) or isinstance(nbf, bool) or nbf > now + LEEWAY:
            raise InvalidRequestObjectError(description="the request object is not valid yet (nbf)")
        if exp - nbf > longest:
            raise InvalidRequestObjectError(description="exp - nbf is longer than allowed")
    if "request" in claims or "request_uri" in claims:
        raise InvalidRequestObjectError(description="a request object must not hold request or request_uri")
    skip = {"iss", "aud", "exp", "nbf", "iat", "jti", "sub"}
    params = {k: _as_param(k, v) for k, v in claims.items() if k not in skip}
    params["client_id"] = client.client_id
    return params


def check_outside(outside, params: dict[str, str]) -> InvalidRequestError | None:
    """RFC 9101 §5: the parameters sent next to ``request`` (a MultiDict)."""
    for key, values in outside.lists():
        if key in OUTSIDE_ALLOWED:
            if len(values) > 1:
                return InvalidRequestError(f"{shown(key)} given more than once")
            continue
        if key in OUTSIDE_IF_EQUAL:
            if values != [params.get(key)]:
                return InvalidRequestError(f"{shown(key)} differs from the request object's")
            continue
        return InvalidRequestError(f"{shown(key)} must be inside the request object, not next to it")
    return None
