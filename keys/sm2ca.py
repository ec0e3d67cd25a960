"""The 国密 CA beside the EC/RSA one: an SM2 root, an SM2 issuing CA, the seal-maker (制章者)
key that signs GB/T 38540 seal data, SM2 seal certificates and CRLs, all SM3withSM2.

``cryptography`` cannot sign with SM2, so certificates and CRLs are assembled with asn1crypto
(RFC 5280 structures, GM/T 0015 profile: C=CN, O, organizationIdentifier = the USCC,
serialNumber = the 13-digit seal code, CN; key usage digitalSignature + nonRepudiation,
critical) and signed by ``keys.sm2``. OpenSSL's ``openssl verify`` accepts them (tests).

Stored like the other CA: ``ca_keys`` rows ``sm2-root``, ``sm2-issuing`` and ``sm2-maker``
(private keys AES-GCM under the KEK), CRLs in ``ca_crls`` (issuers ``sm2-root`` and
``sm2-issuing``), seal certificates in ``ca_certificates`` with ``issuer = 'sm2-issuing'``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from asn1crypto import crl as asn1_crl
from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509
from flask import current_app
from sqlalchemy import select

from tongban import audit
from tongban.bootstrap import on_bootstrap
from tongban.cache import CachedLoader, Generation
from tongban.clock import utcnow
from tongban.extensions import after_commit, db

from . import sm2
from .errors import CaMissing, NoCrl
from .models import CAKey, IssuedCertificate, RevocationList

SM2_GENERATION = Generation("sm2ca")
ROLES = ("sm2-root", "sm2-issuing", "sm2-maker")
CRL_ISSUERS = ("sm2-root", "sm2-issuing")
ISSUER = "sm2-issuing"  # the ``issuer`` of the seal certificates it signs
CRL_VALIDITY = timedelta(days=7)
CRL_RENEW_BEFORE = timedelta(days=4)
ROOT_CRL_PATH = "/ca/sm2-root.crl"
CRL_PATH = "/ca/sm2-crl"


# ---------------------------------------------------------------- building blocks


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _time(dt: datetime) -> asn1_x509.Time:
    dt = _aware(dt).replace(microsecond=0)
    return asn1_x509.Time(name="utc_time" if dt.year < 2050 else "general_time", value=dt)


def name(cn: str, *, org: str = "", org_id: str = "", serial: str = "") -> asn1_x509.Name:
    attrs = {"country_name": "CN"}
    if org:
        attrs["organization_name"] = org
    if org_id:
        attrs["organization_identifier"] = org_id
    if serial:
        attrs["serial_number"] = serial
    attrs["common_name"] = cn
    return asn1_x509.Name.build(attrs)


def key_id(public: sm2.SM2PublicKey) -> bytes:
    """Subject key identifier, RFC 5280 method 1 (SHA-1 of the public key's bits)."""
    return hashlib.sha1(b"\x04" + public.point).digest()  # noqa: S324  (an identifier, not security)


def _serial() -> int:
    return secrets.randbits(126) | (1 << 125)


def _ext(extn_id: str, value, critical: bool = False) -> dict:
    return {"extn_id": extn_id, "critical": critical, "extn_value": value}


def build_certificate(subject: asn1_x509.Name, public: sm2.SM2PublicKey, *, issuer: asn1_x509.Name | None,
                      issuer_key: sm2.SM2PrivateKey, issuer_key_id: bytes | None, days: int, ca: bool,
                      path_len: int | None = None, key_usage: set[str], crl_url: str | None = None,
                      not_before: datetime | None = None) -> asn1_x509.Certificate:
    """An X.509 v3 certificate signed SM3withSM2 by ``issuer_key`` (self-signed when no issuer)."""
    now = (not_before or utcnow()).replace(microsecond=0)
    extensions = [_ext("basic_constraints", {"ca": ca, **({"path_len_constraint": path_len}
                                                           if ca and path_len is not None else {})}, True),
                  _ext("key_usage", set(key_usage), True),
                  _ext("key_identifier", key_id(public))]
    if issuer_key_id is not None:
        extensions.append(_ext("authority_key_identifier", {"key_identifier": issuer_key_id}))
    if crl_url:
        extensions.append(_ext("crl_distribution_points", [
            {"distribution_point": asn1_x509.DistributionPointName(
                name="full_name", value=[asn1_x509.GeneralName(name="uniform_resource_identifier", value=crl_url)])}]))
    tbs = asn1_x509.TbsCertificate({
        "version": "v3",
        "serial_number": _serial(),
        "signature": {"algorithm": sm2.OID_SM3_WITH_SM2},
        "issuer": issuer if issuer is not None else subject,
        "validity": {"not_before": _time(now - timedelta(minutes=5)), "not_after": _time(now + timedelta(days=days))},
        "subject": subject,
        "subject_public_key_info": public.spki(),
        "extensions": extensions,
    })
    signature = issuer_key.sign(tbs.dump())
    return asn1_x509.Certificate({"tbs_certificate": tbs, "signature_algorithm": {"algorithm": sm2.OID_SM3_WITH_SM2},
                                  "signature_value": signature})


def public_key_of(cert: asn1_x509.Certificate) -> sm2.SM2PublicKey:
    return sm2.SM2PublicKey.from_spki(cert["tbs_certificate"]["subject_public_key_info"])


def signed_by(cert: asn1_x509.Certificate, issuer: asn1_x509.Certificate) -> bool:
    """True when ``cert`` names ``issuer`` and carries its valid SM3withSM2 signature."""
    try:
        if cert["signature_algorithm"]["algorithm"].dotted != sm2.OID_SM3_WITH_SM2:
            return False
        if cert["tbs_certificate"]["signature"]["algorithm"].dotted != sm2.OID_SM3_WITH_SM2:
            return False
        if cert.issuer.dump() != issuer.subject.dump():
            return False
        return public_key_of(issuer).verify(cert["tbs_certificate"].dump(), cert["signature_value"].native)
    except Exception:
        return False


# ---------------------------------------------------------------- creation (bootstrap)


def _base_url() -> str:
    return current_app.config["TONGBAN_ISSUER"]


def _store(role: str, cert: asn1_x509.Certificate, key: sm2.SM2PrivateKey) -> CAKey:
    row = CAKey(role=role, alg="sm2", created_at=utcnow(), cert_der=cert.dump(),
                private_key=sm2.seal_key(key, f"ca:{role}"))
    db.session.add(row)
    db.session.flush()
    audit.record("ca.key_created", actor="system", object=f"ca:{role}",
                 detail={"alg": "sm2", "serial": format(cert.serial_number, "x"),
                         "subject": cert.subject.human_friendly})
    return row


@on_bootstrap
def ensure_sm2_ca() -> None:
    """On a new instance: the SM2 root, issuing CA and seal-maker key (idempotent), and CRLs."""
    rows = {r.role: r for r in db.session.execute(select(CAKey).where(CAKey.role.in_(ROLES))).scalars()}
    authority = current_app.config["TONGBAN_AUTHORITY_NAME"]
    uscc = current_app.config["TONGBAN_AUTHORITY_USCC"]
    created = False
    if "sm2-root" not in rows:
        key = sm2.generate()
        cert = build_certificate(name("通办国密电子印章根CA Tongban SM2 Seal Root CA", org=authority), key.public_key(),
                                 issuer=None, issuer_key=key, issuer_key_id=None, days=20 * 365, ca=True, path_len=1,
                                 key_usage={"key_cert_sign", "crl_sign"})
        rows["sm2-root"] = _store("sm2-root", cert, key)
        created = True
    root_cert = asn1_x509.Certificate.load(rows["sm2-root"].cert_der)
    if "sm2-issuing" not in rows:
        root_key = sm2.unseal_key(rows["sm2-root"].private_key, "ca:sm2-root")
        key = sm2.generate()
        cert = build_certificate(name("通办国密电子印章签发CA Tongban SM2 Seal Issuing CA", org=authority),
                                 key.public_key(), issuer=root_cert.subject, issuer_key=root_key,
                                 issuer_key_id=key_id(public_key_of(root_cert)), days=10 * 365, ca=True, path_len=0,
                                 key_usage={"key_cert_sign", "crl_sign"}, crl_url=_base_url() + ROOT_CRL_PATH)
        rows["sm2-issuing"] = _store("sm2-issuing", cert, key)
        created = True
    if "sm2-maker" not in rows:
        issuing_cert = asn1_x509.Certificate.load(rows["sm2-issuing"].cert_der)
        issuing_key = sm2.unseal_key(rows["sm2-issuing"].private_key, "ca:sm2-issuing")
        key = sm2.generate()
        cert = build_certificate(name("通办电子印章制章系统 Tongban Seal Maker", org=authority, org_id=uscc),
                                 key.public_key(), issuer=issuing_cert.subject, issuer_key=issuing_key,
                                 issuer_key_id=key_id(public_key_of(issuing_cert)), days=5 * 365, ca=False,
                                 key_usage={"digital_signature", "non_repudiation"}, crl_url=_base_url() + CRL_PATH)
        rows["sm2-maker"] = _store("sm2-maker", cert, key)
        created = True
    if created:
        after_commit(_changed)
    for issuer in CRL_ISSUERS:
        _crl_row(issuer)


# ---------------------------------------------------------------- the cached CA


@dataclass
class SM2Authority:
    role: str
    cert: asn1_x509.Certificate
    blob: bytes
    _key: sm2.SM2PrivateKey | None = None

    @property
    def private_key(self) -> sm2.SM2PrivateKey:
        if self._key is None:
            self._key = sm2.unseal_key(self.blob, f"ca:{self.role}")
        return self._key

    @property
    def public_key(self) -> sm2.SM2PublicKey:
        return public_key_of(self.cert)

    @property
    def key_id(self) -> bytes:
        return key_id(self.public_key)


@dataclass
class SM2State:
    authorities: dict[str, SM2Authority]
    crls: dict[str, RevocationList] = field(default_factory=dict)
    revoked: dict[str, str] = field(default_factory=dict)  # serial hex -> reason

    def __getitem__(self, role: str) -> SM2Authority:
        try:
            return self.authorities[role]
        except KeyError:
            raise CaMissing("the SM2 seal CA does not exist yet: run `flask db upgrade`") from None


def _load() -> SM2State:
    rows = db.session.execute(select(CAKey).where(CAKey.role.in_(ROLES))).scalars().all()
    state = SM2State({r.role: SM2Authority(r.role, asn1_x509.Certificate.load(r.cert_der), r.private_key)
                      for r in rows})
    for crl in db.session.execute(select(RevocationList).where(RevocationList.issuer.in_(CRL_ISSUERS))).scalars():
        db.session.expunge(crl)
        state.crls[crl.issuer] = crl
    state.revoked = dict(db.session.execute(
        select(IssuedCertificate.serial, IssuedCertificate.revocation_reason)
        .where(IssuedCertificate.issuer == ISSUER, IssuedCertificate.revoked_at.is_not(None))).tuples().all())
    return state


_state = CachedLoader(SM2_GENERATION, _load, check_every=1.0)


def _changed() -> None:
    _state.invalidate()


def sm2ca() -> SM2State:
    state = _state.get()
    if len(state.authorities) == len(ROLES) and any(
            r not in state.crls or state.crls[r].next_update - utcnow() < CRL_RENEW_BEFORE for r in CRL_ISSUERS):
        for issuer in CRL_ISSUERS:
            _crl_row(issuer)
        state = _load()
    return state


def root_pem() -> str:
    return asn1_pem.armor("CERTIFICATE", sm2ca()["sm2-root"].cert.dump()).decode()


def issuing_pem() -> str:
    return asn1_pem.armor("CERTIFICATE", sm2ca()["sm2-issuing"].cert.dump()).decode()


def is_revoked(serial: int | str) -> bool:
    key = serial if isinstance(serial, str) else format(serial, "x")
    return key in sm2ca().revoked


# ---------------------------------------------------------------- seal certificates


def issue_seal_certificate(public: sm2.SM2PublicKey, *, common_name: str, org_name: str, org_uscc: str,
                           seal_code: str, days: int, private_blob: bytes, key_ref: str = "") -> IssuedCertificate:
    """An SM2 seal certificate (GM/T 0015 profile) from the SM2 issuing CA."""
    issuing = sm2ca()["sm2-issuing"]
    subject = name(common_name, org=org_name, org_id=org_uscc, serial=seal_code)
    cert = build_certificate(subject, public, issuer=issuing.cert.subject, issuer_key=issuing.private_key,
                             issuer_key_id=issuing.key_id, days=days, ca=False,
                             key_usage={"digital_signature", "non_repudiation"}, crl_url=_base_url() + CRL_PATH)
    validity = cert["tbs_certificate"]["validity"]
    row = IssuedCertificate(
        serial=format(cert.serial_number, "x"), subject=cert.subject.human_friendly[:400], cert_der=cert.dump(),
        not_before=validity["not_before"].native.astimezone(UTC).replace(tzinfo=None),
        not_after=validity["not_after"].native.astimezone(UTC).replace(tzinfo=None),
        key_backend="local", key_ref=key_ref, private_key=private_blob, issuer=ISSUER)
    db.session.add(row)
    db.session.flush()
    audit.record("ca.cert_issued", actor="system", object=f"cert:{row.serial}",
                 detail={"subject": row.subject, "alg": "sm2"})
    return row


def validate_seal_certificate(cert: asn1_x509.Certificate, at: datetime) -> dict:
    """Is ``cert`` an SM2 certificate of our issuing CA, within validity at ``at``, not revoked?

    ``{"trusted": bool, "revoked": bool, "in_validity": bool, "reason": str}``; trusted means
    the chain to our SM2 root verifies (the issuing CA's certificate under the root's key, the
    seal certificate under the issuing CA's key).
    """
    state = sm2ca()
    root, issuing = state["sm2-root"].cert, state["sm2-issuing"].cert
    trusted = signed_by(issuing, root) and signed_by(cert, issuing)
    try:
        validity = cert["tbs_certificate"]["validity"]
        at = _aware(at)
        in_validity = validity["not_before"].native <= at <= validity["not_after"].native
        usage = cert.key_usage_value.native if cert.key_usage_value is not None else set()
        ca_flag = bool(cert.basic_constraints_value and cert.basic_constraints_value["ca"].native)
    except Exception:
        return {"trusted": False, "revoked": False, "in_validity": False, "reason": "malformed certificate"}
    if "digital_signature" not in usage or ca_flag:
        trusted = False
    revoked = trusted and format(cert.serial_number, "x") in state.revoked
    reason = "" if trusted else "not issued by the SM2 seal CA"
    return {"trusted": trusted, "revoked": revoked, "in_validity": in_validity, "reason": reason}


# ---------------------------------------------------------------- CRLs


def _crl_row(issuer: str, force: bool = False) -> RevocationList:
    row = db.session.get(RevocationList, issuer)
    now = utcnow().replace(microsecond=0)
    if row is not None and not force and row.next_update - now >= CRL_RENEW_BEFORE:
        return row
    ca_row = db.session.get(CAKey, issuer)
    cert = asn1_x509.Certificate.load(ca_row.cert_der)
    key = sm2.unseal_key(ca_row.private_key, f"ca:{issuer}")
    number = (row.number + 1) if row is not None else 1
    tbs = {
        "version": "v2",
        "signature": {"algorithm": sm2.OID_SM3_WITH_SM2},
        "issuer": cert.subject,
        "this_update": _time(now),
        "next_update": _time(now + CRL_VALIDITY),
        "crl_extensions": [_ext("crl_number", number),
                           _ext("authority_key_identifier", {"key_identifier": key_id(public_key_of(cert))})],
    }
    if issuer == ISSUER:
        revoked = db.session.execute(select(IssuedCertificate).where(
            IssuedCertificate.issuer == ISSUER, IssuedCertificate.revoked_at.is_not(None))).scalars().all()
        if revoked:
            tbs["revoked_certificates"] = [{"user_certificate": int(r.serial, 16),
                                            "revocation_date": _time(r.revoked_at)} for r in revoked]
    tbs_obj = asn1_crl.TbsCertList(tbs)
    der = asn1_crl.CertificateList({"tbs_cert_list": tbs_obj,
                                    "signature_algorithm": {"algorithm": sm2.OID_SM3_WITH_SM2},
                                    "signature": key.sign(tbs_obj.dump())}).dump()
    if row is None:
        row = RevocationList(issuer=issuer, number=number, this_update=now, next_update=now + CRL_VALIDITY, der=der)
        db.session.add(row)
    else:
        row.number, row.this_update, row.next_update, row.der = number, now, now + CRL_VALIDITY, der
    db.session.flush()
    after_commit(_changed)
    return row


def revoked_certificate(serial: str) -> None:
    """An SM2 seal certificate was revoked (keys.ca.revoke): a new CRL in the same transaction."""
    _crl_row(ISSUER, force=True)


def crl_der(issuer: str = ISSUER) -> bytes:
    state = sm2ca()
    if issuer not in state.crls:
        raise NoCrl("no SM2 CRL yet: run `flask db upgrade`")
    return state.crls[issuer].der


__all__ = ["CRL_PATH", "ISSUER", "ROLES", "build_certificate", "crl_der", "ensure_sm2_ca", "is_revoked",
           "issue_seal_certificate", "name", "public_key_of", "root_pem", "signed_by", "sm2ca",
           "validate_seal_certificate"]
