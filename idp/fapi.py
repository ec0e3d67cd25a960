"""The ``fapi2`` client profile: FAPI 2.0 Security Profile rules, each a check with its own error
(docs/oidc-modern.md).

At registration (``clients create --profile fapi2``):
  - private_key_jwt client authentication (mTLS is not offered);
  - no device-code grant (the profile covers the code flow, refresh and client credentials);
  - PAR required (set on the client).
At the authorization endpoint: only through PAR (idp/par.py refuses a plain request).
At the PAR endpoint (``check_pushed``): response_type ``code`` only (no implicit/hybrid),
redirect_uri present, PKCE with S256, response_mode ``query``.
At the token endpoint: private_key_jwt only (``allows_auth_method``); refresh tokens rotate
(every client); sender-constrained tokens: ``requires_sender_constraint(client)`` is the hook the
DPoP module (idp/dpop.py) asks before it lets a bearer (unconstrained) token be issued.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from flask import current_app

from tongban.errors import ValidationError

FAPI2 = "fapi2"
PROFILES = ("", FAPI2)
FAPI2_GRANTS = frozenset({"authorization_code", "refresh_token", "client_credentials"})


def is_fapi2(client) -> bool:
    return getattr(client, "profile", "") == FAPI2


def requires_sender_constraint(client) -> bool:
    """FAPI 2.0 §5.3.2.1: a ``fapi2`` client's access tokens must be sender-constrained (DPoP here).
    The DPoP code calls this to refuse a token request without a DPoP proof."""
    return is_fapi2(client)


def par_required(client) -> bool:
    """Must this client push its authorization requests (RFC 9126 §5)?"""
    return bool(getattr(client, "require_par", False) or is_fapi2(client)
                or current_app.config.get("TONGBAN_REQUIRE_PAR"))


def allows_auth_method(client, method: str) -> bool:
    """FAPI 2.0 §5.3.2.1: a fapi2 client authenticates with private_key_jwt, never a secret."""
    return not is_fapi2(client) or method == "private_key_jwt"


def check_registration(profile: str, auth_method: str, grant_types, require_par: bool) -> bool:
    """Registration rules of the profile; returns whether PAR is required."""
    profile = profile or ""
    if profile not in PROFILES:
        raise ValidationError(f"unknown profile {profile!r} (fapi2 or none)", "invalid_client_metadata")
    if profile != FAPI2:
        return bool(require_par)
    if auth_method != "private_key_jwt":
        raise ValidationError("a fapi2 client authenticates with private_key_jwt (--auth-method private_key_jwt)",
                              "invalid_client_metadata")
    extra = set(grant_types) - FAPI2_GRANTS
    if extra:
        raise ValidationError(f"a fapi2 client cannot use {', '.join(sorted(extra))}", "invalid_grant_type")
    return True


class FapiError(InvalidRequestError):
    """A FAPI 2.0 rule was broken; the description names the rule."""


def check_pushed(client, params: dict[str, str]) -> FapiError | None:
    """The profile's rules for a pushed authorization request (FAPI 2.0 §5.3.1.2, §5.3.2.2)."""
    if not is_fapi2(client):
        return None
    if params.get("response_type") != "code":
        return FapiError("FAPI 2.0: response_type must be code (no implicit or hybrid flow)")
    if not params.get("redirect_uri"):
        return FapiError("FAPI 2.0: redirect_uri is required in the pushed request")
    if not params.get("code_challenge"):
        return FapiError("FAPI 2.0: PKCE is required (code_challenge)")
    if params.get("code_challenge_method") != "S256":
        return FapiError("FAPI 2.0: code_challenge_method must be S256")
    if params.get("response_mode") not in (None, "query"):
        return FapiError("FAPI 2.0: response_mode must be query")
    return None
