"""Seals of organisations and the client systems each seal's organisation authorised to use them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from people.models import Organisation
from tongban.extensions import db

KINDS = ("official", "contract", "finance", "invoice", "licence")
STATUSES = ("active", "suspended", "revoked")
KIND_NAMES = {"official": "公章", "contract": "合同专用章", "finance": "财务专用章",
              "invoice": "发票专用章", "licence": "电子证照专用章"}


class Seal(db.Model):
    __tablename__ = "seals"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the public seal_id
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    code: Mapped[str] = mapped_column(String(13), unique=True)  # the 13-digit seal code
    status: Mapped[str] = mapped_column(String(20), default="active")
    status_reason: Mapped[str] = mapped_column(String(200), default="")
    valid_from: Mapped[datetime] = mapped_column(DateTime)
    valid_until: Mapped[datetime] = mapped_column(DateTime)
    alg: Mapped[str] = mapped_column(String(10), default="ec")
    cert_serial: Mapped[str] = mapped_column(ForeignKey("ca_certificates.serial"), index=True)
    picture: Mapped[bytes] = mapped_column(LargeBinary)  # the seal drawn as a one-page vector PDF
    # SM2 seals: the GB/T 38540 seal data (SESeal, DER) signed by the seal maker; None otherwise
    eseal: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)

    org: Mapped[Organisation] = relationship()


class SealAuthorisation(db.Model):
    """A client system (department API) the seal's organisation allowed to apply the seal."""

    __tablename__ = "seal_authorisations"
    __table_args__ = (UniqueConstraint("seal_id", "client_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seal_id: Mapped[str] = mapped_column(ForeignKey("seals.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    granted_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
