"""Second factors through the pages: TOTP (enrolment, log-in, replay), recovery codes,
passkeys with a software authenticator, SMS codes through the outbox (L1 → L2)."""

from __future__ import annotations

import html
import re
import time

import pyotp
import pytest

from tests.conftest import CITIZEN_ID, OTHER_ID, PASSWORD
from tests.flask_flows import csrf_token, login
from tests.idp.softauthn import SoftAuthenticator


def _csrf(resp) -> str:
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', resp.get_data(as_text=True)).group(1)


def _post(c, url, data=None, page="/account"):
    return c.post(url, data={"csrf_token": csrf_token(c, page), **(data or {})})


def _session_row(app, user_id):
    from sqlalchemy import select

    from people.models import LoginSession
    from tongban.extensions import db

    db.session.expire_all()
    return db.session.execute(select(LoginSession).where(LoginSession.user_id == user_id,
                                                         LoginSession.ended_at.is_(None))
                              .order_by(LoginSession.id.desc())).scalars().first()


def _enrol_totp(c) -> tuple[pyotp.TOTP, list[str]]:
    assert login(c).status_code == 302
    resp = _post(c, "/account/security/totp/start")
    assert resp.headers["Location"].endswith("/account/security/totp")
    page = c.get("/account/security/totp").get_data(as_text=True)
    secret = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', page).group(1)
    qr = c.get("/account/security/totp/qr.svg")
    assert qr.status_code == 200 and qr.mimetype == "image/svg+xml" and b"<svg" in qr.data
    totp = pyotp.TOTP(secret)
    bad = _post(c, "/account/security/totp/confirm", {"code": "000000" if totp.now() != "000000" else "111111"},
                page="/account/security/totp")
    assert bad.status_code == 302 and bad.headers["Location"].endswith("/account/security/totp")
    done = _post(c, "/account/security/totp/confirm", {"code": totp.now()}, page="/account/security/totp")
    assert done.status_code == 200
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", done.get_data(as_text=True))
    assert len(codes) == 10 and len(set(codes)) == 10
    return totp, codes


def _second_step(c):
    """Log in with the password; the second-factor page must follow."""
    resp = login(c)
    assert resp.status_code == 302 and "/mfa/verify" in resp.headers["Location"], resp.headers.get("Location")
    assert c.get("/account").status_code == 302  # no session before the second factor
    return c.get(resp.headers["Location"])


def test_totp_enrolment_login_and_replay(app, browser, citizen):
    from people.mfa import RecoveryCode
    from tongban.extensions import db

    totp, codes = _enrol_totp(browser())
    stored = [r.code_hash for r in db.session.query(RecoveryCode).all()]
    assert len(stored) == 10 and not any(code in stored for code in codes)  # only digests

    c = browser()
    page = _second_step(c)
    assert page.status_code == 200 and 'name="code"' in page.get_data(as_text=True)
    code = totp.at(time.time() + totp.interval)  # the next step: within the drift window, not yet used
    ok = c.post("/mfa/verify/totp", data={"csrf_token": _csrf(page), "code": code})
    assert ok.status_code == 302 and ok.headers["Location"].endswith("/account")
    assert c.get("/account").status_code == 200
    sess = _session_row(app, citizen.id)
    assert sess.amr.split() == ["pwd", "otp", "mfa"] and sess.acr == "L1"  # the account is only L1

    # the same code again (another browser): refused as a replay
    c2 = browser("en")
    page = _second_step(c2)
    again = c2.post("/mfa/verify/totp", data={"csrf_token": _csrf(page), "code": code}, follow_redirects=True)
    assert "already used" in again.get_data(as_text=True)
    assert c2.get("/account").status_code == 302


def test_recovery_code_is_single_use(app, browser, citizen):
    _totp, codes = _enrol_totp(browser())
    c = browser()
    page = _second_step(c)
    ok = c.post("/mfa/verify/recovery", data={"csrf_token": _csrf(page), "code": codes[3].upper()})
    assert ok.status_code == 302 and c.get("/account").status_code == 200

    c2 = browser("en")
    page = _second_step(c2)
    again = c2.post("/mfa/verify/recovery", data={"csrf_token": _csrf(page), "code": codes[3]},
                    follow_redirects=True)
    assert "not correct" in again.get_data(as_text=True)
    assert c2.get("/account").status_code == 302
    # regenerating replaces them all
    new = _post(c, "/account/security/recovery-codes")
    fresh = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", new.get_data(as_text=True))
    assert len(fresh) == 10
    page = c2.get("/mfa/verify")
    old = c2.post("/mfa/verify/recovery", data={"csrf_token": _csrf(page), "code": codes[4]})
    assert c2.get("/account").status_code == 302 and old.status_code == 302


def _json_post(c, url, body, csrf):
    return c.post(url, json=body, headers={"X-CSRFToken": csrf})


def test_passkey_registration_and_login(app, browser, citizen):
    from people.mfa import Passkey, rp
    from tongban.extensions import db

    rp_id, origin = rp()
    authn = SoftAuthenticator(rp_id, origin)
    c = browser()
    assert login(c).status_code == 302
    csrf = csrf_token(c, "/account")
    assert "data-passkey=\"register\"" in c.get("/account").get_data(as_text=True)
    options = _json_post(c, "/account/security/passkeys/options", {}, csrf).get_json()
    assert options["rp"]["id"] == rp_id
    resp = _json_post(c, "/account/security/passkeys", {"credential": authn.create(options), "name": "测试"}, csrf)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert db.session.query(Passkey).count() == 1

    # log in: password, then the passkey
    c2 = browser()
    page = _second_step(c2)
    text = page.get_data(as_text=True)
    assert 'data-passkey="authenticate"' in text
    csrf2 = html.unescape(re.search(r'data-csrf="([^"]+)"', text).group(1))
    opts = _json_post(c2, "/mfa/passkey/options", {}, csrf2).get_json()
    # an assertion made for another origin is refused
    bad = _json_post(c2, "/mfa/passkey/verify", authn.get(opts, origin="https://evil.example"), csrf2)
    assert bad.status_code == 400
    opts = _json_post(c2, "/mfa/passkey/options", {}, csrf2).get_json()
    ok = _json_post(c2, "/mfa/passkey/verify", authn.get(opts), csrf2)
    assert ok.status_code == 200 and ok.get_json()["next"].endswith("/account"), ok.get_data(as_text=True)
    assert c2.get("/account").status_code == 200
    sess = _session_row(app, citizen.id)
    assert {"pwd", "swk", "user", "mfa"} <= set(sess.amr.split())


def _sms_code(app) -> str:
    from sqlalchemy import select

    from people.mfa import SmsOutbox, outbox_text
    from tongban.extensions import db

    db.session.expire_all()
    body = db.session.execute(select(SmsOutbox.body).order_by(SmsOutbox.id.desc())).scalars().first()
    return re.search(r"\b(\d{6})\b", outbox_text(body)).group(1)  # what the gateway would send


def test_sms_verifies_phone_l1_to_l2_with_limited_attempts(app, browser, citizen):
    from people import accounts
    from tongban.extensions import db

    c = browser("en")
    assert login(c).status_code == 302
    assert _session_row(app, citizen.id).acr == "L1"
    url = "/mfa/verify?acr=L2&next=/account"
    page = c.get(url)
    assert page.status_code == 200 and "/mfa/verify/sms/send" in page.get_data(as_text=True)
    assert c.post("/mfa/verify/sms/send?acr=L2&next=/account", data={"csrf_token": _csrf(page)}).status_code == 302
    code = _sms_code(app)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(app.config["TONGBAN_SMS_CODE_ATTEMPTS"]):
        c.post("/mfa/verify/sms?acr=L2&next=/account", data={"csrf_token": _csrf(page), "code": wrong})
    late = c.post("/mfa/verify/sms?acr=L2&next=/account", data={"csrf_token": _csrf(page), "code": code},
                  follow_redirects=True)
    assert "Too many wrong codes" in late.get_data(as_text=True)
    db.session.expire_all()
    assert accounts.get_user_by_sub(citizen.sub).assurance_level == 1

    c.post("/mfa/verify/sms/send?acr=L2&next=/account", data={"csrf_token": _csrf(page)})
    ok = c.post("/mfa/verify/sms?acr=L2&next=/account", data={"csrf_token": _csrf(page), "code": _sms_code(app)})
    assert ok.status_code == 302
    assert c.get(ok.headers["Location"]).headers["Location"].endswith("/account")  # L2 reached: carry on
    db.session.expire_all()
    assert accounts.get_user_by_sub(citizen.sub).assurance_level == 2
    sess = _session_row(app, citizen.id)
    assert sess.acr == "L2" and "sms" in sess.amr.split()

    # the codes are stored as HMACs, never in clear
    from people.mfa import SmsCode

    assert all(len(r.code_hash) == 64 and code not in r.code_hash for r in db.session.query(SmsCode).all())


def test_sms_rate_limited_per_phone_and_outbox_in_admin(app, browser, citizen):
    from people import accounts
    from tongban.extensions import db

    app.config["TONGBAN_SMS_RATE_PER_PHONE"] = 2
    try:
        c = browser("en")
        assert login(c).status_code == 302
        page = c.get("/mfa/verify?acr=L2")
        for _ in range(2):
            c.post("/mfa/verify/sms/send?acr=L2", data={"csrf_token": _csrf(page)})
        third = c.post("/mfa/verify/sms/send?acr=L2", data={"csrf_token": _csrf(page)}, follow_redirects=True)
        assert "Too many text messages" in third.get_data(as_text=True)
    finally:
        app.config["TONGBAN_SMS_RATE_PER_PHONE"] = 5
    from people.mfa import SmsOutbox

    assert db.session.query(SmsOutbox).count() == 2

    accounts.create_staff(OTHER_ID, "王五", PASSWORD, app.config["TONGBAN_AUTHORITY_USCC"], "admin")
    db.session.commit()
    admin = browser("en")
    assert login(admin, OTHER_ID).status_code == 302
    out = admin.get("/admin/sms")
    page = out.get_data(as_text=True)
    assert out.status_code == 200 and 'id="sms-outbox"' in page
    # administrators see that messages wait, never their codes
    assert "verification code" not in page and "138****8000" in page and "13800138000" not in page
    assert _sms_code(app) not in page
    assert login(browser(), CITIZEN_ID).status_code == 302
    c3 = browser()
    assert login(c3).status_code == 302
    assert c3.get("/admin/sms").status_code == 403


@pytest.mark.parametrize("acr,amr,level,expected", [
    ("L1", "pwd", 1, 1), ("L2", "pwd", 3, 2), ("L3", "pwd otp", 3, 3), ("L3", "pwd sms", 5, 3),
    ("L3", "otp", 3, 2), ("L2", "pwd swk user", 2, 2),
])
def test_session_level_rule(acr, amr, level, expected):
    from people.assurance import session_level

    assert session_level(level, amr.split()) == expected
