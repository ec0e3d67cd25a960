"""Citizen self-service pages: register, account page, password, identity verification,
connected systems, sessions, log-in history; CSRF and security headers."""

from __future__ import annotations

import re
from datetime import date

import pytest
from sqlalchemy import func, select

from idp.models import Consent, RefreshToken
from people.models import PopulationRecord, User
from tests.conftest import CITIZEN_ID, OTHER_ID, PASSWORD
from tests.flask_flows import authorize_code, basic, csrf_token, exchange, login, registration_code
from tongban.extensions import db
from tongban.identifiers import id_check_char

NEW_PASSWORD = "Another-Passw0rd?"
MASKED = "110***********002X"


def _id_number(first17: str) -> str:
    return first17 + id_check_char(first17)


def _users() -> int:
    db.session.expire_all()
    return db.session.execute(select(func.count()).select_from(User)).scalar()


def _register(client, **fields):
    data = {"name": "李四", "id_number": OTHER_ID, "phone": "13900139000", "password": PASSWORD,
            "confirm": PASSWORD, "agree": "y", "next": ""}
    data.update(fields)
    data["code"] = registration_code(client, data["phone"])
    data["csrf_token"] = csrf_token(client, "/register")
    return client.post("/register", data=data)


@pytest.fixture
def en(browser):
    return browser("en")


@pytest.fixture
def client(browser):
    return browser()


def _page(client, url: str = "/account") -> str:
    resp = client.get(url)
    assert resp.status_code == 200, (resp.status_code, resp.headers.get("Location"))
    return resp.get_data(as_text=True)


# ---------------------------------------------------------------- registration


@pytest.mark.parametrize("bad, message", [
    ("110105198001010017", "check digit"),  # OTHER_ID with the wrong check digit
    (_id_number("11010520991231001"), "birth date"),  # born in 2099
    (_id_number(f"110105{date.today().year + 1}0101001"), "birth date"),  # born next year
    ("11010519801301001X", "birth date"),  # month 13
])
def test_register_refuses_a_bad_id_number(app, en, bad, message):
    resp = _register(en, id_number=bad)
    assert resp.status_code == 400
    body = resp.get_data(as_text=True)
    assert 'role="alert"' in body and message in body
    assert 'name="id_number"' in body  # the form again
    assert "tongban_sso=" not in resp.headers.get("Set-Cookie", "")
    assert _users() == 0


def test_register_refuses_a_duplicate_id_number(app, en, citizen):
    resp = _register(en, id_number=CITIZEN_ID.lower(), phone="13700137000")
    assert resp.status_code == 400
    assert "already exists" in resp.get_data(as_text=True)
    assert _users() == 1


def test_register_refuses_a_weak_password(app, en):
    for weak, message in (("short1A!", "at least 10 characters"),
                          ("alllowercaseletters", "three of"),
                          (f"Ab{OTHER_ID}", "ID number")):
        resp = _register(en, password=weak, confirm=weak)
        assert resp.status_code == 400
        assert message in resp.get_data(as_text=True), weak
    assert _users() == 0


def test_register_refuses_mismatched_confirmation(app, en):
    resp = _register(en, confirm=PASSWORD + "x")
    assert resp.status_code == 400 and "do not match" in resp.get_data(as_text=True)
    assert _users() == 0


def test_register_logs_in_and_shows_the_account(app, en):
    resp = _register(en)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/account")
    assert "tongban_sso=" in resp.headers.get("Set-Cookie", "")
    user = db.session.execute(select(User).where(User.id_number == OTHER_ID)).scalar_one()
    assert user.assurance_level == 2 and user.phone == "13900139000"  # the phone answered a code
    body = _page(en)
    assert "李四" in body and "110***********0016" in body and "139****9000" in body
    assert OTHER_ID not in body and "13900139000" not in body


# ---------------------------------------------------------------- the account page


def test_account_needs_a_login(app, client):
    resp = client.get("/account")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_account_page_masks_the_id_number(app, en, citizen):
    assert login(en).status_code == 302
    body = _page(en)
    assert MASKED in body and "138****8000" in body
    assert CITIZEN_ID not in body and CITIZEN_ID.lower() not in body and "13800138000" not in body


def test_password_change(app, browser, en, citizen):
    assert login(en).status_code == 302
    token = csrf_token(en, "/account")
    resp = en.post("/account/password", data={"csrf_token": token, "current": "Not-The-Passw0rd",
                                              "new": NEW_PASSWORD, "confirm": NEW_PASSWORD},
                   follow_redirects=True)
    assert "current password is wrong" in resp.get_data(as_text=True)
    resp = en.post("/account/password", data={"csrf_token": token, "current": PASSWORD,
                                              "new": "weak", "confirm": "weak"}, follow_redirects=True)
    assert "at least 10 characters" in resp.get_data(as_text=True)
    resp = en.post("/account/password", data={"csrf_token": token, "current": PASSWORD,
                                              "new": NEW_PASSWORD, "confirm": NEW_PASSWORD},
                   follow_redirects=True)
    assert "password has been changed" in resp.get_data(as_text=True)

    other = browser()
    assert login(other, password=PASSWORD).status_code == 401
    assert login(other, password=NEW_PASSWORD).status_code == 302


def test_identity_verification_raises_to_l3(app, en, citizen):
    db.session.add(PopulationRecord(id_number=CITIZEN_ID, name="张三"))
    db.session.commit()
    assert login(en).status_code == 302
    assert "L1" in _page(en)
    token = csrf_token(en, "/account")
    resp = en.post("/account/verify-identity", data={"csrf_token": token}, follow_redirects=True)
    body = resp.get_data(as_text=True)
    assert "confirmed by the population register" in body and "L3" in body
    db.session.expire_all()
    user = db.session.get(User, citizen.id)
    assert user.assurance_level == 3 and user.verified_at is not None


@pytest.mark.parametrize("record", [None, ("张四", CITIZEN_ID)])
def test_identity_verification_refused(app, en, citizen, record):
    if record:
        db.session.add(PopulationRecord(id_number=record[1], name=record[0]))
        db.session.commit()
    assert login(en).status_code == 302
    token = csrf_token(en, "/account")
    resp = en.post("/account/verify-identity", data={"csrf_token": token}, follow_redirects=True)
    assert "could not confirm" in resp.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(User, citizen.id).assurance_level == 1


def test_revoking_consent_removes_the_system_and_its_refresh_tokens(app, en, citizen, make_client):
    client_id, secret = make_client(name="不动产登记系统")
    assert login(en).status_code == 302
    code = authorize_code(en, client_id, scope="openid profile offline_access")
    tokens = exchange(en, client_id, secret, code).get_json()
    assert "refresh_token" in tokens
    body = _page(en)
    assert "不动产登记系统" in body
    action = f"/account/consents/{client_id}/revoke"
    assert action in body

    resp = en.post(action, data={"csrf_token": csrf_token(en, "/account")})
    assert resp.status_code == 302
    body = _page(en)
    # gone from the connected systems (the sessions list still says where it was signed in)
    connected = body.split('id="systems"', 1)[1].split("</section>", 1)[0]
    assert "不动产登记系统" not in connected and action not in body
    assert db.session.execute(select(Consent).where(Consent.client_id == client_id)).first() is None
    db.session.expire_all()
    rows = db.session.execute(select(RefreshToken).where(RefreshToken.client_id == client_id)).scalars().all()
    assert rows and all(r.revoked_at is not None for r in rows)
    resp = en.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                   headers=basic(client_id, secret))
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_grant"
    # and the next authorization asks for consent again
    resp = en.get(f"/oauth/authorize?response_type=code&client_id={client_id}"
                  f"&redirect_uri=http://127.0.0.1:9/callback&scope=openid+profile&state=s")
    assert resp.status_code == 200 and 'name="decision"' in resp.get_data(as_text=True)


def test_login_history_lists_successes_and_failures(app, en, citizen):
    assert login(en, password="Wrong-Passw0rd!").status_code == 401
    assert login(en).status_code == 302
    body = _page(en)
    history = body[body.index('id="history"'):]
    assert history.count("outcome-bad_password") == 1 and "wrong password" in history
    assert history.count("outcome-success") == 1


def test_ending_another_session(app, browser, en, citizen):
    other = browser()
    assert login(other).status_code == 302
    assert login(en).status_code == 302
    body = _page(en)
    ends = re.findall(r'action="(/account/sessions/[^"/]+/end)"', body)
    assert len(ends) == 1  # the other device's, never this one's
    resp = en.post(ends[0], data={"csrf_token": csrf_token(en, "/account")})
    assert resp.status_code == 302
    assert re.findall(r'action="(/account/sessions/[^"/]+/end)"', _page(en)) == []
    resp = other.get("/account")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    _page(en)  # this session lives on


def test_cannot_end_someone_elses_session(app, browser, en, citizen, make_client):
    from people import accounts

    accounts.create_user(OTHER_ID, "李四", PASSWORD)
    db.session.commit()
    other = browser()
    assert login(other, login=OTHER_ID).status_code == 302
    from people.models import LoginSession

    their = db.session.execute(select(LoginSession.sid).where(LoginSession.ended_at.is_(None))).scalar_one()
    assert login(en).status_code == 302
    en.post(f"/account/sessions/{their}/end", data={"csrf_token": csrf_token(en, "/account")})
    assert other.get("/account").status_code == 200


# ---------------------------------------------------------------- CSRF


def test_posts_without_csrf_token_are_refused(app, browser, client, citizen):
    resp = client.post("/login", data={"login": CITIZEN_ID, "password": PASSWORD})
    assert resp.status_code == 400
    assert "tongban_sso=" not in resp.headers.get("Set-Cookie", "")
    resp = client.post("/register", data={"name": "李四", "id_number": OTHER_ID, "password": PASSWORD,
                                          "confirm": PASSWORD})
    assert resp.status_code == 400
    assert _users() == 1
    assert login(client).status_code == 302
    resp = client.post("/account/password", data={"current": PASSWORD, "new": NEW_PASSWORD,
                                                  "confirm": NEW_PASSWORD})
    assert resp.status_code == 400
    resp = client.post("/account/password", data={"csrf_token": "forged", "current": PASSWORD,
                                                  "new": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert resp.status_code == 400
    assert login(browser()).status_code == 302  # the password did not change


# ---------------------------------------------------------------- security headers


def _assert_common_headers(resp):
    csp = resp.headers["Content-Security-Policy"]
    directives = dict(([*d.strip().split(" ", 1), ""])[:2] for d in csp.split(";") if d.strip())
    script_src = directives.get("script-src", directives.get("default-src", ""))
    assert script_src and "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
    assert "frame-ancestors 'none'" in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in resp.headers  # the test issuer is http://
    assert len(resp.headers.getlist("Cache-Control")) == 1


def test_security_headers_on_pages(app, client, citizen):
    resp = client.get("/login")
    _assert_common_headers(resp)
    assert resp.headers["Cache-Control"] == "no-store"
    assert login(client).status_code == 302
    resp = client.get("/account")
    assert resp.status_code == 200
    _assert_common_headers(resp)
    assert resp.headers["Cache-Control"] == "no-store"


def test_security_headers_on_discovery(app, client):
    resp = client.get("/.well-known/openid-configuration")
    assert resp.status_code == 200
    _assert_common_headers(resp)
    assert "no-store" not in resp.headers["Cache-Control"]  # public metadata may be cached


def test_security_headers_on_a_token_response(app, client, citizen, make_client):
    client_id, secret = make_client(first_party=True)
    assert login(client).status_code == 302
    code = authorize_code(client, client_id)
    resp = exchange(client, client_id, secret, code)
    assert resp.status_code == 200
    _assert_common_headers(resp)
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Pragma"] == "no-cache"
    resp = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "openid"},
                       headers=basic(client_id, secret))
    assert resp.headers["Cache-Control"] == "no-store"


def test_hsts_only_with_an_https_issuer():
    """The header logic on a bare app: https issuer -> HSTS on every response."""
    from flask import Flask

    from tongban import security

    bare = Flask("hsts")
    bare.config["TONGBAN_ISSUER"] = "https://id.example.gov.cn"
    security.init_app(bare)
    bare.add_url_rule("/page", "page", lambda: "<p>hi</p>")
    for base in ("https://id.example.gov.cn", "http://id.example.gov.cn"):
        resp = bare.test_client().get("/page", base_url=base)
        hsts = resp.headers["Strict-Transport-Security"]
        assert int(re.search(r"max-age=(\d+)", hsts).group(1)) >= 31536000
        assert resp.headers["X-Frame-Options"] == "DENY"

    plain = Flask("plain")
    plain.config["TONGBAN_ISSUER"] = "http://127.0.0.1:5000"
    security.init_app(plain)
    plain.add_url_rule("/page", "page", lambda: "<p>hi</p>")
    assert "Strict-Transport-Security" not in plain.test_client().get("/page").headers


# ---------------------------------------------------------------- registration throttling


def test_registration_is_rate_limited_per_address_and_in_all(app, browser):
    """The attack: one address (or many) creating accounts as fast as it can post."""
    per_ip = app.config["TONGBAN_REGISTER_RATE_PER_IP"]
    addr = {"REMOTE_ADDR": "192.0.2.30"}
    c = browser("en")
    for i in range(per_ip):
        phone = f"137001370{i + 10:02d}"
        data = {"name": "李四", "id_number": _id_number(f"11010519800101{i + 10:02d}1"), "phone": phone,
                "code": registration_code(c, phone), "agree": "y",
                "password": PASSWORD, "confirm": PASSWORD, "next": "",
                "csrf_token": csrf_token(c, "/register")}
        assert c.post("/register", data=data, environ_base=addr).status_code == 302
        c = browser("en")
    before = _users()
    data = {"name": "李四", "id_number": OTHER_ID, "phone": "13900139000", "password": PASSWORD,
            "confirm": PASSWORD, "agree": "y", "code": registration_code(c, "13900139000"),
            "next": "", "csrf_token": csrf_token(c, "/register")}
    resp = c.post("/register", data=data, environ_base=addr)
    assert resp.status_code == 429 and 1 <= int(resp.headers["Retry-After"]) <= 3601
    assert "Too many registrations" in resp.get_data(as_text=True)
    assert _users() == before  # nothing created
    # another address may still register
    ok = c.post("/register", data=data, environ_base={"REMOTE_ADDR": "192.0.2.31"})
    assert ok.status_code == 302 and _users() == before + 1

    # and in all: many addresses together meet the global bound
    app.config["TONGBAN_REGISTER_RATE_GLOBAL"] = per_ip + 1  # used: per_ip + 1 so far
    try:
        c = browser("en")
        data = {"name": "王五", "id_number": _id_number("11010519800101099"), "phone": "13700137099",
                "code": registration_code(c, "13700137099"), "agree": "y",
                "password": PASSWORD, "confirm": PASSWORD, "next": "", "csrf_token": csrf_token(c, "/register")}
        resp = c.post("/register", data=data, environ_base={"REMOTE_ADDR": "192.0.2.99"})
        assert resp.status_code == 429
    finally:
        app.config["TONGBAN_REGISTER_RATE_GLOBAL"] = 300
