"""Service events over the API, rating by link and from the account, and the attacks on both."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from tests.conftest import CITIZEN_ID, OTHER_ID, PASSWORD
from tests.flask_flows import csrf_token
from tests.rating.conftest import DEPT, DEPT_NAME, OTHER_DEPT, bearer
from tongban.extensions import db


def _count(model) -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model))


def _audit(action: str) -> int:
    from tongban.audit import AuditLog

    return db.session.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == action))


def _decode_qr(data_uri: str) -> str:
    """The SVG's modules drawn and read by zxing-cpp, an independent decoder."""
    import base64

    import zxingcpp
    from PIL import Image, ImageDraw

    svg = base64.b64decode(data_uri.split(",", 1)[1]).decode()
    box = float(re.search(r'viewBox="0 0 ([\d.]+) ', svg).group(1))
    module = 0.8  # box_size 8 in tenths of a millimetre
    size, scale = round(box / module), 8
    img = Image.new("L", (size * scale, size * scale), 255)
    draw = ImageDraw.Draw(img)
    for x, y in re.findall(r"M([\d.]+),([\d.]+)H", svg):
        col, row = round(float(x) / module), round(float(y) / module)
        draw.rectangle([col * scale, row * scale, (col + 1) * scale - 1, (row + 1) * scale - 1], fill=0)
    found = zxingcpp.read_barcodes(img)
    assert found, "no QR code in the SVG"
    return found[0].text


def _event_body(**kw) -> dict:
    body = {"department_code": DEPT, "service_item_code": "330800-QT-001", "service_item_name": "食品经营许可证核发",
            "channel": "window", "case_no": "BJ-2026-0001", "window": "A03", "staff": "窗口一"}
    body.update(kw)
    return {k: v for k, v in body.items() if v is not None}


def test_system_registers_event_and_the_link_rates_once(client, citizen, system, browser):
    from rating.models import Rating, RatingCase, RatingEvent

    cid, _secret, auth = system
    r = client.post("/api/v1/ratings/events", json=_event_body(sub=citizen.sub), headers=auth)
    assert r.status_code == 201, r.json
    assert r.json["rating_qr"].startswith("data:image/svg+xml;base64,")
    assert _decode_qr(r.json["rating_qr"]) == r.json["rating_url"]
    link = r.json["rating_url"].rsplit("/r/", 1)[1]
    event = db.session.scalar(select(RatingEvent))
    # the register's department name, the caller's code; the link is stored only as a hash
    assert event.department_name == DEPT_NAME and event.department_code == DEPT and event.client_id == cid
    assert event.user_id == citizen.id and link not in event.link_hash and event.channel == "01"
    # the window's screen shows the QR
    qr = client.get(f"/r/{link}/qr")
    assert qr.status_code == 200 and "data:image/svg+xml" in qr.get_data(as_text=True)

    anon = browser()
    page = anon.get(f"/r/{link}")
    assert page.status_code == 200 and "食品经营许可证核发" in page.get_data(as_text=True)
    assert "<script" not in page.get_data(as_text=True)
    token = csrf_token(anon, f"/r/{link}")
    assert anon.post(f"/r/{link}", data={"level": "5"}).status_code == 400  # no CSRF token
    # below 基本满意 a reason is required; nothing is stored
    bad = anon.post(f"/r/{link}", data={"csrf_token": token, "level": "2"})
    assert bad.status_code == 400 and _count(Rating) == 0
    # a good reason cannot dress up a bad rating, a level outside 1..5 is refused
    assert anon.post(f"/r/{link}", data={"csrf_token": token, "level": "2", "reason": "201"}).status_code == 400
    assert anon.post(f"/r/{link}", data={"csrf_token": token, "level": "6"}).status_code == 400
    assert _count(Rating) == 0
    done = anon.post(f"/r/{link}", data={"csrf_token": token, "level": "2", "reason": ["105", "108"],
                                          "comment": "等了很久 13800138000"})
    assert done.status_code == 200
    rating = db.session.scalar(select(Rating))
    assert rating.level == 2 and rating.reasons == ["105", "108"] and rating.via == "link"
    assert _count(RatingCase) == 1 and _audit("rating.rated") == 1 and _audit("rating.case_opened") == 1
    # the one-time link works once; a second rating is refused, whoever sends it
    again = anon.post(f"/r/{link}", data={"csrf_token": token, "level": "5"})
    assert again.status_code in (409, 410) and _count(Rating) == 1
    assert browser().get(f"/r/{link}").status_code in (409, 410)

    status = client.get(f"/api/v1/ratings/events/{event.public_id}", headers=auth)
    assert status.status_code == 200 and status.json["rated"] is True
    assert status.json["rating"]["level"] == 2 and status.json["rating"]["reasons"][0]["code"] == "105"
    assert "13800138000" not in status.get_data(as_text=True)  # the comment is masked on the way out


def test_bad_input_is_refused_and_changes_nothing(client, citizen, system, make_client):
    from rating.models import RatingEvent

    _cid, _secret, auth = system
    url = "/api/v1/ratings/events"
    assert client.post(url, json=_event_body(sub=citizen.sub)).status_code == 401
    cases = [
        (_event_body(sub=citizen.sub, channel="carrier-pigeon"), 400, "invalid_event"),
        (_event_body(sub=citizen.sub, department_code="11330800MB19572705"), 400, "invalid_event"),
        (_event_body(sub=citizen.sub, service_item_code=""), 400, "invalid_event"),
        (_event_body(sub=citizen.sub, service_item_name="x\x00y"), 400, "invalid_request"),  # refused app-wide
        (_event_body(sub=citizen.sub, service_item_name=["a"]), 400, "invalid_event"),
        (_event_body(sub=citizen.sub, handled_at="2999-01-01T00:00:00+08:00"), 400, "invalid_event"),
        (_event_body(sub=citizen.sub, handled_at="2001-01-01T00:00:00+08:00"), 400, "invalid_event"),
        (_event_body(sub=citizen.sub, handled_at="yesterday"), 400, "invalid_event"),
        (_event_body(sub="no-such-subject"), 400, "unknown_citizen"),
        (_event_body(id_number="110105194912310021"), 400, "invalid_event"),
        (_event_body(), 400, "invalid_event"),  # no citizen
    ]
    for body, status, code in cases:
        r = client.post(url, json=body, headers=auth)
        assert (r.status_code, r.json["error"]) == (status, code), body
    r = client.post(url, data="not json", headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json["error"] == "invalid_event"
    assert client.post(url, json=[1, 2], headers=auth).status_code == 400
    assert _count(RatingEvent) == 0
    # the same 办件编号 twice is refused (a retry cannot mint a second link)
    assert client.post(url, json=_event_body(sub=citizen.sub), headers=auth).status_code == 201
    r = client.post(url, json=_event_body(sub=citizen.sub), headers=auth)
    assert r.status_code == 409 and r.json["error"] == "duplicate_event"
    # a system of another department cannot book events on this department's code
    cid2, secret2 = make_client(name="别的系统", department="市人力资源和社会保障局", scopes=["rating:write"],
                                grant_types=["client_credentials"])
    r = client.post(url, json=_event_body(sub=citizen.sub, case_no="X-1"), headers=bearer(client, cid2, secret2,
                                                                                        "rating:write"))
    assert r.status_code == 409 and r.json["error"] == "department_mismatch"
    assert _count(RatingEvent) == 1
    # without the rating:write scope: 403; and another system's events do not exist for it
    cid3, secret3 = make_client(scopes=["licence:verify"], grant_types=["client_credentials"])
    r = client.post(url, json=_event_body(sub=citizen.sub, case_no="X-2"),
                    headers=bearer(client, cid3, secret3, "licence:verify"))
    assert r.status_code == 403
    event = db.session.scalar(select(RatingEvent))
    other = bearer(client, cid2, secret2, "rating:write")
    assert client.get(f"/api/v1/ratings/events/{event.public_id}", headers=other).status_code == 404


def test_rating_scope_is_restricted(app):
    from idp.scopes import RESTRICTED

    assert {"rating:write", "rating:export"} <= RESTRICTED


def test_after_login_the_event_must_be_the_citizens(app, citizen, new_event, logged_in):
    from people import accounts
    from rating.models import Rating

    accounts.create_user(OTHER_ID, "王五", PASSWORD, "13900139000")
    db.session.commit()
    new = new_event(sub=citizen.sub)
    eid = new.event.public_id
    intruder = logged_in(OTHER_ID)
    assert intruder.get(f"/ratings/events/{eid}").status_code == 403
    assert eid not in intruder.get("/ratings/mine").get_data(as_text=True)
    # holding the citizen's link does not let another logged-in person rate it either
    assert intruder.get(f"/r/{new.link}").status_code == 403
    token = csrf_token(intruder, "/login?force=1")
    r = intruder.post(f"/ratings/events/{eid}", data={"csrf_token": token, "level": "1", "reason": "199"})
    assert r.status_code == 403 and _count(Rating) == 0

    me = logged_in(CITIZEN_ID)
    listing = me.get("/ratings/mine").get_data(as_text=True)
    assert f"/ratings/events/{eid}" in listing and "食品经营许可证核发" in listing
    token = csrf_token(me, f"/ratings/events/{eid}")
    r = me.post(f"/ratings/events/{eid}", data={"csrf_token": token, "level": "4", "reason": "202"})
    assert r.status_code == 200
    rating = db.session.scalar(select(Rating))
    assert rating.rater_user_id == citizen.id and rating.via == "account"
    # the link died with the rating from the account
    assert me.get(f"/r/{new.link}").status_code in (409, 410)


def test_window_citizen_by_id_number_finds_the_event_after_registering(app, new_event, logged_in):
    from people import accounts
    from rating import services

    new = new_event(id_number=OTHER_ID)  # no account yet: only a keyed hash and a masked number are kept
    assert new.event.user_id is None and new.event.citizen_masked == "110***********0016"
    assert OTHER_ID not in (new.event.citizen_key or "")
    user = accounts.create_user(OTHER_ID, "王五", PASSWORD, "13900139000")
    db.session.commit()
    assert [e.public_id for e in services.events_of(user)] == [new.event.public_id]
    me = logged_in(OTHER_ID)
    assert me.get(f"/ratings/events/{new.event.public_id}").status_code == 200


def test_guessed_or_expired_links(app, citizen, new_event, browser):
    from datetime import timedelta

    from rating import services
    from rating.errors import RatingClosed
    from tongban.clock import utcnow

    b = browser()
    assert b.get("/r/" + "A" * 43).status_code == 404
    assert b.get("/r/" + "A" * 43, headers={"Accept": "application/json"}).status_code == 404
    new = new_event(sub=citizen.sub)
    new.event.rate_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert b.get(f"/r/{new.link}").status_code == 410
    import pytest

    with pytest.raises(RatingClosed):
        services.rate(new.event, level=5, link=new.link)


def test_two_racing_ratings_store_one(app, citizen, new_event):
    """The account page and the link at once: the unique index keeps one."""
    import pytest

    from rating import services
    from rating.errors import AlreadyRated, RatingClosed
    from rating.models import Rating

    new = new_event(sub=citizen.sub)
    services.rate(new.event, level=5, rater=citizen)
    db.session.commit()
    with pytest.raises((AlreadyRated, RatingClosed)):
        services.rate(new.event, level=1, reasons=["199"], link=new.link)
    db.session.rollback()
    assert _count(Rating) == 1


def test_clerk_issuance_creates_a_window_event(app, client, citizen):
    from licence import services as licences
    from people import accounts
    from rating.models import RatingEvent

    authority = app.config["TONGBAN_AUTHORITY_USCC"]
    accounts.create_staff(OTHER_ID, "王五", PASSWORD, authority, "clerk")
    db.session.commit()
    from tests.flask_flows import login

    login(client, OTHER_ID)
    t = licences.get_type("残疾人证")
    token = csrf_token(client, f"/clerk/issue/{t.code}")
    form = {"csrf_token": token, "holder_id": CITIZEN_ID, "holder_name": "张三", "f_gender": "女",
            "f_birth_date": "1949-12-31", "f_category": "肢体残疾", "f_grade": "三级", "f_address": "北京"}
    done = client.post(f"/clerk/issue/{t.code}", data=form)
    assert done.status_code == 302
    event = db.session.scalar(select(RatingEvent))
    assert event.client_id == "tongban-clerk" and event.user_id == citizen.id and event.channel == "01"
    assert event.department_code == authority and event.service_item_code == t.code
    page = client.get(done.headers["Location"]).get_data(as_text=True)
    m = re.search(r"/r/([A-Za-z0-9_-]{40,})/qr", page)
    assert m, page[:2000]
    assert client.get(f"/r/{m.group(1)}/qr").status_code == 200


def test_department_code_is_bound_to_one_department(app, citizen, new_event):
    import pytest

    from rating.errors import DepartmentMismatch

    new_event(sub=citizen.sub)
    with pytest.raises(DepartmentMismatch):
        new_event(sub=citizen.sub, department_name="冒名的局")
    new_event(sub=citizen.sub, department_code=OTHER_DEPT, department_name="市人力资源和社会保障局")
