"""Access tokens (RFC 9068 JWTs, no row per token), the deny list, refresh-token families.

Access tokens are ES256 JWTs signed with a key object built once per worker.
Revoking one puts its ``jti`` on a deny list that every worker caches and
reloads when the list changes. Refresh tokens and codes are stored as SHA-256
digests; a refresh token is rotated on use and a reused one revokes its family.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import timedelta

from authlib.oauth2.rfc6750 import BearerTokenGenerator
from flask import current_app
from sqlalchemy import delete, select, update

from keys import jws
from keys.services import KeyRing, keyring
from tongban import audit
from tongban.cache import CachedLoader, Generation
from tongban.clock import digest, epoch, token, utcnow
from tongban.extensions import after_commit, db

from . import resources
from .context import GrantContext, grant_context
from .dpop import token_type
from .models import AuthorizationCode, RefreshToken, RevokedAccessToken
from .pairwise import local_sub

ACCESS_TOKEN_ALG = "ES256"
DENYLIST_GENERATION = Generation("denylist")


# ---------------------------------------------------------------- issuing


class JWTAccessTokenGenerator(BearerTokenGenerator):
    """RFC 9068 access tokens; refresh tokens are random and stored hashed elsewhere."""

    def __init__(self):
        super().__init__(self._access_token, self._refresh_token, self._expires_in)

    @staticmethod
    def _expires_in(client, grant_type):
        return current_app.config["TONGBAN_ACCESS_TOKEN_LIFETIME"]

    @staticmethod
    def _refresh_token(client, grant_type, user, scope):
        return token(32)

    def _access_token(self, client, grant_type, user, scope):
        gctx = grant_context()
        claims = access_token_claims(current_app.config, client, user, scope, gctx)
        gctx.issued_access_claims = claims
        return sign_jwt(claims, ACCESS_TOKEN_ALG, typ="at+jwt")

    def generate(self, grant_type, client, user=None, scope=None, expires_in=None,
                 include_refresh_token=True):
        scope = client.get_allowed_scope(scope) if scope else scope
        out = super().generate(grant_type, client, user, scope, expires_in, include_refresh_token)
        out["token_type"] = token_type(grant_context()) or out["token_type"]  # DPoP (RFC 9449 §5)
        return out


def access_token_claims(config, client, user, scope: str, gctx: GrantContext) -> dict:
    """An access token's claims (RFC 9068), for every grant and both paths (the generator above
    and the lean ``client_credentials`` answer, ``client_credentials_token``)."""
    now = epoch()
    claims = {
        "iss": config["TONGBAN_ISSUER"],
        "sub": user.sub if user is not None else client.client_id,
        "aud": client.client_id,
        "client_id": client.client_id,
        "iat": now,
        "exp": now + config["TONGBAN_ACCESS_TOKEN_LIFETIME"],  # as _expires_in
        "jti": token(16),
    }
    if scope:
        claims["scope"] = scope
    if user is not None and gctx.token is not None:
        for k in ("auth_time", "acr", "sid"):
            if getattr(gctx.token, k):
                claims[k] = getattr(gctx.token, k)
    # aud (RFC 8707), cnf (RFC 9449), pairwise sub
    resources.extend_access_claims(claims, client, user, gctx)
    return claims


def client_credentials_token(config, ring: KeyRing, client, scope: str | None) -> dict:
    """``JWTAccessTokenGenerator().generate("client_credentials", client, None, scope,
    include_refresh_token=False)`` without an application context: the same claims
    (``access_token_claims``, with the grant context of a request that carried no resource and no
    DPoP proof), key and answer, in the same order. For the lean path (``idp.fast``), which only
    asks it for a client that has no registered resources, DPoP requirement or pairwise subject;
    ``config`` and ``ring`` are the application's (``keys.services.current_keyring``).
    ``tests/idp/test_fast_path_token.py`` compares the two."""
    # the generator filters the scope twice (its own generate, then Authlib's); the filter is
    # idempotent (the allowed names of the request, in its order, joined by one space)
    scope = client.get_allowed_scope(scope) if scope else ""
    gctx = GrantContext()
    claims = access_token_claims(config, client, None, scope, gctx)
    out = {"token_type": token_type(gctx) or "Bearer",
           "access_token": ring.active(ACCESS_TOKEN_ALG).compact_signer("at+jwt").sign(claims)}
    expires_in = config["TONGBAN_ACCESS_TOKEN_LIFETIME"]
    if expires_in:
        out["expires_in"] = expires_in
    if scope:
        out["scope"] = scope
    return out


def sign_jwt(claims: dict, alg: str, typ: str = "JWT") -> str:
    return keyring().active(alg).compact_signer(typ).sign(claims)


# ---------------------------------------------------------------- verifying access tokens


@dataclass
class AccessToken:
    """A verified access token's claims; the surface Authlib's validators expect."""

    claims: dict

    @property
    def jti(self) -> str:
        return self.claims.get("jti", "")

    @property
    def client_id(self) -> str:
        return self.claims.get("client_id", "")

    raw: str = ""

    @property
    def sub(self) -> str:
        """The person's own subject (a pairwise client's token names them by a pairwise one)."""
        return local_sub(self.claims)

    def get_scope(self):
        return self.claims.get("scope", "")

    def get_expires_in(self):
        return max(0, int(self.claims.get("exp", 0)) - epoch())

    def is_expired(self):
        return int(self.claims.get("exp", 0)) <= time.time()

    def is_revoked(self):
        return is_denied(self.jti, self.claims.get("sid"))

    def check_client(self, client):
        return self.client_id == client.client_id

    @property
    def is_user_token(self) -> bool:
        return self.sub != self.client_id


# Tokens whose signature, type and issuer were verified, by their exact text: a resource server
# asks about the same token many times in its life, and an ECDSA verification is most of the
# cost of an introspection or userinfo request. Expiry and the signing key are checked again on
# every hit (a key withdrawn from the keyring ends its tokens at once); revocation is checked by
# the callers, as for a fresh verification. Bounded: the oldest entries go first.
_VERIFIED: dict[str, tuple[dict, str, int, dict]] = {}
_VERIFIED_MAX = 8192


def decode_access_token(raw: str) -> AccessToken | None:
    """Verify signature, issuer, type and expiry; None for anything else."""
    if not raw or raw.count(".") != 2:
        return None
    hit = _VERIFIED.get(raw)
    if hit is not None:
        claims, kid, issuer_key, jwk = hit
        key = keyring().find(kid)
        if (claims["exp"] > time.time() and issuer_key == id(current_app.config)
                and claims.get("iss") == current_app.config["TONGBAN_ISSUER"]
                and key is not None and key.alg == ACCESS_TOKEN_ALG and key.public == jwk):
            return AccessToken(dict(claims))
        _VERIFIED.pop(raw, None)
    token = _decode_access_token(raw)
    if token is not None:
        if len(_VERIFIED) >= _VERIFIED_MAX:
            for old in list(_VERIFIED)[: _VERIFIED_MAX // 8]:
                _VERIFIED.pop(old, None)
        kid = jws.parse(raw)[0].get("kid", "")  # type: ignore[index]
        key = keyring().find(kid)
        if key is not None:  # the very key it was verified with: a kid reused for another key misses
            _VERIFIED[raw] = (dict(token.claims), kid, id(current_app.config), key.public)
    return token


def _decode_access_token(raw: str) -> AccessToken | None:
    parsed = jws.parse(raw)
    if parsed is None:
        return None
    header, signing_input, payload, signature = parsed
    if header.get("typ") != "at+jwt" or header.get("alg") != ACCESS_TOKEN_ALG:
        return None
    key = keyring().find(header.get("kid", ""))
    if key is None or key.alg != ACCESS_TOKEN_ALG:
        return None
    if not jws.verify(key.public_key, ACCESS_TOKEN_ALG, signing_input, signature):
        return None
    try:
        claims = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(claims, dict) or claims.get("iss") != current_app.config["TONGBAN_ISSUER"]:
        return None
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
        return None
    return AccessToken(claims)


def _load_denylist() -> frozenset[str]:
    now = epoch()
    return frozenset(db.session.execute(
        select(RevokedAccessToken.jti).where(RevokedAccessToken.expires_at > now)).scalars())


_denylist = CachedLoader(DENYLIST_GENERATION, _load_denylist, check_every=0.0)


_SID_PREFIX = "sid:"  # a jti never holds ":" (token_urlsafe): the two kinds cannot collide


def is_denied(jti: str, sid: str | None = None) -> bool:
    """Whether the token ``jti`` was revoked or the log-in session ``sid`` it belongs to ended."""
    denied = _denylist.get()
    return jti in denied or (isinstance(sid, str) and bool(sid) and _SID_PREFIX + sid in denied)


def deny(jti: str | None, exp: int | None, reason: str, actor: str) -> None:
    """Put an access token on the deny list until it would have expired."""
    if not jti or not exp or exp <= epoch():
        return
    if db.session.get(RevokedAccessToken, jti) is None:
        db.session.add(RevokedAccessToken(jti=jti, expires_at=exp, revoked_at=utcnow()))
    audit.record("token.revoked", actor=actor, object=f"jti:{jti}", detail={"reason": reason,
                                                                          "type": "access_token"})
    _after_commit_bump()


def deny_session(sid: str | None, reason: str, actor: str) -> None:
    """Deny every access token carrying ``sid`` (the log-in session ended), for as long as one
    issued from it can live: codes and device codes still in flight may yet be exchanged for
    one, so the entry outlives the session by their lifetime plus the access-token lifetime.
    One entry per session instead of one per token: no row per issued token, and token
    verification stays a lookup in the per-worker cached set."""
    if not sid:
        return
    cfg = current_app.config
    window = max(cfg["TONGBAN_AUTH_CODE_LIFETIME"], cfg.get("TONGBAN_DEVICE_CODE_LIFETIME", 600))
    expires = epoch() + cfg["TONGBAN_ACCESS_TOKEN_LIFETIME"] + window
    key = _SID_PREFIX + sid
    row = db.session.get(RevokedAccessToken, key)
    if row is None:
        db.session.add(RevokedAccessToken(jti=key, expires_at=expires, revoked_at=utcnow()))
    elif row.expires_at < expires:
        row.expires_at = expires
    audit.record("token.revoked", actor=actor, object=f"session:{sid}",
                 detail={"reason": reason, "type": "session_access_tokens"})
    _after_commit_bump()


def _after_commit_bump() -> None:
    after_commit(_denylist.invalidate)  # the bump, and this process's list dropped even if the bump fails


PURGE_GRACE = timedelta(days=1)


def purge_expired() -> dict[str, int]:
    """Delete what can no longer be used: deny-list entries of access tokens past their expiry;
    authorization codes, and refresh-token families whose every member expired, a day after
    (kept until then so a replayed code or reused refresh token is still recognised and its
    family revoked, RFC 9700 §2.2.2, §4.14). The audit log keeps what happened. One short
    transaction (the worker's chore, every ``TONGBAN_PURGE_INTERVAL_SECONDS``)."""
    cut = utcnow() - PURGE_GRACE
    alive = select(RefreshToken.family_id).where(RefreshToken.expires_at >= cut)
    counts = {
        "denylist": db.session.execute(  # type: ignore[attr-defined]
            delete(RevokedAccessToken).where(RevokedAccessToken.expires_at <= epoch())).rowcount or 0,
        "codes": db.session.execute(  # type: ignore[attr-defined]
            delete(AuthorizationCode).where(AuthorizationCode.expires_at < cut)).rowcount or 0,
        "refresh_tokens": db.session.execute(  # type: ignore[attr-defined]
            delete(RefreshToken).where(RefreshToken.expires_at < cut, RefreshToken.family_id.not_in(alive))
            .execution_options(synchronize_session=False)).rowcount or 0,
    }
    if any(counts.values()):
        audit.record("tokens.purged", actor="system", detail=counts)
    db.session.commit()
    return counts


# ---------------------------------------------------------------- refresh tokens


def save_refresh_token(raw: str, *, family_id: str, client_id: str, user_id: int, sid: str | None,
                       scope: str, auth_time: int | None, acr: str | None, amr: str | None,
                       offline: bool, access_jti: str | None, access_exp: int | None) -> RefreshToken:
    now = utcnow()
    row = RefreshToken(token_hash=digest(raw), family_id=family_id, client_id=client_id, user_id=user_id,
                       sid=None if offline else sid, scope=scope, auth_time=auth_time, acr=acr, amr=amr,
                       offline=offline, issued_at=now,
                       expires_at=now + timedelta(seconds=current_app.config["TONGBAN_REFRESH_TOKEN_LIFETIME"]),
                       access_jti=access_jti, access_exp=access_exp)
    db.session.add(row)
    return row


def find_refresh_token(raw: str) -> RefreshToken | None:
    if not raw:
        return None
    return db.session.execute(select(RefreshToken).where(RefreshToken.token_hash == digest(raw))
                              ).scalar_one_or_none()


def revoke_family(family_id: str, reason: str, actor: str) -> int:
    """Revoke every refresh token of a family and deny its live access tokens."""
    now = utcnow()
    rows = db.session.execute(select(RefreshToken).where(RefreshToken.family_id == family_id)).scalars().all()
    count = 0
    for row in rows:
        if row.revoked_at is None:
            row.revoked_at = now
            count += 1
        if row.access_jti and row.access_exp and row.access_exp > epoch():
            deny(row.access_jti, row.access_exp, reason, actor)
    audit.record("refresh.family_revoked", actor=actor, object=f"family:{family_id}",
                 detail={"reason": reason, "tokens": count})
    return count


def claim_for_rotation(row: RefreshToken) -> bool:
    """Atomically mark a refresh token as used; False if another request already did."""
    n = db.session.execute(  # type: ignore[attr-defined]
        update(RefreshToken).where(RefreshToken.id == row.id, RefreshToken.rotated_at.is_(None),
                                   RefreshToken.revoked_at.is_(None))
        .values(rotated_at=utcnow()).execution_options(synchronize_session=False)
    ).rowcount
    return n == 1


def revoke_session_refresh_tokens(sid: str) -> None:
    """Session-bound refresh tokens end with the log-in session (offline ones do not)."""
    families = set(db.session.execute(select(RefreshToken.family_id).where(
        RefreshToken.sid == sid, RefreshToken.offline.is_(False), RefreshToken.revoked_at.is_(None))
    ).scalars())
    for fam in families:
        revoke_family(fam, "session_ended", "system")


def revoke_user_refresh_tokens(user_id: int, keep_sid: str | None, reason: str, actor: str) -> int:
    """Revoke every live refresh-token family of an account, offline ones too, except those bound
    to the session ``keep_sid``; their live access tokens go on the deny list."""
    stmt = select(RefreshToken.family_id).where(RefreshToken.user_id == user_id,
                                                RefreshToken.revoked_at.is_(None))
    families = set(db.session.execute(stmt).scalars())
    if keep_sid:
        kept = set(db.session.execute(stmt.where(RefreshToken.sid == keep_sid,
                                                 RefreshToken.offline.is_(False))).scalars())
        families -= kept
    for fam in sorted(families):
        revoke_family(fam, reason, actor)
    return len(families)


def new_family_id() -> str:
    return token(16)
