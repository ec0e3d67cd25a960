"""The register of government systems and OAuth state (people's tables are in people.models).

Secrets, codes and tokens are stored only as SHA-256 digests.
"""

from __future__ import annotations

import json
from datetime import date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from people.models import User
from tongban.extensions import db


class Client(db.Model):
    """A registered government system: the register entry and its OAuth metadata."""

    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # SHA-256 hex
    secret_rotated_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # the register (清理"僵尸"系统: department, purpose, scope, approver, date, funding)
    name: Mapped[str] = mapped_column(String(200))
    department: Mapped[str] = mapped_column(String(200))
    function: Mapped[str] = mapped_column(Text, default="")
    scope_of_use: Mapped[str] = mapped_column(Text, default="")
    approver: Mapped[str] = mapped_column(String(200), default="")
    approval_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    funding_source: Mapped[str] = mapped_column(String(200), default="")
    contact: Mapped[str] = mapped_column(String(200), default="")
    # OAuth / OIDC metadata
    redirect_uris: Mapped[list] = mapped_column(JSON, default=list)
    post_logout_redirect_uris: Mapped[list] = mapped_column(JSON, default=list)
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(500), nullable=True)
    frontchannel_logout_uri: Mapped[str | None] = mapped_column(String(500), nullable=True)
    grant_types: Mapped[list] = mapped_column(JSON, default=list)
    scopes: Mapped[list] = mapped_column(JSON, default=list)
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(40), default="client_secret_basic")
    id_token_signed_response_alg: Mapped[str] = mapped_column(String(10), default="RS256")
    first_party: Mapped[bool] = mapped_column(Boolean, default=False)
    introspection_allowed: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    # token exchange (RFC 8693): the client_ids / resource URIs this system may exchange tokens for
    exchange_targets: Mapped[list | None] = mapped_column(JSON, nullable=True, default=list)
    # CIBA: "poll" for systems registered for the CIBA grant
    backchannel_token_delivery_mode: Mapped[str | None] = mapped_column(String(10), nullable=True)
    # modern profile (idp/dpop.py, idp/pairwise.py, idp/resources.py, idp/cors.py)
    require_dpop: Mapped[bool] = mapped_column(Boolean, default=False)
    subject_type: Mapped[str] = mapped_column(String(10), default="public")
    sector_identifier_uri: Mapped[str | None] = mapped_column(String(500), nullable=True)
    sector: Mapped[str | None] = mapped_column(String(255), nullable=True)
    web_origins: Mapped[list] = mapped_column(JSON, default=list)
    allowed_resources: Mapped[list] = mapped_column(JSON, default=list)
    # modern profile (docs/oidc-modern.md): the client's public keys (private_key_jwt, signed
    # request objects), PAR / signed request objects required, the FAPI 2.0 profile
    jwks: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    jwks_uri: Mapped[str | None] = mapped_column(String(500), nullable=True)
    require_par: Mapped[bool] = mapped_column(Boolean, default=False)
    require_signed_request_object: Mapped[bool] = mapped_column(Boolean, default=False)
    profile: Mapped[str] = mapped_column(String(20), default="")

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"


class ClientUsage(db.Model):
    """Per system per day: log-ins (codes issued) and tokens issued."""

    __tablename__ = "client_usage"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    logins: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    last_used: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Consent(db.Model):
    """Scopes a user granted a system; remembered until revoked."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("user_id", "client_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    scopes: Mapped[list] = mapped_column(JSON, default=list)
    granted_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class AuthorizationCode(db.Model):
    __tablename__ = "authorization_codes"
    # the OpenID Connect nonce replay check of every authorization request (server.exists_nonce)
    __table_args__ = (Index("ix_authorization_codes_client_id_nonce", "client_id", "nonce"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    sid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    redirect_uri: Mapped[str] = mapped_column(Text, default="")
    response_type: Mapped[str] = mapped_column(String(40), default="code")
    scope: Mapped[str] = mapped_column(Text, default="")
    nonce: Mapped[str | None] = mapped_column(String(255), nullable=True)
    auth_time: Mapped[int] = mapped_column(BigInteger)
    acr: Mapped[str | None] = mapped_column(String(10), nullable=True)
    amr: Mapped[str | None] = mapped_column(String(100), nullable=True)
    code_challenge: Mapped[str | None] = mapped_column(String(128), nullable=True)
    code_challenge_method: Mapped[str | None] = mapped_column(String(10), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # what the code was exchanged for, so a replayed code revokes it (RFC 6749 §4.1.2)
    family_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    access_jti: Mapped[str | None] = mapped_column(String(64), nullable=True)
    access_exp: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # RFC 8707 resources asked for, RFC 9449 dpop_jkt the code is bound to
    resources: Mapped[list | None] = mapped_column(JSON, nullable=True)
    dpop_jkt: Mapped[str | None] = mapped_column(String(64), nullable=True)

    user: Mapped[User] = relationship()

    # Authlib AuthorizationCodeMixin
    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return self.nonce

    def get_auth_time(self):
        return self.auth_time

    def get_acr(self):
        return self.acr

    def get_amr(self):
        return self.amr.split() if self.amr else None

    def is_expired(self):  # checked in query_authorization_code
        return False


class RefreshToken(db.Model):
    """Refresh tokens, rotated on use; a family shares one origin (a code exchange)."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    sid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    scope: Mapped[str] = mapped_column(Text, default="")
    auth_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    acr: Mapped[str | None] = mapped_column(String(10), nullable=True)
    amr: Mapped[str | None] = mapped_column(String(100), nullable=True)
    offline: Mapped[bool] = mapped_column(Boolean, default=False)
    issued_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # the access token issued with it (so revoking the family can deny it)
    access_jti: Mapped[str | None] = mapped_column(String(64), nullable=True)
    access_exp: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # the resources of the grant (RFC 8707), the DPoP key a public client's token is bound to
    resources: Mapped[list | None] = mapped_column(JSON, nullable=True)
    dpop_jkt: Mapped[str | None] = mapped_column(String(64), nullable=True)

    user: Mapped[User] = relationship()

    # Authlib TokenMixin-ish surface used by grants and revocation
    def get_scope(self):
        return self.scope

    def check_client(self, client):
        return self.client_id == client.client_id


class RevokedAccessToken(db.Model):
    """The deny list: revoked JWT access tokens until they would have expired."""

    __tablename__ = "revoked_access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)  # epoch seconds
    revoked_at: Mapped[datetime] = mapped_column(DateTime)


class PushedAuthorizationRequest(db.Model):
    """RFC 9126: a pushed authorization request, found by the SHA-256 of its request_uri."""

    __tablename__ = "pushed_authorization_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uri_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    params: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    # the browser that first presented it (SHA-256 of a random value in its session cookie)
    browser_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class UsedAssertion(db.Model):
    """One-time JWT ids (client assertions): SHA-256 of client_id and jti, kept until expiry."""

    __tablename__ = "used_assertions"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


def dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)
