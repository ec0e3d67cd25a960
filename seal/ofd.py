"""OFD documents (GB/T 33190): seal them with an SM2 seal and verify their seals.

A sealed OFD carries, per signature (GB/T 33190 §18):

* ``Doc_N/Signs/Signatures.xml`` listing every signature (named from ``OFD.xml``'s DocBody),
* ``Doc_N/Signs/Sign_K/Signature.xml``: the signer, the method (SM3withSM2,
  1.2.156.10197.1.501), the time, a ``Reference`` with the SM3 check value
  (1.2.156.10197.1.401, base64) of **every file of the package** at signing time except
  ``Signatures.xml`` (which later signatures extend), the ``StampAnnot`` (page and boundary
  in millimetres: where readers draw the seal's picture) and the seal file,
* ``Seal.esl``: the GB/T 38540 seal (SESeal) and ``SignedValue.dat``: the SES_Signature v4
  whose TBS holds the seal, the time, the SM3 hash of ``Signature.xml`` and its path, signed
  SM3withSM2 by the seal's key, with our TSA's RFC 3161 time-stamp over the signature value.

Verification recomputes every check value, and treats any file the last signature does not
reference (other than ``Signatures.xml`` and the files of later signatures) as a change made
after sealing: a changed, removed or added file makes the document invalid.

XML is parsed with lxml with entities, DTDs and network access off; ZIP entries are read with
caps on their number and uncompressed size (a "zip bomb" is refused, not inflated).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import posixpath
import secrets
import struct
import zipfile
from datetime import UTC, datetime

from asn1crypto import cms, tsp
from asn1crypto import x509 as asn1_x509
from flask import current_app
from lxml import etree

from keys import ca as ca_service
from keys import sm2, sm2ca
from tongban import audit
from tongban.clock import utcnow
from tongban.errors import ValidationError

from . import ses
from .errors import BadOfd, LicenceSealReserved, SealNotUsable
from .models import Seal

NS = "http://www.ofdspec.org/2016"
O = f"{{{NS}}}"  # noqa: E741
MAX_ENTRIES = 2000
MAX_SIGNATURES = 50  # verifying is linear in signatures x files: a package with more is refused
SEAL_SIZE_MM = 40.0
PROVIDER = "Tongban 通办电子签章"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                          remove_blank_text=False)


def is_ofd(data: bytes) -> bool:
    """An OFD is a ZIP package (GB/T 33190 §7.1); anything else is left to the PDF path."""
    return isinstance(data, bytes | bytearray) and bytes(data[:4]) == b"PK\x03\x04"


# ---------------------------------------------------------------- the package


def _norm(path: str | None, base: str = "") -> str:
    """A package path (``/Doc_0/x.xml`` absolute, ``x.xml`` relative to ``base``) without the leading
    slash; BadOfd for anything leaving the package."""
    if not path or not isinstance(path, str) or "\\" in path or "\x00" in path:
        raise BadOfd(f"invalid path in the package: {str(path)[:80]!r}")
    path = path.strip()
    joined = path[1:] if path.startswith("/") else posixpath.join(base, path)
    norm = posixpath.normpath(joined)
    if norm.startswith("../") or norm == ".." or norm.startswith("/") or norm in ("", "."):
        raise BadOfd(f"path leaves the package: {path[:80]!r}")
    return norm


_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record (22 bytes)
_LOCAL = struct.Struct("<4s5H3L2H")  # local file header (30 bytes)


def _check_layout(data: bytes, zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    """The package is exactly one ZIP archive, with nothing before, between or after its parts.

    zipfile reads the central directory from the end of the file and silently allows for bytes
    placed in front of the archive (or a comment after it): a forged package in front of a genuine
    sealed one would be what a front-to-back reader shows, while the seal check reads the genuine
    one. So: the first local header is at offset 0, every entry's local header names the same file
    as its central directory entry and follows the previous entry's data without a gap, the central
    directory follows the last entry, and the end record (no comment) ends the file.
    """
    if len(data) < _EOCD.size:
        raise BadOfd("damaged OFD package: too short")
    sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment_len = _EOCD.unpack(data[-_EOCD.size:])
    if sig != b"PK\x05\x06" or comment_len != 0 or disk != 0 or cd_disk != 0:
        raise BadOfd("not a plain OFD package: the file must end with the ZIP end record (no comment, "
                     "no trailing bytes, one part)")
    if n_disk != n_total or n_total != len(infos) or cd_offset + cd_size != len(data) - _EOCD.size:
        raise BadOfd("not a plain OFD package: the central directory is not where the end record says")
    if zf.start_dir != cd_offset:  # zipfile found the archive shifted: bytes were placed in front of it
        raise BadOfd("not a plain OFD package: bytes precede the archive")
    pos = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset != pos:
            raise BadOfd("not a plain OFD package: bytes between or before the entries")
        header = data[pos:pos + _LOCAL.size]
        if len(header) != _LOCAL.size:
            raise BadOfd("damaged OFD package: truncated entry")
        (lsig, _ver, flags, _method, _t, _d, _crc, _csize, _usize, name_len, extra_len) = _LOCAL.unpack(header)
        start = pos + _LOCAL.size
        raw_name = data[start:start + name_len]
        if lsig != b"PK\x03\x04" or raw_name != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800
                                                                              else "cp437"):
            raise BadOfd("not a plain OFD package: an entry's local header does not match the directory")
        pos = start + name_len + extra_len + info.compress_size
        if flags & 0x8:  # a data descriptor follows the data: 12 or 16 bytes (with its signature)
            pos += 16 if data[pos:pos + 4] == b"PK\x07\x08" else 12
    if pos != cd_offset:
        raise BadOfd("not a plain OFD package: bytes between the entries and the central directory")


class Package:
    """The files of an OFD package, in order (names without a leading slash)."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self._sm3: dict[str, bytes] = {}

    def sm3(self, name: str) -> bytes:
        """SM3 of a file, computed once per verification (every signature checks every file)."""
        digest = self._sm3.get(name)
        if digest is None:
            digest = self._sm3[name] = sm2.sm3(self.files[name])
        return digest

    @classmethod
    def load(cls, data: bytes, max_total: int | None = None) -> Package:
        if max_total is None:
            max_total = 4 * int(current_app.config.get("TONGBAN_SEAL_MAX_BYTES", 20 * 1024 * 1024))
        if not is_ofd(data):
            raise BadOfd("not an OFD file (an OFD is a ZIP package)")
        data = bytes(data)
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            infos = zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise BadOfd(f"damaged OFD package: {str(e)[:120]}") from None
        if len(infos) > MAX_ENTRIES:
            raise BadOfd(f"the package has more than {MAX_ENTRIES} files")
        _check_layout(data, zf, infos)
        files: dict[str, bytes] = {}
        total = 0
        for info in infos:
            if info.is_dir():
                continue
            name = _norm(info.filename)
            if name in files:
                raise BadOfd(f"the package holds {name} twice")
            if info.flag_bits & 0x1:
                raise BadOfd("encrypted packages are not supported")
            total += info.file_size
            if total > max_total:
                raise BadOfd("the package is too large once uncompressed")
            try:
                with zf.open(info) as f:
                    body = f.read(info.file_size + 1)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as e:
                raise BadOfd(f"damaged OFD package: {str(e)[:120]}") from None
            if len(body) != info.file_size:
                raise BadOfd("damaged OFD package: a file's size does not match its header")
            files[name] = body
        if "OFD.xml" not in files:
            raise BadOfd("not an OFD package: no OFD.xml")
        return cls(files)

    def xml(self, name: str) -> etree._Element:
        body = self.files.get(name)
        if body is None:
            raise BadOfd(f"the package has no {name}")
        if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
            raise BadOfd(f"{name}: document type declarations are not allowed")
        try:
            root = etree.fromstring(body, _PARSER)
        except etree.XMLSyntaxError as e:
            raise BadOfd(f"{name} is not well-formed XML: {str(e)[:120]}") from None
        return root

    def dump(self) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, body in self.files.items():
                info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, body)
        return out.getvalue()


def _xml_bytes(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _doc_root(pkg: Package) -> tuple[etree._Element, etree._Element, str]:
    """OFD.xml's root, its (first) DocBody, and the path of that document's Document.xml."""
    root = pkg.xml("OFD.xml")
    if root.tag != O + "OFD":
        raise BadOfd("OFD.xml is not an OFD entry file")
    body = root.find(O + "DocBody")
    if body is None:
        raise BadOfd("OFD.xml has no DocBody")
    doc_path = _norm(body.findtext(O + "DocRoot"))
    if doc_path not in pkg.files:
        raise BadOfd(f"the document {doc_path} is missing")
    return root, body, doc_path


def _floats(text: str | None, n: int) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in (text or "").split())
    except ValueError:
        raise BadOfd(f"not {n} numbers: {str(text)[:40]!r}") from None
    if len(values) != n:
        raise BadOfd(f"not {n} numbers: {str(text)[:40]!r}")
    return values


def _pages(pkg: Package, doc_path: str) -> tuple[list[tuple[str, str]], tuple[float, ...]]:
    """[(page ID, content path)] and the document's default physical box (x y w h, mm)."""
    doc = pkg.xml(doc_path)
    base = posixpath.dirname(doc_path)
    box_text = doc.findtext(f"{O}CommonData/{O}PageArea/{O}PhysicalBox")
    box = _floats(box_text, 4) if box_text else (0.0, 0.0, 210.0, 297.0)
    pages = []
    for p in doc.findall(f"{O}Pages/{O}Page"):
        pid = p.get("ID")
        if not pid:
            raise BadOfd("a page has no ID")
        pages.append((pid, _norm(p.get("BaseLoc"), base)))
    if not pages:
        raise BadOfd("the document has no pages")
    return pages, box


def _page_box(pkg: Package, content_path: str, default: tuple[float, ...]) -> tuple[float, ...]:
    if content_path not in pkg.files:
        raise BadOfd(f"the page {content_path} is missing")
    page = pkg.xml(content_path)
    text = page.findtext(f"{O}Area/{O}PhysicalBox")
    return _floats(text, 4) if text else default


def _find_anchor(pkg: Package, content_path: str, anchor: str) -> tuple[float, float] | None:
    """The centre (mm) of the first text object on the page whose text contains ``anchor``."""
    page = pkg.xml(content_path)
    for obj in page.iter(O + "TextObject"):
        text = "".join(tc.text or "" for tc in obj.findall(O + "TextCode"))
        if anchor in text:
            x, y, w, h = _floats(obj.get("Boundary"), 4)
            return x + w / 2, y + h / 2
    return None


def _signature_list(pkg: Package, body: etree._Element) -> tuple[str | None, list[tuple[str, str]]]:
    """The path of Signatures.xml (None when the document is unsigned) and its [(ID, Signature.xml path)]."""
    loc = body.findtext(O + "Signatures")
    if not loc:
        return None, []
    path = _norm(loc)
    if path not in pkg.files:
        raise BadOfd(f"the signature list {path} is missing")
    root = pkg.xml(path)
    base = posixpath.dirname(path)
    entries = []
    for s in root.findall(O + "Signature"):
        entries.append((s.get("ID") or "", _norm(s.get("BaseLoc"), base)))
    return path, entries


# ---------------------------------------------------------------- the time-stamp over the signature value


def _timestamp(signature: bytes) -> bytes:
    """An RFC 3161 TimeStampToken (DER ContentInfo) from our TSA over SHA-256(signature)."""
    from keys.tsa import async_respond

    req = tsp.TimeStampReq({
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                            "hashed_message": hashlib.sha256(signature).digest()},
        "nonce": secrets.randbits(63), "cert_req": True})
    resp = asyncio.run(async_respond(tsp.TimeStampReq.load(req.dump())))
    return resp["time_stamp_token"].dump()


def _check_timestamp(token_der: bytes, signature: bytes) -> tuple[bool, datetime | None]:
    """Is the token our TSA's valid time-stamp over ``signature``? And its time."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    try:
        ci = cms.ContentInfo.load(token_der, strict=True)
        if ci["content_type"].native != "signed_data":
            return False, None
        sd = ci["content"]
        eci = sd["encap_content_info"]
        if eci["content_type"].native != "tst_info":
            return False, None
        tst_bytes = eci["content"].contents
        tst = tsp.TSTInfo.load(tst_bytes)
        imprint = tst["message_imprint"]
        md = imprint["hash_algorithm"]["algorithm"].native
        if md not in ("sha256", "sha384", "sha512"):
            return False, None
        if imprint["hashed_message"].native != hashlib.new(md, signature).digest():
            return False, None
        signer_infos = sd["signer_infos"]
        if len(signer_infos) != 1:
            return False, None
        si = signer_infos[0]
        tsa = ca_service.ca()["tsa"]
        sid = si["sid"].chosen
        if (si["sid"].name != "issuer_and_serial_number" or sid["serial_number"].native != tsa.asn1.serial_number
                or sid["issuer"].dump() != tsa.asn1.issuer.dump()):
            return False, None
        si_md = si["digest_algorithm"]["algorithm"].native
        attrs = {a["type"].native: a["values"][0] for a in si["signed_attrs"]}
        if attrs.get("content_type") is None or attrs["content_type"].native != "tst_info":
            return False, None
        if attrs.get("message_digest") is None or attrs["message_digest"].native != hashlib.new(
                si_md, tst_bytes).digest():
            return False, None
        signed = b"\x31" + si["signed_attrs"].dump()[1:]
        h = getattr(hashes, si_md.upper())()
        key = tsa.cert.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(si["signature"].native, signed, ec.ECDSA(h))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(si["signature"].native, signed, padding.PKCS1v15(), h)
        else:  # a TSA key of another kind is not one this verifier accepts
            return False, None
        gen = tst["gen_time"].native
        return True, gen.astimezone(UTC).replace(tzinfo=None)
    except InvalidSignature:
        return False, None
    except Exception:
        return False, None


# ---------------------------------------------------------------- sealing


def check_licence_use(seal: Seal, licence_use: bool) -> None:
    """A licence seal (电子证照专用章) seals only the licences Tongban renders and issues or shares:
    a document brought by a caller (API, CLI, console) sealed with it would verify as a licence."""
    if seal.kind == "licence" and not licence_use:
        raise LicenceSealReserved("a licence seal (电子证照专用章) only seals licences issued by Tongban")


def _signature_xml(*, refs: list[tuple[str, bytes]], when: datetime, page_id: str, boundary: tuple[float, ...],
                   seal_path: str, signed_value_path: str, sign_id: str) -> bytes:
    root = etree.Element(O + "Signature", nsmap={"ofd": NS})
    info = etree.SubElement(root, O + "SignedInfo")
    provider = etree.SubElement(info, O + "Provider")
    provider.set("ProviderName", PROVIDER)
    provider.set("Version", "1.0")
    provider.set("Company", "Tongban")
    etree.SubElement(info, O + "SignatureMethod").text = sm2.OID_SM3_WITH_SM2
    etree.SubElement(info, O + "SignatureDateTime").text = when.strftime("%Y%m%d%H%M%SZ")
    references = etree.SubElement(info, O + "References", CheckMethod=sm2.OID_SM3)
    for name, digest in refs:
        ref = etree.SubElement(references, O + "Reference", FileRef="/" + name)
        etree.SubElement(ref, O + "CheckValue").text = base64.b64encode(digest).decode()
    etree.SubElement(info, O + "StampAnnot", ID=sign_id, PageRef=page_id,
                     Boundary=" ".join(f"{v:.2f}" for v in boundary))
    seal_el = etree.SubElement(info, O + "Seal")
    etree.SubElement(seal_el, O + "BaseLoc").text = "/" + seal_path
    etree.SubElement(root, O + "SignedValue").text = "/" + signed_value_path
    return _xml_bytes(root)


def _placement(pkg: Package, pages, default_box, page: int, anchor: str | None, existing: int, box=None):
    count = len(pages)
    if not -count <= page < count:
        raise ValidationError(f"page {page} does not exist (the document has {count})", "invalid_page")
    page_id, content = pages[page % count]
    x0, y0, w, h = _page_box(pkg, content, default_box)
    size = SEAL_SIZE_MM
    if box is not None:
        if len(box) != 4 or not (box[2] > 0 and box[3] > 0):
            raise ValidationError("box is x,y,width,height in millimetres", "invalid_box")
        return page_id, tuple(float(v) for v in box)
    if anchor:
        centre = _find_anchor(pkg, content, anchor)
        if centre is None:
            raise ValidationError(f"the text {anchor[:50]!r} is not on page {page}", "anchor_not_found")
        cx, cy = centre
        x, y = cx - size / 2, cy - size / 2
    else:  # bottom right (OFD's y axis points down), moved left for each seal already there
        x = x0 + w - 20 - size - existing * (size + 4)
        if x < x0 + 5:
            x = x0 + w - 20 - size
        y = y0 + h - 25 - size
    x = min(max(x, x0), x0 + w - size)
    y = min(max(y, y0), y0 + h - size)
    return page_id, (x, y, size, size)


def sign_ofd(seal: Seal, data: bytes, *, purpose: str, actor: str, page: int = 0,
             anchor: str | None = None, box: tuple[float, float, float, float] | None = None,
             licence_use: bool = False) -> bytes:
    """Seal an OFD with an SM2 seal (GB/T 33190 signature holding a GB/T 38540 v4 SES_Signature).

    The seal goes at ``box`` (x, y, width, height in mm, origin top left) on ``page``, or centred
    on the first text object containing ``anchor``, or bottom right. A licence seal (kind
    ``licence``) seals only licences the licence code renders (``licence_use=True``), never an
    uploaded document."""
    purpose = (purpose or "").strip()
    if not purpose:
        raise ValidationError("a purpose (事由) is required to use a seal", "purpose_required")
    check_licence_use(seal, licence_use)
    if seal.alg != "sm2" or not seal.eseal:
        raise SealNotUsable("only SM2 seals (seals create --alg sm2) can seal OFD documents")
    now = utcnow().replace(microsecond=0)
    if seal.status != "active":
        raise SealNotUsable(f"the seal is {seal.status}")
    if not seal.valid_from <= now < seal.valid_until:
        raise SealNotUsable("the seal is outside its validity period")
    if anchor is not None and not anchor.strip():
        anchor = None
    pkg = Package.load(data)
    root, body, doc_path = _doc_root(pkg)
    pages, default_box = _pages(pkg, doc_path)
    sigs_path, entries = _signature_list(pkg, body)
    page_id, boundary = _placement(pkg, pages, default_box, page, anchor, len(entries), box)

    doc_dir = posixpath.dirname(doc_path)
    signs_dir = posixpath.join(doc_dir, "Signs") if doc_dir else "Signs"
    if sigs_path is None:
        sigs_path = posixpath.join(signs_dir, "Signatures.xml")
        el = etree.Element(O + "Signatures")
        el.text = "/" + sigs_path
        doc_root_el = body.find(O + "DocRoot")
        # DocBody is DocInfo, DocRoot, Versions?, Signatures? (GB/T 33190 §7.4)
        anchor_el = body.find(O + "Versions") if body.find(O + "Versions") is not None else doc_root_el
        anchor_el.addnext(el)
        pkg.files["OFD.xml"] = _xml_bytes(root)
        sigs_root = etree.Element(O + "Signatures", nsmap={"ofd": NS})
        etree.SubElement(sigs_root, O + "MaxSignId").text = "0"
    else:
        sigs_root = pkg.xml(sigs_path)
    k = len(entries)
    while any(name.startswith(posixpath.join(signs_dir, f"Sign_{k}") + "/") for name in pkg.files):
        k += 1
    sign_dir = posixpath.join(signs_dir, f"Sign_{k}")
    seal_path, sig_path, value_path = (posixpath.join(sign_dir, n) for n in ("Seal.esl", "Signature.xml",
                                                                              "SignedValue.dat"))
    try:
        max_id = int(sigs_root.findtext(O + "MaxSignId") or 0)
    except ValueError:
        max_id = 0
    max_id = max([max_id] + [int(i) for i, _ in entries if i.isdigit()])
    sign_id = str(max_id + 1)

    pkg.files[seal_path] = bytes(seal.eseal)
    refs = [(name, sm2.sm3(body_)) for name, body_ in pkg.files.items() if name != sigs_path]
    sig_xml = _signature_xml(refs=refs, when=now, page_id=page_id, boundary=boundary, seal_path=seal_path,
                             signed_value_path=value_path, sign_id=sign_id)
    pkg.files[sig_path] = sig_xml

    cert_row = ca_service.get_certificate(seal.cert_serial)
    key = sm2.unseal_key(cert_row.private_key, f"seal-key:{cert_row.key_ref}")
    tbs = ses.make_tbs(bytes(seal.eseal), time_info=now, data_hash=sm2.sm3(sig_xml), property_info="/" + sig_path)
    signature = key.sign(tbs.dump())
    pkg.files[value_path] = ses.make_signature(tbs, signer_cert_der=cert_row.cert_der, signature=signature,
                                               time_stamp=_timestamp(signature))

    max_el = sigs_root.find(O + "MaxSignId")
    if max_el is None:
        max_el = etree.Element(O + "MaxSignId")
        sigs_root.insert(0, max_el)
    max_el.text = sign_id
    etree.SubElement(sigs_root, O + "Signature", ID=sign_id, Type="Seal", BaseLoc="/" + sig_path)
    pkg.files[sigs_path] = _xml_bytes(sigs_root)
    sealed = pkg.dump()
    audit.record("seal.used", actor=actor, object=f"seal:{seal.id}", detail={
        "document_sha256": hashlib.sha256(data).hexdigest(), "sealed_sha256": hashlib.sha256(sealed).hexdigest(),
        "purpose": purpose, "format": "ofd", "signature": sig_path, "org": seal.org.uscc,
        "at": now.isoformat(timespec="seconds") + "Z"})
    return sealed


# ---------------------------------------------------------------- verification


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.replace(microsecond=0).isoformat() + "Z"


def _broken(sign_id: str, is_last: bool, error: str) -> dict:
    return {"seal_name": "", "seal_code": "", "organisation": "", "signer": "", "signed_at": None,
            "intact": False, "covers_whole_document": False, "trusted": False, "revoked": False,
            "valid": False, "field": sign_id, "is_last": is_last, "error": error[:200]}


def _verify_one(pkg: Package, sign_id: str, path: str, sigs_path: str, later_dirs: list[str],
                is_last: bool) -> dict:
    from sqlalchemy import select
    from sqlalchemy.orm import joinedload

    from tongban.extensions import db

    problems: list[str] = []
    if path not in pkg.files:
        return _broken(sign_id, is_last, f"{path} is missing")
    sig_xml = pkg.files[path]
    root = pkg.xml(path)
    info = root.find(O + "SignedInfo")
    if root.tag != O + "Signature" or info is None:
        return _broken(sign_id, is_last, f"{path} is not an OFD signature")
    base = posixpath.dirname(path)
    refs_el = info.find(O + "References")
    if refs_el is None or refs_el.get("CheckMethod", "").strip() not in (sm2.OID_SM3, "SM3"):
        return _broken(sign_id, is_last, "the references are not SM3 check values")
    refs: dict[str, bytes] = {}
    for r in refs_el.findall(O + "Reference"):
        name = _norm(r.get("FileRef"), base)
        try:
            refs[name] = base64.b64decode((r.findtext(O + "CheckValue") or "").strip(), validate=True)
        except ValueError:
            refs[name] = b""
    changed = sorted(n for n, v in refs.items() if n not in pkg.files or pkg.sm3(n) != v)
    if changed:
        problems.append("changed or missing files: " + ", ".join(changed[:10]))
    value_path = _norm(root.findtext(O + "SignedValue"), base)
    if value_path not in pkg.files:
        return _broken(sign_id, is_last, f"{value_path} is missing")
    try:
        sig = ses.load_signature(pkg.files[value_path])
    except ses.SESError as e:
        return _broken(sign_id, is_last, str(e))
    tbs = sig["to_sign"]
    eseal = tbs["eseal"]
    seal_info = ses.describe_eseal(eseal)
    signer_der = sig["cert"].native
    try:
        signer = asn1_x509.Certificate.load(signer_der, strict=True)
        signer_key = sm2ca.public_key_of(signer)
    except Exception:
        return _broken(sign_id, is_last, "the signer certificate is not an SM2 certificate")
    if sig["signature_alg_id"].dotted != sm2.OID_SM3_WITH_SM2 or not signer_key.verify(
            tbs.dump(), sig["signature"].native):
        problems.append("the SM2 signature does not verify")
    if tbs["data_hash"].native != sm2.sm3(sig_xml):
        problems.append("Signature.xml was changed")
    if tbs["property_info"].native not in ("/" + path, path):
        problems.append("the signature names another Signature.xml")
    if eseal["seal_info"]["property"]["cert_list_type"].native != 1 or signer_der not in seal_info["signer_certs"]:
        problems.append("the signer certificate is not one of the seal's")
    subject = signer.subject.native
    if seal_info["es_id"] != subject.get("serial_number"):
        problems.append("the seal code does not match the signer certificate")
    seal_loc = info.findtext(f"{O}Seal/{O}BaseLoc")
    if seal_loc and pkg.files.get(_norm(seal_loc, base)) != eseal.dump():
        problems.append("the seal file differs from the seal in the signature")
    maker_ok = ses.eseal_maker_signature_ok(eseal)
    state = sm2ca.sm2ca()
    try:
        maker = asn1_x509.Certificate.load(eseal["cert"].native)
        # the seal maker (制章者) is our sm2-maker certificate exactly: a seal certificate is also
        # issued by sm2-issuing, and its holder must not be able to make seals
        maker_trusted = maker.dump() == state["sm2-maker"].cert.dump() and sm2ca.signed_by(
            state["sm2-maker"].cert, state["sm2-issuing"].cert)
    except Exception:
        maker_trusted = False
    if not maker_ok:
        problems.append("the seal maker's signature on the seal does not verify")
    time_info = tbs["time_info"].native.astimezone(UTC).replace(tzinfo=None)
    ts_token = sig["time_stamp"].native if sig["time_stamp"].native is not None else None
    ts_ok, ts_time = (False, None)
    if ts_token is not None:
        ts_ok, ts_time = _check_timestamp(ts_token, sig["signature"].native)
        if not ts_ok:
            problems.append("the time-stamp does not verify")
    signed_at = ts_time or time_info
    if not seal_info["valid_start"].astimezone(UTC).replace(tzinfo=None) <= signed_at \
            <= seal_info["valid_end"].astimezone(UTC).replace(tzinfo=None):
        problems.append("signed outside the seal's validity")
    cert_status = sm2ca.validate_seal_certificate(signer, signed_at)
    if not cert_status["in_validity"]:
        problems.append("signed outside the certificate's validity")
    trusted = cert_status["trusted"] and maker_ok and maker_trusted
    revoked = cert_status["revoked"]

    allowed = {sigs_path, path, value_path}
    unreferenced = sorted(n for n in pkg.files if n not in refs and n not in allowed
                          and not any(n.startswith(d + "/") for d in later_dirs))
    covers = not unreferenced
    stamp = info.find(O + "StampAnnot")
    serial_hex = format(signer.serial_number, "x")
    row = db.session.execute(select(Seal).options(joinedload(Seal.org))
                             .where(Seal.cert_serial == serial_hex)).scalar_one_or_none()
    intact = not problems
    out = {
        "seal_name": row.name if row else seal_info["name"],
        "seal_code": row.code if row else seal_info["es_id"],
        "organisation": row.org.name if row else subject.get("organization_name", ""),
        "organisation_uscc": row.org.uscc if row else subject.get("organization_identifier", ""),
        "signer": signer.subject.human_friendly,
        "signed_at": _iso(signed_at),
        "timestamped": ts_ok,
        "intact": intact,
        "covers_whole_document": covers,
        "changes_after": "none" if covers else "files added: " + ", ".join(unreferenced[:10]),
        "covers": f"{len(refs)} files of the package",
        "certified": False,
        "trusted": bool(trusted),
        "revoked": bool(revoked),
        "valid": bool(intact and trusted and not revoked),
        "field": sign_id,
        "page": stamp.get("PageRef") if stamp is not None else None,
        "is_last": is_last,
        "algorithm": "SM3withSM2",
    }
    if problems:
        out["error"] = "; ".join(problems)[:400]
    return out


def verify_ofd(data: bytes) -> dict:
    """The verdict on an OFD's seals, the shape ``verify_pdf`` gives for a PDF; BadOfd (400) when
    the upload is not an OFD package."""
    pkg = Package.load(data)
    _root, body, _doc_path = _doc_root(pkg)
    sigs_path, entries = _signature_list(pkg, body)
    if len(entries) > MAX_SIGNATURES:
        raise BadOfd(f"the document has more than {MAX_SIGNATURES} signatures")
    dirs = [posixpath.dirname(p) for _i, p in entries]
    out = []
    for i, (sign_id, path) in enumerate(entries):
        is_last = i == len(entries) - 1
        try:
            out.append(_verify_one(pkg, sign_id, path, sigs_path, dirs[i + 1:], is_last))
        except BadOfd as e:
            out.append(_broken(sign_id, is_last, e.message))
        except Exception as e:  # a signature too broken to evaluate is simply not valid
            out.append(_broken(sign_id, is_last, f"{type(e).__name__}: {str(e)[:150]}"))
    valid = bool(out) and all(s["valid"] for s in out) and out[-1]["covers_whole_document"]
    result = {"valid": valid, "format": "ofd", "signatures": out}
    if not out:
        result["message"] = "no seal found"
    return result


def verify_document(data: bytes) -> dict:
    """PDF or OFD, by content: the verdict on its seals."""
    if is_ofd(data):
        return verify_ofd(data)
    from .services import verify_pdf

    return verify_pdf(data)


__all__ = ["Package", "is_ofd", "sign_ofd", "verify_document", "verify_ofd"]
