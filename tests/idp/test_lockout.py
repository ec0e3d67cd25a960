"""Per-account lockout after consecutive wrong passwords, and per-address throttling."""

from __future__ import annotations

import os
import re
import threading
from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_datetime
from freezegun import freeze_time
from sqlalchemy import select, update

from idp import accounts
from idp.models import LoginEvent, User
from tests.conftest import CITIZEN_ID, PASSWORD
from tongban.clock import utcnow
from tongban.extensions import db

WRONG = "Wrong-Passw0rd!"
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def _state(user_id: int) -> tuple[int, object]:
    db.session.expire_all()
    row = db.session.execute(select(User.failed_logins, User.locked_until).where(User.id == user_id)).one()
    return row[0], row[1]


def _try(password: str, login: str = CITIZEN_ID) -> accounts.LoginResult:
    result = accounts.authenticate(login, password, ip="203.0.113.9", user_agent="pytest")
    db.session.commit()
    return result


def _login_post(client, password: str, login: str = CITIZEN_ID, **kw):
    page = client.get("/login?lang=en")
    token = _CSRF.search(page.get_data(as_text=True)).group(1)
    return client.post("/login?lang=en", data={"csrf_token": token, "login": login, "password": password,
                                                "next": ""}, **kw)


def test_defaults(app):
    assert app.config["TONGBAN_LOCKOUT_THRESHOLD"] == 5
    assert app.config["TONGBAN_LOCKOUT_MINUTES"] == 15


def test_threshold_wrong_passwords_lock_the_account(app, citizen):
    threshold = app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    before = utcnow()
    for i in range(1, threshold):
        r = _try(WRONG)
        assert not r.ok and r.reason == "bad_credentials" and r.locked_until is None
        assert _state(citizen.id) == (i, None)
    r = _try(WRONG)
    assert not r.ok and r.reason == "locked"
    minutes = timedelta(minutes=app.config["TONGBAN_LOCKOUT_MINUTES"])
    assert before + minutes <= r.locked_until <= utcnow() + minutes
    count, until = _state(citizen.id)
    assert count == threshold and until == r.locked_until

    # locked: even the right password is refused; tries neither count nor extend the lock
    for pw in (PASSWORD, WRONG, PASSWORD):
        r2 = _try(pw)
        assert not r2.ok and r2.reason == "locked" and r2.locked_until == until
    assert _state(citizen.id) == (threshold, until)
    outcomes = list(db.session.execute(select(LoginEvent.outcome).where(LoginEvent.user_id == citizen.id)
                                       .order_by(LoginEvent.id)).scalars())
    assert outcomes == ["bad_password"] * threshold + ["locked"] * 3


def test_right_password_works_after_the_lock_expires(app, citizen):
    threshold = app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    start = utcnow()
    with freeze_time(start) as frozen:
        for _ in range(threshold):
            r = _try(WRONG)
        assert r.reason == "locked"
        frozen.tick(timedelta(minutes=app.config["TONGBAN_LOCKOUT_MINUTES"]) - timedelta(seconds=1))
        assert _try(PASSWORD).reason == "locked"  # one second before the end: still locked
        frozen.tick(timedelta(seconds=2))
        r = _try(PASSWORD)
        assert r.ok
        assert _state(citizen.id) == (0, None)
        # the counter starts again from zero
        for _ in range(threshold - 1):
            assert _try(WRONG).reason == "bad_credentials"
        assert _try(WRONG).reason == "locked"


def test_expired_lock_counts_a_new_series(app, citizen):
    """A wrong password after the lock expired starts a new count (1), without a new lock."""
    threshold = app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    db.session.execute(update(User).where(User.id == citizen.id).values(
        failed_logins=threshold, locked_until=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    r = _try(WRONG)
    assert r.reason == "bad_credentials"
    assert _state(citizen.id) == (1, None)


def test_success_resets_the_counter(app, citizen):
    threshold = app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    for _ in range(threshold - 1):
        _try(WRONG)
    assert _state(citizen.id)[0] == threshold - 1
    assert _try(PASSWORD).ok
    assert _state(citizen.id) == (0, None)
    for _ in range(threshold - 1):
        assert _try(WRONG).reason == "bad_credentials"
    assert _state(citizen.id) == (threshold - 1, None)
    # the threshold-th try with the right password still succeeds (it is not a wrong one)
    assert _try(PASSWORD).ok
    assert _state(citizen.id) == (0, None)


def test_phone_login_counts_on_the_same_account(app, citizen):
    _try(WRONG, login="13800138000")
    _try(WRONG, login=CITIZEN_ID)
    assert _state(citizen.id)[0] == 2


def test_unknown_account_is_a_plain_failure(app, citizen):
    r = _try(WRONG, login="110105198001010016")
    assert not r.ok and r.user is None and r.reason == "bad_credentials"
    assert _state(citizen.id) == (0, None)


def test_login_page_says_locked_and_until_when(app, browser, citizen):
    client = browser()
    threshold = app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    for _ in range(threshold - 1):
        resp = _login_post(client, WRONG)
        assert resp.status_code == 401
        assert "Wrong ID number/phone or password" in resp.get_data(as_text=True)
    resp = _login_post(client, WRONG)
    assert resp.status_code == 423
    _, until = _state(citizen.id)
    shown = format_datetime(until.replace(tzinfo=UTC), "short", tzinfo=ZoneInfo("Asia/Shanghai"), locale="en")
    body = resp.get_data(as_text=True)
    assert "locked" in body and shown in body

    resp = _login_post(client, PASSWORD)  # the right password, refused
    assert resp.status_code == 423 and "Location" not in resp.headers
    body = resp.get_data(as_text=True)
    assert "locked" in body and shown in body
    assert "tongban_sso=" not in resp.headers.get("Set-Cookie", "")
    assert _state(citizen.id) == (threshold, until)


def test_login_page_in_chinese_says_locked(app, browser, citizen):
    client = browser()
    db.session.execute(update(User).where(User.id == citizen.id).values(
        failed_logins=5, locked_until=utcnow() + timedelta(minutes=10)))
    db.session.commit()
    page = client.get("/login")
    token = _CSRF.search(page.get_data(as_text=True)).group(1)
    resp = client.post("/login", data={"csrf_token": token, "login": CITIZEN_ID, "password": PASSWORD})
    assert resp.status_code == 423
    assert "锁定" in resp.get_data(as_text=True)


# ---------------------------------------------------------------- the race


def _storm(app, monkeypatch, n_threads: int, login: str = CITIZEN_ID) -> tuple[int, list]:
    """``n_threads`` parallel wrong guesses; returns (password checks done, results)."""
    real = accounts.verify_password
    checks = []
    lock = threading.Lock()

    def counting(stored, password):
        if stored is not None:
            with lock:
                checks.append(1)
        return real(stored, password)

    monkeypatch.setattr(accounts, "verify_password", counting)
    barrier = threading.Barrier(n_threads)
    results, errors = [], []

    def guess():
        try:
            with app.app_context():
                barrier.wait(timeout=60)
                try:
                    r = accounts.authenticate(login, WRONG, ip="203.0.113.7")
                    db.session.commit()
                    results.append(r.reason)
                finally:
                    db.session.remove()
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=guess) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "threads hung"
    assert not errors, errors[:3]
    return len(checks), results


def _assert_storm_held(app, citizen, checks, results, n):
    threshold = app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    assert len(results) == n
    assert checks <= threshold
    assert checks == threshold  # every slot was used, none twice
    assert results.count("bad_credentials") == threshold - 1
    assert results.count("locked") == n - threshold + 1
    count, until = _state(citizen.id)
    assert count == threshold and until is not None
    # and the right password is still refused
    assert accounts.authenticate(CITIZEN_ID, PASSWORD).reason == "locked"
    db.session.rollback()


@pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="the full race runs on PostgreSQL")
def test_parallel_guesses_never_exceed_the_threshold_postgresql(app, citizen, monkeypatch):
    checks, results = _storm(app, monkeypatch, 200)
    _assert_storm_held(app, citizen, checks, results, 200)


def test_parallel_guesses_never_exceed_the_threshold(app, citizen, monkeypatch):
    checks, results = _storm(app, monkeypatch, 24)
    _assert_storm_held(app, citizen, checks, results, 24)


# ---------------------------------------------------------------- throttling per address


@pytest.fixture
def low_ip_rate(app):
    saved = app.config["TONGBAN_LOGIN_RATE_PER_IP"], app.config["TONGBAN_LOGIN_RATE_WINDOW"]
    app.config["TONGBAN_LOGIN_RATE_PER_IP"] = 3
    app.config["TONGBAN_LOGIN_RATE_WINDOW"] = 3600
    yield 3
    app.config["TONGBAN_LOGIN_RATE_PER_IP"], app.config["TONGBAN_LOGIN_RATE_WINDOW"] = saved


def test_per_address_throttling_answers_429_with_retry_after(app, browser, citizen, low_ip_rate):
    client = browser()
    ip = {"REMOTE_ADDR": "198.51.100.23"}
    for _ in range(low_ip_rate):
        resp = _login_post(client, WRONG, login="110105198001010016", environ_base=ip)
        assert resp.status_code == 401
    resp = _login_post(client, PASSWORD, environ_base=ip)
    assert resp.status_code == 429
    retry = int(resp.headers["Retry-After"])
    assert 1 <= retry <= 3601
    assert "Too many attempts" in resp.get_data(as_text=True)
    # throttled tries are not checked against the account: nothing counted
    assert _state(citizen.id) == (0, None)
    # another address is not affected
    resp = _login_post(client, PASSWORD, environ_base={"REMOTE_ADDR": "198.51.100.24"})
    assert resp.status_code == 302
