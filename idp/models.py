"""Accounts, organisations, the register of government systems and OAuth state.

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
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tongban.extensions import db
from tongban.identifiers import parse_id_number


class User(db.Model):
    """A citizen account (natural person), identified by ID number."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sub: Mapped[str] = mapped_column(String(40), unique=True)  # stable pairwise-free subject id
    id_number: Mapped[str] = mapped_column(String(18), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(20), unique=True, nullable=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    # assurance level 1..5 (STANDARDS.md: L1 self-registered ... L5 in person / certificate)
    assurance_level: Mapped[int] = mapped_column(Integer, default=1)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    password_changed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    roles: Mapped[list[StaffRole]] = relationship(back_populates="user", cascade="all, delete-orphan")

    def get_user_id(self) -> str:  # Authlib
        return self.sub

    @property
    def birthdate(self) -> date:
        return parse_id_number(self.id_number).birthdate

    @property
    def gender(self) -> str:
        return parse_id_number(self.id_number).gender

    @property
    def acr(self) -> str:
        return f"L{self.assurance_level}"

    def has_role(self, role: str) -> bool:
        return any(r.role == role for r in self.roles)


class Organisation(db.Model):
    """An enterprise, public institution or government body, identified by its USCC."""

    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uscc: Mapped[str] = mapped_column(String(18), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    legal_rep_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)

    legal_rep: Mapped[User | None] = relationship()


class StaffRole(db.Model):
    """A person's role in an organisation: clerk, seal-admin, auditor or admin."""

    __tablename__ = "staff_roles"
    __table_args__ = (UniqueConstraint("user_id", "org_id", "role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime)

    user: Mapped[User] = relationship(back_populates="roles")
    org: Mapped[Organisation] = relationship()


class PopulationRecord(db.Model):
    """The local stand-in for the population register the IdentityVerifier checks."""

    __tablename__ = "population_register"

    id_number: Mapped[str] = mapped_column(String(18), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class LoginEvent(db.Model):
    """A user's recent log-in history (shown on the account page)."""

    __tablename__ = "login_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    outcome: Mapped[str] = mapped_column(String(20))  # success | bad_password | locked


class LoginThrottle(db.Model):
    """Wrong-password state of one (account, client address) pair: tries in flight, confirmed
    failures, the pair's lock and how many locks it served (each lasts twice the last)."""

    __tablename__ = "login_throttles"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)  # an IPv4 address or IPv6 /64
    failures: Mapped[int] = mapped_column(Integer, default=0)
    pending: Mapped[int] = mapped_column(Integer, default=0)
    pending_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    locks: Mapped[int] = mapped_column(Integer, default=0)


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


class LoginSession(db.Model):
    """A single-sign-on session: one per browser log-in; its id is the ``sid`` claim."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sid: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # of the SSO cookie value
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    auth_time: Mapped[datetime] = mapped_column(DateTime)
    acr: Mapped[str] = mapped_column(String(10), default="L1")
    amr: Mapped[str] = mapped_column(String(100), default="pwd")  # space-separated
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_seen: Mapped[datetime] = mapped_column(DateTime)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)

    user: Mapped[User] = relationship()


class SessionClient(db.Model):
    """Which systems were signed in through a session (for logout everywhere)."""

    __tablename__ = "session_clients"

    sid: Mapped[str] = mapped_column(String(64), ForeignKey("login_sessions.sid", ondelete="CASCADE"),
                                     primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_at: Mapped[datetime] = mapped_column(DateTime)
    last_at: Mapped[datetime] = mapped_column(DateTime)


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
