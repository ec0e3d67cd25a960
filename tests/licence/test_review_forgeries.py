"""Regression tests for the security review's findings on licence documents: each performs the
attack the reviewer reproduced and asserts it no longer yields a valid licence."""

from __future__ import annotations

import io
import zipfile

import pytest

from licence import ofd as licence_ofd
from seal import ofd
from tongban.extensions import db

PAGE = "Doc_0/Pages/Page_0/Content.xml"


def _files(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _zip(files: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return out.getvalue()


# ---------------------------------------------------------------- finding 1: OFD bound to what was issued


def test_licence_seal_holder_cannot_mint_a_licence_ofd_with_other_content(app, issue):
    """Even with the issuer's licence seal used on forged content (the seal's key itself, past the
    refusal below), the OFD is not one Tongban sealed for that licence: not valid, licence not named."""
    from licence import services

    lic = issue()
    seal = licence_ofd.ofd_seal(lic.issuer_uscc)
    unsealed, _p, (cx, cy) = licence_ofd.render_ofd(lic)
    files = _files(unsealed)
    files[PAGE] = files[PAGE].replace(lic.holder_name.encode(), "伪造公司".encode())
    forged = ofd.sign_ofd(seal, _zip(files), purpose="任意用途", actor="client:x", box=(cx - 20, cy - 20, 40, 40),
                          licence_use=True)
    db.session.commit()
    assert ofd.verify_ofd(forged)["valid"] is True  # the seal itself is genuine
    v = services.verify_file(forged)
    assert v["valid"] is False and v["licence"] is None and v["issued_version"] is False

    # what Tongban hands out still verifies: the wallet/clerk copy and a shared (watermarked) copy
    genuine = licence_ofd.sealed_ofd(lic, actor="test")
    db.session.commit()
    v = services.verify_file(genuine)
    assert v["valid"] is True and v["licence"]["id"] == lic.identifier and v["copy"] is False
    caller = services.Caller("tb_client", "市市场监管局", "", "开办企业", "企业开办")
    raw, _ = services.create_download_link(lic, caller)
    db.session.commit()
    _lic, shared = services.redeem_download_link(raw, "ofd")
    db.session.commit()
    v = services.verify_file(shared)
    assert v["valid"] is True and v["copy"] is True
    # re-zipped with the very same files: a different package, not the one handed out
    assert services.verify_file(_zip(_files(genuine), zipfile.ZIP_STORED))["valid"] is False


def test_licence_seals_are_refused_on_uploaded_documents(app, client, make_client, issue):
    """The generic sealing paths (API for PDF and OFD, the CLI) refuse a licence seal: it seals only
    the licences the licence code renders."""
    from licence import services
    from seal import services as seal_services
    from seal.errors import LicenceSealReserved
    from tests.seal.conftest import make_pdf
    from tests.seal.test_api_cli import _token
    from tongban.audit import AuditLog

    lic = issue()
    sm2_seal = licence_ofd.ofd_seal(lic.issuer_uscc)
    pdf_seal = services.licence_seal(lic.issuer_uscc)
    db.session.commit()
    cid, secret = make_client(scopes=["seal:sign"], grant_types=["client_credentials"])
    auth = {"Authorization": f"Bearer {_token(client, cid, secret, 'seal:sign')}"}
    seal_services.authorise_client(sm2_seal.id, cid)
    seal_services.authorise_client(pdf_seal.id, cid)
    db.session.commit()
    unsealed, _p, _c = licence_ofd.render_ofd(lic)
    used_before = db.session.query(AuditLog).filter(AuditLog.action == "seal.used").count()
    for seal_id, doc in ((sm2_seal.id, unsealed), (pdf_seal.id, make_pdf())):
        r = client.post(f"/api/v1/seals/{seal_id}/sign", headers=auth, content_type="multipart/form-data",
                        data={"file": (io.BytesIO(doc), "doc"), "purpose": "任意用途"})
        assert r.status_code == 409 and r.json["error"] == "licence_seal_reserved"
    assert db.session.query(AuditLog).filter(AuditLog.action == "seal.used").count() == used_before
    with pytest.raises(LicenceSealReserved):
        ofd.sign_ofd(sm2_seal, unsealed, purpose="x", actor="t")
    with pytest.raises(LicenceSealReserved):
        seal_services.sign_pdf(pdf_seal, make_pdf(), purpose="x", actor="t")


def test_cli_sign_ofd_refuses_a_licence_seal(app, issue, tmp_path):
    lic = issue()
    seal = licence_ofd.ofd_seal(lic.issuer_uscc)
    db.session.commit()
    unsealed, _p, _c = licence_ofd.render_ofd(lic)
    (tmp_path / "in.ofd").write_bytes(unsealed)
    r = app.test_cli_runner().invoke(
        args=["seals", "sign-ofd", "--seal", seal.id, str(tmp_path / "in.ofd"), str(tmp_path / "out.ofd")])
    assert r.exit_code == 1 and "licence seal" in r.output and not (tmp_path / "out.ofd").exists()


# ---------------------------------------------------------------- finding 2: bytes around the package


def test_a_forged_package_in_front_of_a_genuine_one_is_refused(app, issue):
    from licence import services
    from seal.errors import BadOfd

    lic = issue()
    genuine = licence_ofd.sealed_ofd(lic, actor="test")
    db.session.commit()
    files = _files(genuine)
    files[PAGE] = files[PAGE].replace(lic.holder_name.encode(), "伪造公司".encode())
    poly = _zip(files, zipfile.ZIP_STORED) + genuine  # a front-to-back reader shows the forged pages
    for attempt in (poly, genuine + b"trailing", b"PK\x03\x04" + genuine[4:] + genuine):
        with pytest.raises(BadOfd):
            ofd.verify_ofd(attempt)
        with pytest.raises(BadOfd):
            services.verify_file(attempt)
    commented = io.BytesIO(genuine)
    with zipfile.ZipFile(commented, "a") as zf:
        zf.comment = b"a comment after the archive"
    with pytest.raises(BadOfd):
        ofd.verify_ofd(commented.getvalue())
    # bytes hidden between two entries (the central directory's offsets adjusted around them)
    assert services.verify_file(genuine)["valid"] is True


def test_bytes_between_entries_are_refused(app):
    from seal.errors import BadOfd

    plain = _zip({"OFD.xml": b"<a/>", "Doc_0/Document.xml": b"<b/>"}, zipfile.ZIP_STORED)
    with zipfile.ZipFile(io.BytesIO(plain)) as zf:
        second = zf.infolist()[1].header_offset
        cd = zf.start_dir
    gap = b"HIDDEN"
    shifted = bytearray(plain[:second] + gap + plain[second:])
    # fix up the central directory: the second entry's offset and the directory's own offset
    cd += len(gap)
    entry = shifted.index(b"PK\x01\x02", cd)
    entry = shifted.index(b"PK\x01\x02", entry + 4)
    shifted[entry + 42:entry + 46] = (second + len(gap)).to_bytes(4, "little")
    shifted[-6:-2] = cd.to_bytes(4, "little")
    with zipfile.ZipFile(io.BytesIO(bytes(shifted))) as zf:  # zipfile itself reads it happily
        assert zf.read("Doc_0/Document.xml") == b"<b/>"
    with pytest.raises(BadOfd):
        ofd.Package.load(bytes(shifted))
    assert ofd.Package.load(plain).files["OFD.xml"] == b"<a/>"


# ---------------------------------------------------------------- finding 7: XMP rewritten after the seal


def test_xmp_metadata_rewritten_after_the_seal_is_not_valid(app, issue):
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    from licence.verification import verify_licence_document

    lic = issue()
    pdf = bytes(lic.pdf)
    assert verify_licence_document(pdf)["valid"]
    xmp = ('<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
           '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
           'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:pdf="http://ns.adobe.com/pdf/1.3/">'
           '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">FORGED 伪造 title</rdf:li></rdf:Alt></dc:title>'
           '<pdf:Keywords>ZZBS:1.2.156.3005.2.FORGED</pdf:Keywords></rdf:Description></rdf:RDF></x:xmpmeta>'
           '<?xpacket end="w"?>').encode()
    w = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    s = generic.StreamObject({generic.NameObject("/Type"): generic.NameObject("/Metadata"),
                              generic.NameObject("/Subtype"): generic.NameObject("/XML")}, stream_data=xmp)
    w.root[generic.NameObject("/Metadata")] = w.add_object(s)
    w.update_root()
    w._update_meta = lambda: None  # pyHanko's writer would put its own XMP back: the attacker's does not
    out = io.BytesIO()
    w.write(out)
    forged = out.getvalue()
    from pyhanko.pdf_utils.reader import PdfFileReader

    assert b"FORGED" in PdfFileReader(io.BytesIO(forged), strict=False).root["/Metadata"].data  # what readers show
    v = verify_licence_document(forged)
    assert v["valid"] is False and "nothing_after" in v["failed"]


# ---------------------------------------------------------------- finding 9b: the shared copy's watermark


def test_callers_do_not_choose_the_text_sealed_onto_a_shared_copy(app, issue, monkeypatch):
    from pyhanko.pdf_utils.reader import PdfFileReader

    from licence import services
    from licence.models import DownloadLink

    lic = issue()
    forged_text = "本证照已被法院查封，请立即拨打 400-000-0000"
    caller = services.Caller("tb_client", "市市场监管局<script>", "", forged_text, forged_text[:100])
    drawn = []
    real_sheet = services.sheet
    monkeypatch.setattr(services, "sheet", lambda *a, **kw: drawn.append(a[2] if len(a) > 2 else kw.get("watermark"))
                        or real_sheet(*a, **kw))
    for fmt in ("pdf", "ofd"):
        raw, _ = services.create_download_link(lic, caller)
        db.session.commit()
        link = db.session.execute(db.select(DownloadLink).order_by(DownloadLink.id.desc())).scalars().first()
        _lic, data = services.redeem_download_link(raw, fmt)
        db.session.commit()
        mark = drawn[-1]
        assert mark.startswith(f"仅供市市场监管局script办事使用 共享编号GX{link.id:08d} "), mark
        assert "查封" not in mark and "400" not in mark
        assert services.verify_file(data)["valid"] is True
        if fmt == "pdf":
            (sig,) = PdfFileReader(io.BytesIO(data), strict=False).embedded_signatures
            reason = str(sig.sig_object["/Reason"])
            assert reason == f"共享下载 {lic.identifier} 共享编号GX{link.id:08d}"
    # the caller's purpose is where it belongs: the licence's access log
    assert [a.purpose for a in services.access_log(lic)] == [forged_text, forged_text]
