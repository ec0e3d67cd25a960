import re

from licence import services
from tests.conftest import CITIZEN_ID, OTHER_ID, PASSWORD
from tongban.extensions import db

JSON = {"Accept": "application/json"}
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def _path(lic) -> str:
    return f"/v/{lic.verify_code}"


def test_v_json_exactly(client, issue):
    lic = issue("结婚证")
    body = client.get(_path(lic), headers=JSON).get_json()
    assert body == {"valid": True, "status": "valid", "licence": {
        "id": lic.identifier, "type": lic.type_code, "type_name": "结婚证", "holder_name": "张*",
        "issuer": lic.issuer_name, "issued_at": lic.issued_on.isoformat(), "valid_until": None}}
    services.revoke(lic.identifier, "错误登记", "test")
    db.session.commit()
    r = client.get(_path(lic), headers=JSON)
    assert r.status_code == 200 and r.get_json()["valid"] is False and r.get_json()["status"] == "revoked"


def test_v_unknown_and_html(client, issue):
    r = client.get("/v/unknown-code-0000", headers=JSON)
    assert r.status_code == 404 and r.get_json() == {"valid": False, "status": "unknown", "licence": None}
    assert client.get("/v/unknown-code-0000").status_code == 404
    lic = issue("社会保障卡")
    page = client.get(_path(lic))
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "张*" in text and "张三" not in text and "社会保障卡" in text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


def _login(client, login=CITIZEN_ID):
    page = client.get("/login").get_data(as_text=True)
    r = client.post("/login", data={"csrf_token": _CSRF.search(page).group(1), "login": login,
                                    "password": PASSWORD, "next": ""})
    assert r.status_code == 302


def test_wallet(client, citizen, issue):
    from people import accounts

    accounts.create_org("91350100M000100Y43", "通办示范科技有限公司", CITIZEN_ID)
    db.session.commit()
    mine, org, other = issue("结婚证"), issue("营业执照"), issue("残疾人证", holder=(OTHER_ID, "王五"))
    _login(client)
    page = client.get("/wallet").get_data(as_text=True)
    assert "结婚证" in page and "营业执照" in page and "残疾人证" not in page
    detail = client.get(f"/wallet/{mine.identifier}")
    assert detail.status_code == 200 and "data:image/svg+xml" in detail.get_data(as_text=True)
    assert "TBL1:" in detail.get_data(as_text=True)
    pdf = client.get(f"/wallet/{org.identifier}/pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF-")
    assert client.get(f"/wallet/{other.identifier}").status_code == 404


def test_verifier_page_has_no_inline_script(client):
    page = client.get("/licences/verifier").get_data(as_text=True)
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page, re.S)
    assert scripts and all(not s.strip() for s in scripts)
    assert 'src="/static/js/licence-verifier.js"' in page
    assert client.get("/static/js/licence-verifier.js").status_code == 200


def test_clerk_issues_verifies_and_changes(app, client, citizen, issue):
    from sqlalchemy import select

    from people import accounts
    from people.models import Organisation

    authority = db.session.scalar(select(Organisation).where(
        Organisation.uscc == app.config["TONGBAN_AUTHORITY_USCC"]))
    clerk = accounts.create_staff(OTHER_ID, "王五", PASSWORD, authority.uscc, "clerk")
    db.session.commit()
    assert clerk
    _login(client, OTHER_ID)
    home = client.get("/clerk").get_data(as_text=True)
    t = services.get_type("残疾人证")
    assert t.code in home
    lookup = client.get(f"/clerk/issue/{t.code}?holder_id={CITIZEN_ID}").get_data(as_text=True)
    assert "已找到：张三" in lookup
    bad = client.get(f"/clerk/issue/{t.code}?holder_id=110105194912310021")
    assert bad.status_code == 400
    csrf = _CSRF.search(lookup).group(1)
    form = {"csrf_token": csrf, "holder_id": CITIZEN_ID, "holder_name": "张三", "f_gender": "女",
            "f_birth_date": "1949-12-31", "f_category": "肢体残疾", "f_grade": "三级", "f_address": "北京"}
    missing = client.post(f"/clerk/issue/{t.code}", data={**form, "f_grade": ""})
    assert missing.status_code == 400 and "残疾等级" in missing.get_data(as_text=True)
    done = client.post(f"/clerk/issue/{t.code}", data=form)
    assert done.status_code == 302
    ident = done.headers["Location"].rsplit("/", 1)[1]
    lic = services.find(ident)
    assert lic.holder_id == CITIZEN_ID and lic.issued_by == f"user:{clerk.sub}"
    # verify the PDF a citizen brings
    from io import BytesIO

    r = client.post("/clerk/verify", data={"csrf_token": csrf, "file": (BytesIO(lic.pdf), "l.pdf")},
                    content_type="multipart/form-data")
    assert "印章完好、证照有效" in r.get_data(as_text=True)
    r = client.post(f"/clerk/licences/{ident}", data={"csrf_token": csrf, "action": "suspend", "reason": "核查"})
    assert r.status_code == 200 and services.find(ident).status == "valid"  # asks for confirmation first
    r = client.post(f"/clerk/licences/{ident}", data={"csrf_token": csrf, "action": "suspend", "reason": "核查",
                                                      "confirm": "yes"})
    assert r.status_code == 302 and services.find(ident).status == "suspended"
    r = client.post("/clerk/verify", data={"csrf_token": csrf, "file": (BytesIO(lic.pdf), "l.pdf")},
                    content_type="multipart/form-data")
    assert "不能采信" in r.get_data(as_text=True)
