"""Second factors that an intruder in a session cannot swap: removing or replacing one needs
the password and an existing factor again, recently; SMS never stands in for a stronger factor."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import select, update

from tests.conftest import PASSWORD
from tests.flask_flows import csrf_token, login
from tests.idp.test_mfa import _csrf, _enrol_totp, _json_post, _post, _second_step, _sms_code
from tongban.clock import utcnow
from tongban.extensions import db


def _totp_row(user_id):
    from people.mfa import TotpFactor

    db.session.expire_all()
    return db.session.execute(select(TotpFactor).where(TotpFactor.user_id == user_id)).scalar_one_or_none()


def _login_with_totp(c, totp):
    page = _second_step(c)
    ok = c.post("/mfa/verify/totp", data={"csrf_token": _csrf(page), "code": totp.now()})
    assert ok.status_code == 302 and ok.headers["Location"].endswith("/account"), ok.headers.get("Location")


def test_a_stale_session_cannot_remove_the_authenticator_app(app, browser, citizen):
    """The attack: someone in a session left open removes the owner's second factor."""
    start = utcnow()
    with freeze_time(start) as frozen:
        totp, _codes = _enrol_totp(browser())
        frozen.tick(timedelta(seconds=31))
        c = browser("en")
        _login_with_totp(c, totp)
        frozen.tick(timedelta(minutes=app.config["TONGBAN_MFA_FRESH_MINUTES"], seconds=1))

        resp = _post(c, "/account/security/totp/remove")
        assert resp.status_code == 302 and "/account/security/confirm" in resp.headers["Location"]
        assert _totp_row(citizen.id) is not None
        assert "reauth-needed" in c.get("/account").get_data(as_text=True)

        # the password alone is not enough when the account has a second factor
        page = c.get("/account/security/confirm")
        assert page.status_code == 200 and 'name="password"' in page.get_data(as_text=True)
        c.post("/account/security/confirm", data={"csrf_token": _csrf(page), "password": PASSWORD})
        assert _post(c, "/account/security/totp/remove").status_code == 302
        assert _totp_row(citizen.id) is not None
        # a wrong password with a right code: refused
        frozen.tick(timedelta(seconds=31))
        page = c.get("/account/security/confirm")
        bad = c.post("/account/security/confirm", data={"csrf_token": _csrf(page), "password": "Wrong-Passw0rd",
                                                        "code": totp.now()}, follow_redirects=True)
        assert "password is wrong" in bad.get_data(as_text=True)
        _post(c, "/account/security/totp/remove")
        assert _totp_row(citizen.id) is not None

        # password and a code of the app: now it may go
        frozen.tick(timedelta(seconds=31))
        page = c.get("/account/security/confirm")
        ok = c.post("/account/security/confirm", data={"csrf_token": _csrf(page), "password": PASSWORD,
                                                       "code": totp.now()})
        assert ok.status_code == 302 and ok.headers["Location"].endswith("/account#security")
        assert _post(c, "/account/security/totp/remove").status_code == 302
        assert _totp_row(citizen.id) is None


def test_recovery_codes_cannot_be_regenerated_by_a_stale_session(app, browser, citizen):
    from people.mfa import RecoveryCode

    start = utcnow()
    with freeze_time(start) as frozen:
        totp, codes = _enrol_totp(browser())
        frozen.tick(timedelta(minutes=app.config["TONGBAN_MFA_FRESH_MINUTES"], seconds=1))
        c = browser("en")
        _login_with_totp(c, totp)
        frozen.tick(timedelta(minutes=app.config["TONGBAN_MFA_FRESH_MINUTES"], seconds=1))
        resp = _post(c, "/account/security/recovery-codes")
        assert resp.status_code == 302 and "/account/security/confirm" in resp.headers["Location"]
        db.session.expire_all()
        stored = db.session.execute(select(RecoveryCode).where(RecoveryCode.user_id == citizen.id)).scalars().all()
        assert len(stored) == 10  # the owner's codes still stand
        # a recovery code proves the factor as well
        page = c.get("/account/security/confirm")
        c.post("/account/security/confirm", data={"csrf_token": _csrf(page), "password": PASSWORD,
                                                  "code": codes[0]})
        new = _post(c, "/account/security/recovery-codes")
        assert new.status_code == 200 and len(re.findall(r"<li><code>", new.get_data(as_text=True))) == 10


def test_a_stale_session_cannot_add_a_passkey(app, browser, citizen):
    """Adding a factor to an account that has one replaces what log-in trusts: fresh proof first."""
    start = utcnow()
    with freeze_time(start) as frozen:
        c = browser("en")
        assert login(c).status_code == 302
        frozen.tick(timedelta(minutes=app.config["TONGBAN_MFA_FRESH_MINUTES"], seconds=1))
        csrf = csrf_token(c, "/account")
        resp = _json_post(c, "/account/security/passkeys/options", {}, csrf)
        assert resp.status_code == 401
        body = resp.get_json()
        assert body["error"] == "reauthentication_required" and "/account/security/confirm" in body["next"]
        # no second factor yet: the password again is enough
        page = c.get("/account/security/confirm")
        c.post("/account/security/confirm", data={"csrf_token": _csrf(page), "password": PASSWORD})
        assert _json_post(c, "/account/security/passkeys/options", {}, csrf).status_code == 200


def test_a_fresh_login_may_set_up_the_first_factor(app, browser, citizen):
    _enrol_totp(browser())  # logs in and sets up the app straight away
    assert _totp_row(citizen.id).confirmed_at is not None


def test_freshness_is_bound_to_the_session(app, browser, citizen):
    """A fresh mark of one session does not carry over to the next log-in of the same browser."""
    from tongban.clock import epoch

    start = utcnow()
    with freeze_time(start) as frozen:
        c = browser("en")
        assert login(c).status_code == 302
        with c.session_transaction() as s:
            old = dict(s["tb_fresh"])
        frozen.tick(timedelta(minutes=app.config["TONGBAN_MFA_FRESH_MINUTES"], seconds=1))
        with c.session_transaction() as s:  # a replayed mark naming another session
            s["tb_fresh"] = {"sid": "someone-elses-session", "pwd": epoch()}
        assert old["sid"] != "someone-elses-session"
        resp = _post(c, "/account/security/totp/start")
        assert "/account/security/confirm" in resp.headers["Location"]


# ---------------------------------------------------------------- SMS


def test_sms_cannot_stand_in_for_the_authenticator_app(app, browser, citizen):
    """The attack: with the password and a swapped SIM, log in past the authenticator app."""
    from people import mfa
    from people.models import LoginSession, User

    db.session.execute(update(User).where(User.id == citizen.id).values(assurance_level=2))
    db.session.commit()
    # a code asked for before the app was set up
    with app.test_request_context():
        mfa.send_sms_code(db.session.get(User, citizen.id), "login")
        db.session.commit()
    early = _sms_code(app)
    _enrol_totp(browser())

    c = browser("en")
    page = _second_step(c)
    html = page.get_data(as_text=True)
    assert "/mfa/verify/sms/send" not in html
    assert c.post("/mfa/verify/sms/send", data={"csrf_token": _csrf(page)}).status_code == 400
    refused = c.post("/mfa/verify/sms", data={"csrf_token": _csrf(page), "code": early}, follow_redirects=True)
    assert "cannot replace" in refused.get_data(as_text=True)
    assert c.get("/account").status_code == 302  # no session
    db.session.expire_all()
    sessions = db.session.execute(select(LoginSession).where(LoginSession.user_id == citizen.id,
                                                             LoginSession.ended_at.is_(None))).scalars().all()
    assert all("sms" not in s.amr.split() for s in sessions)


def test_sms_remains_a_factor_for_accounts_without_a_stronger_one(app, browser, citizen):
    from people import mfa
    from people.models import User

    db.session.execute(update(User).where(User.id == citizen.id).values(assurance_level=2))
    db.session.commit()
    with app.test_request_context():
        user = db.session.get(User, citizen.id)
        mfa.send_sms_code(user, "login")
        mfa.verify_sms_code(user, "login", _sms_code(app))
        db.session.commit()


# ---------------------------------------------------------------- the SMS outbox


class _Gateway:
    def __init__(self):
        self.sent: list[tuple[str, str]] = []

    def send(self, phone, text):
        self.sent.append((phone, text))


def _queue_code(app, citizen_or_id) -> None:
    from people import mfa
    from people.models import User

    user_id = getattr(citizen_or_id, "id", citizen_or_id)
    with app.test_request_context():
        mfa.send_sms_code(db.session.get(User, user_id), "phone")
        db.session.commit()


def test_outbox_keeps_no_readable_code(app, citizen):
    """The attack: whoever reads the database (or a backup) reads every code in flight."""
    from people.mfa import SmsOutbox

    _queue_code(app, citizen)
    code = _sms_code(app)  # through the sealed text, as the gateway reads it
    db.session.expire_all()
    body = db.session.execute(select(SmsOutbox.body)).scalar_one()
    assert code not in body and "verification" not in body and body.startswith("sealed:")


def test_delivered_messages_are_deleted(app, citizen):
    from people import mfa
    from people.mfa import SmsOutbox

    gateway = _Gateway()
    app.extensions["tongban.sms_gateway"] = gateway
    try:
        _queue_code(app, citizen)  # delivered right after the commit
        assert len(gateway.sent) == 1
        phone, text = gateway.sent[0]
        assert phone == "13800138000" and re.search(r"\b\d{6}\b", text)
        db.session.expire_all()
        assert db.session.query(SmsOutbox).count() == 0
        assert mfa.deliver_sms() == 0  # nothing is sent twice
    finally:
        del app.extensions["tongban.sms_gateway"]


def test_a_failed_delivery_is_retried_then_expires(app, citizen):
    from people import mfa
    from people.mfa import SmsOutbox

    class Down:
        def send(self, phone, text):
            raise OSError("gateway down")

    _queue_code(app, citizen)  # no gateway yet: it waits
    app.extensions["tongban.sms_gateway"] = Down()
    try:
        with pytest.raises(OSError):
            mfa.deliver_sms()
        db.session.expire_all()
        row = db.session.execute(select(SmsOutbox)).scalar_one()
        assert row.sent_at is None  # given back for the next try
        gateway = _Gateway()
        app.extensions["tongban.sms_gateway"] = gateway
        assert mfa.deliver_sms() == 1 and len(gateway.sent) == 1
    finally:
        del app.extensions["tongban.sms_gateway"]
    # a message nobody delivered is deleted once its code has expired
    user_id = citizen.id
    db.session.expunge_all()  # SQLite gives the deleted row's id again
    _queue_code(app, user_id)
    assert mfa.sms_outbox_chore() == 0
    with freeze_time(utcnow() + timedelta(minutes=app.config["TONGBAN_SMS_CODE_MINUTES"], seconds=1)):
        assert mfa.sms_outbox_chore() == 1
    db.session.expire_all()
    assert db.session.query(SmsOutbox).count() == 0


def test_confirming_the_phone_is_not_a_second_factor_when_a_stronger_one_exists(app, browser, citizen):
    """The sibling: a phone check (L1 → L2) by SMS must not record "sms" as the session's factor
    (it would count toward L3 and toward changing the app) when the account has an app."""
    from people.models import LoginSession

    start = utcnow()
    with freeze_time(start) as frozen:
        totp, _codes = _enrol_totp(browser())
        frozen.tick(timedelta(seconds=31))
        c = browser("en")
        _login_with_totp(c, totp)
        frozen.tick(timedelta(minutes=app.config["TONGBAN_MFA_FRESH_MINUTES"], seconds=1))
        page = c.get("/mfa/verify?acr=L2&next=/account")
        assert c.post("/mfa/verify/sms/send?acr=L2&next=/account",
                      data={"csrf_token": _csrf(page)}).status_code == 302
        ok = c.post("/mfa/verify/sms?acr=L2&next=/account", data={"csrf_token": _csrf(page),
                                                                  "code": _sms_code(app)})
        assert ok.status_code == 302
        db.session.expire_all()
        sess = db.session.execute(select(LoginSession).where(LoginSession.user_id == citizen.id,
                                                             LoginSession.ended_at.is_(None))
                                  .order_by(LoginSession.id.desc())).scalars().first()
        assert "sms" not in sess.amr.split() and sess.acr == "L2"
        # and it did not make the session fresh for changing factors
        resp = _post(c, "/account/security/totp/remove")
        assert "/account/security/confirm" in resp.headers["Location"]
        assert _totp_row(citizen.id) is not None


def test_a_pending_authenticator_secret_is_not_shown_to_a_stale_session(app, browser, citizen):
    """The owner started setting up an app and left; someone in the open session later must
    not read the secret (or bind their own phone to it)."""
    start = utcnow()
    with freeze_time(start) as frozen:
        c = browser("en")
        assert login(c).status_code == 302
        assert _post(c, "/account/security/totp/start").status_code == 302
        assert c.get("/account/security/totp").status_code == 200
        frozen.tick(timedelta(minutes=app.config["TONGBAN_MFA_FRESH_MINUTES"], seconds=1))
        page = c.get("/account/security/totp")
        assert page.status_code == 302 and "/account/security/confirm" in page.headers["Location"]
        assert c.get("/account/security/totp/qr.svg").status_code == 403
        confirm = _post(c, "/account/security/totp/confirm", {"code": "123456"})
        assert "/account/security/confirm" in confirm.headers["Location"]
        assert _totp_row(citizen.id).confirmed_at is None


def test_the_log_gateway_for_development(app, citizen, caplog):
    from people.mfa import SmsOutbox

    app.config["TONGBAN_SMS_GATEWAY"] = "log"
    try:
        with caplog.at_level("WARNING"):
            _queue_code(app, citizen)
    finally:
        app.config["TONGBAN_SMS_GATEWAY"] = ""
    assert any("SMS to 13800138000" in r.getMessage() and re.search(r"\b\d{6}\b", r.getMessage())
               for r in caplog.records)
    db.session.expire_all()
    assert db.session.query(SmsOutbox).count() == 0
