"""E-licence tables: the catalogue, licences (one row per version), serial counters,
the departments' access log and one-time download links (stored as hashes)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tongban.extensions import db

HOLDER_CITIZEN, HOLDER_ORG = "citizen", "organisation"
# GB/T 36903 CZZTDMLX: holder code type
HOLDER_CODE_TYPE = {HOLDER_CITIZEN: "111", HOLDER_ORG: "001"}


class LicenceType(db.Model):
    """A catalogue entry: data items, validity rule and layout are data, not code."""

    __tablename__ = "licence_types"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(21), unique=True)  # ZZLXDM
    name: Mapped[str] = mapped_column(String(100), unique=True)  # ZZMC
    holder_kind: Mapped[str] = mapped_column(String(20))
    authority: Mapped[str] = mapped_column(String(200), default="")  # the defining authority's name
    items: Mapped[list] = mapped_column(JSON, default=list)
    validity: Mapped[dict] = mapped_column(JSON, default=dict)
    layout: Mapped[dict] = mapped_column(JSON, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Licence(db.Model):
    """One version of an issued e-licence. A change adds a row (version + 1) and supersedes this one."""

    __tablename__ = "licences"
    __table_args__ = (UniqueConstraint("issuer_uscc", "serial", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identifier: Mapped[str] = mapped_column(String(80), unique=True)  # ZZBS (GB/T 36904)
    # the /v/<code> lookup key (128 random bits). Kept in clear: it is printed on the
    # licence itself and only opens the masked public verdict.
    verify_code: Mapped[str] = mapped_column(String(32), unique=True)
    type_id: Mapped[int] = mapped_column(ForeignKey("licence_types.id"), index=True)
    type_code: Mapped[str] = mapped_column(String(21))
    type_name: Mapped[str] = mapped_column(String(100))
    issuer_uscc: Mapped[str] = mapped_column(String(18))  # ZZBFJGDM
    issuer_name: Mapped[str] = mapped_column(String(200))  # ZZBFJG
    serial: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer, default=1)
    holder_kind: Mapped[str] = mapped_column(String(20))
    holder_id: Mapped[str] = mapped_column(String(18), index=True)  # CZZTDM
    holder_name: Mapped[str] = mapped_column(String(200))  # CZZT
    number: Mapped[str] = mapped_column(String(80), default="")  # ZZBH, printed on it
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    issued_on: Mapped[date] = mapped_column(Date)  # ZZBFRQ
    valid_from: Mapped[date] = mapped_column(Date)  # ZZYXQQSRQ
    valid_until: Mapped[date | None] = mapped_column(Date, nullable=True)  # ZZYXQJZRQ, None = 长期
    # valid | suspended | revoked | expired | superseded
    status: Mapped[str] = mapped_column(String(20), default="valid")
    status_reason: Mapped[str] = mapped_column(Text, default="")
    status_changed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    superseded_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    status_idx: Mapped[int] = mapped_column(Integer, unique=True)  # index in the signed status list
    pdf: Mapped[bytes] = mapped_column(LargeBinary)  # the sealed PDF
    pdf_sha256: Mapped[str] = mapped_column(String(64))
    # SHA-256 of the revision the certifying seal covers (what verification compares)
    signed_sha256: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # USCC of the department that issued it: its clerks (and only they) manage it
    department_uscc: Mapped[str] = mapped_column(String(18), default="", server_default="", index=True)
    issued_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)

    type: Mapped[LicenceType] = relationship()


class LicenceCounter(db.Model):
    """Per-issuer serial counters (and the status-list index under key ``status-list``).

    Taken with ``UPDATE ... RETURNING`` inside the issuing transaction: the row lock
    serialises concurrent issuers, and a failed issue rolls the increment back.
    """

    __tablename__ = "licence_counters"

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class LicenceAccess(db.Model):
    """Every department call that touched a licence (GB/T 36906), shown in the holder's wallet."""

    __tablename__ = "licence_access"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    licence_id: Mapped[int] = mapped_column(ForeignKey("licences.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    client_id: Mapped[str] = mapped_column(String(64))
    department: Mapped[str] = mapped_column(String(200), default="")
    system: Mapped[str] = mapped_column(String(200), default="")
    operation: Mapped[str] = mapped_column(String(40))  # list | read | download | verify | fetch
    purpose: Mapped[str] = mapped_column(String(500))
    service_item: Mapped[str] = mapped_column(String(100))


class DownloadLink(db.Model):
    """A one-time, short-lived link to a watermarked copy; only the token's SHA-256 is stored."""

    __tablename__ = "licence_download_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    licence_id: Mapped[int] = mapped_column(ForeignKey("licences.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    department: Mapped[str] = mapped_column(String(200), default="")
    purpose: Mapped[str] = mapped_column(String(500))
    service_item: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # SHA-256 of the sealed revision of the watermarked copy handed out (verifies as a copy)
    copy_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


class LicenceOfd(db.Model):
    """An OFD of a licence that Tongban sealed and handed out (wallet, clerk, CLI or a shared copy):
    the SHA-256 of the whole package. An OFD verifies as a licence only when it is one of these."""

    __tablename__ = "licence_ofds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    licence_id: Mapped[int] = mapped_column(ForeignKey("licences.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    copy: Mapped[bool] = mapped_column(Boolean, default=False)  # a watermarked shared copy
    created_at: Mapped[datetime] = mapped_column(DateTime)


class LicenceDelegation(db.Model):
    """A department allowed to issue licences under another organisation's licence seal (the authority's)."""

    __tablename__ = "licence_delegations"
    __table_args__ = (UniqueConstraint("department_uscc", "issuer_uscc"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    department_uscc: Mapped[str] = mapped_column(String(18), index=True)
    issuer_uscc: Mapped[str] = mapped_column(String(18))
    granted_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
