"""The SAML signing key: a key purpose of its own (RSA 2048, RSA-SHA256), rotated like the token
keys. A rotated-in key is published in the IdP metadata at once and signs only after
``TONGBAN_KEY_ACTIVATION_DELAY``, so service providers that refresh the metadata trust it
before they see it. Its certificate is self-signed (SAML metadata is the trust anchor; SAML 2.0
Metadata §2.4.1.1 leaves certificate validation to the relying party) and valid ten years.

pysaml2 signs through the ``xmlsec1`` binary, which reads the key from a file: each process
writes the active key to a private temporary folder (mode 0700, file 0600) and removes it at exit.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from flask import current_app
from sqlalchemy import DateTime, LargeBinary, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from tongban import audit
from tongban.bootstrap import on_bootstrap
from tongban.clock import utcnow
from tongban.extensions import db

from .crypto import seal_private_key, unseal_private_key


class SamlKey(db.Model):
    __tablename__ = "saml_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the certificate (DER), hex
    created_at: Mapped[datetime] = mapped_column(DateTime)
    activates_at: Mapped[datetime] = mapped_column(DateTime)
    cert_pem: Mapped[str] = mapped_column(Text)
    private_key: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM(KEK) of PKCS#8 DER


def create_key(activates_at: datetime | None = None) -> SamlKey:
    now = utcnow()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer = current_app.config["TONGBAN_ISSUER"]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tongban SAML IdP"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, current_app.config["TONGBAN_AUTHORITY_NAME"])])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(issuer)]), critical=False)
            .sign(key, hashes.SHA256()))
    kid = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    row = SamlKey(kid=kid, created_at=now, activates_at=activates_at or now,
                  cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
                  private_key=seal_private_key(key, "saml:" + kid))
    db.session.add(row)
    db.session.flush()
    return row


@on_bootstrap
def ensure_key() -> None:
    if db.session.execute(select(SamlKey.kid).limit(1)).first() is None:
        row = create_key()
        audit.record("key.created", actor="system", object=row.kid, detail={"purpose": "saml"})


def rotate(delay: int | None = None) -> SamlKey:
    if delay is None:
        delay = current_app.config["TONGBAN_KEY_ACTIVATION_DELAY"]
    row = create_key(utcnow() + timedelta(seconds=delay))
    audit.record("key.rotated", actor="admin", object=row.kid,
                 detail={"purpose": "saml", "activates_at": row.activates_at.isoformat(timespec="seconds")})
    return row


def _rows() -> list[SamlKey]:
    return list(db.session.execute(select(SamlKey).order_by(SamlKey.activates_at, SamlKey.created_at)).scalars())


def active() -> SamlKey:
    now = utcnow()
    live = [r for r in _rows() if r.activates_at <= now]
    if not live:
        raise LookupError("no active SAML signing key: run `flask db upgrade`")
    return live[-1]


def published() -> list[SamlKey]:
    """The active key and those rotated in after it (not yet signing)."""
    now = utcnow()
    rows = _rows()
    current = active()
    return [r for r in rows if r.kid == current.kid or r.activates_at > now]


_dir: dict[str, Path] = {}


def files(row: SamlKey) -> tuple[str, str]:
    """(key file, certificate file) of ``row`` for xmlsec1, written once per process."""
    if "d" not in _dir:
        _dir["d"] = Path(tempfile.mkdtemp(prefix="tongban-saml-"))
        atexit.register(shutil.rmtree, _dir["d"], True)
    key_path, cert_path = _dir["d"] / f"{row.kid}.key", _dir["d"] / f"{row.kid}.crt"
    if not key_path.exists():
        pem = unseal_private_key(row.private_key, "saml:" + row.kid).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        tmp = key_path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_bytes(pem)
        tmp.replace(key_path)
        cert_path.write_text(row.cert_pem)
    return str(key_path), str(cert_path)


def cert_body(row: SamlKey) -> str:
    """The certificate as metadata carries it: base64 DER without the PEM armour."""
    return "".join(line for line in row.cert_pem.splitlines() if "-----" not in line)
