"""The embedded default must never freeze (issue 11): the demo's flows — log-in at a portal,
single sign-on at the other, Tongban's own pages, the administrator's pages, logging out with
back-channel deliveries — run concurrently over real HTTP, and no request may wait on another.

What is measured is waiting for SQLite's write lock, not speed: for this test every connection
gives up after 2 s of waiting (``PRAGMA busy_timeout``, 30 s in production), so a write
transaction held across a request, network I/O or password hashing fails a request (a 500 or a
"database is locked" in the log) instead of freezing it. Wall time is only checked against a
generous bound (the machine may be loaded; hashing a password is slow on purpose)."""

from __future__ import annotations

import dataclasses
import re
import threading
from datetime import timedelta

import pytest
import requests
from sqlalchemy import text
from werkzeug.serving import make_server

from tests.conftest import _free_port
from tests.idp.helpers import _input_value, is_login_page

LOCK_WAIT_MS = 2000  # how long a connection may wait for SQLite's write lock in this test
HUNG = 25.0  # seconds: a response this slow was blocked (the production busy timeout is 30 s)


@pytest.fixture
def demo(app, live_server):
    from demo import PORTALS
    from demo import data as demo_data
    from demo.portal import create_portal
    from idp import clients as registry
    from tongban.extensions import db

    info = demo_data.seed()
    running = []
    for spec in PORTALS:
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        spec = dataclasses.replace(spec, client_id=f"{spec.client_id}-freeze")
        _, secret = registry.create_client(
            client_id=spec.client_id, name=spec.name, department=spec.department, first_party=True,
            redirect_uris=[f"{base}/callback"], post_logout_redirect_uris=[f"{base}/"],
            backchannel_logout_uri=f"{base}/backchannel-logout", scopes=["openid", "profile"])
        db.session.commit()
        portal = create_portal(spec, issuer=live_server, client_secret=secret, base_url=base)
        server = make_server("127.0.0.1", port, portal, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running.append((base, server))
    yield info, [base for base, _ in running]
    for _, server in running:
        server.shutdown()
        server.server_close()


class Timed(requests.Session):
    """A browser that notes how long every response (each redirect too) took."""

    def __init__(self, log: list):
        super().__init__()
        self.log = log
        self.hooks["response"].append(self._note)

    def _note(self, resp, *args, **kwargs):
        self.log.append((resp.elapsed.total_seconds(), resp.status_code, resp.request.method, resp.url))


def _login_form(http: requests.Session, page: requests.Response, login: str, password: str):
    assert is_login_page(page), page.text[:300]
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    return http.post(page.url.split("?")[0], data={"csrf_token": csrf, "login": login, "password": password,
                                                   "next": _input_value(page.text, "next") or ""})


def _age_sessions(app) -> None:
    """Make every log-in session look a few minutes idle, so the next page load touches it."""
    from tongban.clock import utcnow
    from tongban.extensions import db

    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("UPDATE login_sessions SET last_seen = :t"), {"t": utcnow() - timedelta(minutes=5)})


@pytest.fixture
def short_lock_wait(app):
    from sqlalchemy import event

    from tongban.extensions import db

    def _pragma(dbapi_connection, record, proxy):
        if "sqlite" in type(dbapi_connection).__module__:
            dbapi_connection.execute(f"PRAGMA busy_timeout={LOCK_WAIT_MS}")

    event.listen(db.engine, "checkout", _pragma)
    yield
    event.remove(db.engine, "checkout", _pragma)


def test_demo_flows_run_concurrently_without_waiting(app, demo, live_server, short_lock_wait, monkeypatch,
                                                     caplog):
    import logging

    caplog.set_level(logging.WARNING)
    # as in production: usage counters are written every few seconds, the outbox and audit
    # chainer threads run
    monkeypatch.setitem(app.config, "TONGBAN_USAGE_FLUSH_SECONDS", 1)
    monkeypatch.setitem(app.config, "TONGBAN_AUDIT_CHAIN_THREAD", True)
    info, (housing, social) = demo
    citizen, clerk, password = info["citizen"]["id_number"], info["clerk"]["id_number"], info["password"]
    log: list = []
    errors: list[str] = []
    start = threading.Barrier(4)

    def citizen_flow(n: int):
        http = Timed(log)
        start.wait(60)
        for _ in range(2):
            done = _login_form(http, http.get(f"{housing}/login"), citizen, password)
            assert done.url.rstrip("/") == housing, done.url
            page = http.get(f"{social}/")  # single sign-on: no password asked
            assert 'action="/logout"' in page.text
            for path in ("/account", "/wallet"):
                assert http.get(f"{live_server}{path}").status_code == 200
            _age_sessions(app)
            assert http.get(f"{live_server}/account").status_code == 200
            http.post(f"{housing}/logout")  # the social portal gets a back-channel logout token

    def admin_flow():
        http = Timed(log)
        start.wait(60)
        page = http.get(f"{live_server}/login")
        assert _login_form(http, page, clerk, password).status_code == 200
        for _ in range(3):
            for path in ("/admin/clients", "/admin/outbox", "/admin/audit", "/clerk", "/account"):
                resp = http.get(f"{live_server}{path}")
                assert resp.status_code == 200, (path, resp.status_code)
            _age_sessions(app)

    def guard(fn, *args):
        try:
            fn(*args)
        except Exception as e:  # reported below with the slow responses
            errors.append(f"{fn.__name__}{args}: {e!r}")

    threads = [threading.Thread(target=guard, args=(citizen_flow, n)) for n in range(3)]
    threads.append(threading.Thread(target=guard, args=(admin_flow,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a flow hung"
    monkeypatch.setitem(app.config, "TONGBAN_AUDIT_CHAIN_THREAD", False)
    hung = [entry for entry in log if entry[0] > HUNG]
    failed = [entry for entry in log if entry[1] >= 500]
    locked = [r.getMessage()[:300] for r in caplog.records if "locked" in (r.getMessage() + str(r.exc_info))]
    assert not errors, errors
    assert not failed, failed
    assert not locked, locked
    assert not hung, hung
    assert len(log) > 50


def test_a_page_view_notes_the_session_seen_after_the_request(app, citizen):
    """Reading a page touches the log-in session outside the page's transaction: the change is
    kept (a GET never commits) and the page held no write lock while it rendered."""
    from sqlalchemy import select

    from people.models import LoginSession
    from tests.flask_flows import login
    from tongban.clock import utcnow
    from tongban.extensions import db

    browser = app.test_client()
    assert login(browser).status_code == 302
    _age_sessions(app)
    before = utcnow()
    assert browser.get("/account").status_code == 200
    db.session.expire_all()
    seen = db.session.execute(select(LoginSession.last_seen)).scalar_one()
    assert seen >= before - timedelta(seconds=1)


def test_usage_counts_reach_the_database_after_the_request(app, make_client):
    from idp.models import ClientUsage
    from tests.flask_flows import basic
    from tongban.extensions import db

    client_id, secret = make_client()
    resp = app.test_client().post("/oauth/token", data={"grant_type": "client_credentials"},
                                  headers=basic(client_id, secret))
    assert resp.status_code == 200
    db.session.expire_all()
    row = db.session.get(ClientUsage, (client_id, _today()))
    assert row is not None and row.tokens == 1


def test_a_flush_waits_for_another_threads_write_of_earlier_counts(app, make_client, monkeypatch):
    """A background thread's app context (the outbox poller's, say) may take a request's counts
    and be writing them when the request's own flush runs: that flush finds nothing to write, and
    must return only once the other write has committed, or the count is not there yet."""
    import threading

    from idp.clients import ClientUsage, usage
    from tongban.extensions import db

    client_id, _secret = make_client()
    writing, release = threading.Event(), threading.Event()
    real_write = usage._write

    def slow_write(app_, counts):
        writing.set()
        assert release.wait(30)
        real_write(app_, counts)

    monkeypatch.setattr(usage, "_write", slow_write)
    usage.add(client_id, "token")
    other = threading.Thread(target=usage.flush, args=(app,))
    other.start()
    assert writing.wait(30)
    seen = []

    def my_flush():
        usage.flush(app)
        with app.app_context():  # what the request's caller would read once the flush returned
            seen.append(db.session.get(ClientUsage, (client_id, _today())))
            db.session.remove()

    mine = threading.Thread(target=my_flush)
    mine.start()
    mine.join(0.5)  # unfixed, it returns at once and reads no row; fixed, it waits for the write
    release.set()
    other.join(30)
    mine.join(30)
    assert len(seen) == 1 and seen[0] is not None and seen[0].tokens == 1


def test_counts_a_failed_flush_took_are_written_by_the_next(app, make_client, monkeypatch):
    from idp.clients import ClientUsage, usage
    from tongban.extensions import db

    client_id, _secret = make_client()
    real_write = usage._write

    def busy(app_, counts):
        raise RuntimeError("database is locked")

    usage.add(client_id, "token")
    monkeypatch.setattr(usage, "_write", busy)
    with pytest.raises(RuntimeError):
        usage.flush(app)
    usage.add(client_id, "token")
    monkeypatch.setattr(usage, "_write", real_write)
    usage.flush(app)
    db.session.expire_all()
    assert db.session.get(ClientUsage, (client_id, _today())).tokens == 2


def test_a_flush_does_not_wait_for_itself(app, make_client, monkeypatch):
    """The write's own application context ends with the after-session hooks, usage's
    maybe_flush among them; a count added meanwhile (a request in another thread) made that
    nested flush wait for the flush lock its own thread held: the thread hung for ever, and with
    it every request's flush after it (a hung outbox thread, then the whole worker)."""
    import threading

    from idp.clients import ClientUsage, usage
    from tongban.extensions import db

    client_id, _secret = make_client()
    real_write = usage._write

    def write_while_a_request_counts(app_, counts):
        usage.add(client_id, "token")  # another thread's request, during the write
        real_write(app_, counts)

    monkeypatch.setattr(usage, "_write", write_while_a_request_counts)
    monkeypatch.setitem(app.config, "TONGBAN_USAGE_FLUSH_SECONDS", 0)
    usage.add(client_id, "token")
    flusher = threading.Thread(target=usage.flush, args=(app,), daemon=True)
    flusher.start()
    flusher.join(20)
    assert not flusher.is_alive(), "the flush waited for its own lock"
    monkeypatch.setattr(usage, "_write", real_write)
    usage.flush(app)  # the count added during the write goes with the next flush
    db.session.expire_all()
    assert db.session.get(ClientUsage, (client_id, _today())).tokens == 2


def _today():
    from tongban.clock import utcnow

    return utcnow().date()


def test_a_session_found_expired_on_a_page_is_really_ended(app, citizen):
    """Ending it used to happen in the page's transaction, which a GET never commits: the
    session row stayed open (its refresh tokens kept working) and nothing was audited."""
    from sqlalchemy import select

    from people.models import LoginSession
    from tests.flask_flows import login
    from tongban.audit import AuditLog
    from tongban.clock import utcnow
    from tongban.extensions import db

    browser = app.test_client()
    assert login(browser).status_code == 302
    idle = app.config["TONGBAN_SESSION_IDLE_MINUTES"]
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE login_sessions SET last_seen = :t"), {"t": utcnow() - timedelta(minutes=idle + 1)})
    assert browser.get("/account").status_code == 302  # to the log-in page
    db.session.expire_all()
    row = db.session.execute(select(LoginSession)).scalar_one()
    assert row.ended_at is not None and row.end_reason == "expired"
    ended = db.session.execute(select(AuditLog).where(AuditLog.action == "session.ended")).scalar_one()
    assert '"reason": "expired"' in ended.detail


# ---------------------------------------------------------------- Argon2 outside any transaction


@pytest.fixture
def argon2_watch(app, monkeypatch):
    """Every Argon2 hash or verification, with what this thread held at that moment: the pooled
    connections it had checked out and whether the request's session was in a transaction.
    Argon2 is slow on purpose; holding a connection across it ties up the pool, holding a
    transaction pins a snapshot (PostgreSQL) or a lock (SQLite) for its whole duration."""
    import argon2
    from sqlalchemy import event

    from people import argon2_memory
    from tongban.extensions import db

    held: dict[int, int] = {}  # id(connection record) -> thread ident

    def checkout(dbapi_connection, record, proxy):
        held[id(record)] = threading.get_ident()

    def checkin(dbapi_connection, record):
        held.pop(id(record), None)

    calls: list[tuple[str, int, bool]] = []

    def watch(name, original):
        def wrapper(*args, **kwargs):
            mine = sum(1 for thread in held.values() if thread == threading.get_ident())
            calls.append((name, mine, db.session().in_transaction()))
            return original(*args, **kwargs)
        return wrapper

    event.listen(db.engine, "checkout", checkout)
    event.listen(db.engine, "checkin", checkin)
    # both ways Argon2 runs: on pooled memory (people.argon2_memory), and argon2-cffi's own
    monkeypatch.setattr(argon2_memory, "hash_password", watch("hash", argon2_memory.hash_password))
    monkeypatch.setattr(argon2_memory, "verify_password", watch("verify", argon2_memory.verify_password))
    monkeypatch.setattr(argon2.PasswordHasher, "hash", watch("hash", argon2.PasswordHasher.hash))
    monkeypatch.setattr(argon2.PasswordHasher, "verify", watch("verify", argon2.PasswordHasher.verify))
    db.session.close()  # the test's own session holds nothing either
    yield calls
    event.remove(db.engine, "checkout", checkout)
    event.remove(db.engine, "checkin", checkin)


def _argon2_free(calls: list, what: str, at_least: int = 1) -> None:
    assert len(calls) >= at_least, f"{what}: Argon2 was not called ({calls})"
    blocked = [c for c in calls if c[1] or c[2]]
    assert not blocked, f"{what}: Argon2 ran holding a connection or a transaction: {blocked}"
    calls.clear()


def test_argon2_runs_with_no_connection_or_transaction_held(app, browser, citizen, argon2_watch, monkeypatch):
    """Log-in (right, wrong, unknown account, and a rehash at a new cost), registration, password
    change, re-authentication and the forgotten-password reset: each Argon2 run happens with no
    pooled connection checked out by the request's thread and no transaction open."""
    from sqlalchemy import select

    from people.models import User
    from tests.conftest import CITIZEN_ID, PASSWORD
    from tests.flask_flows import csrf_token, login
    from tests.idp.test_recovery import PHONE, _ask_code, _code_for, _forgot, _reset, register
    from tongban.extensions import db

    calls = argon2_watch
    c = browser("en")
    assert login(c).status_code == 302
    _argon2_free(calls, "log-in")
    assert login(browser("en"), password="Wrong-Passw0rd!").status_code == 401
    _argon2_free(calls, "wrong password")
    assert login(browser("en"), login="110105198001010016").status_code == 401
    _argon2_free(calls, "unknown account")
    monkeypatch.setitem(app.config, "TONGBAN_ARGON2_TIME_COST", 5)  # the next log-in rehashes
    assert login(browser("en")).status_code == 302
    assert [name for name, *_ in calls].count("hash") >= 1
    _argon2_free(calls, "log-in with a rehash")
    monkeypatch.setitem(app.config, "TONGBAN_ARGON2_TIME_COST", 4)

    page = c.get("/account")  # a page read first: the session has a connection until released
    assert page.status_code == 200
    new = "Changed-Passw0rd!"
    resp = c.post("/account/password", data={"csrf_token": csrf_token(c, "/account"), "current": PASSWORD,
                                             "new": new, "confirm": new})
    assert resp.status_code == 302
    _argon2_free(calls, "password change", 2)
    db.session.expire_all()
    from people.passwords import verify_password

    me = db.session.execute(select(User).where(User.id_number == CITIZEN_ID)).scalar_one()
    assert verify_password(me.password_hash, new)  # (the test's own session holds a connection here)
    db.session.close()
    calls.clear()

    page = c.get("/account/security/confirm")
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    c.post("/account/security/confirm", data={"csrf_token": token, "password": new})
    _argon2_free(calls, "re-authentication")

    newcomer = browser("en")
    assert _ask_code(newcomer).status_code == 200
    code = _code_for(PHONE)
    db.session.close()
    assert register(newcomer, code=code).status_code == 302
    _argon2_free(calls, "registration")

    user = db.session.execute(select(User).where(User.id_number == CITIZEN_ID)).scalar_one()
    user.assurance_level = 2
    phone = user.phone
    db.session.commit()
    db.session.close()
    r = browser("en")
    assert _forgot(r, CITIZEN_ID).status_code == 302
    code = _code_for(phone)
    db.session.close()
    calls.clear()
    assert _reset(r, code).status_code == 302
    _argon2_free(calls, "password reset")
