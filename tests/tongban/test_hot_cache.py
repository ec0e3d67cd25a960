"""The hot cache of lean answers (tongban.hotcache): what it keeps is seen stale by no request.

Every test warms an answer into the cache (and checks it is really answered from there), then
changes what it depends on in one of the ways a deployment does (through the ORM, through a
Core statement, through raw SQL on another connection, through another process), and checks
that the very next request gets the new answer. With TEST_DATABASE_URL and TEST_REDIS_URL the
same tests run on PostgreSQL with the Redis invalidation log; a second application sharing the
database (and Redis, or the instance folder) stands for another process or server.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text, update

from tests.conftest import CITIZEN_ID
from tests.flask_flows import authorize_code, exchange, login
from tests.idp.conftest import fast  # noqa: F401  (fixture)
from tests.idp.test_fast_path import both
from tests.licence.conftest import issue  # noqa: F401  (fixture)
from tongban import hotcache
from tongban.cache import redis_client, request_snapshot
from tongban.extensions import db

JSON = {"Accept": "application/json"}
_SHARED = ("TESTING", "TONGBAN_INSTANCE_DIR", "SQLALCHEMY_DATABASE_URI", "TONGBAN_ISSUER", "SECRET_KEY",
           "TONGBAN_KEK", "TONGBAN_LOGIN_RATE_PER_IP", "TONGBAN_USAGE_FLUSH_SECONDS", "TONGBAN_AUDIT_CHAIN_THREAD",
           "REDIS_URL")


@pytest.fixture
def hc(app):
    cache = app.extensions["tongban.hotcache"]
    # (a PostgreSQL run without TEST_REDIS_URL: one machine, the file generation)
    app.config.update(TONGBAN_HOT_CACHE=True, TONGBAN_FAST_PATH=True, TONGBAN_HOT_CACHE_WITHOUT_REDIS=True)
    size = app.config["TONGBAN_HOT_CACHE_SIZE"]
    yield cache
    app.config.update(TONGBAN_HOT_CACHE=True, TONGBAN_HOT_CACHE_SIZE=size, TONGBAN_HOT_CACHE_WITHOUT_REDIS=False)


@pytest.fixture(scope="session")
def _other_app(base_app):
    from tongban import create_app

    # no outbox thread of its own: the base app's drains the queue (and none outlives the database)
    # the same instance folder: without Redis, the file generation reaches both (one machine)
    other = create_app({**{k: base_app.config[k] for k in _SHARED}, "TONGBAN_OUTBOX_THREAD": False,
                        "TONGBAN_HOT_CACHE_WITHOUT_REDIS": True})
    other.test_client_class = base_app.test_client_class
    return other


@pytest.fixture
def other(app, _other_app):
    """A second application on the same database (and Redis, or instance folder): another process."""
    return _other_app.test_client()


def _token(client, cid, secret, scope="openid profile phone") -> dict:
    login(client)
    tok = exchange(client, cid, secret, authorize_code(client, cid, scope=scope)).get_json()["access_token"]
    return {"Authorization": f"Bearer {tok}"}


def _cached(client, path, headers) -> dict:
    """Warm ``path`` into ``client``'s application's hot cache; the answer it keeps."""
    cache = client.application.extensions["tongban.hotcache"]
    for _ in range(3):  # the process's first request and the route's first answer: the full stack
        resp = client.get(path, headers=headers)
        assert resp.status_code == 200, resp.data
    hits = cache.hits
    resp = client.get(path, headers=headers)
    assert resp.status_code == 200 and cache.hits == hits + 1, "not answered from the hot cache"
    return resp.get_json()


def _session_sid():
    from people.models import LoginSession

    return db.session.query(LoginSession).filter_by(ended_at=None).one().sid


# ---------------------------------------------------------------- userinfo


def test_cached_userinfo_is_the_full_stacks_answer(app, client, fast, hc, citizen, make_client):  # noqa: F811
    cid, secret = make_client()
    bearer = _token(client, cid, secret)
    cached = _cached(client, "/oauth/userinfo", bearer)
    hits = hc.hits
    lean, full = both(app, client, fast, "GET", "/oauth/userinfo", headers=bearer)
    assert hc.hits > hits  # the lean answers compared were the cache's
    assert lean.data == full.data and lean.get_json() == cached
    assert lean.headers["Content-Type"] == full.headers["Content-Type"]


@pytest.mark.parametrize("through", ["this", "other"])
def test_logout_refuses_the_very_next_request(app, client, other, hc, citizen, make_client, through):
    from people.models import LoginSession
    from people.sessions import end

    cid, secret = make_client()
    bearer = _token(client, cid, secret)
    _cached(client, "/oauth/userinfo", bearer)
    _cached(other, "/oauth/userinfo", bearer)  # the other process keeps the answer too
    sess = db.session.query(LoginSession).filter_by(ended_at=None).one()
    end(sess, "logout")
    db.session.commit()
    first = client if through == "this" else other
    assert first.get("/oauth/userinfo", headers=bearer).status_code == 401
    assert (other if through == "this" else client).get("/oauth/userinfo", headers=bearer).status_code == 401


def test_logout_through_the_browser_refuses_userinfo_everywhere(app, client, other, hc, citizen, make_client,
                                                               monkeypatch):
    from tests.flask_flows import csrf_token

    _deny_list_blind(monkeypatch)
    cid, secret = make_client()
    bearer = _token(client, cid, secret)
    _cached(client, "/oauth/userinfo", bearer)
    _cached(other, "/oauth/userinfo", bearer)
    resp = client.post("/logout", data={"csrf_token": csrf_token(client, "/logout")})
    assert resp.status_code in (200, 302, 303)
    assert client.get("/oauth/userinfo", headers=bearer).status_code == 401
    assert other.get("/oauth/userinfo", headers=bearer).status_code == 401


def _deny_list_blind(monkeypatch):
    """Ending a session also denies its access tokens (idp.hooks); take that second line of
    defence away, so that only the hot cache's invalidation stands between the cached answer
    and the refusal (what a raw write to the sessions table, with no hook, amounts to)."""
    from idp import tokens

    monkeypatch.setattr(tokens.AccessToken, "is_revoked", lambda self: False)


def test_session_ended_by_raw_sql_elsewhere(app, client, other, hc, citizen, make_client, monkeypatch):
    _deny_list_blind(monkeypatch)
    cid, secret = make_client()
    bearer = _token(client, cid, secret)
    _cached(client, "/oauth/userinfo", bearer)
    _cached(other, "/oauth/userinfo", bearer)
    sid = _session_sid()
    # another program on the database: its own engine, plain SQL, no ORM, no hooks of ours but the engine's
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE login_sessions SET ended_at = CURRENT_TIMESTAMP, end_reason = 'admin' "
                              "WHERE sid = :sid"), {"sid": sid})
    finally:
        engine.dispose()
    assert client.get("/oauth/userinfo", headers=bearer).status_code == 401
    assert other.get("/oauth/userinfo", headers=bearer).status_code == 401


def test_session_ended_by_core_update_in_the_orm_session(app, client, hc, citizen, make_client, monkeypatch):
    from people.models import LoginSession

    _deny_list_blind(monkeypatch)
    cid, secret = make_client()
    bearer = _token(client, cid, secret)
    _cached(client, "/oauth/userinfo", bearer)
    sid = _session_sid()
    db.session.execute(update(LoginSession).where(LoginSession.sid == sid).values(ended_at=db.func.now()))
    db.session.commit()
    assert client.get("/oauth/userinfo", headers=bearer).status_code == 401


def test_rolled_back_write_keeps_nothing_stale_and_unrelated_logout_keeps_the_entry(
        app, client, hc, citizen, make_client):
    """Precise keys (with Redis): ending another person's session does not empty the cache
    (performance under churn); and a rolled-back change leaves the cached answer right."""
    from people import accounts
    from people.models import LoginSession, User
    from people.sessions import end
    from tests.conftest import PASSWORD

    cid, secret = make_client()
    bearer = _token(client, cid, secret)
    _cached(client, "/oauth/userinfo", bearer)
    accounts.create_user("110105199003070017", "李四", PASSWORD, "13900139000")
    db.session.commit()
    other_browser = app.test_client()
    login(other_browser, "110105199003070017")
    theirs = db.session.query(LoginSession).join(User).filter(User.name == "李四").one()
    cleared = hc.cleared
    end(theirs, "logout")
    db.session.commit()
    hits = hc.hits
    assert client.get("/oauth/userinfo", headers=bearer).status_code == 200
    if redis_client(app) is not None:  # the Redis log names keys; the file generation clears everything
        assert hc.hits == hits + 1 and hc.cleared == cleared  # still cached: only sid:<theirs> was named
    user = db.session.query(User).filter_by(id_number=CITIZEN_ID).one()
    user.name = "张三丰"
    db.session.flush()
    db.session.rollback()
    assert client.get("/oauth/userinfo", headers=bearer).get_json()["name"] == "张三"


def test_a_released_savepoint_publishes_nothing_before_the_commit(app, client, hc, citizen, make_client):
    """SQLAlchemy calls ``after_commit`` when a savepoint is released (rating's hooks use them):
    publishing then, before the real commit, would let a request re-cache the old row in between
    and keep it after the commit, with nothing left to evict it."""
    from people.models import User

    cid, secret = make_client()
    bearer = _token(client, cid, secret)
    _cached(client, "/oauth/userinfo", bearer)
    user = db.session.query(User).filter_by(id_number=CITIZEN_ID).one()
    user.name = "张三丰"
    db.session.flush()
    with db.session.begin_nested():
        pass
    # in between: another request (the change is not committed: it reads, and may keep, the old name)
    assert client.get("/oauth/userinfo", headers=bearer).get_json()["name"] == "张三"
    db.session.commit()
    assert client.get("/oauth/userinfo", headers=bearer).get_json()["name"] == "张三丰"


def test_name_change_is_the_next_answer(app, client, other, hc, citizen, make_client):
    from people.models import User

    cid, secret = make_client()
    bearer = _token(client, cid, secret)
    assert _cached(client, "/oauth/userinfo", bearer)["name"] == "张三"
    _cached(other, "/oauth/userinfo", bearer)
    user = db.session.query(User).filter_by(id_number=CITIZEN_ID).one()
    user.name = "张三丰"
    db.session.commit()
    assert client.get("/oauth/userinfo", headers=bearer).get_json()["name"] == "张三丰"
    assert other.get("/oauth/userinfo", headers=bearer).get_json()["name"] == "张三丰"
    # the same through a Core statement (no ORM object to name the key): everything is cleared
    db.session.execute(update(User).where(User.id_number == CITIZEN_ID).values(phone="13700137000"))
    db.session.commit()
    assert client.get("/oauth/userinfo", headers=bearer).get_json()["phone_number"] == "+8613700137000"
    assert other.get("/oauth/userinfo", headers=bearer).get_json()["phone_number"] == "+8613700137000"


def test_orm_bulk_update_by_primary_key(app, client, other, hc, citizen, make_client):
    """``session.execute(update(User), [{"id": ..., ...}])`` runs the flush's own statement
    machinery (the mapper's compiled cache) without a flush: not taken for one."""
    from people.models import User

    cid, secret = make_client()
    bearer = _token(client, cid, secret)
    _cached(client, "/oauth/userinfo", bearer)
    _cached(other, "/oauth/userinfo", bearer)
    user_id = db.session.query(User.id).filter_by(id_number=CITIZEN_ID).scalar()
    db.session.execute(update(User), [{"id": user_id, "name": "张三丰"}])
    db.session.commit()
    assert client.get("/oauth/userinfo", headers=bearer).get_json()["name"] == "张三丰"
    assert other.get("/oauth/userinfo", headers=bearer).get_json()["name"] == "张三丰"


def test_account_disabled(app, client, other, hc, citizen, make_client, monkeypatch):
    from people.models import User

    _deny_list_blind(monkeypatch)
    cid, secret = make_client()
    bearer = _token(client, cid, secret)
    _cached(client, "/oauth/userinfo", bearer)
    _cached(other, "/oauth/userinfo", bearer)
    user = db.session.query(User).filter_by(id_number=CITIZEN_ID).one()
    user.disabled = True
    db.session.commit()
    assert client.get("/oauth/userinfo", headers=bearer).status_code == 401
    assert other.get("/oauth/userinfo", headers=bearer).status_code == 401


def test_client_disabled_and_token_revoked(app, client, hc, citizen, make_client):
    from idp import clients as registry
    from tests.flask_flows import basic

    cid, secret = make_client()
    bearer = _token(client, cid, secret)
    _cached(client, "/oauth/userinfo", bearer)
    tok = bearer["Authorization"].split()[1]
    resp = client.post("/oauth/revoke", data={"token": tok}, headers=basic(cid, secret))
    assert resp.status_code == 200
    assert client.get("/oauth/userinfo", headers=bearer).status_code == 401
    bearer2 = _token(client, cid, secret)
    _cached(client, "/oauth/userinfo", bearer2)
    registry.set_enabled(cid, False, actor="test")
    db.session.commit()
    assert client.get("/oauth/userinfo", headers=bearer2).status_code == 401


def test_enterprise_acting_selected_goes_to_the_full_stack(app, client, other, fast, hc, citizen,  # noqa: F811
                                                           make_client):
    from people.enterprise import EnterpriseActing
    from people.models import Organisation, User
    from tongban.clock import utcnow

    cid, secret = make_client()
    bearer = _token(client, cid, secret)
    _cached(client, "/oauth/userinfo", bearer)
    _cached(other, "/oauth/userinfo", bearer)
    user = db.session.query(User).filter_by(id_number=CITIZEN_ID).one()
    org = Organisation(uscc="91110000MA01ABCD1X", name="示范公司", legal_rep_id=user.id, created_at=utcnow())
    db.session.add(org)
    db.session.flush()
    db.session.add(EnterpriseActing(sid=_session_sid(), client_id=cid, org_id=org.id, role="legal_rep",
                                    chosen_at=utcnow()))
    db.session.commit()
    for c in (client, other):
        served = c.application.extensions["tongban.fastpath"].answered
        c.get("/oauth/userinfo", headers=bearer)
        assert c.application.extensions["tongban.fastpath"].answered == served, "acting for an enterprise: full stack"


def test_idle_expiry_passing_while_cached(app, client, hc, citizen, make_client, monkeypatch):
    import people.sessions as sessions

    _deny_list_blind(monkeypatch)
    cid, secret = make_client()
    bearer = _token(client, cid, secret)
    _cached(client, "/oauth/userinfo", bearer)
    later = sessions.utcnow() + timedelta(minutes=app.config["TONGBAN_SESSION_IDLE_MINUTES"] + 1)
    monkeypatch.setattr(sessions, "utcnow", lambda: later)  # nothing was written: only time passed
    hits = hc.hits
    assert client.get("/oauth/userinfo", headers=bearer).status_code == 401
    assert hc.hits == hits


def test_store_race_a_stale_read_is_not_kept(app, client, hc, citizen, make_client, monkeypatch):
    """The interleaving: a request reads the live session from the database; before it stores
    that answer, a logout commits and is published, and another request of this process
    processes the invalidation (evicting nothing). The stale answer must not be kept then: no
    later invalidation would remove it."""
    import idp.fast
    from people import enterprise
    from people.models import LoginSession
    from people.sessions import end

    _deny_list_blind(monkeypatch)
    cid, secret = make_client()
    bearer = _token(client, cid, secret)
    _cached(client, "/oauth/userinfo", bearer)
    hc.clear()  # the next request misses and reads the database
    real = enterprise.person_acting_as_self_with_session
    sid = _session_sid()

    def read_then_logout_elsewhere(*args):
        found = real(*args)  # read: live
        assert found is not None

        def logout():  # another request on another thread: commits and publishes
            with app.app_context():
                sess = db.session.query(LoginSession).filter_by(sid=sid).one()
                end(sess, "logout")
                db.session.commit()
                db.session.remove()
            with app.app_context(), request_snapshot():
                hc.position()  # and a third request processes the invalidation (nothing cached to evict)

        t = threading.Thread(target=logout)
        t.start()
        t.join()
        return found

    monkeypatch.setattr(idp.fast.enterprise, "person_acting_as_self_with_session", read_then_logout_elsewhere)
    resp = client.get("/oauth/userinfo", headers=bearer)
    assert resp.status_code == 200  # it read before the logout: answering so is fine, keeping it is not
    monkeypatch.setattr(idp.fast.enterprise, "person_acting_as_self_with_session", real)
    assert client.get("/oauth/userinfo", headers=bearer).status_code == 401  # (200, stale, without the check)
    assert len(hc) == 0


def test_off_switch(app, client, hc, citizen, make_client):
    cid, secret = make_client()
    bearer = _token(client, cid, secret)
    app.config["TONGBAN_HOT_CACHE"] = False
    hits, size = hc.hits, len(hc)
    for _ in range(4):
        assert client.get("/oauth/userinfo", headers=bearer).status_code == 200
    assert hc.hits == hits and len(hc) == size


# ---------------------------------------------------------------- /v/<code> JSON


def test_licence_revoked_or_suspended_is_the_next_answer(app, client, other, hc, issue):  # noqa: F811
    from licence import services

    lic = issue("结婚证")
    path = f"/v/{lic.verify_code}"
    assert _cached(client, path, JSON)["status"] == "valid"
    _cached(other, path, JSON)
    services.suspend(lic.identifier, "核查中", "test")
    db.session.commit()
    assert client.get(path, headers=JSON).get_json()["status"] == "suspended"
    assert other.get(path, headers=JSON).get_json()["status"] == "suspended"
    _cached(client, path, JSON)
    services.revoke(lic.identifier, "错误登记", "test")
    db.session.commit()
    assert client.get(path, headers=JSON).get_json()["status"] == "revoked"
    assert other.get(path, headers=JSON).get_json()["status"] == "revoked"


def test_licence_changed_by_raw_sql(app, client, other, hc, issue):  # noqa: F811
    lic = issue("结婚证")
    path = f"/v/{lic.verify_code}"
    _cached(client, path, JSON)
    _cached(other, path, JSON)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE licences SET status = 'revoked' WHERE verify_code = :c"), {"c": lic.verify_code})
    assert client.get(path, headers=JSON).get_json()["status"] == "revoked"
    assert other.get(path, headers=JSON).get_json()["status"] == "revoked"


def test_licence_expiry_date_passing_while_cached(app, client, hc, issue, monkeypatch):  # noqa: F811
    from licence import services

    lic = issue("结婚证")
    valid_until = services.today() + timedelta(days=3)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE licences SET valid_until = :d WHERE id = :i"), {"d": valid_until, "i": lic.id})
    path = f"/v/{lic.verify_code}"
    assert _cached(client, path, JSON)["status"] == "valid"
    monkeypatch.setattr(services, "today", lambda: valid_until + timedelta(days=1))
    assert client.get(path, headers=JSON).get_json()["status"] == "expired"


def test_cache_is_bounded(app, client, hc, issue):  # noqa: F811
    app.config["TONGBAN_HOT_CACHE_SIZE"] = 3
    codes = [issue("结婚证").verify_code for _ in range(5)]
    for code in codes:
        for _ in range(3):
            assert client.get(f"/v/{code}", headers=JSON).status_code == 200
        assert len(hc) <= 3


def test_a_full_cache_evicts_the_least_recently_used(app, client, hc, issue):  # noqa: F811
    one, two, three = (issue("结婚证").verify_code for _ in range(3))
    _cached(client, f"/v/{one}", JSON)
    _cached(client, f"/v/{two}", JSON)
    app.config["TONGBAN_HOT_CACHE_SIZE"] = len(hc)
    _cached(client, f"/v/{one}", JSON)  # used again: two is now the least recently used
    _cached(client, f"/v/{three}", JSON)
    assert ("v", one) in hc._entries and ("v", three) in hc._entries and ("v", two) not in hc._entries
    assert len(hc) <= app.config["TONGBAN_HOT_CACHE_SIZE"]


def test_off_with_a_shared_database_and_no_redis(app, hc, monkeypatch):
    """Without Redis the invalidation reaches one machine's processes only (a file): with a
    database several servers may share, the cache is off unless a setting says one machine
    serves it."""
    monkeypatch.setitem(app.config, "REDIS_URL", "")
    monkeypatch.setitem(app.config, "TONGBAN_HOT_CACHE_WITHOUT_REDIS", False)
    monkeypatch.setitem(app.config, "SQLALCHEMY_DATABASE_URI", "postgresql+psycopg://db.example/tongban")
    assert hotcache.for_app(app) is None
    monkeypatch.setitem(app.config, "TONGBAN_HOT_CACHE_WITHOUT_REDIS", True)
    assert hotcache.for_app(app) is hc
    monkeypatch.setitem(app.config, "TONGBAN_HOT_CACHE_WITHOUT_REDIS", False)
    monkeypatch.setitem(app.config, "SQLALCHEMY_DATABASE_URI", "sqlite:///instance/tongban.db")
    assert hotcache.for_app(app) is hc
    monkeypatch.setitem(app.config, "SQLALCHEMY_DATABASE_URI", "postgresql+psycopg://db.example/tongban")
    monkeypatch.setitem(app.config, "REDIS_URL", "redis://redis.example:6379/0")
    assert hotcache.for_app(app) is hc


# ---------------------------------------------------------------- the log itself


def test_a_restore_bump_clears_everything(app, client, hc, issue):  # noqa: F811
    lic = issue("结婚证")
    _cached(client, f"/v/{lic.verify_code}", JSON)
    assert len(hc) >= 1
    for gen in __import__("tongban.cache", fromlist=["generations"]).generations():
        gen.bump(app)  # what tongban/backup.py does after a restore
    hits = hc.hits
    client.get(f"/v/{lic.verify_code}", headers=JSON)
    assert hc.hits == hits


def test_redis_log_lost_or_fallen_behind_clears_everything(app, client, hc, issue, monkeypatch):  # noqa: F811
    r = redis_client(app)
    if r is None:
        pytest.skip("the Redis invalidation log needs TEST_REDIS_URL")
    lic = issue("结婚证")
    path = f"/v/{lic.verify_code}"
    _cached(client, path, JSON)
    # the log vanished (evicted, Redis restarted): the next entry starts a new epoch, and a
    # process that knew the old one cannot trust what it missed: it clears everything
    r.delete(hotcache.LOG_KEY)
    hotcache.publish(["vcode:some-other-code"], app)
    hits = hc.hits
    client.get(path, headers=JSON)
    assert hc.hits == hits
    _cached(client, path, JSON)
    # a process further behind than the trimmed log (the log keeps _KEEP members; the highest
    # score trimmed is the member "floor", which a process behind it finds in what it reads)
    with monkeypatch.context() as m:
        m.setattr(hotcache, "_KEEP", 5)
        for i in range(10):
            hotcache.publish([f"vcode:other-{i}"], app)
        assert r.zcard(hotcache.LOG_KEY) <= 6 and r.zscore(hotcache.LOG_KEY, "floor") is not None
    hits = hc.hits
    client.get(path, headers=JSON)
    assert hc.hits == hits
    _cached(client, path, JSON)
    # more log to read than _READ_AT_MOST: everything cleared instead
    with monkeypatch.context() as m:
        m.setattr(hotcache, "_READ_AT_MOST", 3)
        hotcache.publish([f"vcode:x-{i}" for i in range(4)], app)
        hits = hc.hits
        client.get(path, headers=JSON)
        assert hc.hits == hits
    _cached(client, path, JSON)
    # a publish naming very many keys publishes "*"
    hotcache.publish([f"vcode:y-{i}" for i in range(hotcache._PUBLISH_AT_MOST + 1)], app)
    assert r.zscore(hotcache.LOG_KEY, "*") is not None and r.zscore(hotcache.LOG_KEY, "vcode:y-0") is None
    hits = hc.hits
    client.get(path, headers=JSON)
    assert hc.hits == hits
    _cached(client, path, JSON)
    # a precise entry for another code keeps this one
    hotcache.publish(["vcode:some-other-code"], app)
    hits = hc.hits
    client.get(path, headers=JSON)
    assert hc.hits == hits + 1


def test_a_write_on_an_autocommit_connection(app, client, hc, issue):  # noqa: F811
    from tongban.extensions import read_connection

    lic = issue("结婚证")
    path = f"/v/{lic.verify_code}"
    _cached(client, path, JSON)
    with read_connection() as conn:  # committed by the statement itself: published right after it
        conn.execute(text("UPDATE licences SET status = 'suspended' WHERE verify_code = :c"), {"c": lic.verify_code})
    assert client.get(path, headers=JSON).get_json()["status"] == "suspended"


def test_orm_flushes_name_their_rows_only(app, client, hc, issue):  # noqa: F811
    """With Redis, a licence changed through the ORM evicts that licence's answer, not the others'
    (a flush's own statements are not taken for unnamed writes)."""
    from licence import services

    if redis_client(app) is None:
        pytest.skip("without Redis any change empties the cache (the file generation)")
    one, two = issue("结婚证"), issue("结婚证")
    _cached(client, f"/v/{one.verify_code}", JSON)
    _cached(client, f"/v/{two.verify_code}", JSON)
    services.suspend(two.identifier, "核查中", "test")
    db.session.commit()
    cleared, hits = hc.cleared, hc.hits
    assert client.get(f"/v/{one.verify_code}", headers=JSON).get_json()["status"] == "valid"
    assert hc.hits == hits + 1 and hc.cleared == cleared
    assert client.get(f"/v/{two.verify_code}", headers=JSON).get_json()["status"] == "suspended"


def test_redis_restarted_empty_clears_everything(app, client, hc, issue):  # noqa: F811
    r = redis_client(app)
    if r is None:
        pytest.skip("the Redis invalidation log needs TEST_REDIS_URL")
    lic = issue("结婚证")
    path = f"/v/{lic.verify_code}"
    _cached(client, path, JSON)
    seen = hc._seen
    r.flushdb()  # counter and log gone; then changes this process never heard of precisely
    hotcache.publish(["vcode:some-other-code"], app)
    assert int(r.get("tongban:gen:hotcache")) != seen  # a new counter starts at the clock, not back at 1
    hits = hc.hits
    client.get(path, headers=JSON)
    assert hc.hits == hits  # another epoch: everything cleared


def test_redis_counter_below_the_position_clears_everything(app, client, hc, issue):  # noqa: F811
    """Redis went back in time (restored from a save, a replica promoted) and nothing was
    published since: the counter is below what this process processed, the publishes in
    between are lost."""
    r = redis_client(app)
    if r is None:
        pytest.skip("the Redis invalidation log needs TEST_REDIS_URL")
    lic = issue("结婚证")
    path = f"/v/{lic.verify_code}"
    _cached(client, path, JSON)
    r.set("tongban:gen:hotcache", int(r.get("tongban:gen:hotcache")) - 1)
    hits, cleared = hc.hits, hc.cleared
    client.get(path, headers=JSON)
    assert hc.hits == hits and hc.cleared > cleared


def test_redis_refusing_info_is_said_once(app, client, hc, issue, monkeypatch, caplog):  # noqa: F811
    """A managed Redis may refuse INFO: the cache keeps working on the counter alone, and the
    warning is not repeated every second."""
    if redis_client(app) is None:
        pytest.skip("the Redis invalidation log needs TEST_REDIS_URL")

    def refused(r):
        raise RuntimeError("unknown command 'INFO'")

    monkeypatch.setattr(hotcache, "_redis_identity", refused)
    monkeypatch.setitem(app.config, "TONGBAN_HOT_CACHE_REDIS_CHECK_SECONDS", 0)
    monkeypatch.setattr(hc, "_identity_warned", False)
    lic = issue("结婚证")
    path = f"/v/{lic.verify_code}"
    with caplog.at_level("WARNING", logger="tongban.hotcache"):
        _cached(client, path, JSON)
        client.get(path, headers=JSON)
    assert sum("INFO is refused" in m for m in caplog.messages) == 1


def test_a_connection_lost_mid_transaction_rolls_back_cleanly_and_says_all(app, hc):
    """The database going away in the middle of a write (failover, network): SQLAlchemy's rollback
    of the invalidated connection runs the hot cache's hooks, which could not read the
    connection's parked keys and raised from inside the rollback (the outbox worker's pass failed
    with PendingRollbackError). Now the rollback completes and everything is said stale."""
    cleared, seen = hc.cleared, _published_all()
    conn = db.engine.connect()
    conn.begin()
    conn.execute(text("UPDATE licences SET status = status WHERE 1 = 0"))  # parks "*" until the end
    conn.invalidate()
    conn.close()  # the rollback of the invalidated transaction: no exception
    assert _published_all() != seen or hc.cleared > cleared
    with db.engine.connect() as again:  # the pool hands out a working connection afterwards
        assert again.execute(text("SELECT 1")).scalar() == 1


def _published_all():
    from tongban import hotcache

    return hotcache.GENERATION.current()
