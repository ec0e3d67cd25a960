"""The project CA: a root, an issuing CA for seal certificates, a time-stamping authority, CRLs.

Created once by ``flask db upgrade`` (a bootstrap hook); private keys are stored
encrypted under the instance KEK. Every process caches the CA (certificates,
decrypted keys, current CRLs) and reloads it when ``CA_GENERATION`` moves, i.e.
after a revocation or a CRL renewal anywhere.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta

from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flask import current_app
from sqlalchemy import select

from tongban import audit
from tongban.bootstrap import on_bootstrap
from tongban.cache import CachedLoader, Generation
from tongban.clock import utcnow
from tongban.extensions import after_commit, db

from .crypto import seal_private_key, unseal_private_key
from .errors import CaMissing, InvalidAlg, NoCrl, UnknownCertificate
from .models import CAKey, IssuedCertificate, RevocationList

CA_GENERATION = Generation("ca")
KEY_ALGS = ("ec", "rsa")
CRL_VALIDITY = timedelta(days=7)
# a CRL is renewed once less than this much of its validity is left
CRL_RENEW_BEFORE = timedelta(days=4)
ROLES = ("root", "issuing", "tsa")


def generate_private_key(alg: str):
    """EC P-256 (the default: fast) or RSA-2048 (for readers that need it)."""
    if alg == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise InvalidAlg(f"unsupported key algorithm {alg!r} (ec or rsa)")


def _serial() -> int:
    return secrets.randbits(126) | (1 << 125)


def _name(cn: str, **extra: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "CN")]
    if extra.get("org"):
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, extra["org"]))
    if extra.get("org_id"):
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, extra["org_id"]))
    if extra.get("serial"):
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, extra["serial"]))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _base_url() -> str:
    return current_app.config["TONGBAN_ISSUER"]


def _sign_hash(key):
    return hashes.SHA256()


def _build(subject: x509.Name, public_key, issuer_cert: x509.Certificate | None, issuer_key, *,
           days: int, ca: bool, path_len: int | None = None, key_usage: dict,
           eku: list | None = None, crl_path: str | None = None, not_before=None) -> x509.Certificate:
    now = not_before or utcnow().replace(microsecond=0)
    issuer_name = issuer_cert.subject if issuer_cert is not None else subject
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
         .public_key(public_key).serial_number(_serial())
         .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
         .add_extension(x509.KeyUsage(**{**dict.fromkeys(
             ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
              "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False),
             **key_usage}), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    if issuer_cert is not None:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=True)
    if crl_path:
        b = b.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(_base_url() + crl_path)], relative_name=None,
            reasons=None, crl_issuer=None)]), critical=False)
    return b.sign(issuer_key, _sign_hash(issuer_key))


# ---------------------------------------------------------------- creation (bootstrap)


def _store(role: str, alg: str, cert: x509.Certificate, key) -> CAKey:
    row = CAKey(role=role, alg=alg, created_at=utcnow(), cert_der=cert.public_bytes(serialization.Encoding.DER),
                private_key=seal_private_key(key, f"ca:{role}"))
    db.session.add(row)
    db.session.flush()
    audit.record("ca.key_created", actor="system", object=f"ca:{role}",
                 detail={"alg": alg, "serial": format(cert.serial_number, "x"),
                         "subject": cert.subject.rfc4514_string()})
    return row


@on_bootstrap
def ensure_ca() -> None:
    """On a new instance: the root, the issuing CA and the TSA (idempotent), and fresh CRLs."""
    rows = {r.role: r for r in db.session.execute(select(CAKey)).scalars()}
    alg = current_app.config.get("TONGBAN_CA_KEY_ALG", "ec")
    authority = current_app.config["TONGBAN_AUTHORITY_NAME"]
    created = False
    if "root" not in rows:
        key = generate_private_key(alg)
        cert = _build(_name("通办电子印章根CA Tongban Seal Root CA", org=authority), key.public_key(), None, key,
                      days=20 * 365, ca=True, path_len=1, key_usage={"key_cert_sign": True, "crl_sign": True})
        rows["root"] = _store("root", alg, cert, key)
        created = True
    root_cert = x509.load_der_x509_certificate(rows["root"].cert_der)
    root_key = unseal_private_key(rows["root"].private_key, "ca:root")
    if "issuing" not in rows:
        key = generate_private_key(alg)
        cert = _build(_name("通办电子印章签发CA Tongban Seal Issuing CA", org=authority), key.public_key(),
                      root_cert, root_key, days=10 * 365, ca=True, path_len=0,
                      key_usage={"key_cert_sign": True, "crl_sign": True}, crl_path="/ca/root.crl")
        rows["issuing"] = _store("issuing", alg, cert, key)
        created = True
    if "tsa" not in rows:
        issuing_cert = x509.load_der_x509_certificate(rows["issuing"].cert_der)
        issuing_key = unseal_private_key(rows["issuing"].private_key, "ca:issuing")
        key = generate_private_key(alg)
        cert = _build(_name("通办时间戳服务 Tongban TSA", org=authority), key.public_key(), issuing_cert,
                      issuing_key, days=5 * 365, ca=False,
                      key_usage={"digital_signature": True, "content_commitment": True},
                      eku=[ExtendedKeyUsageOID.TIME_STAMPING], crl_path="/ca/crl")
        rows["tsa"] = _store("tsa", alg, cert, key)
        created = True
    if created:
        after_commit(_changed)
    for issuer in ("root", "issuing"):
        _crl_row(issuer)


# ---------------------------------------------------------------- the cached CA


@dataclass
class Authority:
    role: str
    alg: str
    cert: x509.Certificate
    blob: bytes
    _key: object = None
    _asn1: asn1_x509.Certificate | None = None

    @property
    def private_key(self):
        if self._key is None:
            self._key = unseal_private_key(self.blob, f"ca:{self.role}")
        return self._key

    @property
    def asn1(self) -> asn1_x509.Certificate:
        if self._asn1 is None:
            self._asn1 = asn1_x509.Certificate.load(self.cert.public_bytes(serialization.Encoding.DER))
        return self._asn1


@dataclass
class CAState:
    authorities: dict[str, Authority]
    crls: dict[str, RevocationList] = field(default_factory=dict)
    revoked: dict[str, str] = field(default_factory=dict)  # serial hex -> reason
    _vc_cache: dict = field(default_factory=dict)

    def __getitem__(self, role: str) -> Authority:
        try:
            return self.authorities[role]
        except KeyError:
            raise CaMissing("the seal CA does not exist yet: run `flask db upgrade`") from None

    def memo(self, key, make):
        """``make()``, computed once per CA state: anything derived from the CA's keys, certificates
        or CRLs can be kept here, and is dropped with the state when the CA changes (a revocation)."""
        try:
            return self._vc_cache[key]
        except KeyError:
            value = self._vc_cache[key] = make()
            return value

    def crl_asn1(self) -> list[asn1_crl.CertificateList]:
        """The current CRLs, parsed once per state (and then shared, read-only, like the certificates)."""
        return list(self.memo("crl-asn1", lambda: [asn1_crl.CertificateList.load(c.der)
                                                   for c in self.crls.values()]))


def _load() -> CAState:
    rows = db.session.execute(select(CAKey).where(CAKey.role.in_(ROLES))).scalars().all()  # not the SM2 CA's
    state = CAState({r.role: Authority(r.role, r.alg, x509.load_der_x509_certificate(r.cert_der), r.private_key)
                     for r in rows})
    for crl in db.session.execute(select(RevocationList).where(RevocationList.issuer.in_(("root", "issuing")))
                                  ).scalars():
        db.session.expunge(crl)
        state.crls[crl.issuer] = crl
    state.revoked = dict(db.session.execute(
        select(IssuedCertificate.serial, IssuedCertificate.revocation_reason)
        .where(IssuedCertificate.issuer == "issuing", IssuedCertificate.revoked_at.is_not(None))).tuples().all())
    return state


_state = CachedLoader(CA_GENERATION, _load, check_every=1.0)


def _changed() -> None:
    """After a commit that changed the CA: reload here at once, elsewhere within a second."""
    _state.invalidate()


def ca() -> CAState:
    state = _state.get()
    if any(r not in state.crls or state.crls[r].next_update - utcnow() < CRL_RENEW_BEFORE
           for r in ("root", "issuing")) and len(state.authorities) == len(ROLES):
        # renewed in the caller's transaction; the generation moves once it commits
        for issuer in ("root", "issuing"):
            _crl_row(issuer)
        state = _load()
    return state


def root_pem() -> str:
    return ca()["root"].cert.public_bytes(serialization.Encoding.PEM).decode()


def chain() -> list[asn1_x509.Certificate]:
    """The issuing CA and the root, as embedded in every signature."""
    state = ca()
    return [state["issuing"].asn1, state["root"].asn1]


def is_revoked(serial: int | str) -> bool:
    key = serial if isinstance(serial, str) else format(serial, "x")
    return key in ca().revoked


# ---------------------------------------------------------------- end-entity certificates


def issue_seal_certificate(public_key, *, common_name: str, org_name: str, org_uscc: str, seal_code: str,
                           days: int, key_backend: str = "local", key_ref: str = "",
                           private_blob: bytes | None = None) -> IssuedCertificate:
    """A document-signing certificate naming the organisation: O = name, organizationIdentifier = USCC."""
    issuing = ca()["issuing"]
    subject = _name(common_name, org=org_name, org_id=org_uscc, serial=seal_code)
    cert = _build(subject, public_key, issuing.cert, issuing.private_key, days=days, ca=False,
                  key_usage={"digital_signature": True, "content_commitment": True}, crl_path="/ca/crl")
    row = IssuedCertificate(
        serial=format(cert.serial_number, "x"), subject=subject.rfc4514_string()[:400],
        cert_der=cert.public_bytes(serialization.Encoding.DER),
        not_before=cert.not_valid_before_utc.replace(tzinfo=None),
        not_after=cert.not_valid_after_utc.replace(tzinfo=None),
        key_backend=key_backend, key_ref=key_ref, private_key=private_blob)
    db.session.add(row)
    db.session.flush()
    audit.record("ca.cert_issued", actor="system", object=f"cert:{row.serial}", detail={"subject": row.subject})
    return row


def get_certificate(serial: str) -> IssuedCertificate:
    row = db.session.get(IssuedCertificate, serial)
    if row is None:
        raise UnknownCertificate(f"no certificate with serial {serial}")
    return row


def revoke(serial: str, reason: str, *, actor: str = "admin") -> IssuedCertificate:
    """Put a certificate on the CRL at once (the new CRL is part of the same transaction)."""
    row = get_certificate(serial)
    if row.revoked_at is None:
        row.revoked_at = utcnow().replace(microsecond=0)
        row.revocation_reason = (reason or "")[:200]
        db.session.flush()
        if row.issuer == "issuing":
            _crl_row("issuing", force=True)
        else:  # an SM2 seal certificate: the SM2 CA's CRL
            from .sm2ca import revoked_certificate

            revoked_certificate(serial)
        audit.record("ca.cert_revoked", actor=actor, object=f"cert:{serial}", detail={"reason": reason})
    return row


# ---------------------------------------------------------------- CRLs


def _crl_row(issuer: str, force: bool = False) -> RevocationList:
    row = db.session.get(RevocationList, issuer)
    now = utcnow().replace(microsecond=0)
    if row is not None and not force and row.next_update - now >= CRL_RENEW_BEFORE:
        return row
    ca_row = db.session.get(CAKey, issuer)
    cert = x509.load_der_x509_certificate(ca_row.cert_der)
    key = unseal_private_key(ca_row.private_key, f"ca:{issuer}")
    number = (row.number + 1) if row is not None else 1
    b = (x509.CertificateRevocationListBuilder().issuer_name(cert.subject)
         .last_update(now).next_update(now + CRL_VALIDITY)
         .add_extension(x509.CRLNumber(number), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
             cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value), critical=False))
    if issuer == "issuing":
        revoked = db.session.execute(select(IssuedCertificate).where(
            IssuedCertificate.issuer == "issuing", IssuedCertificate.revoked_at.is_not(None))).scalars()
        for r in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(r.serial, 16)).revocation_date(r.revoked_at)
                .build())
    der = b.sign(key, _sign_hash(key)).public_bytes(serialization.Encoding.DER)
    if row is None:
        row = RevocationList(issuer=issuer, number=number, this_update=now, next_update=now + CRL_VALIDITY, der=der)
        db.session.add(row)
    else:
        row.number, row.this_update, row.next_update, row.der = number, now, now + CRL_VALIDITY, der
    db.session.flush()
    after_commit(_changed)
    return row


def crl_der(issuer: str = "issuing") -> bytes:
    state = ca()
    if issuer not in state.crls:
        raise NoCrl("no CRL yet: run `flask db upgrade`")
    return state.crls[issuer].der


# ---------------------------------------------------------------- validation


# a context's validation time is fixed when it is made: reuse one for a minute at most
VC_REUSE_SECONDS = 60


def validation_context(*, for_signing: bool = False):
    """A pyHanko ValidationContext trusting only our root, with our current CRLs and no fetching.

    For signing, one per CA state, reused for up to a minute: pyHanko caches validated paths
    and checked CRLs in it, and signing only ever shows it our own certificates. A
    revocation makes a new CA state, hence a new context, at once. Verification gets a new
    context each time (from the state's parsed certificates and CRLs), because validating a
    document also registers the certificates that document carries in the context.
    """
    from pyhanko_certvalidator import ValidationContext

    state = ca()
    now = time.monotonic()
    cached = state._vc_cache.get("sign") if for_signing else None
    if cached is not None and now - cached[0] < VC_REUSE_SECONDS:
        return cached[1]
    vc = ValidationContext(
        trust_roots=[state["root"].asn1], other_certs=[state["issuing"].asn1, state["tsa"].asn1],
        crls=state.crl_asn1(), allow_fetching=False, revocation_mode="hard-fail")
    if for_signing:
        state._vc_cache["sign"] = (now, vc)
    return vc
