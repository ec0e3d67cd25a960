"""A licence verdict is bound to the document we issued: the attacks of issue 10, performed."""

from __future__ import annotations

import base64
import io

import pytest

from licence import services
from tests.conftest import USCC
from tongban.extensions import db

OTHER_DEPT = "11330800002724001K"  # a second department (USCC with a valid check character)


def _keywords_pdf(identifier: str, text: str = "营业执照 伪造") -> bytes:
    """Any PDF whose document information claims to be a licence (Keywords ZZBS:<id>)."""
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=(842, 595))
    c.setKeywords(f"ZZBS:{identifier}")
    c.drawString(72, 500, text)
    c.showPage()
    c.save()
    return buf.getvalue()


def _failed(result) -> set[str]:
    return {c["check"] for c in result["checks"] if not c["ok"]}


def _seal_of(uscc: str, name: str, kind: str):
    from people import accounts
    from seal import services as seals

    accounts.ensure_org(uscc, name)
    s = seals.create_seal(uscc, f"{name}{'电子证照专用章' if kind == 'licence' else '合同专用章'}", kind)
    db.session.commit()
    return s


def test_issued_pdf_is_valid_with_every_check_named(issue):
    lic = issue()
    assert lic.signed_sha256 and len(lic.signed_sha256) == 64 and lic.department_uscc == lic.issuer_uscc
    r = services.verify_file(lic.pdf)
    assert r["valid"] is True and r["status"] == "valid" and r["licence"]["id"] == lic.identifier
    assert r["failed"] == [] and [c["check"] for c in r["checks"]] == [
        "sealed", "identifier_signed", "issuer_seal", "nothing_after", "issued_version", "status"]
    assert r["copy"] is False and r["seal"]["valid"] is True


def test_appended_identifier_after_a_revoked_licence(issue):
    """Attack 1: a revoked licence's own PDF with ``%ZZBS:<valid id>`` appended after the signed bytes."""
    good = issue()
    bad = issue("结婚证")
    services.revoke(bad.identifier, "撤销登记", "test")
    db.session.commit()
    forged = bad.pdf + f"\n%ZZBS:{good.identifier}\n".encode()
    r = services.verify_file(forged)
    assert r["valid"] is False and r["status"] == "revoked"
    assert r["licence"]["id"] == bad.identifier  # never the other person's licence
    assert _failed(r) == {"nothing_after", "status"}
    assert services.identifier_in_pdf(forged) == bad.identifier
    msgs = {c["check"]: c for c in r["checks"]}
    assert "追加" in msgs["nothing_after"]["message"] and "appended" in msgs["nothing_after"]["message_en"]
    assert "已注销" in msgs["status"]["message"]
    # the same trick on a valid licence's own PDF: bytes after the seal are refused as well, also
    # when they end in a copy of the real startxref and %%EOF
    startxref = good.pdf.rstrip()[:-len(b"%%EOF")].rstrip().rsplit(b"\n", 1)[1]
    for junk in (b"\n%junk\n", b"\n%ZZBS:" + bad.identifier.encode() + b"\nstartxref\n" + startxref + b"\n%%EOF\n"):
        r = services.verify_file(good.pdf + junk)
        assert r["valid"] is False and _failed(r) == {"nothing_after"}, junk


@pytest.mark.parametrize("certify", [True, False])
def test_any_pdf_with_keywords_sealed_by_a_contract_seal(issue, certify):
    """Attack 2: a PDF of anything claiming ZZBS:<valid id>, sealed with some company's contract seal."""
    from seal import services as seals

    victim = issue()
    contract = _seal_of(USCC, "测试科技有限公司", "contract")
    forged = seals.sign_pdf(contract, _keywords_pdf(victim.identifier), purpose="伪造", actor="attacker",
                            certify=certify)
    db.session.commit()
    r = services.verify_file(forged)
    assert r["seal"]["valid"] is True  # the seal itself is fine: it just is not the issuer's licence seal
    assert r["valid"] is False and r["status"] == "unknown" and r["licence"] is None
    # not certified: no certifying seal at all, so nothing it covers can be read either
    expected = {"issuer_seal", "issued_version", "status"} if certify else set(r["failed"])
    assert _failed(r) == expected and ("sealed" in expected) is not certify


def _api_token(client, make_client, scope):
    cid, secret = make_client(scopes=[scope], grant_types=["client_credentials"])
    basic = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    r = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": scope},
                    headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200, r.json
    return cid, {"Authorization": f"Bearer {r.json['access_token']}"}


def test_pdf_sealed_through_the_seal_api_with_the_issuers_own_licence_seal(app, client, make_client, issue):
    """Even the issuer's licence seal, applied by an authorised system to another document, is no licence."""
    from licence.models import LicenceAccess
    from seal import services as seals

    victim = issue()
    seal = seals.get_active_seal(app.config["TONGBAN_AUTHORITY_USCC"], "licence")
    cid, auth = _api_token(client, make_client, "seal:sign")
    seals.authorise_client(seal.id, cid)
    db.session.commit()
    r = client.post(f"/api/v1/seals/{seal.id}/sign", headers=auth, content_type="multipart/form-data",
                    data={"file": (io.BytesIO(_keywords_pdf(victim.identifier)), "x.pdf"), "purpose": "盖章",
                          "certify": "true"})
    assert r.status_code == 409 and r.json["error"] == "licence_seal_reserved"  # licence seals seal licences only
    # and had it been applied anyway (the seal's key used past that refusal): still no licence
    forged = seals.sign_pdf(seal, _keywords_pdf(victim.identifier), purpose="盖章", actor=f"client:{cid}",
                            certify=True, licence_use=True)
    db.session.commit()
    result = services.verify_file(forged)
    assert result["valid"] is False and result["licence"] is None
    assert _failed(result) == {"issued_version", "status"}

    # through the sharing API: the verdict names the failed checks; nothing lands in the victim's access log
    _vid, vauth = _api_token(client, make_client, "licence:verify")
    r = client.post("/api/v1/licences/verify", headers=vauth, content_type="multipart/form-data",
                    data={"file": (io.BytesIO(forged), "l.pdf"), "purpose": "核验", "service_item": "0001"})
    assert r.status_code == 200
    body = r.get_json()
    assert body["valid"] is False and body["licence"] is None and body["failed"] == ["issued_version", "status"]
    assert any("不一致" in c.get("message", "") for c in body["checks"])
    assert db.session.query(LicenceAccess).filter_by(licence_id=victim.id).count() == 0
    r = client.post("/api/v1/licences/verify", headers=vauth, content_type="multipart/form-data",
                    data={"file": (io.BytesIO(victim.pdf), "l.pdf"), "purpose": "核验", "service_item": "0001"})
    assert r.get_json()["valid"] is True
    assert [a.operation for a in services.access_log(victim)] == ["verify"]


def test_licence_sealed_by_another_departments_licence_seal(app, issue):
    """The same page, rendered and sealed with another department's licence seal, is not the issuer's."""
    from seal import services as seals

    victim = issue()
    other = _seal_of(OTHER_DEPT, "通办市某某局", "licence")
    from licence import pdf as pdfs

    page = pdfs.render(services.sheet(victim))
    forged = seals.sign_pdf(other, page.pdf, purpose="伪造", actor="x", certify=True, field_name="LicenceSeal",
                            box=page.seal_box, licence_use=True)
    db.session.commit()
    r = services.verify_file(forged)
    assert r["valid"] is False and r["licence"] is None
    assert _failed(r) == {"issuer_seal", "issued_version", "status"}


def test_older_version_of_a_changed_licence(issue):
    old = issue()
    new = services.change(old.identifier, {"capital": "贰仟万元整"}, "test", reason="增资")
    db.session.commit()
    r = services.verify_file(old.pdf)
    assert r["valid"] is False and r["status"] == "revoked" and r["superseded_by"] == new.identifier
    assert r["licence"]["id"] == old.identifier and _failed(r) == {"status"}
    assert "已变更" in r["checks"][-1]["message"]
    assert services.verify_file(new.pdf)["valid"] is True


def _incremental(pdf: bytes, change) -> bytes:
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    w = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    change(w)
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()


def test_incremental_update_that_changes_content(issue):
    from pyhanko.pdf_utils import generic

    lic = issue()

    def overlay(w):
        ref = w.add_object(generic.StreamObject(stream_data=b"0 0 1 rg 100 100 400 200 re f"))
        w.add_stream_to_page(0, ref)

    r = services.verify_file(_incremental(lic.pdf, overlay))
    assert r["valid"] is False and "nothing_after" in _failed(r)

    other = issue("结婚证")

    def rekey(w):  # a later revision claiming another licence in the document information
        info = w.trailer["/Info"].get_object()
        info["/Keywords"] = generic.TextStringObject(f"ZZBS:{other.identifier}")
        w.update_container(info)

    r = services.verify_file(_incremental(lic.pdf, rekey))
    assert r["valid"] is False and "nothing_after" in _failed(r)
    assert r["licence"] is None or r["licence"]["id"] == lic.identifier


def test_document_timestamp_after_the_seal_is_allowed(issue):
    """Pure LTV updates (a document timestamp) after the signed revision keep the licence valid."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers as pdf_signers

    from keys.tsa import timestamper

    lic = issue()
    w = IncrementalPdfFileWriter(io.BytesIO(lic.pdf), strict=False)
    out = pdf_signers.PdfTimeStamper(timestamper()).timestamp_pdf(w, "sha256", in_place=False)
    stamped = out.getvalue()
    r = services.verify_file(stamped)
    assert r["failed"] == [] and r["valid"] is True, r["seal"]


def test_shared_watermarked_copy_verifies_as_a_copy(issue):
    lic = issue()
    caller = services.Caller("c1", "市场监管局", "登记系统", "年报核验", "0001")
    raw, _ = services.create_download_link(lic, caller)
    db.session.commit()
    _lic, data = services.redeem_download_link(raw)
    db.session.commit()
    r = services.verify_file(data)
    assert r["valid"] is True and r["copy"] is True and r["licence"]["id"] == lic.identifier


def test_not_a_pdf_and_unsealed_pdf(issue):
    from tongban.errors import TongbanError

    with pytest.raises(TongbanError) as e:
        services.verify_file(b"hello")
    assert e.value.status == 400
    lic = issue()
    r = services.verify_file(_keywords_pdf(lic.identifier))
    assert r["valid"] is False and r["licence"] is None and "sealed" in r["failed"]


def test_verify_api_is_rate_limited_per_client(app, client, make_client, issue, monkeypatch):
    lic = issue()
    monkeypatch.setitem(app.config, "TONGBAN_LICENCE_VERIFY_RATE", 2)
    _a, auth = _api_token(client, make_client, "licence:verify")
    _b, other = _api_token(client, make_client, "licence:verify")
    body = {"id": lic.identifier, "purpose": "核验", "service_item": "0001"}
    codes = [client.post("/api/v1/licences/verify", headers=auth, json=body).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    r = client.post("/api/v1/licences/verify", headers=auth, json=body)
    assert r.status_code == 429 and r.get_json()["error"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
    assert client.post("/api/v1/licences/verify", headers=other, json=body).status_code == 200
    # a miss is logged to nobody: unknown identifiers touch no licence's access log
    miss = {"id": lic.identifier[:-1] + ("8" if lic.identifier[-1] != "8" else "9"), "purpose": "核验",
            "service_item": "0001"}
    r = client.post("/api/v1/licences/verify", headers=other, json=miss)
    assert r.status_code == 200 and r.get_json()["licence"] is None
    assert len(services.access_log(lic)) == 3


def test_verify_api_upload_limits(app, client, make_client, monkeypatch):
    monkeypatch.setitem(app.config, "TONGBAN_SEAL_MAX_BYTES", 1024)
    _a, auth = _api_token(client, make_client, "licence:verify")
    why = {"purpose": "核验", "service_item": "0001"}
    r = client.post("/api/v1/licences/verify", headers=auth, content_type="multipart/form-data",
                    data={"file": (io.BytesIO(b"%PDF-1.7\n" + b"0" * 4096), "l.pdf"), **why})
    assert r.status_code == 413 and r.get_json()["error"] == "too_large"
    r = client.post("/api/v1/licences/verify", headers=auth, content_type="multipart/form-data",
                    data={"file": (io.BytesIO(b"not a pdf"), "l.pdf"), **why})
    assert r.status_code == 400


def test_clerk_verify_page_names_the_failed_check_in_chinese(app, issue):
    from people import accounts
    from tests.licence.test_departments import _CSRF, CLERK_AUTH, _login

    accounts.create_staff(CLERK_AUTH, "政数窗口", "Test-Passw0rd!", app.config["TONGBAN_AUTHORITY_USCC"], "clerk")
    db.session.commit()
    good, bad = issue(), issue("结婚证")
    services.revoke(bad.identifier, "撤销登记", "test")
    db.session.commit()
    client = _login(app, CLERK_AUTH)
    csrf = _CSRF.search(client.get("/clerk/verify").get_data(as_text=True)).group(1)
    forged = bad.pdf + f"\n%ZZBS:{good.identifier}\n".encode()
    r = client.post("/clerk/verify", data={"csrf_token": csrf, "file": (io.BytesIO(forged), "l.pdf")},
                    content_type="multipart/form-data")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "不能采信" in page and "印章完好、证照有效" not in page
    assert "签章之后文件被追加或修改了内容" in page and "nothing_after" in page and good.identifier not in page
    r = client.post("/clerk/verify", data={"csrf_token": csrf, "file": (io.BytesIO(good.pdf), "l.pdf")},
                    content_type="multipart/form-data")
    assert "印章完好、证照有效" in r.get_data(as_text=True)


def test_offline_code_decoding_is_bounded_server_side(issue):
    import zlib

    import base45

    from licence import offline

    lic = issue()
    raw = offline.make_token(lic)
    _header, claims, *_ = offline.decode_token(raw)
    assert claims[-260]["id"] == lic.identifier
    cose = zlib.decompress(base45.b45decode(raw[len(offline.PREFIX):]))
    for bad in (cose + b"\x00", b"\x00" * 2_000_000):
        code = offline.PREFIX + base45.b45encode(zlib.compress(bad, 9)).decode()
        with pytest.raises(offline.OfflineError):
            offline.decode_token(code)
    with pytest.raises(offline.OfflineError):
        offline.decode_token(offline.PREFIX + "A" * 5000)


def test_issuer_seal_revoked_after_or_before_signing(app, issue):
    from datetime import timedelta

    from keys.models import IssuedCertificate
    from seal import services as seals
    from tongban.clock import utcnow

    lic = issue()
    seal = seals.get_active_seal(app.config["TONGBAN_AUTHORITY_USCC"], "licence")
    seals.revoke_seal(seal.id, "密钥更换")
    cert = db.session.get(IssuedCertificate, seal.cert_serial)
    cert.revoked_at = utcnow() + timedelta(minutes=1)  # revoked after the licence was sealed
    db.session.commit()
    r = services.verify_file(lic.pdf)
    assert r["seal"]["signatures"][0]["revoked"] is True  # the seal verdict says so ...
    assert r["valid"] is True and r["failed"] == []  # ... but the timestamp proves it signed before
    cert.revoked_at = lic.created_at - timedelta(minutes=1)  # revoked before it signed: not the issuer's seal
    db.session.commit()
    r = services.verify_file(lic.pdf)
    assert r["valid"] is False and "issuer_seal" in r["failed"] and r["licence"] is None


def test_migration_backfill_computes_the_same_signed_hash(issue):
    """0008 fills signed_sha256 of licences issued before it the way issuing does now."""
    import hashlib
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tongban/migrations/versions/0008_licence_binding.py"
    spec = importlib.util.spec_from_file_location("m0008", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    lic = issue()
    found = mod._BYTE_RANGE.search(lic.pdf)
    end = int(found.group(2)) + int(found.group(3))
    assert hashlib.sha256(lic.pdf[:end]).hexdigest() == lic.signed_sha256
