"""Sealing and verification: PAdES B-LT seals checked by pyHanko and by poppler's pdfsig."""

from __future__ import annotations

import io
import subprocess

import pytest

from seal import services
from seal.errors import BadPdf, SealingRefused, SealNotUsable
from tests.seal.conftest import make_pdf, pdfsig
from tongban.extensions import db


def _sign(seal, pdf, **kw):
    kw.setdefault("purpose", "测试盖章")
    kw.setdefault("actor", "test")
    out = services.sign_pdf(seal, pdf, **kw)
    db.session.commit()
    return out


def test_picture_is_a_vector_seal_with_the_font_embedded(seal, tmp_path):
    path = tmp_path / "picture.pdf"
    path.write_bytes(seal.picture)
    fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, check=True).stdout
    assert "WenQuanYiMicroHei" in fonts
    row = next(line for line in fonts.splitlines() if "WenQuanYi" in line)
    assert " yes yes " in row  # embedded, subset
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    size = next(line for line in info.splitlines() if line.startswith("Page size"))
    width = float(size.split()[2])
    assert 38 <= width / 72 * 25.4 <= 42


def test_seal_is_valid_for_pyhanko_and_pdfsig(seal, plain_pdf, nssdb, tmp_path):
    sealed = _sign(seal, plain_pdf)
    verdict = services.verify_pdf(sealed)
    assert verdict["valid"] is True
    [sig] = verdict["signatures"]
    assert sig["intact"] and sig["trusted"] and sig["covers_whole_document"] and not sig["revoked"]
    assert sig["seal_code"] == seal.code and sig["organisation"] == "测试科技有限公司"
    assert sig["timestamped"] is True and sig["signed_at"].endswith("Z")

    # B-LT: the DSS holds the CRLs and certificates, so it validates offline later
    from pyhanko.pdf_utils.reader import PdfFileReader

    dss = PdfFileReader(io.BytesIO(sealed)).root["/DSS"]
    assert len(dss["/CRLs"]) >= 2 and len(dss["/Certs"]) >= 3

    out = pdfsig(nssdb, sealed, tmp_path)
    assert "Signature Validation: Signature is Valid." in out
    assert "Certificate Validation: Certificate is Trusted." in out
    assert "Digest Mismatch" not in out


def test_one_byte_changed_breaks_the_seal(seal, plain_pdf, nssdb, tmp_path):
    sealed = _sign(seal, plain_pdf)
    at = sealed.index(b"/Producer")  # inside the first signed byte range
    tampered = sealed[:at + 2] + bytes([sealed[at + 2] ^ 0x01]) + sealed[at + 3:]
    verdict = services.verify_pdf(tampered)
    assert verdict["valid"] is False
    assert verdict["signatures"][0]["intact"] is False
    assert "Digest Mismatch." in pdfsig(nssdb, tampered, tmp_path)


def test_content_changed_in_an_incremental_update(seal, plain_pdf):
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    sealed = _sign(seal, plain_pdf)
    w = IncrementalPdfFileWriter(io.BytesIO(sealed))
    w.find_page_for_modification(0)
    stream = generic.StreamObject(stream_data=b"BT /F1 24 Tf 72 500 Td (PAID IN FULL) Tj ET")
    w.add_stream_to_page(0, w.add_object(stream))
    out = io.BytesIO()
    w.write(out)
    verdict = services.verify_pdf(out.getvalue())
    assert verdict["valid"] is False
    sig = verdict["signatures"][0]
    assert sig["intact"] is True  # the sealed revision itself is untouched...
    assert sig["covers_whole_document"] is False  # ...but the document was changed after it
    assert sig["changes_after"] == "content changed"


def test_truncated_file(seal, plain_pdf):
    sealed = _sign(seal, plain_pdf)
    for cut in (len(sealed) // 2, len(sealed) - 200):
        try:
            verdict = services.verify_pdf(sealed[:cut])
        except BadPdf:
            continue
        assert verdict["valid"] is False


def test_not_a_pdf():
    with pytest.raises(BadPdf):
        services.verify_pdf(b"hello, this is not a PDF")
    with pytest.raises(BadPdf):
        services.verify_pdf(b"%PDF-1.7\n garbage garbage")


def test_unsigned_pdf_has_no_seal(app, plain_pdf):
    verdict = services.verify_pdf(plain_pdf)
    assert verdict == {"valid": False, "signatures": [], "message": "no seal found"}


def test_co_sealing_keeps_the_first_seal_valid(seal, authority_seal, plain_pdf, nssdb, tmp_path):
    once = _sign(seal, plain_pdf)
    twice = _sign(authority_seal, once, purpose="联合盖章", licence_use=True)  # a second organisation's seal
    verdict = services.verify_pdf(twice)
    assert verdict["valid"] is True
    first, second = verdict["signatures"]
    assert first["seal_code"] == seal.code and second["seal_code"] == authority_seal.code
    assert first["intact"] and first["trusted"] and first["valid"]
    assert first["covers_whole_document"] is False and first["changes_after"] == "signatures or form fields added"
    assert second["covers_whole_document"] is True
    out = pdfsig(nssdb, twice, tmp_path)
    assert out.count("Signature is Valid.") == 2 and "Digest Mismatch" not in out


def test_certified_document_refuses_another_seal(seal, authority_seal, plain_pdf):
    certified = _sign(authority_seal, plain_pdf, certify=True, licence_use=True)
    verdict = services.verify_pdf(certified)
    assert verdict["valid"] is True and verdict["signatures"][0]["certified"] is True
    with pytest.raises(SealingRefused):
        _sign(seal, certified)


def test_revoked_seal(seal, plain_pdf, client):
    from asn1crypto import crl

    sealed = _sign(seal, plain_pdf)
    services.revoke_seal(seal.id, "key compromised")
    db.session.commit()
    verdict = services.verify_pdf(sealed)
    assert verdict["valid"] is False
    assert verdict["signatures"][0]["revoked"] is True
    der = client.get("/ca/crl").data
    serials = [format(r["user_certificate"].native, "x") for r in crl.CertificateList.load(der)["tbs_cert_list"]
               ["revoked_certificates"]]
    assert seal.cert_serial in serials
    with pytest.raises(SealNotUsable):
        services.sign_pdf(seal, plain_pdf, purpose="x", actor="test")


def test_suspended_seal_cannot_seal(seal, plain_pdf):
    services.set_status(seal.id, "suspended", "audit")
    with pytest.raises(SealNotUsable):
        services.sign_pdf(seal, plain_pdf, purpose="x", actor="test")
    services.set_status(seal.id, "active")
    assert services.verify_pdf(services.sign_pdf(seal, plain_pdf, purpose="x", actor="t"))["valid"]


def test_seal_at_a_chosen_page_box_and_named_field(seal):
    pdf = make_pdf(pages=3)
    sealed = _sign(seal, pdf, page=2, box=(100, 100, 213, 213), field_name="审批章")
    from pyhanko.pdf_utils.reader import PdfFileReader

    r = PdfFileReader(io.BytesIO(sealed))
    [(name, _value, field_ref)] = [f for f in __import__("pyhanko.sign.fields", fromlist=["x"])
                                   .enumerate_sig_fields(r)]
    assert name == "审批章"
    widget = field_ref.get_object()
    assert [round(float(v)) for v in widget["/Rect"]] == [100, 100, 213, 213]
    assert widget["/P"].get_object() == r.root["/Pages"]["/Kids"][2].get_object()
    assert services.verify_pdf(sealed)["valid"]


def test_every_sealing_is_audited(seal, plain_pdf):
    import hashlib
    import json

    _sign(seal, plain_pdf, purpose="合同签订", actor="officer:abc")
    [use] = [r for r in services.uses(seal.id) if r.action == "seal.used"]
    detail = json.loads(use.detail)
    assert use.actor == "officer:abc" and use.object == f"seal:{seal.id}"
    assert detail["document_sha256"] == hashlib.sha256(plain_pdf).hexdigest()
    assert detail["purpose"] == "合同签订" and detail["at"].endswith("Z")


def test_purpose_is_required(seal, plain_pdf):
    from tongban.errors import ValidationError

    with pytest.raises(ValidationError):
        services.sign_pdf(seal, plain_pdf, purpose=" ", actor="t")


def test_rsa_seal(org, plain_pdf):
    s = services.create_seal(org.uscc, "RSA 章", "finance", alg="rsa")
    db.session.commit()
    verdict = services.verify_pdf(_sign(s, plain_pdf))
    assert verdict["valid"] is True


def test_authority_seal_created_by_bootstrap(app, authority_seal):
    assert authority_seal is not None and authority_seal.kind == "licence"
    assert len(authority_seal.code) == 13 and authority_seal.code.isdigit()
    assert authority_seal.org.uscc == app.config["TONGBAN_AUTHORITY_USCC"]
