"""SAML 2.0 IdP state: pairwise NameIDs, pending AuthnRequests, SP log-ins (keys: keys/saml.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tongban.extensions import db


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
