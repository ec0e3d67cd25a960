"""国密 seals on OFD: GB/T 38540 seal data, GB/T 33190 signatures, and every way of forging or
changing a sealed OFD we could think of. OpenSSL checks the SM2 signatures independently."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile

import pytest
from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509

from seal import ofd, ses
from seal.ofdwriter import OfdBuilder
from tests.conftest import USCC
from tongban.extensions import db


def make_ofd(pages: int = 2) -> bytes:
    b = OfdBuilder(title="测试合同", custom={"purpose": "test"})
    for i in range(pages):
        b.add_page()
        b.text(25, 30, f"测试合同 第{i + 1}页", size=6)
        b.text(120, 250, "甲方（盖章）：", size=5)
        b.line(25, 40, 185, 40)
    return b.build()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def sm2_seal(app, org):
    from seal import services

    s = services.create_seal(org.uscc, "测试科技有限公司合同专用章", "contract", alg="sm2")
    db.session.commit()
    return s


def _files(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return out.getvalue()


def _openssl_verifies(tmp_path, cert_der: bytes, message: bytes, signature: bytes) -> bool:
    (tmp_path / "cert.pem").write_bytes(asn1_pem.armor("CERTIFICATE", cert_der))
    pub = subprocess.run(["openssl", "x509", "-in", "cert.pem", "-pubkey", "-noout"], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    (tmp_path / "pub.pem").write_text(pub)
    (tmp_path / "msg").write_bytes(message)
    (tmp_path / "sig").write_bytes(signature)
    r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-digest", "sm3",
                        "-in", "msg", "-sigfile", "sig", "-pkeyopt", "distid:1234567812345678"],
                       cwd=tmp_path, capture_output=True, text=True)
    return r.returncode == 0


def test_cli_sm2_seal_eseal_sign_verify(app, org, runner, tmp_path):
    r = runner.invoke(args=["seals", "create", "--org", USCC, "--name", "测试科技有限公司公章", "--alg", "sm2",
                            "--json"])
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)

    r = runner.invoke(args=["seals", "eseal", created["seal_id"], str(tmp_path / "seal.esl")])
    assert r.exit_code == 0, r.output
    der = (tmp_path / "seal.esl").read_bytes()
    eseal = ses.load_eseal(der)
    info = ses.describe_eseal(eseal)
    assert info["es_id"] == created["code"] and len(info["es_id"]) == 13
    assert info["name"] == "测试科技有限公司公章" and info["type"] == 1
    assert info["picture_type"] == "png" and eseal["seal_info"]["picture"]["data"].native.startswith(b"\x89PNG")
    assert eseal["seal_info"]["header"].native == {"id": "ES", "version": 4, "vid": "Tongban"}
    # the seal maker's signature over SES_SealInfo, checked by OpenSSL
    assert _openssl_verifies(tmp_path, eseal["cert"].native, eseal["seal_info"].dump(),
                             eseal["signed_value"].native)
    signer = asn1_x509.Certificate.load(info["signer_certs"][0])
    assert signer.subject.native["serial_number"] == created["code"]

    (tmp_path / "in.ofd").write_bytes(make_ofd())
    r = runner.invoke(args=["seals", "sign-ofd", "--seal", created["seal_id"], str(tmp_path / "in.ofd"),
                            str(tmp_path / "out.ofd"), "--page", "-1", "--anchor", "甲方（盖章）"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(args=["seals", "verify", str(tmp_path / "out.ofd"), "--json"])
    assert r.exit_code == 0, r.output
    verdict = json.loads(r.stdout)
    assert verdict["valid"] is True and verdict["format"] == "ofd"
    (s,) = verdict["signatures"]
    assert s["seal_code"] == created["code"] and s["organisation"] == "测试科技有限公司"
    assert s["organisation_uscc"] == USCC and s["seal_name"] == "测试科技有限公司公章"
    assert s["intact"] and s["trusted"] and s["timestamped"] and s["covers_whole_document"]
    assert s["revoked"] is False and s["signed_at"].endswith("Z") and s["algorithm"] == "SM3withSM2"

    # the unsigned OFD: no seal, exit 1; junk: exit 2
    r = runner.invoke(args=["seals", "verify", str(tmp_path / "in.ofd"), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["message"] == "no seal found"
    (tmp_path / "junk.ofd").write_bytes(b"PK\x03\x04 not really a zip")
    r = runner.invoke(args=["seals", "verify", str(tmp_path / "junk.ofd"), "--json"])
    assert r.exit_code == 2 and json.loads(r.stdout)["valid"] is False

    # revoked: the verdict says so
    r = runner.invoke(args=["seals", "revoke", created["seal_id"], "--reason", "lost"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(args=["seals", "verify", str(tmp_path / "out.ofd"), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["signatures"][0]["revoked"] is True


def test_the_package_follows_gbt_33190_and_openssl_checks_the_signature(app, sm2_seal, tmp_path):
    from keys import sm2

    sealed = ofd.sign_ofd(sm2_seal, make_ofd(), purpose="测试", actor="test", anchor="甲方（盖章）")
    files = _files(sealed)
    assert {"Doc_0/Signs/Signatures.xml", "Doc_0/Signs/Sign_0/Signature.xml", "Doc_0/Signs/Sign_0/SignedValue.dat",
            "Doc_0/Signs/Sign_0/Seal.esl"} <= set(files)
    assert b"<ofd:Signatures>/Doc_0/Signs/Signatures.xml</ofd:Signatures>" in files["OFD.xml"]
    sig_xml = files["Doc_0/Signs/Sign_0/Signature.xml"]
    assert b"1.2.156.10197.1.501" in sig_xml and b'CheckMethod="1.2.156.10197.1.401"' in sig_xml
    assert b'FileRef="/Doc_0/Pages/Page_0/Content.xml"' in sig_xml and b'FileRef="/OFD.xml"' in sig_xml
    assert b"Signatures.xml" not in sig_xml.split(b"<ofd:References")[1].split(b"</ofd:References>")[0]
    # the anchor text's boundary (120, 250-5, ...) is under the seal, centred
    assert b'PageRef="' in sig_xml and b"StampAnnot" in sig_xml
    sig = ses.load_signature(files["Doc_0/Signs/Sign_0/SignedValue.dat"])
    tbs = sig["to_sign"]
    assert tbs["version"].native == 4 and tbs["data_hash"].native == sm2.sm3(sig_xml)
    assert tbs["property_info"].native == "/Doc_0/Signs/Sign_0/Signature.xml"
    assert tbs["eseal"].dump() == files["Doc_0/Signs/Sign_0/Seal.esl"] == sm2_seal.eseal
    assert sig["signature_alg_id"].dotted == "1.2.156.10197.1.501"
    assert _openssl_verifies(tmp_path, sig["cert"].native, tbs.dump(), sig["signature"].native)
    # an RFC 3161 token over the signature value, from our TSA: OpenSSL checks it too
    from cryptography.hazmat.primitives import serialization

    from keys.ca import ca, root_pem

    (tmp_path / "token.der").write_bytes(sig["time_stamp"].native)
    (tmp_path / "signature.bin").write_bytes(sig["signature"].native)
    (tmp_path / "ec-root.pem").write_text(root_pem())
    (tmp_path / "ec-chain.pem").write_bytes(b"".join(ca()[r].cert.public_bytes(serialization.Encoding.PEM)
                                                     for r in ("issuing", "tsa")))
    ts = subprocess.run(["openssl", "ts", "-verify", "-data", "signature.bin", "-in", "token.der", "-token_in",
                         "-CAfile", "ec-root.pem", "-untrusted", "ec-chain.pem"], cwd=tmp_path,
                        capture_output=True, text=True)
    assert ts.returncode == 0 and "Verification: OK" in ts.stdout, ts.stdout + ts.stderr
    assert ofd.verify_ofd(sealed)["valid"]


def _tampered(sealed: bytes, name: str, change) -> bytes:
    files = _files(sealed)
    files[name] = change(files[name])
    return _zip(files)


@pytest.mark.parametrize("name", ["OFD.xml", "Doc_0/Document.xml", "Doc_0/PublicRes.xml",
                                  "Doc_0/Pages/Page_0/Content.xml", "Doc_0/Pages/Page_1/Content.xml",
                                  "Doc_0/Signs/Sign_0/Signature.xml", "Doc_0/Signs/Sign_0/SignedValue.dat",
                                  "Doc_0/Signs/Sign_0/Seal.esl"])
def test_any_change_to_any_file_is_detected(app, sm2_seal, name):
    sealed = ofd.sign_ofd(sm2_seal, make_ofd(), purpose="测试", actor="test")
    assert ofd.verify_ofd(sealed)["valid"]

    def flip(body: bytes) -> bytes:
        if name.endswith(".xml"):  # still well-formed XML: a digit changed (after the XML declaration)
            head, rest = body.split(b"?>", 1)
            return head + b"?>" + (rest.replace(b"1", b"7", 1) if b"1" in rest else rest + b" ")
        body = bytearray(body)
        body[len(body) // 2] ^= 0x01
        return bytes(body)

    from seal.errors import BadOfd

    try:
        verdict = ofd.verify_ofd(_tampered(sealed, name, flip))
    except BadOfd:  # e.g. OFD.xml's namespace changed: no longer an OFD at all
        return
    assert verdict["valid"] is False
    assert not verdict["signatures"] or not verdict["signatures"][0]["valid"]


def test_added_and_removed_files_are_detected(app, sm2_seal):
    sealed = ofd.sign_ofd(sm2_seal, make_ofd(), purpose="测试", actor="test")
    files = _files(sealed)
    files["Doc_0/Res/extra.png"] = b"\x89PNG added later"
    verdict = ofd.verify_ofd(_zip(files))
    assert verdict["valid"] is False and verdict["signatures"][0]["covers_whole_document"] is False
    assert "extra.png" in verdict["signatures"][0]["changes_after"]

    files = _files(sealed)
    del files["Doc_0/Pages/Page_1/Content.xml"]
    assert ofd.verify_ofd(_zip(files))["valid"] is False

    # the signature list edited: the signature dropped (its files stay) or pointed elsewhere
    files = _files(sealed)
    files["Doc_0/Signs/Signatures.xml"] = files["Doc_0/Signs/Signatures.xml"].replace(b"Sign_0", b"Sign_9")
    assert ofd.verify_ofd(_zip(files))["valid"] is False


def test_forged_signatures_are_refused(app, org, sm2_seal):
    """A seal the attacker made with our maker's format but their own keys, and a genuine seal of
    another organisation pasted into a signature the attacker made, are not trusted."""
    from datetime import timedelta

    from keys import sm2, sm2ca
    from seal import services
    from tongban.clock import utcnow

    # the attacker's own "CA" issues a certificate with our seal's subject; their own maker signs an SESeal
    attacker = sm2.generate()
    genuine = asn1_x509.Certificate.load(ses.describe_eseal(ses.load_eseal(sm2_seal.eseal))["signer_certs"][0])
    state = sm2ca.sm2ca()
    now = utcnow()
    fake_cert = sm2ca.build_certificate(genuine.subject, attacker.public_key(),
                                        issuer=state["sm2-issuing"].cert.subject, issuer_key=attacker,
                                        issuer_key_id=None, days=30, ca=False,
                                        key_usage={"digital_signature", "non_repudiation"}).dump()
    fake_eseal = ses.make_eseal(code=sm2_seal.code, name=sm2_seal.name, signer_cert_der=fake_cert, valid_start=now,
                                valid_end=now + timedelta(days=30), picture=b"\x89PNG", picture_type="png",
                                width_mm=40, height_mm=40, maker_cert_der=state["sm2-maker"].cert.dump(),
                                maker_key=attacker, created=now)
    sealed = ofd.sign_ofd(sm2_seal, make_ofd(), purpose="测试", actor="test")
    files = _files(sealed)
    sig_xml = files["Doc_0/Signs/Sign_0/Signature.xml"]
    old = ses.load_signature(files["Doc_0/Signs/Sign_0/SignedValue.dat"])
    tbs = ses.make_tbs(fake_eseal, time_info=now, data_hash=sm2.sm3(sig_xml),
                       property_info="/Doc_0/Signs/Sign_0/Signature.xml")
    files["Doc_0/Signs/Sign_0/SignedValue.dat"] = ses.make_signature(
        tbs, signer_cert_der=fake_cert, signature=attacker.sign(tbs.dump()), time_stamp=old["time_stamp"].native)
    files["Doc_0/Signs/Sign_0/Seal.esl"] = fake_eseal
    verdict = ofd.verify_ofd(_zip(files))
    assert verdict["valid"] is False and verdict["signatures"][0]["trusted"] is False

    # another organisation's genuine seal data, with the attacker's key signing: the signature fails
    other = services.create_seal(org.uscc, "另一枚章", "official", alg="sm2")
    tbs = ses.make_tbs(bytes(other.eseal), time_info=now, data_hash=sm2.sm3(sig_xml),
                       property_info="/Doc_0/Signs/Sign_0/Signature.xml")
    files["Doc_0/Signs/Sign_0/SignedValue.dat"] = ses.make_signature(
        tbs, signer_cert_der=ses.describe_eseal(ses.load_eseal(other.eseal))["signer_certs"][0],
        signature=attacker.sign(tbs.dump()), time_stamp=None)
    files["Doc_0/Signs/Sign_0/Seal.esl"] = bytes(other.eseal)
    verdict = ofd.verify_ofd(_zip(files))
    assert verdict["valid"] is False and verdict["signatures"][0]["intact"] is False


def test_two_seals_and_changes_between_them(app, org, sm2_seal):
    from seal import services

    second = services.create_seal(org.uscc, "测试科技有限公司公章", "official", alg="sm2")
    once = ofd.sign_ofd(sm2_seal, make_ofd(), purpose="测试", actor="test")
    twice = ofd.sign_ofd(second, once, purpose="测试", actor="test", page=1)
    verdict = ofd.verify_ofd(twice)
    assert verdict["valid"] and [s["seal_code"] for s in verdict["signatures"]] == [sm2_seal.code, second.code]
    assert [s["field"] for s in verdict["signatures"]] == ["1", "2"]
    files = _files(twice)
    assert "Doc_0/Signs/Sign_1/Signature.xml" in files


def test_refusals_change_nothing(app, org, seal, sm2_seal, plain_pdf):
    from seal.errors import BadOfd, SealNotUsable
    from tongban.errors import ValidationError

    with pytest.raises(SealNotUsable):  # an EC seal cannot sign OFD, an SM2 seal cannot sign PDF
        ofd.sign_ofd(seal, make_ofd(), purpose="x", actor="t")
    from seal import services

    with pytest.raises(SealNotUsable):
        services.sign_pdf(sm2_seal, plain_pdf, purpose="x", actor="t")
    with pytest.raises(ValidationError):
        ofd.sign_ofd(sm2_seal, make_ofd(), purpose="x", actor="t", page=5)
    with pytest.raises(ValidationError):
        ofd.sign_ofd(sm2_seal, make_ofd(), purpose="x", actor="t", anchor="not on the page")
    with pytest.raises(BadOfd):
        ofd.sign_ofd(sm2_seal, b"PK\x03\x04garbage", purpose="x", actor="t")
    with pytest.raises(BadOfd):  # a path leaving the package
        ofd.verify_ofd(_zip({"OFD.xml": b"<x/>", "../evil": b"x"}))
    with pytest.raises(BadOfd):  # entities are not expanded
        ofd.verify_ofd(_zip({"OFD.xml": b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'}))
    many = _files(ofd.sign_ofd(sm2_seal, make_ofd(), purpose="x", actor="t"))
    many["Doc_0/Signs/Signatures.xml"] = (
        b'<ofd:Signatures xmlns:ofd="http://www.ofdspec.org/2016">'
        + b"".join(b'<ofd:Signature ID="%d" BaseLoc="/Doc_0/Signs/Sign_0/Signature.xml"/>' % i for i in range(51))
        + b"</ofd:Signatures>")
    with pytest.raises(BadOfd):  # verifying costs signatures x files: a cap
        ofd.verify_ofd(_zip(many))
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("OFD.xml", b"<x/>")
        zf.writestr("big.bin", b"\x00" * (90 * 1024 * 1024))
    with pytest.raises(BadOfd):  # more than 4 x TONGBAN_SEAL_MAX_BYTES once inflated: not inflated
        ofd.verify_ofd(bomb.getvalue())


def test_http_verify_accepts_ofd(app, client, sm2_seal):
    sealed = ofd.sign_ofd(sm2_seal, make_ofd(), purpose="测试", actor="test")
    db.session.commit()
    r = client.post("/api/v1/seals/verify", data={"file": (io.BytesIO(sealed), "doc.ofd")},
                    content_type="multipart/form-data")
    assert r.status_code == 200 and r.json["valid"] is True and r.json["format"] == "ofd", r.json
    r = client.post("/api/v1/seals/verify", data={"file": (io.BytesIO(b"PK\x03\x04xx"), "doc.ofd")},
                    content_type="multipart/form-data")
    assert r.status_code == 400 and r.json["error"] == "invalid_ofd"
    import re

    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/seals/verify").text).group(1)
    page = client.post("/seals/verify", data={"file": (io.BytesIO(sealed), "doc.ofd"), "csrf_token": token},
                       content_type="multipart/form-data")
    assert page.status_code == 200 and sm2_seal.code in page.get_data(as_text=True)


def test_sign_api_seals_ofd_with_an_sm2_seal(app, client, make_client, sm2_seal):
    from seal import services
    from tests.seal.test_api_cli import _token

    cid, secret = make_client(scopes=["seal:sign"], grant_types=["client_credentials"])
    auth = {"Authorization": f"Bearer {_token(client, cid, secret, 'seal:sign')}"}
    services.authorise_client(sm2_seal.id, cid)
    db.session.commit()

    def post(data: bytes, **form):
        return client.post(f"/api/v1/seals/{sm2_seal.id}/sign", headers=auth, content_type="multipart/form-data",
                           data={"file": (io.BytesIO(data), "doc.ofd"), "purpose": "合同签订", **form})

    r = post(make_ofd(), anchor="甲方（盖章）")
    assert r.status_code == 200 and r.mimetype == "application/ofd"
    assert ofd.verify_ofd(r.data)["valid"]
    assert post(make_ofd(), anchor="nowhere").status_code == 400
    r = post(b"%PDF-1.7 not an OFD")
    assert r.status_code == 400 and r.json["error"] == "invalid_ofd"


def test_a_seal_holder_cannot_act_as_seal_maker(app, sm2_seal):
    """The seal maker (制章者) is our sm2-maker certificate exactly: a seal's own certificate, though
    issued by the same SM2 issuing CA, cannot sign seal data (here: a new name and picture for the
    holder's own seal, made and used with the holder's key)."""
    from datetime import timedelta

    from keys import ca as ca_service
    from keys import sm2
    from tongban.clock import utcnow

    row = ca_service.get_certificate(sm2_seal.cert_serial)
    key = sm2.unseal_key(row.private_key, f"seal-key:{row.key_ref}")
    now = utcnow().replace(microsecond=0)
    self_made = ses.make_eseal(code=sm2_seal.code, name="某某市人民政府", signer_cert_der=row.cert_der,
                               valid_start=now - timedelta(days=1), valid_end=now + timedelta(days=30),
                               picture=b"\x89PNG", picture_type="png", width_mm=40, height_mm=40,
                               maker_cert_der=row.cert_der, maker_key=key, created=now)
    files = _files(ofd.sign_ofd(sm2_seal, make_ofd(), purpose="测试", actor="test"))
    sig_xml = files["Doc_0/Signs/Sign_0/Signature.xml"]
    files["Doc_0/Signs/Sign_0/Seal.esl"] = self_made
    # Signature.xml's check value of Seal.esl: recomputed, as the holder would (they sign it anyway)
    import base64

    sig_xml = sig_xml.replace(base64.b64encode(sm2.sm3(bytes(sm2_seal.eseal))),
                              base64.b64encode(sm2.sm3(self_made)))
    files["Doc_0/Signs/Sign_0/Signature.xml"] = sig_xml
    tbs = ses.make_tbs(self_made, time_info=now, data_hash=sm2.sm3(sig_xml),
                       property_info="/Doc_0/Signs/Sign_0/Signature.xml")
    signature = key.sign(tbs.dump())
    files["Doc_0/Signs/Sign_0/SignedValue.dat"] = ses.make_signature(
        tbs, signer_cert_der=row.cert_der, signature=signature, time_stamp=ofd._timestamp(signature))
    verdict = ofd.verify_ofd(_zip(files))
    (sig,) = verdict["signatures"]
    assert sig["intact"] is True, sig  # every check value and signature verifies ...
    assert sig["trusted"] is False and verdict["valid"] is False  # ... but the maker is not ours
