"""What people see: the scan page /v/<code>, the wallet's status, the seal verifier on a licence PDF."""

from __future__ import annotations

import re
from datetime import date, datetime

from licence import services
from tests.conftest import CITIZEN_ID, OTHER_ID, USCC
from tests.licence.test_http import _login
from tests.licence.test_verification import _keywords_pdf, _seal_of
from tongban.extensions import db

JSON = {"Accept": "application/json"}
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def _scan(client, lic):
    r = client.get(f"/v/{lic.verify_code}")
    assert r.status_code == 200
    return r.get_data(as_text=True)


def test_scan_page_valid_shows_what_to_compare(client, issue):
    lic = issue("结婚证", holder=(CITIZEN_ID, "张三丰"))
    page = _scan(client, lic)
    assert "scan-ok" in page and "✓ 有效" in page and "scan-bad" not in page
    assert "张*丰" in page and "张三丰" not in page  # one character masked, no more
    assert "结婚证字号" in page and "J110105-2020-000123" in page
    assert "请核对" in page
    # the JSON contract is unchanged (holder_name masked as before, no new fields)
    body = client.get(f"/v/{lic.verify_code}", headers=JSON).get_json()
    assert body["licence"]["holder_name"] == "张**" and set(body) == {"valid", "status", "licence"}


def test_scan_page_organisation_shows_its_full_name(client, issue):
    lic = issue("营业执照")
    page = _scan(client, lic)
    assert "通办示范科技有限公司" in page and "统一社会信用代码" in page and USCC in page


def test_scan_page_revoked_is_red_with_date_and_no_compare_prompt(client, issue):
    lic = issue("结婚证")
    services.revoke(lic.identifier, "错误登记", "test")
    db.session.commit()
    page = _scan(client, lic)
    assert "scan-bad" in page and "scan-ok" not in page
    assert "✗ 无效 — 已注销" in page
    when = lic.status_changed_at
    assert f"{when.year}年{when.month}月" in page
    assert "请核对" not in page and "有效" not in page.split("scan-bad", 1)[1].split("</div>", 1)[0].replace(
        "无效", "")
    assert "错误登记" not in page  # the reason is the holder's business, not the public's


def test_scan_page_suspended_and_expired(client, issue):
    a = issue("结婚证")
    services.suspend(a.identifier, "核查中", "test")
    db.session.commit()
    assert "✗ 无效 — 已暂停" in _scan(client, a)
    b = issue("营业执照")
    b.valid_until = date(2020, 1, 1)  # issued long ago: its validity has ended since
    db.session.commit()
    page = _scan(client, b)
    assert "✗ 无效 — 已过期" in page and "2020年1月1日" in page


def test_scan_page_superseded_links_to_the_current_version(client, issue):
    from licence.models import Licence

    old = issue("结婚证")
    first = services.change(old.identifier, dict(old.data, registered_on="2020-05-21"), "test")
    db.session.commit()
    second = services.change(first.identifier, dict(first.data, registered_on="2020-05-22"), "test")
    db.session.commit()
    page = _scan(client, db.session.get(Licence, old.id))
    assert "✗ 无效 — 已被新版本替代" in page
    # the link goes to the version valid now, not to the intermediate one
    assert f"/v/{second.verify_code}" in page and f"/v/{first.verify_code}" not in page
    assert "请核对" not in page


def test_scan_page_unknown_code_is_red(client):
    r = client.get("/v/nosuchcode0000")
    page = r.get_data(as_text=True)
    assert r.status_code == 404 and "scan-bad" in page and "✗ 无效" in page


def test_wallet_shows_status_date_reason_and_offers_nothing_to_show(client, citizen, issue):
    lic = issue("结婚证")
    services.revoke(lic.identifier, "登记错误，予以撤销", "test")
    db.session.commit()
    _login(client)
    tiles = client.get("/wallet").get_data(as_text=True)
    assert "已注销" in tiles and "登记错误，予以撤销" in tiles
    page = client.get(f"/wallet/{lic.identifier}").get_data(as_text=True)
    assert "已注销" in page and "登记错误，予以撤销" in page
    when = lic.status_changed_at
    assert f"{when.year}年{when.month}月" in page
    assert "data:image/svg+xml" not in page and "TBL1:" not in page  # no QR code to show
    assert f"/wallet/{lic.identifier}/pdf" not in page and f"/wallet/{lic.identifier}/ofd" not in page
    # the files themselves are refused too (a bookmarked link), in Chinese
    for kind in ("pdf", "ofd"):
        r = client.get(f"/wallet/{lic.identifier}/{kind}")
        assert r.status_code == 409 and not r.data.startswith(b"%PDF") and "已注销" in r.get_data(as_text=True)


def test_wallet_access_log_is_in_beijing_time(client, citizen, issue):
    from licence.models import LicenceAccess

    lic = issue("结婚证")
    db.session.add(LicenceAccess(licence_id=lic.id, at=datetime(2026, 3, 1, 20, 30), client_id="c",
                                 department="民政局", system="婚姻登记", operation="read", purpose="核验",
                                 service_item="123"))
    db.session.commit()
    _login(client)
    page = client.get(f"/wallet/{lic.identifier}").get_data(as_text=True)
    assert "2026年3月2日 04:30" in page and "UTC" not in page and "北京时间" in page


def test_wallet_changed_licence_points_to_the_new_version(client, citizen, issue):
    old = issue("结婚证")
    new = services.change(old.identifier, dict(old.data, registered_on="2020-05-21"), "test", reason="更正登记日期")
    db.session.commit()
    _login(client)
    page = client.get(f"/wallet/{old.identifier}").get_data(as_text=True)
    assert "已被新版本替代" in page and "更正登记日期" in page and f"/wallet/{new.identifier}" in page
    assert "data:image/svg+xml" in client.get(f"/wallet/{new.identifier}").get_data(as_text=True)


# ---------------------------------------------------------------- the public seal verifier


def _verify_page(client, data: bytes):
    page = client.get("/seals/verify").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    import io

    return client.post("/seals/verify", data={"csrf_token": token, "file": (io.BytesIO(data), "licence.pdf")},
                       content_type="multipart/form-data")


def _verify_api(client, data: bytes):
    import io

    return client.post("/api/v1/seals/verify", data={"file": (io.BytesIO(data), "x.pdf")},
                       content_type="multipart/form-data")


def test_seal_verifier_says_a_revoked_licence_is_not_valid(client, issue):
    lic = issue("结婚证")
    services.revoke(lic.identifier, "错误登记", "test")
    db.session.commit()
    body = _verify_api(client, lic.pdf).get_json()
    assert body["valid"] is True  # the seal itself is fine (the contract's key keeps its meaning)
    found = body["licence"]
    assert found["is_licence"] is True and found["valid"] is False and found["status"] == "revoked"
    assert found["licence"]["id"] == lic.identifier and found["status_changed_at"]
    r = _verify_page(client, lic.pdf)
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "通办电子证照" in page and "证照无效" in page and "已注销" in page
    assert "错误登记" not in page


def test_seal_verifier_valid_licence_and_plain_pdf(client, issue):
    from seal import services as seals

    lic = issue("结婚证")
    body = _verify_api(client, lic.pdf).get_json()
    assert body["licence"]["valid"] is True and body["licence"]["status"] == "valid"
    page = _verify_page(client, lic.pdf).get_data(as_text=True)
    assert "证照有效" in page and "北京时间" in page and "Common Name" not in page
    # a sealed PDF that is no licence: no licence block, the contract's keys only
    contract = _seal_of(USCC, "测试科技有限公司", "contract")
    import io

    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.drawString(72, 700, "合同")
    c.showPage()
    c.save()
    sealed = seals.sign_pdf(contract, buf.getvalue(), purpose="合同", actor="test")
    db.session.commit()
    body = _verify_api(client, sealed).get_json()
    assert "licence" not in body and body["valid"] is True


def test_seal_verifier_forged_licence_names_no_licence(client, issue):
    """Attack: any PDF claiming a valid licence's identifier, sealed with a contract seal."""
    from seal import services as seals

    victim = issue("结婚证")
    contract = _seal_of(USCC, "测试科技有限公司", "contract")
    forged = seals.sign_pdf(contract, _keywords_pdf(victim.identifier), purpose="伪造", actor="attacker",
                            certify=True)
    db.session.commit()
    found = _verify_api(client, forged).get_json()["licence"]
    assert found["is_licence"] is False and found["valid"] is False and found["licence"] is None
    page = _verify_page(client, forged).get_data(as_text=True)
    assert "不是本平台签发的证照" in page and victim.identifier not in page and "张" not in page


def test_seal_verifier_page_errors_in_chinese(client):
    r = _verify_page(client, b"hello, not a PDF")
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and "not a PDF" not in page and "不是 PDF" in page


def test_other_holder_cannot_see_status_of_foreign_wallet_licence(client, citizen, issue):
    other = issue("残疾人证", holder=(OTHER_ID, "王五"))
    services.revoke(other.identifier, "秘密原因", "test")
    db.session.commit()
    _login(client)
    r = client.get(f"/wallet/{other.identifier}")
    assert r.status_code == 404 and "秘密原因" not in r.get_data(as_text=True)
    assert client.get(f"/wallet/{other.identifier}/pdf").status_code == 404


def test_licence_dates_are_beijing_dates(monkeypatch):
    from licence import display

    # 18:00 UTC on 1 January is 2 January in Beijing: a licence valid until 1 January has expired
    monkeypatch.setattr(services, "utcnow", lambda: datetime(2026, 1, 1, 18, 0))
    assert services.today() == date(2026, 1, 2)
    assert display.state("valid", date(2026, 1, 1)) == "expired"
    assert display.state("valid", date(2026, 1, 2)) == "valid"


def test_signer_names_in_chinese(app):
    from seal.views import beijing_time, readable_name

    with app.test_request_context(headers={"Accept-Language": "zh-CN"}):
        assert readable_name("Common Name: 某局电子证照专用章, Organization: 某局, Country: CN") == \
            "名称：某局电子证照专用章，组织：某局，国家：CN"
        assert beijing_time("2026-03-01T20:30:00Z").startswith("2026年3月2日 04:30:00")
        assert beijing_time(None) == "" and beijing_time("garbage") == "garbage"
