"""The seal officers' console: who sees which seals, the picture, sealing through the form, the usage log."""

from __future__ import annotations

import hashlib
import io
import re

import pytest

from seal import services
from tests.conftest import CITIZEN_ID, OTHER_ID, PASSWORD
from tests.flask_flows import csrf_token, login
from tests.seal.conftest import make_pdf
from tongban.extensions import db


@pytest.fixture
def officer(app, org, seal):
    from people import accounts

    user = accounts.create_staff(OTHER_ID, "王五", PASSWORD, org.uscc, "seal-admin")
    db.session.commit()
    return user


def _logged_in(client, who: str = OTHER_ID):
    r = login(client, who)
    assert r.status_code in (302, 303), r.get_data(as_text=True)[:300]
    return client


def _seal_form(client, seal_id: str, pdf: bytes, purpose: str = "签订采购合同", **extra):
    url = f"/seals/console/{seal_id}?lang=en"
    data = {"csrf_token": csrf_token(client, url), "purpose": purpose, "page": "1", "position": "bottom-right",
            "file": (io.BytesIO(pdf), "合同 v1.pdf"), **extra}
    return client.post(url, data=data, content_type="multipart/form-data")


def test_anonymous_is_sent_to_log_in(client, seal):
    for url in ("/seals/console", f"/seals/console/{seal.id}", f"/seals/console/{seal.id}/picture.png"):
        r = client.get(url)
        assert r.status_code in (302, 303)
        assert r.headers["Location"].startswith("/login?next=")


def test_non_officer_gets_403(client, citizen, seal):
    _logged_in(client, CITIZEN_ID)
    assert client.get("/seals/console").status_code == 403
    assert client.get(f"/seals/console/{seal.id}").status_code == 403
    assert client.get(f"/seals/console/{seal.id}/picture.png").status_code == 403
    assert "/seals/console" not in client.get("/account").get_data(as_text=True)


def test_officer_sees_own_seals_and_picture_not_others(app, client, officer, seal, authority_seal):
    _logged_in(client)
    assert "/seals/console" in client.get("/account").get_data(as_text=True)
    page = client.get("/seals/console?lang=en")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert seal.name in html and seal.code in html and "Contract seal" in html
    assert f"/seals/console/{seal.id}/picture.png" in html
    assert authority_seal.code not in html and authority_seal.name not in html

    png = client.get(f"/seals/console/{seal.id}/picture.png")
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.data.startswith(b"\x89PNG")
    assert png.headers["Cache-Control"] == "private, max-age=3600"
    assert client.get(f"/seals/console/{seal.id}/picture.png").data == png.data  # cached

    for url in (f"/seals/console/{authority_seal.id}", f"/seals/console/{authority_seal.id}/picture.png",
                "/seals/console/nope"):
        assert client.get(url).status_code in (403, 404)

    zh = client.get(f"/seals/console/{seal.id}?lang=zh_CN").get_data(as_text=True)
    assert "印章编码" in zh and "用印记录" in zh


def test_sealing_through_the_form(app, client, officer, seal):
    _logged_in(client)
    pdf = make_pdf(pages=2)
    r = _seal_form(client, seal.id, pdf, purpose="签订采购合同 13800138000", page="2", position="top-right",
                   certify="y")
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    assert r.mimetype == "application/pdf"
    disposition = r.headers["Content-Disposition"]
    assert disposition.startswith("attachment") and "-sealed.pdf" in disposition
    verdict = services.verify_pdf(r.data)
    assert verdict["valid"] is True and verdict["signatures"][0]["seal_code"] == seal.code
    assert verdict["signatures"][0]["certified"] is True

    log = client.get(f"/seals/console/{seal.id}?lang=en").get_data(as_text=True)
    assert hashlib.sha256(pdf).hexdigest() in log
    assert "签订采购合同" in log and "13800138000" not in log  # personal data masked
    assert "王*" in log and "王五" not in log


def test_default_position_and_second_seal(app, client, officer, seal):
    _logged_in(client)
    first = _seal_form(client, seal.id, make_pdf(pages=1), position="bottom-left")
    assert first.status_code == 200 and first.mimetype == "application/pdf"
    second = _seal_form(client, seal.id, first.data, purpose="co-seal", page="")
    assert second.status_code == 200 and second.mimetype == "application/pdf"
    verdict = services.verify_pdf(second.data)
    assert verdict["valid"] is True and len(verdict["signatures"]) == 2


def test_bad_uploads_rerender_and_seal_nothing(app, client, officer, seal):
    _logged_in(client)
    before = len(services.uses(seal.id))

    r = _seal_form(client, seal.id, b"this is not a PDF\n")
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and "not a PDF" in html and 'name="purpose"' in html
    assert r.mimetype == "text/html"

    r = _seal_form(client, seal.id, make_pdf(), purpose="")
    assert r.status_code == 400 and "Enter the purpose of use." in r.get_data(as_text=True)

    r = _seal_form(client, seal.id, make_pdf(pages=1), page="5")
    assert r.status_code == 400 and "Page 5 does not exist" in r.get_data(as_text=True)

    r = client.post(f"/seals/console/{seal.id}", data={"purpose": "x", "file": (io.BytesIO(make_pdf()), "a.pdf")},
                    content_type="multipart/form-data")  # no CSRF token
    assert r.status_code == 400 and r.mimetype == "text/html"

    services.set_status(seal.id, "suspended", "lost key card")
    db.session.commit()
    r = _seal_form(client, seal.id, make_pdf())
    assert r.status_code == 409 and "suspended" in r.get_data(as_text=True)

    services.set_status(seal.id, "revoked", "lost")
    db.session.commit()
    r = _seal_form(client, seal.id, make_pdf())
    assert r.status_code == 409 and "revoked" in r.get_data(as_text=True)
    assert [u.action for u in services.uses(seal.id)].count("seal.used") == 0
    assert len(services.uses(seal.id)) == before + 2  # only the two status changes


def test_upload_limit(app, client, officer, seal):
    app.config["TONGBAN_SEAL_MAX_BYTES"], saved = 1024, app.config["TONGBAN_SEAL_MAX_BYTES"]
    try:
        _logged_in(client)
        r = _seal_form(client, seal.id, make_pdf(pages=3) + b"%" * 2048)
        assert r.status_code == 413 and "larger than" in r.get_data(as_text=True)
    finally:
        app.config["TONGBAN_SEAL_MAX_BYTES"] = saved


def test_authority_admin_sees_all_read_only(app, client, org, seal, authority_seal):
    from people import accounts

    accounts.create_staff(CITIZEN_ID, "张三", PASSWORD, app.config["TONGBAN_AUTHORITY_USCC"], "admin")
    db.session.commit()
    _logged_in(client, CITIZEN_ID)
    html = client.get("/seals/console?lang=en").get_data(as_text=True)
    assert seal.code in html and authority_seal.code in html
    page = client.get(f"/seals/console/{seal.id}?lang=en")
    assert page.status_code == 200 and 'type="file"' not in page.get_data(as_text=True)
    assert client.get(f"/seals/console/{seal.id}/picture.png").data.startswith(b"\x89PNG")
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"',
                      client.get("/account").get_data(as_text=True)).group(1)
    r = client.post(f"/seals/console/{seal.id}?lang=en", content_type="multipart/form-data", data={
        "csrf_token": token, "purpose": "x", "file": (io.BytesIO(make_pdf()), "a.pdf")})
    assert r.status_code == 403 and "Only the seal officers" in r.get_data(as_text=True)
    assert [u.action for u in services.uses(seal.id)].count("seal.used") == 0


def test_officer_cannot_seal_an_uploaded_pdf_with_a_licence_seal(app, client, org, officer):
    """A licence seal (电子证照专用章) seals only licences Tongban issues: not a document an officer uploads."""
    licence_seal = services.create_seal(org.uscc, "测试科技有限公司电子证照专用章", "licence")
    db.session.commit()
    _logged_in(client)
    before = len(services.uses(licence_seal.id))
    r = _seal_form(client, licence_seal.id, make_pdf())
    assert r.status_code == 409 and r.mimetype == "text/html"
    assert "only seals the e-licences Tongban issues" in r.get_data(as_text=True)
    assert len(services.uses(licence_seal.id)) == before
