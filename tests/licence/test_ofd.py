"""E-licences as OFD (licence/ofd.py): the CLI, the wallet and clerk downloads, the sharing API's
format choice, and verification under the same binding rules as PDF."""

from __future__ import annotations

import io
import zipfile

import pytest

from licence import ofd as licence_ofd
from seal import ofd
from tongban.extensions import db


def _files(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return out.getvalue()


def test_cli_writes_a_sealed_licence_ofd_that_verifies(app, issue, tmp_path):
    from licence import services

    lic = issue()
    r = app.test_cli_runner().invoke(args=["licences", "ofd", lic.identifier, str(tmp_path / "l.ofd")])
    assert r.exit_code == 0, r.output
    data = (tmp_path / "l.ofd").read_bytes()
    files = _files(data)
    ofd_xml = files["OFD.xml"].decode()
    assert f'<ofd:CustomData Name="ZZBS">{lic.identifier}</ofd:CustomData>' in ofd_xml
    assert services.verify_url(lic.verify_code) in ofd_xml
    assert any(n.endswith(".png") for n in files)  # the page as drawn for the PDF (layout and QR)
    page = files["Doc_0/Pages/Page_0/Content.xml"].decode()
    assert lic.holder_name in page and 'Alpha="0"' in page  # the searchable text layer
    seal_verdict = ofd.verify_ofd(data)
    assert seal_verdict["valid"], seal_verdict
    (sig,) = seal_verdict["signatures"]
    assert sig["organisation_uscc"] == lic.issuer_uscc

    verdict = services.verify_file(data)
    assert verdict["valid"] is True and verdict["licence"]["id"] == lic.identifier and verdict["format"] == "ofd"

    # the same file once the licence is revoked: not valid (status), though the seal still is
    services.revoke(lic.identifier, "测试撤销", "test")
    db.session.commit()
    assert services.verify_file(data)["valid"] is False


def test_binding_refuses_a_genuine_seal_on_a_changed_or_foreign_licence(app, issue):
    from licence import services
    from seal import services as seal_services
    from tests.conftest import USCC

    lic = issue()
    other = issue("营业执照")
    data = licence_ofd.sealed_ofd(lic, actor="test")
    db.session.commit()
    # the identifier swapped for another licence's: OFD.xml no longer matches its check value
    files = _files(data)
    files["OFD.xml"] = files["OFD.xml"].replace(lic.identifier.encode(), other.identifier.encode())
    verdict = services.verify_file(_zip(files))
    assert verdict["valid"] is False

    # a genuine, valid SM2 seal of another organisation on a licence-looking OFD: not the issuer's seal
    from people import accounts

    accounts.create_org(USCC, "测试科技有限公司")
    foreign = seal_services.create_seal(USCC, "测试科技有限公司电子证照专用章", "licence", alg="sm2")
    unsealed, _page, (cx, cy) = licence_ofd.render_ofd(lic)
    forged = ofd.sign_ofd(foreign, unsealed, purpose="伪造", actor="attacker", box=(cx - 20, cy - 20, 40, 40),
                          licence_use=True)
    db.session.commit()
    assert ofd.verify_ofd(forged)["valid"] is True
    verdict = services.verify_file(forged)
    assert verdict["valid"] is False and verdict["licence"] is None  # not named: not a package we issued


def test_wallet_and_clerk_offer_ofd(app, client, citizen, issue):
    from people import accounts
    from tests.conftest import OTHER_ID, PASSWORD
    from tests.licence.test_http import _login

    mine, other = issue("结婚证"), issue("残疾人证", holder=(OTHER_ID, "王五"))
    assert client.get(f"/wallet/{mine.identifier}/ofd").status_code == 302  # log in first
    _login(client)
    assert "/ofd" in client.get(f"/wallet/{mine.identifier}").get_data(as_text=True)
    r = client.get(f"/wallet/{mine.identifier}/ofd")
    assert r.status_code == 200 and r.mimetype == "application/ofd" and r.data.startswith(b"PK\x03\x04")
    assert ofd.verify_ofd(r.data)["valid"]
    assert client.get(f"/wallet/{other.identifier}/ofd").status_code == 404

    authority = accounts.get_org(app.config["TONGBAN_AUTHORITY_USCC"])
    accounts.create_staff("110105198001010016", "王五", PASSWORD, authority.uscc, "clerk")
    db.session.commit()
    client.get("/logout")
    clerk = app.test_client()
    _login(clerk, "110105198001010016")
    assert "/ofd" in clerk.get(f"/clerk/licences/{mine.identifier}").get_data(as_text=True)
    r = clerk.get(f"/clerk/licences/{mine.identifier}/ofd")
    assert r.status_code == 200 and ofd.verify_ofd(r.data)["valid"]


def test_sharing_download_in_ofd_and_the_type_default(app, issue):
    from licence import services

    lic = issue()
    caller = services.Caller("tb_client", "市市场监管局", "", "开办企业", "11350100MB0000000X")
    raw, _ = services.create_download_link(lic, caller)
    db.session.commit()
    got, data = services.redeem_download_link(raw, "ofd")
    db.session.commit()
    assert got.id == lic.id and ofd.verify_ofd(data)["valid"]
    def page_png(ofd_bytes):
        return next(v for k, v in _files(ofd_bytes).items() if k.endswith(".png"))

    assert page_png(data) != page_png(licence_ofd.render_ofd(lic)[0])  # the watermark is drawn on the page
    assert licence_ofd.file_format(lic.type) == "pdf"
    lic.type.layout = {**lic.type.layout, "file_format": "ofd"}
    db.session.commit()
    assert licence_ofd.file_format(lic.type) == "ofd"
    raw, _ = services.create_download_link(lic, caller)
    db.session.commit()
    _got, data = services.redeem_download_link(raw)
    assert data.startswith(b"PK\x03\x04")


def test_type_spec_file_format(app):
    from licence import services
    from tongban.errors import ValidationError

    spec = {"code": "91350100M000100Y43001", "name": "测试许可证", "holder_kind": "organisation",
            "items": [{"name": "scope", "label": "经营范围"}], "layout": {"kind": "permit", "file_format": "ofd"}}
    assert services.check_type_spec(spec)["layout"]["file_format"] == "ofd"
    with pytest.raises(ValidationError):
        services.check_type_spec({**spec, "layout": {"file_format": "docx"}})
