"""The OpenID Connect provider: all Authlib wiring in one place.

Grants: authorization code (+ PKCE, + OpenID Connect), refresh token (rotation with
reuse detection), client credentials. Endpoints: revocation (RFC 7009),
introspection (RFC 7662). Resource protection for userinfo and the API.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
from datetime import timedelta
from functools import cached_property
from urllib.parse import parse_qsl, unquote, urlsplit

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.integrations.flask_oauth2.errors import _HTTPException as _AuthlibHTTPException
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload, FlaskOAuth2Request
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    MissingAuthorizationError,
    UnsupportedResponseTypeError,
)
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.core.grants.util import is_openid_scope, validate_nonce
from authlib.oidc.core.util import create_half_hash
from flask import Flask, Response, current_app
from flask import request as flask_request
from sqlalchemy import BigInteger, DateTime, Integer, String, and_, bindparam, select, update
from sqlalchemy.orm import contains_eager
from sqlalchemy.orm.attributes import set_committed_value

from keys.services import keyring
from people import accounts, enterprise
from people.models import User
from people.sessions import current_session, is_live
from tongban import audit
from tongban.clock import digest, epoch, to_epoch, utcnow
from tongban.extensions import db
from tongban.upsert import execute_prebuilt

from . import ciba, client_auth, device, dpop, modern_clients, par, resources, token_exchange, tokens  # noqa: F401
from . import clients as registry
from .context import ReplayedCode, ReusedRefresh, TokenContext, grant_context
from .dpop import ResourceDPoPError, challenge
from .errors import shown
from .models import AuthorizationCode
from .pairwise import subject_for, subject_for_client_id
from .resources import GrantExtension, annotate_code
from .scopes import SCOPES

CLIENT_AUTH = ["client_secret_basic", "client_secret_post", "private_key_jwt"]  # RFC 7523: idp.client_auth


# ---------------------------------------------------------------- claims


def user_claims(user: User, scope: str) -> dict:
    """Claims released for ``scope``; the full ID number only under the ``id_number`` scope."""
    scopes = set((scope or "").split())
    info = UserInfo(sub=user.sub)
    if "profile" in scopes:
        info.update(name=user.name, gender=user.gender, birthdate=user.birthdate.isoformat(),
                    locale="zh-CN")
    if "phone" in scopes and user.phone:
        info.update(phone_number="+86" + user.phone, phone_number_verified=user.assurance_level >= 2)
    if "id_number" in scopes:
        info["id_number"] = user.id_number
        info["id_number_verified"] = user.assurance_level >= 3
    if "profile" in scopes or "id_number" in scopes:
        info["assurance_level"] = user.acr
    return info


# the scope whose consent releases each claim (OIDC Core §5.4); the ``claims`` request parameter
# (§5.5) asks for claims one by one, and asks for them as the scope that carries them
CLAIM_SCOPES = {
    **dict.fromkeys(("name", "gender", "birthdate", "locale", "assurance_level"), "profile"),
    **dict.fromkeys(("phone_number", "phone_number_verified"), "phone"),
    **dict.fromkeys(("id_number", "id_number_verified"), "id_number"),
    **dict.fromkeys(("org_uscc", "org_name", "org_role", "org_authorised_until"), "enterprise"),
}


class ClaimsParameterError(ValueError):
    pass


def parse_claims_parameter(raw: str | None) -> dict:
    """The ``claims`` request parameter: a JSON object whose ``userinfo`` and ``id_token`` members
    are objects of claim name -> null or an object (OIDC Core §5.5). ClaimsParameterError if not."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise ClaimsParameterError("claims is not JSON") from None
    if not isinstance(value, dict):
        raise ClaimsParameterError("claims must be a JSON object")
    for member in ("userinfo", "id_token"):
        part = value.get(member)
        if part is None:
            continue
        if not isinstance(part, dict) or not all(v is None or isinstance(v, dict) for v in part.values()):
            raise ClaimsParameterError(f"claims.{member} must map claim names to null or an object")
    return value


def claims_scopes(raw: str | None) -> list[str]:
    """The scopes that carry the claims asked for in ``claims`` (unknown claims are ignored)."""
    try:
        value = parse_claims_parameter(raw)
    except ClaimsParameterError:
        return []
    names = [n for member in ("userinfo", "id_token") for n in (value.get(member) or {})]
    return list(dict.fromkeys(CLAIM_SCOPES[n] for n in names if n in CLAIM_SCOPES))


# ---------------------------------------------------------------- grants


class S256CodeChallenge(CodeChallenge):
    """PKCE: S256 only; required for public clients, accepted for confidential ones."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        challenge, method = data.get("code_challenge"), data.get("code_challenge_method")
        if grant.request.client.is_public and not challenge:
            raise InvalidRequestError("PKCE (code_challenge with S256) is required for public clients",
                                      redirect_uri=redirect_uri)
        if challenge and method != "S256":
            raise InvalidRequestError("code_challenge_method must be S256", redirect_uri=redirect_uri)
        return super().validate_code_challenge(grant, redirect_uri)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none", "private_key_jwt"]

    tongban_validated = False  # set by Server.get_consent_grant once the whole request passed

    def validate_authorization_request(self):
        """Authlib validates the authorization request in ``get_consent_grant`` and again in
        ``create_authorization_response``, within the same HTTP request: the same parameters
        against the same client (redirect URI, response type, scope, PKCE, the hooks). Nothing of
        that can change in between, so the second time only the check that reads state a
        concurrent request may change runs again, right before the code is issued: the OpenID
        nonce replay check."""
        if not self.tongban_validated:
            return super().validate_authorization_request()
        if is_openid_scope(self.request.payload.scope):
            try:
                validate_nonce(self.request, _NONCES.exists_nonce, _NONCES.require_nonce)
            except OAuth2Error as error:
                error.redirect_uri = self.redirect_uri  # back to the client, as Authlib's hook sends it
                raise
        return self.redirect_uri

    def save_authorization_code(self, code, request):
        sess = current_session()
        client = request.client
        data = request.payload.data
        now = utcnow()
        row = AuthorizationCode(
            code_hash=digest(code), client_id=client.client_id, user_id=request.user.id,
            sid=sess.sid if sess else None, redirect_uri=request.payload.redirect_uri or "",
            response_type=request.payload.response_type,
            scope=client.get_allowed_scope(request.payload.scope), nonce=data.get("nonce"),
            auth_time=to_epoch(sess.auth_time) if sess else epoch(), acr=sess.acr if sess else None,
            amr=sess.amr if sess else None, code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"), created_at=now,
            expires_at=now + timedelta(seconds=current_app.config["TONGBAN_AUTH_CODE_LIFETIME"]),
        )
        annotate_code(row, data)  # RFC 8707 resources, RFC 9449 dpop_jkt
        db.session.add(row)
        registry.record_usage(client.client_id, "login")
        audit.record("code.issued", actor=f"user:{request.user.sub}", object=f"client:{client.client_id}",
                     detail={"scope": row.scope})
        return row

    def query_authorization_code(self, code, client):
        """The code, read with its person and its session's enterprise choice at this client in
        one statement (``_CODE_EXCHANGE``). A used code is a replay; the code is claimed at the
        end of the exchange (``create_token_response``), atomically."""
        found = db.session.execute(_CODE_EXCHANGE, {"b_hash": digest(code)}).first()
        if found is None:
            return None
        row, acting = found
        if row.client_id != client.client_id:
            return None
        if row.used_at is not None:
            _code_replayed(row)
            return None
        if row.expires_at <= utcnow():
            return None
        grant_context().code_acting = (row.sid, row.client_id, acting)
        return row

    def delete_authorization_code(self, authorization_code):
        pass  # claimed in create_token_response; kept to detect replays

    def create_token_response(self):
        """Authlib's exchange (the hooks, the ID token among them), then the claim: ONE
        ``UPDATE ... WHERE used_at IS NULL`` marks the code used and records what it was exchanged
        for (the access token's jti and expiry, the refresh-token family), so that a replay
        revokes them (RFC 6749 §4.1.2). Of two concurrent exchanges exactly one updates the row;
        the other is a replay, refused before its answer leaves (the request rolls back, the
        tokens it signed are never seen) and revoking the winner's (``_after_error``). Nothing
        the exchange did before the claim outlives a refusal: the request's transaction rolls
        back, as it did when the claim came first."""
        result = super().create_token_response()
        code = self.request.authorization_code
        gctx = grant_context()
        claims = gctx.issued_access_claims
        params = {"b_id": code.id, "b_now": utcnow(), "b_jti": claims.get("jti"), "b_exp": claims.get("exp"),
                  "b_family": gctx.code_family}
        if not execute_prebuilt(db.session.connection(), _CLAIM_CODE, params).rowcount:
            _code_replayed(code)
            raise InvalidGrantError("Invalid 'code' in request.")
        # the loaded row as it now is in the database, without a flush writing it again
        for attr, key in (("used_at", "b_now"), ("access_jti", "b_jti"), ("access_exp", "b_exp"),
                          ("family_id", "b_family")):
            set_committed_value(code, attr, params[key])
        return result

    def authenticate_user(self, authorization_code):
        user = authorization_code.user  # loaded with the code (``_CODE_EXCHANGE``)
        if user is None or user.disabled:
            return None
        grant_context().token = TokenContext(
            auth_time=authorization_code.auth_time, acr=authorization_code.acr, sid=authorization_code.sid,
            amr=authorization_code.amr, family_id=tokens.new_family_id())
        return user


def _code_replayed(row: AuthorizationCode) -> None:
    """RFC 6749 §4.1.2: a code used twice revokes what it was exchanged for."""
    grant_context().replayed_code = ReplayedCode(id=row.id, client_id=row.client_id, family_id=row.family_id,
                                                 access_jti=row.access_jti, access_exp=row.access_exp)


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none", "private_key_jwt"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        row = tokens.find_refresh_token(refresh_token)
        if row is None:
            return None
        if row.rotated_at is not None or row.revoked_at is not None:
            if row.revoked_at is None or row.rotated_at is not None:
                grant_context().reused_refresh = ReusedRefresh(row.family_id, row.client_id)
            return None
        if row.expires_at <= utcnow():
            return None
        if row.sid and not row.offline and not is_live(row.sid):
            return None
        if row.sid and not enterprise.is_valid(row.sid, row.client_id):
            return None  # the enterprise authority was withdrawn or expired: the session is ended
        return row

    def authenticate_user(self, refresh_token):
        user = db.session.get(User, refresh_token.user_id)
        if user is None or user.disabled:
            return None
        grant_context().token = TokenContext(
            auth_time=refresh_token.auth_time, acr=refresh_token.acr, sid=refresh_token.sid,
            amr=refresh_token.amr, family_id=refresh_token.family_id, offline=refresh_token.offline)
        return user

    def revoke_old_credential(self, refresh_token):
        if not tokens.claim_for_rotation(refresh_token):
            # a concurrent request rotated it first: this one is a reuse
            grant_context().reused_refresh = ReusedRefresh(refresh_token.family_id, refresh_token.client_id)
            raise InvalidGrantError("refresh token already used")


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH


# the statements of every code flow, built once (bound parameters)
_NONCE_USED = select(AuthorizationCode.id).where(
    AuthorizationCode.client_id == bindparam("b_client_id", type_=String()),
    AuthorizationCode.nonce == bindparam("b_nonce", type_=String())).limit(1)
# the code exchange reads in one statement what it needs: the code, its person (``user``,
# outer-joined: a code whose account is gone is refused by authenticate_user as before) and the
# session's choice of whom it acts as at the client (None: no row, the person themself), which
# the ID token's enterprise claims check (enterprise.acting_claims) instead of reading it again
_ACTING = enterprise.EnterpriseActing
_CODE_EXCHANGE = (
    select(AuthorizationCode, _ACTING)
    .outerjoin(AuthorizationCode.user)
    .outerjoin(_ACTING, and_(_ACTING.sid == AuthorizationCode.sid, _ACTING.client_id == AuthorizationCode.client_id))
    .options(contains_eager(AuthorizationCode.user))
    .where(AuthorizationCode.code_hash == bindparam("b_hash", type_=String())))
# the claim, at the end of the exchange, with what the code was exchanged for (execute_prebuilt:
# compiled once per dialect)
_CODES = AuthorizationCode.__table__
_CLAIM_CODE = (update(_CODES).where(_CODES.c.id == bindparam("b_id", type_=Integer()), _CODES.c.used_at.is_(None))
               .values(used_at=bindparam("b_now", type_=DateTime()), access_jti=bindparam("b_jti", type_=String()),
                       access_exp=bindparam("b_exp", type_=BigInteger()),
                       family_id=bindparam("b_family", type_=String())))


class OpenIDConnect(OpenIDCode):
    def exists_nonce(self, nonce, request):
        session = db.session()
        if session.autoflush:  # what an ORM query would flush first (nothing, on the code flow)
            session.flush()
        # a plain read on the session's connection, in its transaction: no ORM entity to load
        return session.connection().execute(_NONCE_USED, {"b_client_id": request.payload.client_id,
                                                          "b_nonce": nonce}).first() is not None

    def get_client_algorithm(self, client):
        return client.id_token_signed_response_alg or "RS256"

    def resolve_client_private_key(self, client):
        return keyring().active(self.get_client_algorithm(client)).signer

    def get_encode_header(self, client):
        alg = self.get_client_algorithm(client)
        return {"alg": alg, "kid": keyring().active(alg).kid, "typ": "JWT"}

    def encode_id_token(self, token, request):
        """Authlib's ``OpenIDToken.encode_id_token`` (the same claims, gathered in the same order:
        the client's, the code's, ``at_hash``, the person's) signed by the active key's prebuilt
        compact signer, as the access tokens are (``keys.jws.CompactSigner``: the header encoded
        once, the ``cryptography`` key object reused), instead of joserfc's general path, which
        for every token re-imports the key, re-checks the algorithm registry and the header and
        serialises with ``json``. The same JWS: header ``alg``, ``kid``, ``typ`` "JWT" (the order
        of its members aside), payload ``json.dumps(claims, separators=(",", ":"),
        ensure_ascii=False)``, a PKCS#1 v1.5 (RS256) or low-S P-256 (ES256) signature, checked
        against joserfc in tests/idp/test_token_path.py. Another algorithm (none is registered
        today: registry.ID_TOKEN_ALGS) goes Authlib's way."""
        alg = self.get_client_algorithm(request.client)
        if alg not in registry.ID_TOKEN_ALGS:
            return super().encode_id_token(token, request)
        claims = self.get_compatible_claims(request)
        if request.authorization_code:
            claims.update(self.get_authorization_code_claims(request.authorization_code))
        access_token = token.get("access_token")
        if access_token:
            at_hash = create_half_hash(access_token, alg)
            if at_hash is not None:
                claims["at_hash"] = at_hash.decode("utf-8")
        claims.update(self.generate_user_info(request.user, token["scope"]))
        return keyring().active(alg).compact_signer("JWT").sign(claims)

    def get_client_claims(self, client):
        now = epoch()
        return {"iss": current_app.config["TONGBAN_ISSUER"], "aud": [client.client_id], "iat": now,
                "exp": now + current_app.config["TONGBAN_ID_TOKEN_LIFETIME"]}

    def get_authorization_code_claims(self, authorization_code):
        claims = super().get_authorization_code_claims(authorization_code)
        if authorization_code.sid:
            claims["sid"] = authorization_code.sid
        claims["azp"] = authorization_code.client_id
        known = grant_context().code_acting  # the choice read with the code, in this transaction
        acting = ({"acting": known[2]} if known is not None
                  and known[:2] == (authorization_code.sid, authorization_code.client_id) else {})
        try:
            claims.update(enterprise.claims_for_scope(authorization_code.sid, authorization_code.client_id,
                                                      authorization_code.scope, **acting))
        except enterprise.AuthorityEnded:
            # nothing of this exchange may be committed (its tokens are saved already): the
            # session is ended and the code used up once the request has rolled back
            grant_context().ended_authority = (authorization_code.sid, authorization_code.client_id,
                                               authorization_code.scope, authorization_code.id)
            raise InvalidGrantError("the enterprise authority has ended") from None
        return claims

    def generate_user_info(self, user, scope):
        info = user_claims(user, scope)
        info["sub"] = subject_for_client_id(grant_context().token_client_id, user.sub)  # OIDC Core §8.1
        return info


# the code flow's nonce replay check and whether a nonce is required (AuthorizationCodeGrant)
_NONCES = OpenIDConnect()


# ---------------------------------------------------------------- token persistence


def save_token(token, request):
    """Store the refresh token (hashed) with its family; count the token for usage."""
    client = request.client
    registry.record_usage(client.client_id, "token")
    gctx = grant_context()
    claims = gctx.issued_access_claims
    code = getattr(request, "authorization_code", None)  # what it was exchanged for: AuthorizationCodeGrant
    raw = token.get("refresh_token")
    if not raw or request.user is None:
        return
    ctx = gctx.token or TokenContext(auth_time=None, acr=None, sid=None, amr=None, family_id=None)
    offline = ctx.offline or "offline_access" in (token.get("scope") or "").split()
    family = ctx.family_id or tokens.new_family_id()
    row = tokens.save_refresh_token(
        raw, family_id=family, client_id=client.client_id, user_id=request.user.id, sid=ctx.sid,
        scope=token.get("scope") or "", auth_time=ctx.auth_time, acr=ctx.acr,
        amr=ctx.amr, offline=offline, access_jti=claims.get("jti"), access_exp=claims.get("exp"))
    resources.annotate_refresh(row, client)  # the grant's resources; a public client's DPoP key (RFC 9449 §5)
    if code is not None:
        gctx.code_family = family  # written by the code's claim (AuthorizationCodeGrant.create_token_response)
        audit.record("refresh.family_started", actor=f"user:{request.user.sub}",
                     object=f"family:{family}", detail={"client": client.client_id, "offline": offline})


# ---------------------------------------------------------------- revocation & introspection


class _RefreshTokenView:
    """Wraps a refresh-token row for the revocation/introspection endpoints."""

    def __init__(self, row):
        self.row = row

    def check_client(self, client):
        return self.row.client_id == client.client_id

    def get_scope(self):
        return self.row.scope


def _query_any_token(token_string, token_type_hint):
    """The hint only orders the search (RFC 7009 §2.1, RFC 7662 §2.1): a token not found as the
    hinted type is looked for as every other type."""

    def access():
        return tokens.decode_access_token(token_string)

    def refresh():
        row = tokens.find_refresh_token(token_string)
        return _RefreshTokenView(row) if row is not None else None

    order = (refresh, access) if token_type_hint == "refresh_token" else (access, refresh)
    for find in order:
        found = find()
        if found is not None:
            return found
    return None


class UnsupportedTokenTypeError(OAuth2Error):
    """RFC 7009 §2.2.1: an error response of RFC 6749 §5.2, hence 400 (Authlib answers 401)."""

    error = "unsupported_token_type"
    status_code = 400


def _check_token_params(endpoint, request):
    if "token" not in request.form:
        raise InvalidRequestError("the token parameter is required")
    hint = request.form.get("token_type_hint")
    if hint and hint not in endpoint.SUPPORTED_TOKEN_TYPES:
        raise UnsupportedTokenTypeError(f"token_type_hint {hint!r} is not supported")


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none", "private_key_jwt"]

    def check_params(self, request, client):
        _check_token_params(self, request)

    def query_token(self, token_string, token_type_hint):
        return _query_any_token(token_string, token_type_hint)

    def revoke_token(self, token, request):
        actor = f"client:{request.client.client_id}"
        if isinstance(token, tokens.AccessToken):
            tokens.deny(token.jti, token.claims.get("exp"), "revoked_by_client", actor)
        else:
            tokens.revoke_family(token.row.family_id, "revoked_by_client", actor)


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = CLIENT_AUTH

    def check_params(self, request, client):
        _check_token_params(self, request)

    def query_token(self, token_string, token_type_hint):
        return _query_any_token(token_string, token_type_hint)

    def check_permission(self, token, client, request):
        if token_exchange.is_audience(token, client) and not token.check_client(client):
            token.viewer = client  # the target of an exchanged token sees the citizen by its own sub
        return (client.introspection_allowed or token.check_client(client)
                or token_exchange.is_audience(token, client))

    def introspect_token(self, token):
        if isinstance(token, tokens.AccessToken):
            return introspect_access_token(token)
        row = token.row
        if (row.revoked_at or row.rotated_at or row.expires_at <= utcnow()
                or not registry.is_enabled(row.client_id)):
            return {"active": False}
        if row.sid and not row.offline:
            if not is_live(row.sid):
                return {"active": False}
            if not enterprise.is_valid(row.sid, row.client_id):
                return {"active": False}
        user = db.session.get(User, row.user_id)
        return {"active": True, "token_type": "refresh_token", "scope": row.scope, "client_id": row.client_id,
                "sub": subject_for_client_id(row.client_id, user.sub) if user else None,
                "iss": current_app.config["TONGBAN_ISSUER"],
                "exp": to_epoch(row.expires_at), "iat": to_epoch(row.issued_at)}

    def create_introspection_payload(self, token):
        if not token:
            return {"active": False}
        return self.introspect_token(token)


def introspect_access_token(token: tokens.AccessToken) -> dict:
    """RFC 7662 §2.2 for a verified access token (the introspection endpoint and its lean path)."""
    c = token.claims
    if token.is_revoked() or not registry.is_enabled(token.client_id):
        return {"active": False}
    if c.get("sid") and not is_live(c["sid"]):  # its log-in session ended or is past its lifetime
        return {"active": False}
    out = {"active": True, "token_type": "Bearer", "scope": c.get("scope", ""),
           "client_id": c["client_id"], "sub": c["sub"], "aud": c.get("aud"), "iss": c["iss"],
           "exp": c["exp"], "iat": c.get("iat"), "jti": c["jti"]}
    for k in ("auth_time", "acr", "sid", "act", "cnf"):  # act: token exchange (RFC 8693 §4.1)
        if k in c:
            out[k] = c[k]
    if "cnf" in c:
        out["token_type"] = "DPoP"  # RFC 9449 §6.2
    viewer = getattr(token, "viewer", None)
    if viewer is not None:
        out["sub"] = subject_for(viewer, token.sub)
    try:
        out.update(enterprise.claims_for_scope(c.get("sid"), c["client_id"], c.get("scope", ""), commit=True))
    except enterprise.AuthorityEnded:
        return {"active": False}
    return out


def userinfo_claims(tok: tokens.AccessToken) -> tuple[dict | None, str]:
    """The UserInfo response of a valid access token (OIDC Core §5.3), or None and why not."""
    user = accounts.get_user_by_sub(tok.sub) if tok.is_user_token else None
    if user is None or user.disabled:
        return None, "the token has no active user"
    sid = tok.claims.get("sid")
    if sid and not is_live(sid):  # its log-in session ended or is past its lifetime
        return None, "the log-in session has ended"
    claims = dict(user_claims(user, tok.get_scope()))
    claims["sub"] = subject_for_client_id(tok.client_id, user.sub)  # OIDC Core §8.1
    try:  # check-on-use: a withdrawn or expired enterprise authority ends the session here
        claims.update(enterprise.claims_for_scope(sid, tok.client_id, tok.get_scope(), commit=True))
    except enterprise.AuthorityEnded:
        return None, "the enterprise authority has ended"
    return claims, ""


# ---------------------------------------------------------------- resource protection


class JWTBearerValidator(BearerTokenValidator):
    def authenticate_token(self, token_string):
        token = tokens.decode_access_token(token_string)
        if token is not None:
            token.raw = token_string
        return token

    def validate_token(self, token, scopes, request):
        super().validate_token(token, scopes, request)
        from authlib.oauth2.rfc6750 import InvalidTokenError

        if not registry.is_enabled(token.client_id):
            raise InvalidTokenError(realm=self.realm)
        # RFC 9449 §7: a DPoP-bound token comes only with the DPoP scheme and a proof of its key
        dpop.check_resource_request(token, token.raw, dpop_scheme=self.TOKEN_TYPE == "dpop")
        if not resources.audience_ok(token.claims):  # RFC 8707: a token for another resource
            raise InvalidTokenError(description="the token is not for this resource", realm=self.realm)


class DPoPTokenValidator(JWTBearerValidator):
    """``Authorization: DPoP <token>`` (RFC 9449 §7.1); errors answer with a DPoP challenge."""

    TOKEN_TYPE = "dpop"

    def validate_token(self, token, scopes, request):
        from authlib.oauth2.rfc6750 import InsufficientScopeError, InvalidTokenError

        try:
            super().validate_token(token, scopes, request)
        except InsufficientScopeError:
            raise
        except InvalidTokenError as e:
            raise ResourceDPoPError("invalid_token", e.description or "the access token is not valid") from None

    def validate_request(self, request):
        pass


class _ResourceProtector(ResourceProtector):
    def raise_error_response(self, error):
        if isinstance(error, MissingAuthorizationError):
            # RFC 6750 §3.1: a request without any token gets the challenge, but no error code
            from authlib.integrations.flask_oauth2.errors import raise_http_exception

            raise_http_exception(401, json.dumps({}), [("WWW-Authenticate", "Bearer"),
                                                       ("WWW-Authenticate", challenge())])
        return super().raise_error_response(error)

    def parse_request_authorization(self, request):
        """The Authorization header, or else (RFC 6750 §2.2) an ``access_token`` in a form-encoded
        POST body: how OIDC clients such as pyoidc call userinfo with POST."""
        if not request.headers.get("Authorization") and flask_request.method == "POST" \
                and flask_request.mimetype == "application/x-www-form-urlencoded":
            raw = flask_request.form.get("access_token")
            if raw:
                return self.get_token_validator("bearer"), raw
        return super().parse_request_authorization(request)


require_oauth = _ResourceProtector()
require_oauth.register_token_validator(JWTBearerValidator())
require_oauth.register_token_validator(DPoPTokenValidator())


# ---------------------------------------------------------------- the server


class _Payload(FlaskOAuth2Payload):
    """Werkzeug rebuilds ``request.values`` on every access; grants read it many times."""

    @cached_property
    def data(self):
        return self._request.values


class _AuthorizePayload(_Payload):
    """An OpenID request's scope widened by the scopes of the claims asked for in ``claims``."""

    @cached_property
    def data(self):
        values = self._request.values
        scopes = (values.get("scope") or "").split()
        extra = [s for s in claims_scopes(values.get("claims")) if s not in scopes] if "openid" in scopes else []
        if not extra or len(values.getlist("scope")) != 1:
            return values
        from werkzeug.datastructures import MultiDict

        data = MultiDict(values.items(multi=True))
        data.setlist("scope", [" ".join(scopes + extra)])
        return data


class _BodyPayload(_Payload):
    """RFC 6749 §3.2: the token endpoint (and those built like it) reads the POST body only,
    never the query string."""

    @cached_property
    def data(self):
        return self._request.form


# endpoints whose parameters come from the form body, each at most once (RFC 6749 §3.2)
BODY_ONLY_PATHS = frozenset({"/oauth/token", "/oauth/revoke", "/oauth/introspect",
                             "/oauth/device_authorization", "/oauth/bc-authorize"})
# RFC 3986 characters (a redirect URI is compared, then echoed into a Location header)
_URI_SAFE = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
# what RFC 6749 allows in an error description, which Authlib builds from response_type
_NQSCHAR = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _basic_credentials_problem(headers) -> str | None:
    """Authlib decodes Basic credentials as UTF-8 and lets the error escape (a 500)."""
    auth = headers.get("Authorization") or ""
    scheme, _sep, value = auth.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(value.strip())
    except (binascii.Error, ValueError):
        return None  # Authlib treats it as no credentials: invalid_client
    try:
        text = raw.decode("utf-8")
        parts = [unquote(p, errors="strict") for p in text.split(":", 1)]
    except UnicodeError:
        return "client credentials are not UTF-8"
    if any(_CONTROL.search(p) for p in parts):
        return "client credentials contain control characters"
    return None


def _repeated_parameter() -> str | None:
    for key, values in flask_request.form.lists():
        if len(values) > 1 and key != "resource":  # RFC 8707: resource may be repeated
            return key
    return None


def _authorize_input_problem(data) -> str | None:
    for name, pattern in (("redirect_uri", _URI_SAFE), ("response_type", _NQSCHAR)):
        for value in data.getlist(name):
            if not pattern.fullmatch(value):
                return f"{name} contains characters that are not allowed"
    return None


def _trusted_redirect_uri(data) -> str | None:
    """The redirect URI an error may be sent to: a registered one of a known client, else None."""
    if not all(_single(data, k) for k in ("client_id", "redirect_uri") if k in data):
        return None
    client = registry.get_client(data.get("client_id") or "") if data.get("client_id") else None
    if client is None:
        return None
    uri = data.get("redirect_uri")
    if uri:
        return uri if client.check_redirect_uri(uri) else None
    return client.get_default_redirect_uri()


class RequestNotSupportedError(OAuth2Error):
    """OIDC Core §3.1.2.6: the ``request`` parameter (a request object) is not supported."""

    error = "request_not_supported"


class RequestUriNotSupportedError(OAuth2Error):
    error = "request_uri_not_supported"


class UnsupportedResponseModeError(OAuth2Error):
    """OAuth 2.0 Multiple Response Types §5: only ``query`` is offered (no form_post, fragment, jwt)."""

    error = "invalid_request"


RESPONSE_MODES = ("query",)


def _authorize_protocol_problem(data, redirect_uri: str) -> OAuth2Error | None:
    """What the Authlib grant does not check of an authorization request, once the client and its
    redirect URI are known (so the error goes back to the client): each parameter at most once
    (RFC 6749 §3.1), no request object (OIDC Core §6), only the response modes offered."""
    for key, values in data.lists():
        if len(values) > 1 and key != "resource":  # RFC 8707: resource may be repeated
            return InvalidRequestError(f"{key} given more than once", redirect_uri=redirect_uri)
    if "request" in data:
        return RequestNotSupportedError("request objects are not supported", redirect_uri=redirect_uri)
    if "request_uri" in data:
        return RequestUriNotSupportedError("request_uri is not supported", redirect_uri=redirect_uri)
    try:
        parse_claims_parameter(data.get("claims"))
    except ClaimsParameterError as e:
        return InvalidRequestError(str(e), redirect_uri=redirect_uri)
    mode = data.get("response_mode")
    if mode is not None and mode not in RESPONSE_MODES:
        return UnsupportedResponseModeError(f"response_mode {mode[:20]!r} is not supported; use query",
                                            redirect_uri=redirect_uri)
    return None


class Server(AuthorizationServer):
    def create_oauth2_request(self, request):
        req = FlaskOAuth2Request(flask_request)
        if flask_request.path in BODY_ONLY_PATHS:
            req.payload = _BodyPayload(flask_request)
        elif flask_request.path == "/oauth/authorize":
            req.payload = _AuthorizePayload(flask_request)
        else:
            req.payload = _Payload(flask_request)
        return req

    def authenticate_client(self, request, methods, endpoint="token"):
        problem = _basic_credentials_problem(request.headers)
        if problem:
            raise InvalidClientError(description=problem, status_code=401)
        return super().authenticate_client(request, methods, endpoint)

    def get_consent_grant(self, request=None, end_user=None):
        problem = _authorize_input_problem(flask_request.values)
        if problem:
            raise InvalidRequestError(problem)  # never redirected: the URI itself is bad
        try:
            grant = super().get_consent_grant(request, end_user)
        except UnsupportedResponseTypeError as error:
            # Authlib raises it before looking at the client; with a known client and one of its
            # redirect URIs it goes back to the client like every other error (RFC 6749 §4.1.2.1)
            error.redirect_uri = _trusted_redirect_uri(flask_request.values)
            raise
        except ValueError:
            # Authlib builds some errors from request values and refuses to (ValueError)
            raise InvalidRequestError("malformed authorization request") from None
        problem = _authorize_protocol_problem(flask_request.values, grant.redirect_uri)
        if problem is not None:
            raise problem
        grant.tongban_validated = True  # the whole request, in this request (AuthorizationCodeGrant)
        return grant

    def create_authorization_response(self, request=None, grant_user=None, grant=None):
        if not par.spend():  # a pushed request answers once (RFC 9126 §4)
            return self.handle_error_response(None, InvalidRequestError("the request_uri was already used"))
        try:
            return super().create_authorization_response(request, grant_user, grant)
        except ValueError:
            return self.handle_error_response(None, InvalidRequestError("malformed authorization request"))

    def create_token_response(self, request=None):
        repeated = _repeated_parameter()
        if repeated:
            return self.handle_error_response(None, InvalidRequestError(f"{shown(repeated)} given more than once"))
        try:
            return super().create_token_response(request)
        except ValueError:
            return self.handle_error_response(None, InvalidRequestError("malformed token request"))

    def create_endpoint_response(self, name, request=None):
        if flask_request.path in BODY_ONLY_PATHS:
            repeated = _repeated_parameter()
            if repeated:
                return self.handle_error_response(None, InvalidRequestError(f"{shown(repeated)} given more than once"))
        try:
            return super().create_endpoint_response(name, request)
        except ValueError:
            return self.handle_error_response(None, InvalidRequestError("malformed request"))

    def handle_error_response(self, request, error):
        _after_error()
        if error.redirect_uri:
            par.spend()  # an error answers a pushed request too
            # back at the client: ``state`` as sent (RFC 6749 §4.1.2.1), ``iss`` on every
            # authorization response, errors included (RFC 9207 §2)
            if error.state is None and _single(flask_request.values, "state"):
                error.state = flask_request.values["state"]
            response = super().handle_error_response(request, error)
            if response.location:
                response.location = _with_issuer(response.location)
            return response
        return super().handle_error_response(request, error)


def _after_error():
    """Reuse detection runs after the failed request rolled back, in its own transaction."""
    gctx = grant_context()
    replayed, reused, ended = gctx.replayed_code, gctx.reused_refresh, gctx.ended_authority
    gctx.replayed_code = gctx.reused_refresh = gctx.ended_authority = None
    if not replayed and not reused and not ended:
        return
    db.session.rollback()
    if ended:
        sid, client_id, scope, code_id = ended
        # checked again as read now: an ended authority ends the session (in this transaction)
        with contextlib.suppress(enterprise.AuthorityEnded):
            enterprise.claims_for_scope(sid, client_id, scope)
        db.session.execute(update(AuthorizationCode).where(AuthorizationCode.id == code_id,
                                                           AuthorizationCode.used_at.is_(None))
                           .values(used_at=utcnow()))
    if replayed:
        audit.record("code.replayed", actor=f"client:{replayed.client_id}",
                     object=f"code:{replayed.id}", outcome="failure")
        # what the code was exchanged for, read again now: a concurrent exchange that claimed it
        # after this request read it has committed by the time this request found it claimed
        now = db.session.execute(select(AuthorizationCode.family_id, AuthorizationCode.access_jti,
                                        AuthorizationCode.access_exp)
                                 .where(AuthorizationCode.id == replayed.id)).first()
        family_id, access_jti, access_exp = (now if now is not None
                                             else (replayed.family_id, replayed.access_jti, replayed.access_exp))
        if family_id:
            tokens.revoke_family(family_id, "code_replayed", "system")
        tokens.deny(access_jti, access_exp, "code_replayed", "system")
        # keep the claim: the code stays used
        db.session.execute(update(AuthorizationCode).where(AuthorizationCode.id == replayed.id)
                           .values(used_at=utcnow()))
    if reused:
        audit.record("refresh.reused", actor=f"client:{reused.client_id}",
                     object=f"family:{reused.family_id}", outcome="failure")
        tokens.revoke_family(reused.family_id, "refresh_token_reused", "system")
    db.session.commit()


server = Server()


def query_client(client_id):
    return registry.get_client(client_id)


def init_server(app: Flask) -> None:
    server.init_app(app, query_client=query_client, save_token=save_token)
    app.extensions["tongban.authorization_server"] = server  # for idp.par, which server.py imports
    server.scopes_supported = SCOPES.keys()  # a live view: packages register scopes later
    server.register_token_generator("default", tokens.JWTAccessTokenGenerator())
    if not getattr(server, "_tongban_wired", False):
        # ``server`` is shared by every app built in this process: register grants, endpoints
        # and hooks once, or a second app would add every hook twice (``iss`` twice, ...)
        server.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True), OpenIDConnect(),
                                                       GrantExtension()])
        server.register_grant(RefreshTokenGrant, [GrantExtension()])
        server.register_grant(ClientCredentialsGrant, [GrantExtension()])
        server.register_endpoint(Revocation)
        server.register_endpoint(Introspection)
        server.register_extension(Issuer())
        code_flow = OpenIDConnect()
        device.register(server, code_flow)  # RFC 8628 (kiosks)
        token_exchange.register(server)  # RFC 8693
        ciba.register(server, code_flow)  # OpenID CIBA, poll mode
        client_auth.register(server)  # private_key_jwt (the classes above list it among their methods)
        server._tongban_wired = True
    app.register_error_handler(_AuthlibHTTPException, _oauth_error_response)


def _oauth_error_response(e: _AuthlibHTTPException):
    """Resource-protection errors keep Authlib's body and headers (RFC 6750 §3: a 401 carries
    ``WWW-Authenticate``); the app's generic HTTP error handler would replace both."""
    return Response(e.body, e.code, e.headers, mimetype="application/json")


def _single(data, key: str) -> bool:
    return len(data.getlist(key)) == 1


def _with_issuer(location: str) -> str:
    """``location`` with the issuer's ``iss`` parameter, exactly once."""
    from authlib.common.urls import add_params_to_uri

    issuer = current_app.config["TONGBAN_ISSUER"]
    if any(k == "iss" and v == issuer for k, v in parse_qsl(urlsplit(location).query, keep_blank_values=True)):
        return location
    return add_params_to_uri(location, {"iss": issuer})


class Issuer(IssuerParameter):
    """RFC 9207: ``iss`` in every authorization response (mix-up defence, RFC 9700 §4.4); error
    responses get it in ``Server.handle_error_response``."""

    def get_issuer(self) -> str | None:
        return current_app.config["TONGBAN_ISSUER"]

    def add_issuer_parameter(self, authorization_server, response):
        if response.location:
            response.location = _with_issuer(response.location)


__all__ = ["OAuth2Error", "init_server", "require_oauth", "server", "user_claims"]
