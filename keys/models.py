"""Token-signing keys. Private halves are stored encrypted with the instance KEK."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tongban.extensions import db


class SigningKey(db.Model):
    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(10), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    # published from created_at; signs from activates_at until a newer key activates
    activates_at: Mapped[datetime] = mapped_column(DateTime)
    public_jwk: Mapped[str] = mapped_column(Text)
    private_key: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM(KEK) of PKCS#8 DER


class CAKey(db.Model):
    """The project CA's own keys: ``root``, ``issuing`` (signs seal certificates and CRLs), ``tsa``."""

    __tablename__ = "ca_keys"

    role: Mapped[str] = mapped_column(String(20), primary_key=True)
    alg: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    cert_der: Mapped[bytes] = mapped_column(LargeBinary)
    private_key: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM(KEK) of PKCS#8 DER


class IssuedCertificate(db.Model):
    """An end-entity certificate the issuing CA signed (one per seal); revocation lives here."""

    __tablename__ = "ca_certificates"

    serial: Mapped[str] = mapped_column(String(40), primary_key=True)  # hex, lower case
    subject: Mapped[str] = mapped_column(String(400))
    cert_der: Mapped[bytes] = mapped_column(LargeBinary)
    not_before: Mapped[datetime] = mapped_column(DateTime)
    not_after: Mapped[datetime] = mapped_column(DateTime)
    # how the private key is held: "local" (encrypted blob below) or "pkcs11" (key_ref = label)
    key_backend: Mapped[str] = mapped_column(String(10), default="local")
    key_ref: Mapped[str] = mapped_column(String(100), default="")
    private_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revocation_reason: Mapped[str] = mapped_column(String(200), default="")
    # the CA that signed it: "issuing" (EC/RSA) or "sm2-issuing" (keys/sm2ca.py); each has its own CRL
    issuer: Mapped[str] = mapped_column(String(20), default="issuing", server_default="issuing")


class RevocationList(db.Model):
    """The current CRL of each CA (``root`` covers the issuing CA; ``issuing`` covers seals)."""

    __tablename__ = "ca_crls"

    issuer: Mapped[str] = mapped_column(String(20), primary_key=True)
    number: Mapped[int] = mapped_column(Integer)
    this_update: Mapped[datetime] = mapped_column(DateTime)
    next_update: Mapped[datetime] = mapped_column(DateTime)
    der: Mapped[bytes] = mapped_column(LargeBinary)
