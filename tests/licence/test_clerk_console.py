"""The window clerk's console: checks as a person would make them, in Chinese, next to each field,
all at once; confirmation and a reason before suspending, revoking or amending; the sealed PDF."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from licence import services
from licence.catalogue import TYPES
from licence.errors import InvalidField
from licence.models import Licence
from tests.conftest import CITIZEN_ID, OTHER_ID, PASSWORD
from tests.licence.samples import SAMPLES
from tongban.extensions import db

_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def _errors(html: str) -> dict[str, str]:
    """{field id: message} of the field errors on a page."""
    found = re.findall(r'<p class="field-error" id="([\w]+)-error">(.*?)</p>', html)
    return {k: re.sub(r"<[^>]+>", "", v) for k, v in found}


def _count() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count(Licence.id)))


@pytest.fixture
def clerk(app, citizen):
    from people import accounts

    accounts.create_staff(OTHER_ID, "王五", PASSWORD, app.config["TONGBAN_AUTHORITY_USCC"], "clerk")
    db.session.commit()
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    r = client.post("/login", data={"csrf_token": _CSRF.search(page).group(1), "login": OTHER_ID,
                                    "password": PASSWORD, "next": ""})
    assert r.status_code == 302
    return client


def _form(client, type_name: str, **changes) -> tuple[str, dict]:
    t = services.get_type(type_name)
    page = client.get(f"/clerk/issue/{t.code}").get_data(as_text=True)
    (hid, hname), data = SAMPLES[type_name]
    form = {"csrf_token": _CSRF.search(page).group(1), "holder_id": hid, "holder_name": hname}
    form.update({f"f_{k}": v for k, v in data.items()})
    form.update(changes)
    return t.code, form


def test_every_problem_is_shown_next_to_its_field_at_once_in_chinese(app, clerk):
    tomorrow = (services.today() + timedelta(days=1)).isoformat()
    code, form = _form(clerk, "结婚证", holder_name="张四", f_registered_on=tomorrow, f_cert_no="J-2024-1",
                       f_spouse_id_number=CITIZEN_ID, f_spouse_nationality="")
    before = _count()
    r = clerk.post(f"/clerk/issue/{code}", data=form)
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and _count() == before  # nothing issued, no serial consumed
    errors = _errors(html)
    assert set(errors) == {"holder_name", "f_registered_on", "f_cert_no", "f_spouse_id_number",
                           "f_spouse_nationality"}
    assert "张三" in errors["holder_name"] and "不一致" in errors["holder_name"]
    assert "不能晚于今天" in errors["f_registered_on"]
    assert "J110105-2024-000123" in errors["f_cert_no"]  # an example, never the regular expression
    assert "持证人本人" in errors["f_spouse_id_number"]
    assert errors["f_spouse_nationality"] == "必填。"
    assert "5 处" in html or "5处" in html
    assert "\\d" not in html and "^J" not in html


def test_spouse_id_must_agree_with_the_spouse_birth_date_and_gender(app, clerk):
    code, form = _form(clerk, "结婚证", f_spouse_birth_date="1990-03-08")
    r = clerk.post(f"/clerk/issue/{code}", data=form)
    assert r.status_code == 400 and "1990-03-07" in _errors(r.get_data(as_text=True))["f_spouse_id_number"]
    code, form = _form(clerk, "结婚证", f_spouse_gender="女")
    r = clerk.post(f"/clerk/issue/{code}", data=form)
    assert r.status_code == 400 and "男" in _errors(r.get_data(as_text=True))["f_spouse_id_number"]
    # the holder's own birth date must be the one in their ID number too
    code, form = _form(clerk, "残疾人证", f_birth_date="1950-01-01")
    r = clerk.post(f"/clerk/issue/{code}", data=form)
    assert r.status_code == 400 and "1949-12-31" in _errors(r.get_data(as_text=True))["f_birth_date"]


def test_the_api_path_refuses_the_same_forgeries(app):
    """services.issue (API, CLI) applies the cross checks too: no way around the form."""
    (hid, hname), data = SAMPLES["结婚证"]
    tomorrow = (services.today() + timedelta(days=1)).isoformat()
    for bad in ({"spouse_id_number": hid}, {"spouse_birth_date": "1991-01-01"}, {"registered_on": tomorrow}):
        with pytest.raises(InvalidField):
            services.issue("结婚证", hid, hname, {**data, **bad}, actor="t")
        db.session.rollback()
    (bid, bname), bdata = SAMPLES["出生医学证明"]
    with pytest.raises(InvalidField):
        services.issue("出生医学证明", bid, bname, {**bdata, "birth_time": f"{tomorrow} 08:00"}, actor="t")
    db.session.rollback()
    assert services.issue("结婚证", hid, hname, data, actor="t").status == "valid"


def test_a_correct_form_issues_and_the_sealed_pdf_is_there_to_print(app, clerk):
    code, form = _form(clerk, "结婚证")
    r = clerk.post(f"/clerk/issue/{code}", data=form)
    assert r.status_code == 302
    ident = r.headers["Location"].rsplit("/", 1)[1]
    page = clerk.get(f"/clerk/licences/{ident}").get_data(as_text=True)
    assert f"/clerk/licences/{ident}/pdf" in page and "打开PDF打印" in page
    pdf = clerk.get(f"/clerk/licences/{ident}/pdf")
    lic = services.find(ident)
    assert pdf.status_code == 200 and pdf.data == lic.pdf and pdf.mimetype == "application/pdf"
    assert pdf.headers["Content-Disposition"].startswith("inline")
    assert clerk.get(f"/clerk/licences/{ident}/pdf?download=1").headers["Content-Disposition"].startswith(
        "attachment")


def test_format_hints_are_examples(app, clerk):
    page = clerk.get(f"/clerk/issue/{services.get_type('结婚证').code}").get_data(as_text=True)
    assert '示例：<span class="nowrap">J110105-2024-000123</span>' in page
    assert "pattern=" not in page and "\\d{6}" not in page


def test_every_format_has_a_matching_example():
    for t in TYPES:
        for it in t["items"]:
            if it.get("format"):
                assert it.get("example") and re.fullmatch(it["format"], it["example"]), (t["name"], it["name"])


def _post(client, ident, **data):
    csrf = _CSRF.search(client.get(f"/clerk/licences/{ident}").get_data(as_text=True)).group(1)
    return client.post(f"/clerk/licences/{ident}", data={"csrf_token": csrf, **data})


def test_revoke_suspend_and_amend_ask_for_confirmation_and_a_reason(app, clerk, issue):
    ident = issue("结婚证").identifier
    for action in ("revoke", "suspend"):
        r = _post(clerk, ident, action=action, reason="")  # the first press only asks
        assert r.status_code == 200 and 'name="confirm" value="yes"' in r.get_data(as_text=True)
        r = _post(clerk, ident, action=action, reason="  ", confirm="yes")  # confirmed without a reason
        assert r.status_code == 400 and "请填写原因" in r.get_data(as_text=True)
        db.session.expire_all()
        assert services.find(ident).status == "valid"
    r = _post(clerk, ident, action="change", f_cert_no="J110105-2020-000124")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "J110105-2020-000124" in html and "确定签发新版本" in html
    db.session.expire_all()
    assert services.find(ident).status == "valid" and services.find(ident).superseded_by is None
    r = _post(clerk, ident, action="change", f_cert_no="J110105-2020-000124", reason="更正字号", confirm="yes")
    assert r.status_code == 302
    db.session.expire_all()
    old = services.find(ident)
    new = services.find(old.superseded_by)
    assert old.status == "superseded" and old.status_reason == "更正字号"
    assert new.data["cert_no"] == "J110105-2020-000124"
    r = _post(clerk, new.identifier, action="revoke", reason="登记错误", confirm="yes")
    assert r.status_code == 302
    db.session.expire_all()
    assert services.find(new.identifier).status == "revoked"
    assert services.find(new.identifier).status_reason == "登记错误"


def test_an_amendment_is_checked_like_an_issue(app, clerk, issue):
    ident = issue("结婚证").identifier
    r = _post(clerk, ident, action="change", f_spouse_birth_date="1991-01-01", reason="更正", confirm="yes")
    assert r.status_code == 400 and "1990-03-07" in _errors(r.get_data(as_text=True))["f_spouse_id_number"]
    db.session.expire_all()
    assert services.find(ident).status == "valid" and services.find(ident).superseded_by is None


def test_pdf_lines_never_break_inside_a_number():
    from reportlab.pdfbase import pdfmetrics

    from licence.pdf import split_cjk
    from tongban.fonts import cjk_font as _font

    font, text = _font(), "福建省福州市鼓楼区软件大道89号"
    for chars in range(5, len(text) + 1):
        width = pdfmetrics.stringWidth(text[:chars], font, 11) + 0.1
        lines = split_cjk(text, font, 11, width)
        assert "".join(lines) == text
        assert any("89号" in line for line in lines), lines
    # a run wider than the line itself is still broken, not lost
    assert "".join(split_cjk("A" * 50, font, 11, 60)) == "A" * 50


def test_nobreak_escapes_and_keeps_numbers_whole(app):
    from licence.views import nobreak

    out = str(nobreak('示例：J110105-2024-000123 <b>"x"</b> & 2026-12-07'))
    assert '<span class="nowrap">J110105-2024-000123</span>' in out
    assert '<span class="nowrap">2026-12-07</span>' in out
    assert "<b>" not in out and "&lt;b&gt;" in out and "&amp;" in out and "&#34;" in out
