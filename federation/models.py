"""Tables of the upstream identity providers (brokering): the register of upstreams, the link
of an upstream subject to an account, log-ins under way, federated sessions and the logout
tokens already used."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tongban.extensions import db


class Upstream(db.Model):
    """An OpenID provider people may log in with (the province's, the national platform's)."""

    __tablename__ = "upstreams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    issuer: Mapped[str] = mapped_column(String(300))
    client_id: Mapped[str] = mapped_column(String(200))
    client_secret: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM under the instance KEK
    scope: Mapped[str] = mapped_column(String(300), default="openid profile")
    id_number_claim: Mapped[str] = mapped_column(String(100), default="id_number")
    verified_claim: Mapped[str] = mapped_column(String(100), default="id_number_verified")
    name_claim: Mapped[str] = mapped_column(String(100), default="name")
    acr_map: Mapped[dict] = mapped_column(JSON, default=dict)  # upstream acr -> "L1".."L5"
    trusted_id_numbers: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class UpstreamLink(db.Model):
    """This upstream's subject is this account (one account per upstream subject)."""

    __tablename__ = "upstream_links"
    __table_args__ = (UniqueConstraint("upstream_id", "upstream_sub"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upstream_id: Mapped[int] = mapped_column(ForeignKey("upstreams.id", ondelete="CASCADE"), index=True)
    upstream_sub: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class FederationRequest(db.Model):
    """A log-in sent to an upstream and not yet back: keyed by the digest of ``state``, bound to
    the browser that started it (digest of a value in its session cookie), used once."""

    __tablename__ = "federation_requests"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    upstream_id: Mapped[int] = mapped_column(ForeignKey("upstreams.id", ondelete="CASCADE"))
    browser_hash: Mapped[str] = mapped_column(String(64))
    secrets: Mapped[bytes] = mapped_column(LargeBinary)  # sealed JSON: nonce, PKCE code_verifier
    next_url: Mapped[str] = mapped_column(String(2000), default="/")
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class FederatedSession(db.Model):
    """A Tongban log-in session that an upstream authenticated: who the upstream said it was,
    at which level, its session id there (for back-channel logout) and its ID token (sealed; the
    ``id_token_hint`` of the logout at the upstream)."""

    __tablename__ = "federated_sessions"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)  # login_sessions.sid
    upstream_id: Mapped[int] = mapped_column(ForeignKey("upstreams.id", ondelete="CASCADE"), index=True)
    upstream_sub: Mapped[str] = mapped_column(String(255), index=True)
    upstream_sid: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    upstream_acr: Mapped[str | None] = mapped_column(String(255), nullable=True)
    id_token: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class UsedLogoutToken(db.Model):
    """A back-channel logout token's ``jti`` seen from an upstream: refused a second time."""

    __tablename__ = "federation_logout_jtis"

    upstream_id: Mapped[int] = mapped_column(ForeignKey("upstreams.id", ondelete="CASCADE"), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
