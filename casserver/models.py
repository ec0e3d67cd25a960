"""Tables of the legacy protocols: the CAS/SAML part of a register entry, CAS tickets and the
CAS services each log-in session signed in to (for single logout)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tongban.extensions import db


class LegacyService(db.Model):
    """What a CAS service or SAML service provider adds to its register entry (``clients``)."""

    __tablename__ = "legacy_services"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # clients.client_id
    protocol: Mapped[str] = mapped_column(String(10))  # cas | saml
    # CAS: the service URL prefixes (scheme + host + port exact, path prefix on a segment boundary)
    service_urls: Mapped[list] = mapped_column(JSON, default=list)
    proxy_allowed: Mapped[bool] = mapped_column(Boolean, default=False)
    # SAML: the SP's entityID and its metadata as registered
    entity_id: Mapped[str | None] = mapped_column(String(500), unique=True, nullable=True)
    metadata_xml: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class CasTicket(db.Model):
    """A service ticket: stored as its SHA-256, valid once and for seconds, bound to one service URL."""

    __tablename__ = "cas_tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    service: Mapped[str] = mapped_column(Text)
    sid: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    from_new_login: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class CasLogin(db.Model):
    """A CAS service a log-in session signed in to: where its single-logout request goes.

    ``session_index`` is the service ticket, kept only once it was validated (used up: it
    can no longer be redeemed), because CAS single logout names the session by it."""

    __tablename__ = "cas_logins"
    __table_args__ = (UniqueConstraint("sid", "client_id", "session_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sid: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    service: Mapped[str] = mapped_column(Text)
    session_index: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime)
