"""Registration with an SMS check of the phone and agreement to the terms; the forgotten
password (SMS code to the verified phone); the log-in page's lockout warnings."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from people.models import LoginSession, User
from tests.conftest import CITIZEN_ID, OTHER_ID, PASSWORD
from tests.flask_flows import csrf_token, login
from tongban.extensions import db

NEW_PASSWORD = "Another-Passw0rd?"
PHONE = "13900139000"


def _outbox() -> list[tuple[str, str]]:
    from people.mfa import SmsOutbox, outbox_text

    db.session.expire_all()
    rows = db.session.execute(select(SmsOutbox.phone, SmsOutbox.body).order_by(SmsOutbox.id)).all()
    return [(phone, outbox_text(body)) for phone, body in rows]


def _code_for(phone: str) -> str | None:
    for to, text in reversed(_outbox()):
        if to == phone:
            m = re.search(r"\b(\d{6})\b", text)
            return m.group(1) if m else None
    return None


def _users() -> int:
    db.session.expire_all()
    return db.session.execute(select(func.count()).select_from(User)).scalar()


def _ask_code(c, phone: str = PHONE, **kw):
    return c.post("/register/code", data={"phone": phone, "csrf_token": csrf_token(c, "/register")}, **kw)


def register(c, phone: str = PHONE, code: str | None = None, **fields):
    """Ask for the code, read it from the SMS outbox, and register with it."""
    if code is None:
        assert _ask_code(c, phone).status_code == 200
        code = _code_for(phone)
    data = {"name": "李四", "id_number": OTHER_ID, "phone": phone, "code": code or "", "password": PASSWORD,
            "confirm": PASSWORD, "agree": "y", "next": ""}
    data.update(fields)
    data["csrf_token"] = csrf_token(c, "/register")
    return c.post("/register", data=data)


@pytest.fixture
def en(browser):
    return browser("en")


# ---------------------------------------------------------------- registration


def test_registration_with_the_sms_code_creates_an_l2_account(app, en):
    resp = register(en)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    user = db.session.execute(select(User).where(User.id_number == OTHER_ID)).scalar_one()
    assert user.phone == PHONE and user.assurance_level == 2  # the phone answered
    page = en.get("/account").get_data(as_text=True)
    assert "李四" in page


def test_registration_refuses_without_a_code_a_wrong_code_or_a_code_for_another_phone(app, en):
    assert _ask_code(en).status_code == 200
    right = _code_for(PHONE)
    assert register(en, code="").status_code == 400
    wrong = "000000" if right != "000000" else "111111"
    resp = register(en, code=wrong)
    assert resp.status_code == 400 and "wrong or has expired" in resp.get_data(as_text=True)
    # the attack: a code received on one's own phone, used to register someone else's number
    assert _ask_code(en, "13700137000").status_code == 200
    mine = _code_for("13700137000")
    assert register(en, phone=PHONE, code=mine).status_code == 400 or mine == right
    assert _users() == 0


def test_a_code_dies_after_the_allowed_attempts(app, en, monkeypatch):
    # every try counts against the registration limit too (tested elsewhere)
    monkeypatch.setitem(app.config, "TONGBAN_REGISTER_RATE_PER_IP", 100)
    assert _ask_code(en).status_code == 200
    right = _code_for(PHONE)
    wrong = "000000" if right != "000000" else "111111"
    for _ in range(app.config["TONGBAN_SMS_CODE_ATTEMPTS"]):
        assert register(en, code=wrong).status_code == 400
    assert register(en, code=right).status_code == 400  # too late: guessed out
    assert _users() == 0


def test_a_code_registers_one_account_only(app, en, browser):
    assert _ask_code(en).status_code == 200
    code = _code_for(PHONE)
    assert register(en, code=code).status_code == 302
    other = browser("en")
    resp = register(other, code=code, id_number=CITIZEN_ID)
    assert resp.status_code == 400 and _users() == 1


def test_registration_needs_agreement_to_the_terms(app, en):
    assert _ask_code(en).status_code == 200
    resp = register(en, code=_code_for(PHONE), agree="")
    assert resp.status_code == 400 and "agree to the terms" in resp.get_data(as_text=True)
    assert _users() == 0
    terms = en.get("/terms")
    assert terms.status_code == 200 and "隐私政策" in terms.get_data(as_text=True)


def test_a_registered_phone_gets_a_notice_not_a_code_and_the_page_says_the_same(app, en, citizen):
    fresh = _ask_code(en, "13700137000").get_data(as_text=True)
    taken = _ask_code(en, citizen.phone).get_data(as_text=True)
    strip = lambda page: re.sub(r'(?:value|data-csrf)="[^"]*"', "", page)  # noqa: E731 (phone and CSRF token differ)
    assert strip(fresh) == strip(taken)  # the page does not tell whether the number is registered
    text = dict(_outbox())[citizen.phone]
    assert "already has a Tongban account" in text and not re.search(r"\d{6}", text)


def test_registration_codes_are_rate_limited(app, browser, monkeypatch):
    monkeypatch.setitem(app.config, "TONGBAN_REGISTER_CODES_PER_IP", 2)
    c = browser("en")
    addr = {"environ_base": {"REMOTE_ADDR": "192.0.2.40"}}
    assert _ask_code(c, "13700137001", **addr).status_code == 200
    assert _ask_code(c, "13700137002", **addr).status_code == 200
    resp = _ask_code(c, "13700137003", **addr)
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
    assert _code_for("13700137003") is None


def test_a_bad_phone_is_a_clear_400(app, en):
    resp = _ask_code(en, "12345")
    assert resp.status_code == 400 and "11-digit" in resp.get_data(as_text=True)
    assert _outbox() == []


# ---------------------------------------------------------------- forgotten password


def _verified(user) -> User:
    user = db.session.get(User, user.id)
    user.assurance_level = 2
    db.session.commit()
    return user


def _forgot(c, who: str, **kw):
    return c.post("/password/forgot", data={"login": who, "csrf_token": csrf_token(c, "/password/forgot")},
                  **kw)


def _reset(c, code: str, password: str = NEW_PASSWORD, **kw):
    return c.post("/password/reset", data={"code": code, "new": password, "confirm": password,
                                           "csrf_token": csrf_token(c, "/password/reset")}, **kw)


def test_reset_with_the_sms_code_sets_the_password_and_ends_every_session(app, browser, citizen):
    user = _verified(citizen)
    elsewhere = browser("en")
    assert login(elsewhere).status_code == 302
    c = browser("en")
    assert _forgot(c, CITIZEN_ID).status_code == 302
    code = _code_for(user.phone)
    resp = _reset(c, code)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")
    db.session.expire_all()
    live = db.session.execute(select(func.count()).select_from(LoginSession)
                              .where(LoginSession.ended_at.is_(None))).scalar()
    assert live == 0
    assert elsewhere.get("/account").status_code == 302  # logged out there
    assert login(c, password=PASSWORD).status_code == 401  # the old password is gone
    assert login(c, password=NEW_PASSWORD).status_code == 302
    # the code is spent: replaying it (with the reset page reopened) sets nothing
    again = browser("en")
    _forgot(again, "13700137000")  # any login opens the second step; no message is sent for it
    with again.session_transaction() as s:
        s["tb_reset_login"] = CITIZEN_ID
    assert _reset(again, code, "Third-Passw0rd!!").status_code == 400
    assert login(browser("en"), password=NEW_PASSWORD).status_code == 302


def test_forgot_never_tells_whether_an_account_exists(app, browser, citizen):
    _verified(citizen)
    known, unknown = browser("en"), browser("en")
    a, b = _forgot(known, CITIZEN_ID), _forgot(unknown, OTHER_ID)
    assert a.status_code == b.status_code == 302 and a.headers["Location"] == b.headers["Location"]
    pa = known.get("/password/reset").get_data(as_text=True)
    pb = unknown.get("/password/reset").get_data(as_text=True)
    strip = lambda page: re.sub(r'(?:value|data-csrf)="[^"]*"|\d{3}\*+\w{4}', "", page)  # noqa: E731
    assert strip(pa) == strip(pb)
    ra, rb = _reset(known, "000000"), _reset(unknown, "000000")
    assert ra.status_code == rb.status_code == 400
    assert strip(ra.get_data(as_text=True)) == strip(rb.get_data(as_text=True))


def test_an_unverified_phone_gets_no_reset_code(app, browser, citizen):
    """The attack: an L1 account's phone was typed by whoever registered it, never checked."""
    assert db.session.get(User, citizen.id).assurance_level == 1
    c = browser("en")
    assert _forgot(c, CITIZEN_ID).status_code == 302
    assert _outbox() == []


def test_a_wrong_code_changes_nothing_and_codes_die_after_the_attempts(app, browser, citizen):
    user = _verified(citizen)
    before = db.session.get(User, user.id).password_hash
    c = browser("en")
    _forgot(c, CITIZEN_ID)
    right = _code_for(user.phone)
    wrong = "000000" if right != "000000" else "111111"
    for _ in range(app.config["TONGBAN_SMS_CODE_ATTEMPTS"]):
        assert _reset(c, wrong).status_code == 400
    assert _reset(c, right).status_code == 400  # guessed out
    db.session.expire_all()
    assert db.session.get(User, user.id).password_hash == before
    assert login(browser("en")).status_code == 302


def test_a_weak_new_password_is_refused(app, browser, citizen):
    user = _verified(citizen)
    c = browser("en")
    _forgot(c, CITIZEN_ID)
    resp = _reset(c, _code_for(user.phone), "short")
    assert resp.status_code == 400
    assert login(browser("en")).status_code == 302  # the old one still works


def test_reset_lifts_the_lockout(app, browser, citizen):
    user = _verified(citizen)
    c = browser("en")
    for _ in range(app.config["TONGBAN_LOCKOUT_THRESHOLD"]):
        login(c, password="wrong-password-1A")
    locked = login(c, password=PASSWORD)
    assert locked.status_code == 423
    body = locked.get_data(as_text=True)
    assert "/password/forgot" in body and "service window" in body  # what to do now
    _forgot(c, CITIZEN_ID)
    assert _reset(c, _code_for(user.phone)).status_code == 302
    assert login(c, password=NEW_PASSWORD).status_code == 302


def test_reset_requests_are_rate_limited(app, browser, citizen, monkeypatch):
    _verified(citizen)
    monkeypatch.setitem(app.config, "TONGBAN_RESET_RATE_PER_IP", 2)
    addr = {"environ_base": {"REMOTE_ADDR": "192.0.2.50"}}
    c = browser("en")
    assert _forgot(c, CITIZEN_ID, **addr).status_code == 302
    assert _forgot(c, CITIZEN_ID, **addr).status_code == 302
    resp = _forgot(c, CITIZEN_ID, **addr)
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
    assert len(_outbox()) == 2


def test_reset_page_without_a_request_goes_back_to_the_first_step(app, en):
    resp = en.get("/password/reset")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/password/forgot")


# ---------------------------------------------------------------- log-in warnings


def test_a_wrong_password_warns_of_the_lockout_in_the_same_words_for_unknown_accounts(app, browser, citizen):
    a = login(browser("en"), password="wrong-password-1A").get_data(as_text=True)
    b = login(browser("en"), login=OTHER_ID, password="wrong-password-1A").get_data(as_text=True)
    assert "wrong passwords in a row" in a and "/password/forgot" in a
    strip = lambda page: re.sub(r'(?:value|data-csrf)="[^"]*"|login=[^"&]*', "", page)  # noqa: E731
    assert strip(a) == strip(b)
