"""Lockout after consecutive wrong passwords, kept per (account, address) pair with progressive
lock times, an account-wide bound for unfamiliar addresses, and per-address throttling."""

from __future__ import annotations

import os
import re
import threading
from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_datetime
from freezegun import freeze_time
from sqlalchemy import select

from people import accounts
from people.models import LoginEvent, LoginThrottle, User
from tests.conftest import CITIZEN_ID, PASSWORD
from tongban.clock import utcnow
from tongban.extensions import db

WRONG = "Wrong-Passw0rd!"
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


IP = "203.0.113.9"


def _state(user_id: int, ip: str = IP) -> tuple[int, object]:
    """(confirmed failures, lock) of the pair (account, ``ip``)."""
    db.session.expire_all()
    row = db.session.execute(select(LoginThrottle.failures, LoginThrottle.locked_until).where(
        LoginThrottle.user_id == user_id, LoginThrottle.source == ip)).first()
    return (0, None) if row is None else (row[0], row[1])


def _try(password: str, login: str = CITIZEN_ID, ip: str = IP) -> accounts.LoginResult:
    result = accounts.authenticate(login, password, ip=ip, user_agent="pytest")
    db.session.commit()
    return result


def _lock_pair(user_id: int, ip: str = IP, minutes: int = 10, failures: int = 5) -> None:
    db.session.merge(LoginThrottle(user_id=user_id, source=ip, failures=failures, pending=0, locks=1,
                                   locked_until=utcnow() + timedelta(minutes=minutes)))
    db.session.commit()


def _login_post(client, password: str, login: str = CITIZEN_ID, **kw):
    page = client.get("/login?lang=en")
    token = _CSRF.search(page.get_data(as_text=True)).group(1)
    return client.post("/login?lang=en", data={"csrf_token": token, "login": login, "password": password,
                                                "next": ""}, **kw)


def test_defaults(app):
    assert app.config["TONGBAN_LOCKOUT_THRESHOLD"] == 5
    assert app.config["TONGBAN_LOCKOUT_MINUTES"] == 15
    assert app.config["TONGBAN_LOCKOUT_ACCOUNT_THRESHOLD"] == 50


def test_threshold_wrong_passwords_lock_the_account(app, citizen):
    threshold = app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    before = utcnow()
    for i in range(1, threshold):
        r = _try(WRONG)
        assert not r.ok and r.reason == "bad_credentials" and r.locked_until is None
        assert _state(citizen.id) == (i, None)
    r = _try(WRONG)
    assert not r.ok and r.reason == "locked"
    minutes = timedelta(minutes=1)  # the pair's first lock; each next one lasts twice as long
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
        frozen.tick(timedelta(minutes=1) - timedelta(seconds=1))
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
    _lock_pair(citizen.id, minutes=-1, failures=threshold)
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
    _, until = _state(citizen.id, "127.0.0.1")
    shown = format_datetime(until.replace(tzinfo=UTC), "short", tzinfo=ZoneInfo("Asia/Shanghai"), locale="en")
    body = resp.get_data(as_text=True)
    assert "locked" in body and shown in body

    resp = _login_post(client, PASSWORD)  # the right password, refused
    assert resp.status_code == 423 and "Location" not in resp.headers
    body = resp.get_data(as_text=True)
    assert "locked" in body and shown in body
    assert "tongban_sso=" not in resp.headers.get("Set-Cookie", "")
    assert _state(citizen.id, "127.0.0.1") == (threshold, until)


def test_login_page_in_chinese_says_locked(app, browser, citizen):
    client = browser()
    _lock_pair(citizen.id, ip="127.0.0.1")
    page = client.get("/login")
    token = _CSRF.search(page.get_data(as_text=True)).group(1)
    resp = client.post("/login", data={"csrf_token": token, "login": CITIZEN_ID, "password": PASSWORD})
    assert resp.status_code == 423
    assert "锁定" in resp.get_data(as_text=True)


# ---------------------------------------------------------------- the race


STORM_IP = "203.0.113.7"


def _storm(app, monkeypatch, n_threads: int, login: str = CITIZEN_ID, password: str = WRONG
           ) -> tuple[int, list]:
    """``n_threads`` parallel tries from one address; returns (password checks done, results)."""
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
                    r = accounts.authenticate(login, password, ip=STORM_IP)
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
    count, until = _state(citizen.id, STORM_IP)
    assert count == threshold and until is not None
    # and the right password is still refused from that address
    assert accounts.authenticate(CITIZEN_ID, PASSWORD, ip=STORM_IP).reason == "locked"
    db.session.rollback()
    # ... but not from the owner's own address: the stranger locked out only themself
    assert accounts.authenticate(CITIZEN_ID, PASSWORD, ip="198.51.100.80").ok
    db.session.rollback()


@pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="the full race runs on PostgreSQL")
def test_parallel_guesses_never_exceed_the_threshold_postgresql(app, citizen, monkeypatch):
    checks, results = _storm(app, monkeypatch, 200)
    _assert_storm_held(app, citizen, checks, results, 200)


def test_parallel_guesses_never_exceed_the_threshold(app, citizen, monkeypatch):
    checks, results = _storm(app, monkeypatch, 24)
    _assert_storm_held(app, citizen, checks, results, 24)


def _assert_all_logged_in(citizen, checks, results, n):
    assert results == ["" ] * n, results  # every right password logged in: none counted as a failure
    assert checks == n
    assert _state(citizen.id, STORM_IP) == (0, None)
    db.session.expire_all()
    user = db.session.get(User, citizen.id)
    assert user.failed_logins == 0 and user.locked_until is None
    pending = db.session.execute(select(LoginThrottle.pending).where(
        LoginThrottle.user_id == citizen.id, LoginThrottle.source == STORM_IP)).scalar()
    assert pending == 0  # every slot was given back


@pytest.mark.parametrize("n", [5, 20])
def test_parallel_right_passwords_never_lock(app, citizen, monkeypatch, n):
    """The attack: five correct log-ins of one account at the same moment locked it (423)."""
    checks, results = _storm(app, monkeypatch, n, password=PASSWORD)
    _assert_all_logged_in(citizen, checks, results, n)


@pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="runs on PostgreSQL")
def test_parallel_right_passwords_never_lock_postgresql(app, citizen, monkeypatch):
    checks, results = _storm(app, monkeypatch, 20, password=PASSWORD)
    _assert_all_logged_in(citizen, checks, results, 20)


# ---------------------------------------------------------------- per (account, address) pair


def test_a_stranger_locks_only_their_own_address(app, browser, citizen):
    """Wrong passwords from one address lock that address, not the citizen at home."""
    threshold = app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    for _ in range(threshold):
        r = _try(WRONG, ip="192.0.2.66")
    assert r.reason == "locked"
    assert _try(PASSWORD, ip="192.0.2.66").reason == "locked"
    assert _try(PASSWORD, ip="198.51.100.5").ok
    # the owner's success does not unlock the stranger's address
    assert _try(PASSWORD, ip="192.0.2.66").reason == "locked"
    # over HTTP as well: the login page from another address logs in
    resp = _login_post(browser(), PASSWORD, environ_base={"REMOTE_ADDR": "198.51.100.6"})
    assert resp.status_code == 302


def test_locks_of_a_pair_grow_progressively(app, citizen):
    threshold = app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    start = utcnow()
    with freeze_time(start) as frozen:
        lengths = []
        for _ in range(6):
            for _ in range(threshold):
                r = _try(WRONG)
            assert r.reason == "locked"
            lengths.append(round((r.locked_until - utcnow()).total_seconds() / 60))
            frozen.tick(r.locked_until - utcnow() + timedelta(seconds=1))
        assert lengths == [1, 2, 4, 8, 15, 15]  # capped at TONGBAN_LOCKOUT_MINUTES
        # a right password ends the series: the next lock is short again
        assert _try(PASSWORD).ok
        for _ in range(threshold):
            r = _try(WRONG)
        assert round((r.locked_until - utcnow()).total_seconds() / 60) == 1


def test_ipv6_addresses_of_one_network_share_a_pair(app, citizen):
    threshold = app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    for i in range(threshold):
        r = _try(WRONG, ip=f"2001:db8:1:2::{i + 1}")
    assert r.reason == "locked"
    assert _try(PASSWORD, ip="2001:db8:1:2::ff").reason == "locked"
    assert _try(PASSWORD, ip="2001:db8:1:3::1").ok


def test_many_addresses_lock_the_account_for_unfamiliar_ones_only(app, citizen):
    """Guessing from many addresses: the account-wide bound holds, but the owner's usual
    address (a successful log-in before) still gets in."""
    app.config["TONGBAN_LOCKOUT_ACCOUNT_THRESHOLD"] = 12
    try:
        assert _try(PASSWORD, ip="198.51.100.77").ok  # the owner's usual address
        for i in range(12):
            r = _try(WRONG, ip=f"192.0.2.{i + 1}")
            assert r.reason == "bad_credentials"
        db.session.expire_all()
        user = db.session.get(User, citizen.id)
        assert user.failed_logins == 12 and user.locked_until is not None
        assert _try(PASSWORD, ip="192.0.2.200").reason == "locked"  # a new address: refused
        assert _try(PASSWORD, ip="198.51.100.77").ok  # the familiar one: in
        db.session.expire_all()
        assert db.session.get(User, citizen.id).locked_until is None
    finally:
        app.config["TONGBAN_LOCKOUT_ACCOUNT_THRESHOLD"] = 50


def test_admin_unlock_clears_address_locks(app, citizen):
    threshold = app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    for _ in range(threshold):
        _try(WRONG)
    user = db.session.get(User, citizen.id)
    assert accounts.lock_status(user) is not None
    accounts.unlock(user, "admin")
    db.session.commit()
    assert accounts.lock_status(user) is None
    assert _try(PASSWORD).ok


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


def test_slots_held_by_tries_in_flight_are_not_a_lock(app, browser, citizen, monkeypatch):
    """All slots of the pair taken by tries still being checked: a right password waits, and
    when it cannot wait longer it gets 429 "try again", never 423 "locked"."""
    threshold = app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    db.session.merge(LoginThrottle(user_id=citizen.id, source="127.0.0.1", failures=0, pending=threshold,
                                   pending_at=utcnow(), locks=0))
    db.session.commit()
    monkeypatch.setattr(accounts, "_SLOT_WAIT", 0.0)
    resp = _login_post(browser(), PASSWORD)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    assert _state(citizen.id, "127.0.0.1") == (0, None)


def test_a_slot_never_answered_is_free_again(app, citizen):
    """A worker that died between reserving and answering does not leave the pair stuck."""
    threshold = app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    db.session.merge(LoginThrottle(user_id=citizen.id, source=IP, failures=0, pending=threshold,
                                   pending_at=utcnow() - timedelta(seconds=31), locks=0))
    db.session.commit()
    assert _try(PASSWORD).ok
    db.session.expire_all()
    assert db.session.get(LoginThrottle, (citizen.id, IP)).pending == 0


def test_ipv6_hosts_share_the_per_address_rate_limit(app, browser, citizen, low_ip_rate):
    client = browser()
    for i in range(low_ip_rate):
        resp = _login_post(client, WRONG, login="110105198001010016", environ_base={"REMOTE_ADDR": f"2001:db8::{i}"})
        assert resp.status_code == 401
    resp = _login_post(client, PASSWORD, environ_base={"REMOTE_ADDR": "2001:db8::ffff"})
    assert resp.status_code == 429


def test_a_log_in_commits_its_count_and_slot_together_then_its_success(app, browser, citizen, monkeypatch):
    """The per-address count and the slot are one transaction before Argon2; the slot comes back
    in the request's own transaction with the success: two commits, where there were four."""
    from sqlalchemy import event

    from tongban import ratelimit

    monkeypatch.setattr(ratelimit, "redis_client", lambda: None)  # the database's counter
    client = browser()
    page = client.get("/login?lang=en")
    token = _CSRF.search(page.get_data(as_text=True)).group(1)
    commits = []
    engine = db.engine
    listener = lambda conn: commits.append(1)  # noqa: E731
    event.listen(engine, "commit", listener)
    try:
        resp = client.post("/login?lang=en", data={"csrf_token": token, "login": CITIZEN_ID,
                                                   "password": PASSWORD, "next": ""})
    finally:
        event.remove(engine, "commit", listener)
    assert resp.status_code == 302
    assert len(commits) == 2
    db.session.expire_all()
    assert db.session.get(LoginThrottle, (citizen.id, "127.0.0.1")).pending == 0
    counted = db.session.execute(select(ratelimit.RateCounter.count).where(
        ratelimit.RateCounter.key == "login-ip:127.0.0.1")).scalar()
    assert counted == 1


def test_a_success_rolled_back_keeps_nothing_and_its_slot_frees_itself(app, citizen, monkeypatch):
    """A request that fails after the right password (before its commit) keeps none of the
    success: no log-in event, no audit entry, the pair's failures still count. Its slot stays
    taken only until it is stale (``_PENDING_STALE``), like one of a worker that died mid-check."""
    from tongban.audit import AuditLog

    monkeypatch.setattr(accounts, "_SLOT_WAIT", 0.0)
    app.config["TONGBAN_LOCKOUT_THRESHOLD"] = 3
    try:
        assert not _try(WRONG).ok
        assert not _try(WRONG).ok
        assert accounts.authenticate(CITIZEN_ID, PASSWORD, ip=IP, user_agent="pytest").ok
        db.session.rollback()  # the request died before its commit
        db.session.expire_all()
        assert db.session.execute(select(LoginEvent).where(LoginEvent.outcome == "success")).first() is None
        assert db.session.execute(select(AuditLog).where(AuditLog.action == "login.success")).first() is None
        row = db.session.get(LoginThrottle, (citizen.id, IP))
        assert (row.failures, row.pending) == (2, 1)
        # 2 failures + the slot still held = the threshold: the next try has no slot yet (429, not a lock)
        assert _try(PASSWORD).reason == "busy"
        with freeze_time(utcnow() + accounts._PENDING_STALE + timedelta(seconds=1)):
            assert _try(PASSWORD).ok
        db.session.expire_all()
        row = db.session.get(LoginThrottle, (citizen.id, IP))
        assert (row.failures, row.pending, row.locked_until) == (0, 0, None)
        assert db.session.execute(select(LoginEvent).where(LoginEvent.outcome == "success")).first() is not None
    finally:
        app.config["TONGBAN_LOCKOUT_THRESHOLD"] = 5


def test_a_throttled_try_is_not_reserved(app, citizen):
    """Refused by the per-address limit: the account is neither looked up nor counted."""
    rate = accounts.RateLimit("test-reserve", 3, 3600)
    for _ in range(3):
        attempt = accounts.reserve(CITIZEN_ID, ip=IP, rate=rate)
        assert attempt.throttled is None and attempt.slot is not None
        assert not accounts.authenticate(CITIZEN_ID, WRONG, ip=IP, attempt=attempt).ok
        db.session.commit()
    attempt = accounts.reserve(CITIZEN_ID, ip=IP, rate=rate)
    assert attempt.throttled is not None and attempt.slot is None
    assert attempt.throttled.retry_after >= 1
    assert _state(citizen.id) == (3, None)
    with pytest.raises(ValueError):
        accounts.authenticate(CITIZEN_ID, PASSWORD, ip=IP, attempt=attempt)
