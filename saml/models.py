"""SAML 2.0 IdP state: signing keys, pairwise NameIDs, pending AuthnRequests, SP log-ins."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tongban.extensions import db


class SamlKey(db.Model):
    """The IdP's signing key pair (RSA 2048) and its self-signed certificate (published in the
    metadata); rotated like the token keys: published first, signing from ``activates_at``."""

    __tablename__ = "saml_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the certificate, hex
    created_at: Mapped[datetime] = mapped_column(DateTime)
    activates_at: Mapped[datetime] = mapped_column(DateTime)
    cert_pem: Mapped[str] = mapped_column(Text)
    private_key: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM(KEK) of PKCS#8 DER


class SamlNameId(db.Model):
    """The persistent, pairwise NameID of one person at one SP (random, never derived from the sub)."""

    __tablename__ = "saml_name_ids"
    __table_args__ = (UniqueConstraint("user_id", "client_id"), UniqueConstraint("client_id", "name_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(64))
    name_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class SamlRequest(db.Model):
    """An AuthnRequest checked and waiting for the person to log in; answered once.

    (client, request ID) is unique: the same request presented again is refused (replay)."""

    __tablename__ = "saml_requests"
    __table_args__ = (UniqueConstraint("client_id", "request_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(200))
    acs_url: Mapped[str] = mapped_column(Text)
    relay_state: Mapped[str | None] = mapped_column(Text, nullable=True)
    force_authn: Mapped[bool] = mapped_column(Boolean, default=False)
    is_passive: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class SamlLogin(db.Model):
    """An SP a log-in session signed in to: whom to send a LogoutRequest when it ends."""

    __tablename__ = "saml_logins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sid: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    name_id: Mapped[str] = mapped_column(String(64))
    session_index: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime)
