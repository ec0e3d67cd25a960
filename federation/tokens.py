"""Validating what an upstream signs: its ID tokens (OIDC Core §3.1.3.7) and its logout tokens
(OIDC Back-Channel Logout 1.0 §2.6). Signatures with joserfc against the upstream's JWKS; an
unknown ``kid`` fetches the JWKS once more (a key rotated in since the last fetch)."""

from __future__ import annotations

import base64
import hashlib
import json

from flask import current_app
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jws import extract_compact

from tongban.clock import epoch

from . import metadata
from .registry import UpstreamInfo

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


class TokenRefused(Exception):
    """The token is not one to act on; ``reason`` says why (for the audit log)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _verify_signature(upstream: UpstreamInfo, raw: str) -> dict:
    """The claims of ``raw`` once its signature checks out with one of the upstream's keys."""
    allowed = list(current_app.config["TONGBAN_FEDERATION_ALGS"])
    try:
        header = extract_compact(raw.encode()).headers()
    except (JoseError, ValueError, UnicodeError, RecursionError):
        raise TokenRefused("malformed") from None
    alg = header.get("alg")
    if alg not in allowed:  # "none", HS256 with the client secret, anything not allowed
        raise TokenRefused(f"alg_not_allowed:{str(alg)[:20]}")
    if "crit" in header or "jku" in header or "x5u" in header or "jwk" in header:
        raise TokenRefused("unsupported_header")
    kid = header.get("kid")
    for refresh in (False, True):
        keys = metadata.jwks(upstream.issuer, refresh=refresh)
        if kid is not None:
            try:
                keys.get_by_kid(kid)
            except (InvalidKeyIdError, ValueError):
                continue  # an unknown kid: the JWKS once more
        try:
            token = jwt.decode(raw, keys, algorithms=[alg])
        except (JoseError, ValueError, TypeError, RecursionError):
            raise TokenRefused("bad_signature") from None
        if not isinstance(token.claims, dict):
            raise TokenRefused("malformed")
        return token.claims
    raise TokenRefused("unknown_kid")


def _audiences(claims: dict) -> list:
    aud = claims.get("aud")
    return aud if isinstance(aud, list) else [aud]


def _int_claim(claims: dict, name: str) -> int:
    value = claims.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TokenRefused(f"bad_{name}")
    return value


def half_hash(value: str, alg: str) -> str:
    """at_hash (OIDC Core §3.1.3.6): the left half of the hash the signature algorithm uses."""
    bits = "512" if alg == "EdDSA" else alg[-3:]
    fn = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}.get(bits)
    if fn is None:
        raise TokenRefused("bad_at_hash")
    d = fn(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(d[: len(d) // 2]).rstrip(b"=").decode()


def validate_id_token(upstream: UpstreamInfo, raw: str, *, nonce: str, access_token: str | None) -> dict:
    """The ID token's claims, or TokenRefused: signature and alg, iss, aud, azp, exp, iat, nonce,
    at_hash when present, a sub."""
    if not isinstance(raw, str) or not raw:
        raise TokenRefused("no_id_token")
    claims = _verify_signature(upstream, raw)
    skew = int(current_app.config["TONGBAN_FEDERATION_CLOCK_SKEW"])
    now = epoch()
    if claims.get("iss") != upstream.issuer:
        raise TokenRefused("bad_iss")
    audiences = _audiences(claims)
    if upstream.client_id not in audiences:
        raise TokenRefused("bad_aud")
    if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != upstream.client_id:
        raise TokenRefused("bad_azp")
    if _int_claim(claims, "exp") <= now - skew:
        raise TokenRefused("expired")
    iat = _int_claim(claims, "iat")
    lifetime = int(current_app.config["TONGBAN_FEDERATION_REQUEST_LIFETIME"])
    if iat > now + skew or iat < now - lifetime - skew:
        raise TokenRefused("bad_iat")
    if not isinstance(claims.get("nonce"), str) or not _equal(claims["nonce"], nonce):
        raise TokenRefused("bad_nonce")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        raise TokenRefused("bad_sub")
    if "at_hash" in claims:
        alg = extract_compact(raw.encode()).headers()["alg"]
        if access_token is None or not _equal(str(claims["at_hash"]), half_hash(access_token, alg)):
            raise TokenRefused("bad_at_hash")
    return claims


def validate_logout_token(upstream: UpstreamInfo, raw: str) -> dict:
    """A logout token's claims (Back-Channel Logout §2.6), or TokenRefused. The jti's one-time
    use is checked by the caller, in the database."""
    if not isinstance(raw, str) or not raw or len(raw) > 16384:
        raise TokenRefused("no_logout_token")
    try:
        header = extract_compact(raw.encode()).headers()
    except (JoseError, ValueError, UnicodeError, RecursionError):
        raise TokenRefused("malformed") from None
    if header.get("typ") not in (None, "JWT", "logout+jwt", "application/logout+jwt"):
        raise TokenRefused("bad_typ")  # not an ID token or access token passed off as one
    claims = _verify_signature(upstream, raw)
    skew = int(current_app.config["TONGBAN_FEDERATION_CLOCK_SKEW"])
    now = epoch()
    if claims.get("iss") != upstream.issuer:
        raise TokenRefused("bad_iss")
    if upstream.client_id not in _audiences(claims):
        raise TokenRefused("bad_aud")
    iat = _int_claim(claims, "iat")
    if iat > now + skew or iat < now - int(current_app.config["TONGBAN_FEDERATION_LOGOUT_TOKEN_MAX_AGE"]) - skew:
        raise TokenRefused("bad_iat")
    if "exp" in claims and _int_claim(claims, "exp") <= now - skew:
        raise TokenRefused("expired")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise TokenRefused("bad_jti")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
        raise TokenRefused("bad_events")
    if "nonce" in claims:
        raise TokenRefused("nonce_present")
    sid, sub = claims.get("sid"), claims.get("sub")
    if sid is None and sub is None:
        raise TokenRefused("no_sid_or_sub")
    for value in (sid, sub):
        if value is not None and (not isinstance(value, str) or not value or len(value) > 255):
            raise TokenRefused("bad_sid_or_sub")
    return claims


def _equal(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


def describe(claims: dict) -> str:
    return json.dumps({k: claims.get(k) for k in ("iss", "sub", "acr", "sid")}, ensure_ascii=False)
