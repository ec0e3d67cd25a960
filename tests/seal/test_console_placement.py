"""Seal officers put the seal where Chinese practice puts it: over the organisation's name and the
date, found by a named anchor text or dragged on a page preview; the page preview itself."""

from __future__ import annotations

import io

from pyhanko.pdf_utils.reader import PdfFileReader

from seal import services
from tests.conftest import CITIZEN_ID
from tests.flask_flows import csrf_token
from tests.seal.conftest import make_pdf
from tests.seal.test_console import _logged_in, _seal_form, officer  # noqa: F401
from tongban.extensions import db


def _letter() -> bytes:
    """An A4 letter whose signature block is 测试科技有限公司 over 2026年3月1日, right-aligned near the foot."""
    from reportlab.pdfgen import canvas

    from tongban.fonts import cjk_font as _font

    font = _font()
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=(595, 842))
    c.setFont(font, 14)
    c.drawString(72, 770, "关于开展联合检查的函")
    c.drawRightString(500, 200, "测试科技有限公司")
    c.drawRightString(500, 180, "2026年3月1日")
    c.showPage()
    c.save()
    return buf.getvalue()


def _seal_rects(pdf: bytes) -> list[tuple[float, float, float, float]]:
    reader = PdfFileReader(io.BytesIO(pdf))
    rects = []
    for ref in reader.root["/AcroForm"]["/Fields"]:
        field = ref.get_object()
        if field.get("/FT") == "/Sig" and "/Rect" in field:
            rects.append(tuple(float(v) for v in field["/Rect"]))
    return rects


def _uses(seal) -> int:
    return sum(1 for row in services.uses(seal.id) if row.action == "seal.used")


def test_the_seal_goes_over_the_named_anchor_text(app, client, officer, seal):  # noqa: F811
    _logged_in(client)
    r = _seal_form(client, seal.id, _letter(), position="anchor", anchor="测试科技有限公司")
    assert r.status_code == 200 and r.mimetype == "application/pdf", r.get_data(as_text=True)[:400]
    assert services.verify_pdf(r.data)["valid"] is True
    (x1, y1, x2, y2), = _seal_rects(r.data)
    text_width = 8 * 14  # eight characters at 14 pt
    assert abs((x1 + x2) / 2 - (500 - text_width / 2)) < 20  # over the name
    assert y1 < 180 < y2 and y1 < 205 < y2  # covering the name and the date below it
    assert 180 < (y1 + y2) / 2 < 205  # 骑年盖月: centred between the name and the date


def test_an_anchor_without_a_date_below_is_centred_on_the_text(app, client, officer, seal):  # noqa: F811
    from reportlab.pdfgen import canvas

    from tongban.fonts import cjk_font as _font

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=(595, 842))
    c.setFont(_font(), 14)
    c.drawString(100, 400, "盖章处")
    c.showPage()
    c.save()
    _logged_in(client)
    r = _seal_form(client, seal.id, buf.getvalue(), position="anchor", anchor="盖章处")
    (x1, y1, x2, y2), = _seal_rects(r.data)
    assert abs((x1 + x2) / 2 - 121) < 3 and abs((y1 + y2) / 2 - 405) < 6


def test_an_anchor_that_is_not_on_the_page_seals_nothing(app, client, officer, seal):  # noqa: F811
    _logged_in(client)
    before = _uses(seal)
    r = _seal_form(client, seal.id, _letter(), position="anchor", anchor="别的单位")
    assert r.status_code == 400 and "别的单位" in r.get_data(as_text=True)
    r = _seal_form(client, seal.id, _letter(), position="anchor", anchor="")
    assert r.status_code == 400
    db.session.expire_all()
    assert _uses(seal) == before


def test_the_seal_goes_where_it_was_dragged(app, client, officer, seal):  # noqa: F811
    _logged_in(client)
    r = _seal_form(client, seal.id, make_pdf(pages=1), position="point", fx="0.5", fy="0.25")
    assert r.status_code == 200 and r.mimetype == "application/pdf"
    (x1, y1, x2, y2), = _seal_rects(r.data)
    assert abs((x1 + x2) / 2 - 297.5) < 1 and abs((y1 + y2) / 2 - 842 * 0.75) < 1
    # a corner: the seal stays whole on the page
    r = _seal_form(client, seal.id, make_pdf(pages=1), position="point", fx="1", fy="1")
    (x1, y1, x2, y2), = _seal_rects(r.data)
    assert x2 <= 595 and y1 >= 0
    before = _uses(seal)
    for bad in ({"fx": "2", "fy": "0.5"}, {"fx": "nan", "fy": "0.5"}, {}):
        r = _seal_form(client, seal.id, make_pdf(pages=1), position="point", **bad)
        assert r.status_code == 400
    db.session.expire_all()
    assert _uses(seal) == before


def test_page_preview_for_dragging(app, client, officer, seal, authority_seal):  # noqa: F811
    _logged_in(client)
    url = f"/seals/console/{seal.id}/preview"
    token = csrf_token(client, f"/seals/console/{seal.id}")
    r = client.post(url, data={"csrf_token": token, "page": "2", "file": (io.BytesIO(make_pdf(pages=2)), "a.pdf")},
                    content_type="multipart/form-data")
    assert r.status_code == 200 and r.data.startswith(b"\x89PNG") and r.headers["Cache-Control"] == "no-store"
    assert abs(float(r.headers["X-Page-Ratio"]) - 842 / 595) < 0.01
    r = client.post(url, data={"csrf_token": token, "page": "3", "file": (io.BytesIO(make_pdf(pages=2)), "a.pdf")},
                    content_type="multipart/form-data")
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_page"
    r = client.post(url, data={"csrf_token": token, "file": (io.BytesIO(b"%PDF-1.7 not really"), "a.pdf")},
                    content_type="multipart/form-data")
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_pdf"
    r = client.post(url, data={"csrf_token": token}, content_type="multipart/form-data")
    assert r.status_code == 400
    # no CSRF token, another organisation's seal: refused
    r = client.post(url, data={"file": (io.BytesIO(make_pdf()), "a.pdf")}, content_type="multipart/form-data")
    assert r.status_code == 400
    r = client.post(f"/seals/console/{authority_seal.id}/preview",
                    data={"csrf_token": token, "file": (io.BytesIO(make_pdf()), "a.pdf")},
                    content_type="multipart/form-data")
    assert r.status_code in (403, 404)


def test_a_citizen_gets_no_preview(app, client, citizen, seal):
    r = _logged_in(client, CITIZEN_ID)
    token = csrf_token(client, "/account")
    r = client.post(f"/seals/console/{seal.id}/preview", data={"csrf_token": token, "file": (
        io.BytesIO(make_pdf()), "a.pdf")}, content_type="multipart/form-data")
    assert r.status_code == 403
