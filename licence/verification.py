"""The verdict on a licence PDF someone brings: valid only when it is the document we issued.

``verify_licence_document(pdf_bytes)`` answers "is this a valid e-licence?" and says which
check failed. A licence is valid only when every one of these holds:

``sealed``            the document carries a certifying seal (DocMDP) that is intact;
``identifier_signed`` the identifier (Keywords ``ZZBS:<id>``) is read from the document
                      information of the signed revision, i.e. from bytes the seal covers;
``issuer_seal``       the seal is the licence seal (kind ``licence``) of the licence's issuer,
                      its certificate chains to our CA and was not revoked when it signed;
``nothing_after``     nothing follows the signed revision but validation data (DSS) or
                      document timestamps, the document information and the catalogue's XMP
                      ``/Metadata``, ``/Version`` and ``/MarkInfo`` are the signed ones, and no
                      bytes follow the file's last ``%%EOF``;
``issued_version``    the signed revision is byte for byte one we issued (its SHA-256 equals
                      the one stored at issuance, or that of a watermarked copy we shared);
``status``            the licence is currently valid (not suspended, revoked, superseded, expired).

The licence itself is named in the answer only when the signed revision is one we issued
(``identifier_signed``, ``issuer_seal`` and ``issued_version`` hold): a forged document does
not get to show, or touch the access log of, somebody else's licence.
No Flask requests here.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from tongban.extensions import db

from .models import DownloadLink, Licence

_ZZBS = re.compile(r"ZZBS:(1\.2\.156\.3005\.2\.[0-9A-Z.]{30,60})")

# check code -> (Chinese, English) message shown when it fails
FAILURES: dict[str, tuple[str, str]] = {
    "sealed": ("文件未加盖有效的电子证照签发章（缺少完好的认证签章）",
               "the document carries no intact certifying seal"),
    "identifier_signed": ("电子证照标识不在签章保护的内容中",
                          "the licence identifier is not inside the sealed content"),
    "issuer_seal": ("签章不是该证照发证机关的电子证照专用章，或其证书不可信、签章时已注销",
                    "the seal is not the licence seal of the licence's issuer, or its certificate is not "
                    "trusted or was revoked when it signed"),
    "nothing_after": ("签章之后文件被追加或修改了内容",
                      "content was appended or changed after the seal"),
    "issued_version": ("与签发时存档的证照文件不一致",
                       "the sealed content does not match the version we issued"),
    "status": ("证照当前状态不是有效", "the licence is not currently valid"),
}
CHECKS = tuple(FAILURES)
_STATUS_ZH = {"valid": "有效", "suspended": "已中止", "revoked": "已注销（吊销/撤销）", "expired": "已过期",
              "superseded": "已变更（旧版本）"}
_OK_AFTER = ("none", "validation data only")


@dataclass
class SignedRevision:
    """What the certifying signature covers, read straight from pyHanko's objects."""

    index: int  # position among the document's signatures
    field: str  # its form field's name (matched against the seal verdict's entry)
    end: int  # offset of the end of the signed revision
    sha256: str  # of the signed revision's bytes (``pdf[:end]``)
    identifier: str | None  # ZZBS from the signed revision's document information
    cert_serial: str  # the signer certificate's serial (hex, lower case)
    cert_der: bytes = b""  # the signer certificate itself
    later_timestamps: tuple[bool, ...] = ()  # for each later signature: is it a document timestamp?
    info_untouched: bool = False  # the document information and XMP metadata are the signed ones
    ends_cleanly: bool = False  # nothing after the last revision's %%EOF


@dataclass
class Verdict:
    checks: dict[str, bool] = field(default_factory=dict)
    licence: Licence | None = None
    copy: bool = False


def _text(value) -> str:
    if hasattr(value, "get_object"):
        value = value.get_object()
    return str(value) if value is not None else ""


_REFRESHED = ("/ModDate", "/Producer")


def _info(reader) -> dict[str, str]:
    info = reader.trailer_view.get("/Info")
    if info is None:
        return {}
    return {str(k): _text(v) for k, v in info.get_object().items() if str(k) not in _REFRESHED}


# catalogue entries that describe the document but that pyHanko's diff analysis lets a later
# revision replace (MetadataUpdateRule rates a new XMP /Metadata stream an LTA update)
_CATALOGUE_META = ("/Metadata", "/Version", "/MarkInfo")


_XMP_REFRESHED = ("{http://ns.adobe.com/xap/1.0/}ModifyDate", "{http://ns.adobe.com/xap/1.0/}MetadataDate",
                  "{http://ns.adobe.com/pdf/1.3/}Producer")
_STREAM_KEYS = ("/Length", "/Filter", "/DecodeParms")


def _serialised(obj) -> bytes:
    from pyhanko.pdf_utils.generic import DictionaryObject

    if hasattr(obj, "get_object"):
        obj = obj.get_object()
    buf = io.BytesIO()
    if hasattr(obj, "data"):  # a stream: its dictionary (but the encoding) and its decoded content
        plain = DictionaryObject({k: v for k, v in obj.items() if k not in _STREAM_KEYS})
        plain.write_to_stream(buf, None)
        buf.write(b"\x00" + _xmp_content(obj.data))
    else:
        obj.write_to_stream(buf, None)
    return buf.getvalue()


def _xmp_content(data: bytes) -> bytes:
    """The XMP packet in canonical form without what every revision refreshes (xmp:ModifyDate,
    xmp:MetadataDate, pdf:Producer, as pyHanko does with each update); the raw bytes when it is
    not XML we accept (then any change counts)."""
    from lxml import etree

    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        return data
    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                                                      huge_tree=False, remove_blank_text=True))
    except etree.XMLSyntaxError:
        return data
    for el in list(root.iter()):
        if not isinstance(el.tag, str):
            continue
        if el.tag in _XMP_REFRESHED:
            el.getparent().remove(el)
            continue
        for name in _XMP_REFRESHED:
            el.attrib.pop(name, None)
    return etree.tostring(root, method="c14n")


def _catalogue_meta(reader) -> dict[str, bytes]:
    """The catalogue's XMP metadata, /Version and /MarkInfo as bytes (absent ones left out)."""
    root = reader.root
    return {key: _serialised(root.raw_get(key)) for key in _CATALOGUE_META if key in root}


def signed_revision(pdf: bytes) -> SignedRevision | None:
    """The first signature, when it is a certifying one, and what it covers; None otherwise."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        sigs = list(reader.embedded_signatures)
    except Exception:  # a PDF pyHanko cannot read carries no seal we accept
        return None
    if not sigs:
        return None
    sig = sigs[0]
    try:
        if sig.docmdp_level is None:
            return None
        br = [int(v) for v in sig.byte_range]
        if len(br) != 4 or br[0] != 0 or br[1] <= 0 or br[2] <= br[1] or br[3] <= 0:
            return None
        # the only unsigned bytes are the signature value itself (no room for anything else)
        if br[2] - br[1] != len(sig.pkcs7_content) * 2 + 2:
            return None
        end = br[2] + br[3]
        if end > len(pdf):
            return None
        cert_serial = format(sig.signer_cert.serial_number, "x")
        cert_der = sig.signer_cert.dump()
    except Exception:
        return None
    chunk = pdf[:end]
    ident, info_untouched = None, False
    try:  # the document information as it was when sealed: a reader of the signed bytes only
        signed_reader = PdfFileReader(io.BytesIO(chunk), strict=False)
        signed_info = _info(signed_reader)
        found = _ZZBS.fullmatch(signed_info.get("/Keywords", "").strip())
        ident = found.group(1) if found else None
        # pyHanko's diff analysis follows the catalogue only, not the trailer's /Info: a later
        # revision may refresh /ModDate and /Producer (LTV updates do), nothing else; and it lets
        # a later revision replace the XMP metadata: that must be the signed one, byte for byte
        info_untouched = _info(reader) == signed_info and _catalogue_meta(reader) == _catalogue_meta(signed_reader)
    except Exception:
        ident, info_untouched = None, False
    try:
        ends_cleanly = _ends_cleanly(reader, pdf)
    except Exception:
        ends_cleanly = False
    later = []
    for other in sigs[1:]:
        try:
            later.append(other.sig_object_type == "/DocTimeStamp")
        except Exception:
            later.append(False)
    return SignedRevision(index=0, field=str(sig.field_name), end=end, sha256=hashlib.sha256(chunk).hexdigest(),
                          identifier=ident,
                          cert_serial=cert_serial, cert_der=cert_der, later_timestamps=tuple(later),
                          info_untouched=info_untouched, ends_cleanly=ends_cleanly)


def signed_sha256(pdf: bytes) -> str:
    """The SHA-256 of the certifying signature's revision (stored at issuance); "" when none."""
    rev = signed_revision(pdf)
    return rev.sha256 if rev else ""


_TAIL = re.compile(rb"\s*(?:endstream\s*)?(?:endobj\s*)?(?:trailer\s*)?(?:<<[^%]*>>\s*)?"
                   rb"startxref\s+(\d+)\s+%%EOF\s*")


def _ends_cleanly(reader, pdf: bytes) -> bool:
    """The file ends where its last revision does: trailer, ``startxref`` of that revision, ``%%EOF``.

    No comment, no second ``%%EOF``, nothing else after it (whitespace aside).
    """
    xrefs = reader.xrefs
    last = xrefs.total_revisions - 1
    start = xrefs.get_xref_container_info(last).end_location
    tail = pdf[start:]
    if len(tail) > 16 * 1024:
        return False
    found = _TAIL.fullmatch(tail)
    return found is not None and int(found.group(1)) == xrefs.get_startxref_for_revision(last)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.rstrip("Z"))
    except ValueError:
        return None


def _issuer_seal_ok(rev: SignedRevision, sig: dict, lic: Licence | None) -> bool:
    from keys.models import IssuedCertificate
    from seal.models import Seal

    seal = db.session.execute(select(Seal).where(Seal.cert_serial == rev.cert_serial)).scalar_one_or_none()
    if seal is None or seal.kind != "licence":
        return False
    if lic is None or seal.org.uscc != lic.issuer_uscc:
        return False
    cert = db.session.get(IssuedCertificate, rev.cert_serial)
    # the very certificate our CA issued for that seal (not merely one with the same serial)
    if cert is None or seal.cert_serial != cert.serial or cert.cert_der != rev.cert_der or not sig.get("intact"):
        return False
    if cert.revoked_at is None:
        return bool(sig.get("trusted")) and not sig.get("revoked")
    # revoked since: still the issuer's seal when a trusted timestamp proves it signed before that
    # (pyHanko, validating at the current time, no longer calls the revoked certificate trusted)
    signed_at = _parse_time(sig.get("signed_at")) if sig.get("timestamped") else None
    return signed_at is not None and signed_at < cert.revoked_at


def _issued_version(rev: SignedRevision, lic: Licence) -> tuple[bool, bool]:
    """(matches, is a shared copy): the stored hash of the issued version, or of a shared copy."""
    stored = lic.signed_sha256 or (signed_sha256(lic.pdf) if lic.pdf else "")
    if stored and stored == rev.sha256:
        return True, False
    copy = db.session.execute(select(DownloadLink.id).where(DownloadLink.licence_id == lic.id,
                                                           DownloadLink.copy_sha256 == rev.sha256)).first()
    return copy is not None, copy is not None


def evaluate(pdf: bytes, seal_verdict: dict) -> Verdict:
    """Every check of the module docstring, in order; ``seal_verdict`` is seal.services.verify_pdf's."""
    out = Verdict(checks=dict.fromkeys(CHECKS, False))
    sigs = seal_verdict.get("signatures") or []
    rev = signed_revision(pdf)
    if rev is None or rev.index >= len(sigs) or sigs[rev.index].get("field") != rev.field:
        return out
    sig = sigs[rev.index]
    out.checks["sealed"] = bool(sig.get("intact")) and bool(sig.get("certified"))
    out.checks["identifier_signed"] = rev.identifier is not None
    lic = None
    if rev.identifier is not None:
        lic = db.session.execute(select(Licence).where(Licence.identifier == rev.identifier)).scalar_one_or_none()
    out.checks["issuer_seal"] = out.checks["sealed"] and _issuer_seal_ok(rev, sig, lic)
    # a later signature must be a document timestamp (what pyHanko's diff analysis of the certifying
    # seal counts as "validation data only") or itself valid; anything else changes the document
    later = sigs[rev.index + 1:]
    later_ok = len(later) == len(rev.later_timestamps) and all(
        ts or s.get("valid") for s, ts in zip(later, rev.later_timestamps, strict=True))
    out.checks["nothing_after"] = (bool(sig.get("covers_whole_document")) and sig.get("changes_after") in _OK_AFTER
                                   and later_ok and rev.info_untouched and rev.ends_cleanly)
    if lic is not None:
        out.checks["issued_version"], out.copy = _issued_version(rev, lic)
    if out.checks["identifier_signed"] and out.checks["issuer_seal"] and out.checks["issued_version"]:
        out.licence = lic
    return out


def verify_licence_document(pdf: bytes) -> dict:
    """The JSON verdict: ``valid``, ``status``, ``licence`` (masked), ``checks``, ``failed``, ``seal``.

    Raises seal.errors.BadPdf (400) when the bytes are not a PDF at all.
    """
    from . import services

    seal_verdict = services._seal_services().verify_pdf(pdf)
    return verdict_for(pdf, seal_verdict)


def verdict_for(pdf: bytes, seal_verdict: dict) -> dict:
    """verify_licence_document's answer from a seal verdict already made on the same bytes."""
    from . import services

    v = evaluate(pdf, seal_verdict)
    status, licence, extra = "unknown", None, {}
    if v.licence is not None:
        view = services.public_view(v.licence)
        status, licence = view["status"], view["licence"]
        v.checks["status"] = view["valid"]
        if "superseded_by" in view:
            extra["superseded_by"] = view["superseded_by"]
    checks = []
    for code in CHECKS:
        ok = v.checks[code]
        item = {"check": code, "ok": ok}
        if not ok:
            zh, en = FAILURES[code]
            if code == "status" and v.licence is not None:
                zh = f"{zh}：{_STATUS_ZH.get(v.licence.status, v.licence.status)}"
                en = f"{en}: {v.licence.status}"
            item.update(message=zh, message_en=en)
        checks.append(item)
    failed = [c["check"] for c in checks if not c["ok"]]
    result = {"valid": not failed, "status": status, "licence": licence, **extra, "copy": v.copy,
              "checks": checks, "failed": failed, "seal": seal_verdict}
    return result


def licence_in(pdf: bytes, seal_verdict: dict) -> dict | None:
    """For the public seal verifier: None when the PDF does not present itself as a Tongban licence
    (no licence identifier in its sealed document information); otherwise what it is worth as one.

    ``{"is_licence", "valid", "status", "state", "status_changed_at", "superseded_by", "licence",
    "failed", "messages"}`` (no reason: the page is public): the licence is named only when the
    sealed revision is one we issued (as in verify_licence_document); a document that only claims an identifier is
    "is_licence": false with the checks it failed.
    """
    rev = signed_revision(pdf)
    if rev is None or rev.identifier is None:
        return None
    v = verdict_for(pdf, seal_verdict)
    out = {"is_licence": v["licence"] is not None, "valid": v["valid"], "status": v["status"],
           "licence": v["licence"], "failed": v["failed"],
           "messages": [c["message"] for c in v["checks"] if not c["ok"] and c["check"] != "status"]}
    if v["licence"] is not None:
        lic = db.session.execute(select(Licence).where(Licence.identifier == v["licence"]["id"])).scalar_one()
        out.update(state=lic.status if lic.status != "valid" else v["status"],
                   status_changed_at=(lic.status_changed_at.isoformat() + "Z") if lic.status_changed_at else None)
        if "superseded_by" in v:
            out["superseded_by"] = v["superseded_by"]
    return out


__all__ = ["CHECKS", "FAILURES", "licence_in", "signed_revision", "signed_sha256", "verdict_for",
           "verify_licence_document"]
