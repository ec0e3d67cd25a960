"""Seal operations: create, authorise, revoke; seal a PDF (PAdES B-LT); verify a PDF.

No Flask request objects here. Services flush; the request or CLI command commits.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime

from asn1crypto import x509 as asn1_x509
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from keys import ca as ca_service
from keys import signers
from people.accounts import get_org
from people.models import Organisation, StaffRole, User
from tongban import audit
from tongban.bootstrap import on_bootstrap
from tongban.clock import utcnow
from tongban.errors import NotFound, TongbanError, ValidationError
from tongban.extensions import db
from tongban.i18n import localised

from .errors import (
    BadPdf,
    NotAuthorised,
    SealingRefused,
    SealNotUsable,
    TooManySignatures,
    VerificationTooLong,
    VerifierBusy,
)
from .models import KIND_NAMES, KINDS, Seal, SealAuthorisation
from .picture import DIAMETER_MM, PURPOSE_TEXT, render

SEAL_SIZE_PT = DIAMETER_MM / 25.4 * 72


class _NoFetchingIsExpected(logging.Filter):
    """We embed revocation data from our own CA's CRLs; pyHanko's "fetching is not allowed" is by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "fetching is not allowed" not in record.getMessage()


logging.getLogger("pyhanko.sign.signers.pdf_signer").addFilter(_NoFetchingIsExpected())
DEFAULT_VALID_DAYS = 3 * 365


# ---------------------------------------------------------------- seals


def _new_code(uscc: str) -> str:
    """13 digits: the administrative division (USCC positions 3-8) and a 7-digit number."""
    division = uscc[2:8] if uscc[2:8].isdigit() else "000000"
    for _attempt in range(20):
        code = division + f"{secrets.randbelow(10**7):07d}"
        if db.session.execute(select(Seal.id).where(Seal.code == code)).first() is None:
            return code
    raise TongbanError("could not allocate a seal code", "code_exhausted", 500)  # pragma: no cover


def create_seal(org_uscc: str, name: str, kind: str = "official", *, alg: str = "ec", backend: str | None = None,
                valid_days: int = DEFAULT_VALID_DAYS, actor: str = "admin") -> Seal:
    """A seal with its key (local or PKCS#11), its certificate from our CA, and its picture."""
    if alg == "sm2":  # 国密: SM2 key and certificate, GB/T 38540 seal data (seal/gm.py)
        from .gm import create_sm2_seal

        return create_sm2_seal(org_uscc, name, kind, backend=backend, valid_days=valid_days, actor=actor)
    org = get_org(org_uscc)
    if kind not in KINDS:
        raise ValidationError(f"unknown seal kind {kind!r} (one of {', '.join(KINDS)})", "invalid_kind")
    name = (name or "").strip() or f"{org.name}{KIND_NAMES[kind]}"
    if len(name) > 200:
        raise ValidationError("seal name too long", "invalid_name")
    if alg not in ca_service.KEY_ALGS:
        raise ValidationError(f"unsupported key algorithm {alg!r} (ec or rsa)", "invalid_alg")
    if not 1 <= valid_days <= 20 * 365:
        raise ValidationError("validity must be 1 day to 20 years", "invalid_validity")
    seal_id = secrets.token_hex(8)
    code = _new_code(org.uscc)
    key_backend = signers.backend(backend)
    public_key, key_ref, blob = key_backend.generate(alg, f"seal-{seal_id}")
    cert = ca_service.issue_seal_certificate(
        public_key, common_name=name, org_name=org.name, org_uscc=org.uscc, seal_code=code, days=valid_days,
        key_backend=key_backend.name, key_ref=key_ref, private_blob=blob)
    seal = Seal(id=seal_id, org_id=org.id, name=name, kind=kind, code=code, status="active",
                valid_from=cert.not_before, valid_until=cert.not_after, alg=alg, cert_serial=cert.serial,
                picture=render(org.name, PURPOSE_TEXT[kind], code), created_at=utcnow())
    db.session.add(seal)
    db.session.flush()
    audit.record("seal.created", actor=actor, object=f"seal:{seal_id}",
                 detail={"org": org.uscc, "name": name, "kind": kind, "code": code, "alg": alg,
                         "backend": key_backend.name, "cert_serial": cert.serial})
    return seal


@on_bootstrap
def ensure_authority_seal() -> None:
    """The operating authority's licence-issuing seal (电子证照专用章), once."""
    from flask import current_app

    uscc = current_app.config["TONGBAN_AUTHORITY_USCC"]
    if get_active_seal(uscc, "licence") is None:
        org = get_org(uscc)
        create_seal(uscc, f"{org.name}电子证照专用章", "licence", actor="system")


def get_seal(seal_id: str) -> Seal:
    seal_id = str(seal_id or "")
    # a key no seal can have is not looked up (PostgreSQL refuses NUL in a text parameter)
    seal = db.session.get(Seal, seal_id) if seal_id and len(seal_id) <= 64 and "\x00" not in seal_id else None
    if seal is None:
        raise NotFound(f"no seal {seal_id}", "unknown_seal")
    return seal


def list_seals(org_uscc: str | None = None) -> list[Seal]:
    q = select(Seal).order_by(Seal.created_at)
    if org_uscc:
        q = q.where(Seal.org_id == get_org(org_uscc).id)
    return list(db.session.execute(q).scalars())


def get_active_seal(org_uscc: str, kind: str = "licence", alg: str | None = None) -> Seal | None:
    """The organisation's newest active seal of ``kind`` within its validity, or None: a PAdES
    (EC/RSA) seal, or with ``alg="sm2"`` an SM2 seal (for OFD)."""
    now = utcnow()
    return db.session.execute(
        select(Seal).join(Organisation, Organisation.id == Seal.org_id)
        .where(Organisation.uscc == org_uscc.strip().upper(), Seal.kind == kind, Seal.status == "active",
               Seal.valid_from <= now, Seal.valid_until > now,
               Seal.alg == "sm2" if alg == "sm2" else Seal.alg != "sm2")
        .order_by(Seal.created_at.desc()).limit(1)
    ).scalar_one_or_none()


def officers(seal: Seal) -> list[User]:
    """The people allowed to use the seal: role ``seal-admin`` in the seal's organisation."""
    return list(db.session.execute(
        select(User).join(StaffRole, StaffRole.user_id == User.id)
        .where(StaffRole.org_id == seal.org_id, StaffRole.role == "seal-admin")).scalars())


def check_officer(seal: Seal, user: User) -> None:
    if not db.session.execute(select(StaffRole.id).where(
            StaffRole.user_id == user.id, StaffRole.org_id == seal.org_id, StaffRole.role == "seal-admin")).first():
        raise NotAuthorised("only the seal officers (seal-admin) of its organisation may use this seal")


def authorise_client(seal_id: str, client_id: str, *, actor: str = "admin") -> SealAuthorisation:
    from idp.protection import get_row

    seal = get_seal(seal_id)
    get_row(client_id)  # NotFound for an unknown system
    row = db.session.execute(select(SealAuthorisation).where(
        SealAuthorisation.seal_id == seal.id, SealAuthorisation.client_id == client_id)).scalar_one_or_none()
    if row is None:
        row = SealAuthorisation(seal_id=seal.id, client_id=client_id, granted_by=actor, created_at=utcnow())
        db.session.add(row)
        db.session.flush()
        audit.record("seal.client_authorised", actor=actor, object=f"seal:{seal.id}", detail={"client_id": client_id})
    return row


def withdraw_client(seal_id: str, client_id: str, *, actor: str = "admin") -> None:
    seal = get_seal(seal_id)
    row = db.session.execute(select(SealAuthorisation).where(
        SealAuthorisation.seal_id == seal.id, SealAuthorisation.client_id == client_id)).scalar_one_or_none()
    if row is not None:
        db.session.delete(row)
        db.session.flush()
        audit.record("seal.client_withdrawn", actor=actor, object=f"seal:{seal.id}", detail={"client_id": client_id})


def check_client(seal: Seal, client_id: str) -> None:
    if not db.session.execute(select(SealAuthorisation.id).where(
            SealAuthorisation.seal_id == seal.id, SealAuthorisation.client_id == client_id)).first():
        raise NotAuthorised("this system is not authorised by the seal's organisation to use the seal")


def set_status(seal_id: str, status: str, reason: str = "", *, actor: str = "admin") -> Seal:
    """Suspend or resume a seal; revoking also puts its certificate on the CRL (and is final)."""
    seal = get_seal(seal_id)
    if status not in ("active", "suspended", "revoked"):
        raise ValidationError(f"unknown status {status!r}", "invalid_status")
    if seal.status == "revoked" and status != "revoked":
        raise SealNotUsable("a revoked seal cannot be reinstated")
    if status == "revoked" and not (reason or "").strip():
        raise ValidationError("a reason is required to revoke a seal", "reason_required")
    seal.status, seal.status_reason = status, (reason or "")[:200]
    if status == "revoked":
        ca_service.revoke(seal.cert_serial, reason, actor=actor)
    db.session.flush()
    audit.record(f"seal.{ {'active': 'resumed', 'suspended': 'suspended', 'revoked': 'revoked'}[status]}",
                 actor=actor, object=f"seal:{seal.id}", detail={"reason": reason})
    return seal


def revoke_seal(seal_id: str, reason: str, *, actor: str = "admin") -> Seal:
    return set_status(seal_id, "revoked", reason, actor=actor)


def uses(seal_id: str, limit: int = 100) -> list[audit.AuditLog]:
    """The seal's log (every use, and changes), newest first: what its organisation sees."""
    return list(db.session.execute(
        select(audit.AuditLog).where(audit.AuditLog.object == f"seal:{seal_id}")
        .order_by(audit.AuditLog.id.desc()).limit(limit)).scalars())


# ---------------------------------------------------------------- sealing


def _reader(pdf: bytes, *, incremental: bool = False):
    """A reader of ``pdf`` or, with ``incremental``, a writer appending to it (whose ``prev`` reads it)."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.reader import PdfFileReader

    from .pdfcheck import damaged, decode_limits  # pyHanko: imported when a PDF is read

    if not isinstance(pdf, bytes | bytearray) or b"%PDF-" not in pdf[:1024]:
        raise BadPdf("not a PDF file")
    try:
        if incremental:
            writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False, decode_limits=decode_limits())
            writer.prev.root  # noqa: B018  (forces the trailer and catalogue to be read)
            return writer
        reader = PdfFileReader(io.BytesIO(pdf), strict=False, decode_limits=decode_limits())
        reader.root  # noqa: B018
        return reader
    except TongbanError:
        raise
    except Exception as e:
        raise damaged(e) from None


def read_pdf(pdf: bytes):
    """A reader of ``pdf`` that passed ``check_structure``, and its page count; BadPdf otherwise."""
    from .pdfcheck import check_structure

    reader = _reader(pdf)
    return reader, check_structure(reader)["pages"]


# Parsed seal pictures, by content: importing a picture into a document reads every object of
# it (the font program above all); from an already parsed reader that is a copy. A reader reads
# lazily from its stream, so imports are serialised (each takes a fraction of a millisecond).
_pictures: OrderedDict[bytes, object] = OrderedDict()
_pictures_lock = threading.Lock()
_PICTURES_KEPT = 64


def _import_picture(writer, picture: bytes):
    """The seal picture's page as a form XObject of ``writer``."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    key = hashlib.sha256(picture).digest()
    with _pictures_lock:
        reader = _pictures.get(key)
        if reader is None:
            reader = _pictures[key] = PdfFileReader(io.BytesIO(picture))
            if len(_pictures) > _PICTURES_KEPT:
                _pictures.popitem(last=False)
        else:
            _pictures.move_to_end(key)
        return writer.import_page_as_xobject(reader, page_ix=0)


@functools.cache
def _picture_content_class():
    import binascii
    import uuid

    from pyhanko.pdf_utils.content import PdfContent
    from pyhanko.pdf_utils.layout import BoxConstraints

    class SealPicture(PdfContent):
        """The seal's picture as a pyHanko background (imported from bytes, not a file)."""

        def __init__(self, picture: bytes):
            super().__init__()
            self.picture = picture

        def render(self) -> bytes:
            xobj = _import_picture(self._ensure_writer, self.picture)
            name = b"/Seal" + binascii.hexlify(uuid.uuid4().bytes[:6])
            self.resources.xobject[name.decode("ascii")] = xobj
            x1, y1, x2, y2 = xobj.get_object()["/BBox"]
            self.box = BoxConstraints(width=abs(x1 - x2), height=abs(y1 - y2))
            return name + b" Do"

    return SealPicture


def _stamp_style(seal: Seal):
    from pyhanko.pdf_utils import layout
    from pyhanko.stamp import StaticStampStyle

    return StaticStampStyle(
        background=_picture_content_class()(seal.picture), border_width=0,
        background_layout=layout.SimpleBoxLayoutRule(
            x_align=layout.AxisAlignment.ALIGN_MID, y_align=layout.AxisAlignment.ALIGN_MID,
            margins=layout.Margins(0, 0, 0, 0), inner_content_scaling=layout.InnerScaling.SHRINK_TO_FIT))


def _placement(writer, page: int, existing: int, count: int) -> tuple[int, tuple[float, float, float, float]]:
    """Default box: bottom right of the page, moved left for each seal already on the document."""
    from .pdfcheck import visible_box

    if not -count <= page < count:
        raise ValidationError(f"page {page} does not exist (the document has {count})", "invalid_page")
    x1, y1, x2, _y2 = visible_box(writer, page, count)
    size = SEAL_SIZE_PT
    right = x2 - 56 - existing * (size + 12)
    if right - size < x1 + 10:
        right = x2 - 56
    bottom = y1 + 56 + (existing * 20 if right == x2 - 56 and existing else 0)
    return page % count, (right - size, bottom, right, bottom + size)


class _ReservationTooSmall(Exception):
    pass


# Room left in /Contents beyond the signature's measured size. pyHanko adds 50% because a remote
# TSA's answers may vary; ours are fixed-shape (only an ECDSA signature or a random serial may be
# a byte or two longer than in the measured dry run). Verifiers parse the whole hex string.
_RESERVE_MARGIN = 512


async def _sign(pdf_signer, writer, out: io.BytesIO, cert_serial: str) -> None:
    """pyHanko's own signing steps (its "interrupted signing" API), with what does not depend on
    the document done once per seal and CA state: the signer's certificate path and revocation
    data (pre-sign validation), and the size of the signature container (a dry-run signature).
    """
    from pyhanko.sign.general import SigningError
    from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes

    session = pdf_signer.init_signing_session(writer)
    meta, state = pdf_signer.signature_meta, ca_service.ca()
    vc = meta.validation_context
    try:
        if vc is None:
            validation_info = None
        else:
            # the validation context is reused for a minute per CA state (keys/ca.py): so is its verdict
            box = state.memo(("presign", cert_serial), dict)
            entry = box.get("latest")
            if entry is None or entry[0] is not vc:
                entry = box["latest"] = (vc, await session.perform_presign_validation(writer))
            validation_info = entry[1]
        key = ("reserve", cert_serial, vc is not None, pdf_signer.default_timestamper is not None)
        reserved = state.memo(key, dict)
        if "bytes" not in reserved:
            if reserved.get("generous"):  # our margin once proved too small: pyHanko's 50% from now on
                reserved["bytes"] = await session.estimate_signature_container_size(validation_info)
            else:
                tight = await session.estimate_signature_container_size(validation_info, tight=True)
                reserved["bytes"] = tight + 2 * _RESERVE_MARGIN
        tbs = session.prepare_tbs_document(validation_info=validation_info, bytes_reserved=reserved["bytes"])
        digest, res_output = tbs.digest_tbs_document(output=out)
        try:
            post = await tbs.perform_signature(
                document_digest=digest.document_digest,
                pdf_cms_signed_attrs=PdfCMSSignedAttributes(
                    signing_time=session.system_time,
                    adobe_revinfo_attr=None if validation_info is None else validation_info.adobe_revinfo_attr,
                    cades_signed_attrs=meta.cades_signed_attr_spec))
        except SigningError as e:
            if "larger than expected" in str(e):
                reserved.clear()
                reserved["generous"] = True
                raise _ReservationTooSmall() from e
            raise
        await post.post_signature_processing(res_output)
    finally:
        if vc is not None:
            await vc.aclose()


def sign_pdf(seal: Seal, pdf: bytes, *, purpose: str, actor: str, certify: bool = False,
             page: int = 0, box: tuple[float, float, float, float] | None = None,
             field_name: str | None = None, timestamp: bool = True, embed_revocation: bool = True,
             licence_use: bool = False) -> bytes:
    """Seal ``pdf``: PAdES with our TSA's timestamp and the CRLs embedded (B-LT), visible seal.

    ``box`` is x1, y1, x2, y2 in PDF points on ``page`` (default: bottom right); ``field_name``
    signs an existing empty signature field or names the new one. ``certify`` adds DocMDP
    "no changes allowed". ``timestamp``/``embed_revocation`` exist for the benchmark. A licence
    seal seals only the licences the licence code renders (``licence_use=True``).
    """
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields
    from pyhanko.sign import signers as pdf_signers
    from pyhanko.sign.general import SigningError

    from keys.tsa import timestamper

    from .pdfcheck import DOCUMENT_ERRORS, check_structure, damaged, sane_box

    purpose = (purpose or "").strip()
    if not purpose:
        raise ValidationError("a purpose (事由) is required to use a seal", "purpose_required")
    from .ofd import check_licence_use

    check_licence_use(seal, licence_use)
    now = utcnow()
    if seal.status != "active":
        raise SealNotUsable(f"the seal is {seal.status}")
    if not seal.valid_from <= now < seal.valid_until:
        raise SealNotUsable("the seal is outside its validity period")
    if seal.alg == "sm2":
        raise SealNotUsable("an SM2 seal seals OFD documents (seals sign-ofd), not PDF")
    writer = _reader(pdf, incremental=True)  # one parse: the writer's reader serves both
    count = check_structure(writer.prev)["pages"]
    if box is not None and not sane_box(box):
        raise ValidationError("box is x1,y1,x2,y2 with x1<x2 and y1<y2", "invalid_box")
    try:
        existing = {f[0]: f[1] for f in fields.enumerate_sig_fields(writer.prev)}
        new_field = None
        if field_name and field_name in existing:
            if existing[field_name] is not None:
                raise SealingRefused(f"the field {field_name!r} is already signed")
        else:
            field_name = field_name or f"Seal{len(existing) + 1}"
            on_page, default_box = _placement(writer, page, len(existing), count)
            if box is not None:
                x1, y1, x2, y2 = (float(v) for v in box)
                default_box = (x1, y1, x2, y2)
            new_field = fields.SigFieldSpec(sig_field_name=field_name, on_page=on_page,
                                           box=default_box)  # type: ignore[arg-type]  # (floats work)
    except TongbanError:
        raise
    except DOCUMENT_ERRORS as e:
        raise damaged(e) from None

    cert_row = ca_service.get_certificate(seal.cert_serial)
    cert = asn1_x509.Certificate.load(cert_row.cert_der)
    vc = ca_service.validation_context(for_signing=True) if embed_revocation else None
    meta = pdf_signers.PdfSignatureMetadata(
        field_name=field_name, md_algorithm="sha256", subfilter=fields.SigSeedSubFilter.PADES,
        reason=purpose, name=f"{seal.org.name} {seal.name}", location=seal.org.name,
        certify=certify, docmdp_permissions=fields.MDPPerm.NO_CHANGES,
        embed_validation_info=embed_revocation, validation_context=vc,
    )
    backend = signers.backend(cert_row.key_backend)
    out = io.BytesIO()
    try:
        with backend.open(key_ref=cert_row.key_ref, blob=cert_row.private_key, alg=seal.alg, cert=cert,
                          chain=ca_service.chain()) as signer:
            pdf_signer = pdf_signers.PdfSigner(
                meta, signer=signer, timestamper=timestamper() if timestamp else None,
                stamp_style=_stamp_style(seal), new_field_spec=new_field)
            try:
                asyncio.run(_sign(pdf_signer, writer, out, cert_row.serial))
            except _ReservationTooSmall:
                # cannot happen with our own TSA's fixed-shape tokens, but never fail a seal over it
                writer, out = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False), io.BytesIO()
                pdf_signer.sign_pdf(writer, output=out)
    except SigningError as e:
        raise SealingRefused(f"the document cannot be sealed: {e}") from None
    except TongbanError:
        raise
    except DOCUMENT_ERRORS as e:
        # pyHanko reading the rest of the document (the XMP metadata, the certification, a
        # field's widget) as it signs; the signers raise their own errors, not these
        raise damaged(e) from None
    sealed = out.getvalue()
    audit.record("seal.used", actor=actor, object=f"seal:{seal.id}", detail={
        "document_sha256": hashlib.sha256(pdf).hexdigest(), "sealed_sha256": hashlib.sha256(sealed).hexdigest(),
        "purpose": purpose, "certify": certify, "field": field_name, "org": seal.org.uscc,
        "at": now.isoformat(timespec="seconds") + "Z"})
    return sealed


# ---------------------------------------------------------------- verification

_CHANGES = {0: "none", 1: "validation data only", 2: "signatures or form fields added",
            3: "annotations changed", 4: "content changed"}


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.replace(microsecond=0).isoformat() + "Z"


def _subject(cert: asn1_x509.Certificate) -> dict:
    subject = cert.subject.native
    return {"cn": subject.get("common_name", ""), "org": subject.get("organization_name", ""),
            "org_id": subject.get("organization_identifier", ""), "serial": subject.get("serial_number", "")}


_SEAL_CODE = re.compile(r"[0-9]{13}")


def _verdict_for(sig, status, is_last: bool) -> dict:
    from pyhanko.sign.diff_analysis import ModificationLevel
    from pyhanko.sign.validation.status import SignatureCoverageLevel

    cert = sig.signer_cert
    subj = _subject(cert)
    serial_hex = format(cert.serial_number, "x")
    seal = db.session.execute(select(Seal).options(joinedload(Seal.org))  # one query, not two
                              .where(Seal.cert_serial == serial_hex)).scalar_one_or_none()
    level = status.modification_level
    covers = status.coverage == SignatureCoverageLevel.ENTIRE_FILE or (
        status.coverage == SignatureCoverageLevel.ENTIRE_REVISION
        and level is not None and level <= ModificationLevel.LTA_UPDATES)
    ts = status.timestamp_validity
    signed_at = ts.timestamp if ts is not None else status.signer_reported_dt
    trusted = bool(status.trusted)
    revoked = bool(status.revoked) or (trusted and ca_service.is_revoked(serial_hex))
    intact = bool(status.intact and status.valid)
    return {
        "seal_name": seal.name if seal else subj["cn"],
        # the schema promises 13 digits or null: a foreign certificate's serial may be anything
        "seal_code": seal.code if seal else (subj["serial"] if _SEAL_CODE.fullmatch(subj["serial"] or "") else None),
        "organisation": seal.org.name if seal else subj["org"],
        "organisation_uscc": seal.org.uscc if seal else subj["org_id"],
        "signer": cert.subject.human_friendly,
        "signed_at": _iso(signed_at),
        "timestamped": ts is not None and bool(ts.valid and ts.intact and ts.trusted),
        "intact": intact,
        "covers_whole_document": bool(covers),
        "changes_after": _CHANGES.get(level.value if level is not None else 4, "unknown")
        if status.coverage != SignatureCoverageLevel.ENTIRE_FILE else "none",
        "certified": sig.docmdp_level is not None,
        "trusted": trusted,
        "revoked": revoked,
        "valid": bool(status.bottom_line) and intact and trusted and not revoked,
        "field": sig.field_name,
        "is_last": is_last,
    }


# One worker's verifications at a time, per configured limit (the configuration may differ per app
# in tests): a verification is CPU-bound Python, so more at once only makes every one slower.
_verify_slots: dict[int, threading.BoundedSemaphore] = {}
_verify_slots_lock = threading.Lock()


def _verify_slot(limit: int) -> threading.BoundedSemaphore:
    with _verify_slots_lock:
        return _verify_slots.setdefault(limit, threading.BoundedSemaphore(max(1, limit)))


def verify_pdf(pdf: bytes) -> dict:
    """The verdict ``{"valid", "signatures": [...]}`` of docs/licences-and-seals.md; BadPdf (400) when not a PDF.

    ``valid`` needs at least one signature, every one intact, trusted and not revoked with
    pyHanko's overall verdict (``bottom_line``) good, and the last one covering the whole
    document: any change after it other than added validation data makes the document invalid.

    Bounded, as the verify API is public: at most ``TONGBAN_VERIFY_MAX_SIGNATURES`` signatures
    (and four revisions per signature, plus 16) or TooManySignatures (422); the same signature
    value is validated once, a copy is reported as not valid; past ``TONGBAN_VERIFY_MAX_SECONDS``
    (checked before each signature and each revision compared with a signed one)
    VerificationTooLong (422); at most
    ``TONGBAN_VERIFY_CONCURRENCY`` verifications at once per worker, else VerifierBusy (503).
    """
    from flask import current_app, has_app_context

    from tongban.config import DEFAULTS

    cfg = current_app.config if has_app_context() else DEFAULTS
    slot = _verify_slot(int(cfg["TONGBAN_VERIFY_CONCURRENCY"]))
    if not slot.acquire(blocking=False):
        raise VerifierBusy(localised(_l("The seal verifier is busy; please try again in a few seconds.")))
    try:
        return _verify(pdf, max_signatures=int(cfg["TONGBAN_VERIFY_MAX_SIGNATURES"]),
                       deadline=time.monotonic() + float(cfg["TONGBAN_VERIFY_MAX_SECONDS"]))
    finally:
        slot.release()


def _signature_key(sig) -> bytes:
    """What makes a signature the same as another: its signature value (the CMS around it can be
    padded or re-encoded to look different), else the whole CMS blob."""
    try:
        value = sig.signer_info["signature"].native
    except Exception:  # a CMS too broken to have one: compare the bytes
        value = None
    return hashlib.sha256(value if isinstance(value, bytes) and value else (sig.pkcs7_content or b"")).digest()


def _too_many(found: int, limit: int) -> TooManySignatures:
    return TooManySignatures(localised(_l("The document carries %(found)s signatures or revisions; at most "
                                          "%(limit)s signatures are verified per document.",
                                          found=found, limit=limit)))


@functools.cache
def _deadline_policy_class():
    from pyhanko.sign.diff_analysis import DEFAULT_DIFF_POLICY, StandardDiffPolicy

    class DeadlineDiffPolicy(StandardDiffPolicy):
        """pyHanko's default difference analysis, checking the deadline before each revision it
        compares with a signed one (the costly part: every later revision, for every signature)."""

        def __init__(self, in_time):
            self.__dict__.update(DEFAULT_DIFF_POLICY.__dict__)  # the default policy's rules, as they are
            self._in_time = in_time

        def apply(self, *args, **kwargs):
            self._in_time()
            return super().apply(*args, **kwargs)

    return DeadlineDiffPolicy


def _verify(pdf: bytes, *, max_signatures: int, deadline: float) -> dict:
    from pyhanko.sign.validation import async_validate_pdf_signature

    from .pdfcheck import DOCUMENT_ERRORS, check_structure, damaged

    def in_time() -> None:
        if time.monotonic() > deadline:
            raise VerificationTooLong(localised(_l("Verifying this document takes too long; it is too complex "
                                                   "to verify here.")))

    diff_policy = _deadline_policy_class()(in_time)

    reader = _reader(pdf)
    found = check_structure(reader)["signatures"]
    if found > max_signatures:
        raise _too_many(found, max_signatures)
    try:
        revisions = reader.xrefs.total_revisions
        if revisions > 4 * max_signatures + 16:  # each revision after a signature is diffed against it
            raise _too_many(revisions, max_signatures)
        sigs = list(reader.embedded_signatures)
    except TongbanError:
        raise
    except DOCUMENT_ERRORS as e:
        raise damaged(e) from None
    if len(sigs) > max_signatures:
        raise _too_many(len(sigs), max_signatures)
    in_time()
    vc_sig = ca_service.validation_context()

    async def run():
        results, first_field = [], {}
        for sig in sigs:
            # the same signature bytes twice is a copy (a genuine signature differs in its signed
            # attributes at least); validate it once, and a copy proves nothing: not valid
            key = _signature_key(sig)
            if key in first_field:
                results.append((sig, None, f"a copy of the signature in field {first_field[key]}"))
                continue
            first_field[key] = sig.field_name
            in_time()
            try:
                status = await async_validate_pdf_signature(sig, signer_validation_context=vc_sig,
                                                            ts_validation_context=vc_sig, diff_policy=diff_policy)
            except VerificationTooLong:
                raise
            except Exception as e:  # a signature too broken to evaluate is simply not valid
                results.append((sig, None, str(e)))
                continue
            results.append((sig, status, None))
        return results

    out = []
    for i, (sig, status, error) in enumerate(asyncio.run(run())):
        is_last = i == len(sigs) - 1
        if status is not None:
            try:
                out.append(_verdict_for(sig, status, is_last))
            except Exception as e:  # e.g. a certificate too malformed to describe
                status, error = None, str(e)
        if status is None:
            out.append({"seal_name": "", "seal_code": None, "organisation": "", "signer": "", "signed_at": None,
                        "intact": False, "covers_whole_document": False, "trusted": False, "revoked": False,
                        "valid": False, "field": sig.field_name, "is_last": is_last, "error": error[:200]})
    valid = bool(out) and all(s["valid"] for s in out) and out[-1]["covers_whole_document"]
    result = {"valid": valid, "signatures": out}
    if not out:
        result["message"] = "no seal found"
    return result


def seal_summary(seal: Seal) -> dict:
    return {"seal_id": seal.id, "code": seal.code, "name": seal.name, "kind": seal.kind, "status": seal.status,
            "org": seal.org.uscc, "organisation": seal.org.name, "alg": seal.alg,
            "valid_from": _iso(seal.valid_from), "valid_until": _iso(seal.valid_until),
            "cert_serial": seal.cert_serial}


__all__ = ["authorise_client", "check_client", "check_officer", "create_seal", "get_active_seal", "get_seal",
           "list_seals", "officers", "revoke_seal", "set_status", "sign_pdf", "uses", "verify_pdf"]
