"""Several servers, one service: two real ``make serve`` servers (Granian, one worker each) on
two loopback ports, sharing one PostgreSQL database and one Redis, behave as one provider.

Each server has its own instance folder, as two machines would; what they must share comes from
the environment (``SECRET_KEY``, ``TONGBAN_KEK``, ``TONGBAN_AUDIT_KEY``, ``TONGBAN_PAIRWISE_SALT``,
``TONGBAN_ISSUER``). The browser sends the issuer's host to both, as a load balancer would, and
one cookie jar serves both (cookies are per host, not per port). Flows cross the servers: a code
issued by A is redeemed at B, a refresh token rotated at B is replayed at A, a pairwise subject is
the same from both, a log-in at A is honoured by B and ended through B (and, logged out through
both at once, ended once), keys rotated by the operator's ``flask keys rotate`` sign at B within
seconds, lockouts and rate limits count on both, a system registered or disabled through A's
console is known to B at once.

Then three ``python -m tongban.worker`` processes drain one outbox (a copy of the database made
before the servers started): every item delivered exactly once, the audit chain whole.

Runs when TEST_DATABASE_URL is PostgreSQL and Redis answers (TEST_REDIS_URL, else
redis://127.0.0.1:6379; the database number this xdist worker's conftest would use). On SQLite it
skips; with CI=true and TEST_DATABASE_URL set, Redis missing fails instead.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from flask import Flask
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.conftest import PASSWORD
from tests.idp.helpers import REDIRECT, Browser
from tests.live import PROJECT_ROOT, free_port, migrate, server_env, start_server, stop

pytestmark = pytest.mark.xdist_group("two-servers")  # one pair of servers per run, on one xdist worker

DEADLINE = 20.0  # seconds a poll may wait for what the other server must see (a bound, never asserted)
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# ---------------------------------------------------------------- what the test needs


def _postgres_base() -> str:
    base = os.environ.get("TEST_DATABASE_URL", "")
    if not base.startswith(("postgresql://", "postgresql+psycopg://")):
        pytest.skip("several servers share a PostgreSQL database: set TEST_DATABASE_URL")
    return base


def _redis_url() -> str:
    """The Redis database the conftest of this xdist worker uses (this worker runs one test at a
    time, and the suite's next test flushes it anyway)."""
    base = os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    index = 1 + (int(worker[2:]) % 15 if worker.startswith("gw") else 0)
    url = urlunsplit(urlsplit(base)._replace(path=f"/{index}"))
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=3)
        client.flushdb()
    except redis.RedisError as e:
        message = f"several servers share a Redis: {url} does not answer ({type(e).__name__})"
        if _CI:
            pytest.fail(message + " — in CI with TEST_DATABASE_URL set, Redis is required")
        pytest.skip(message)
    return url


def _databases(base: str, names: list[str]):
    """Scratch PostgreSQL databases named after TEST_DATABASE_URL's: (URLs, admin URL)."""
    parts = urlsplit(base.replace("postgresql+psycopg://", "postgresql://"))
    admin = urlunsplit(parts._replace(path="/postgres"))
    prefix = f"{parts.path.lstrip('/')}_two_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    return [urlunsplit(parts._replace(scheme="postgresql+psycopg", path=f"/{prefix}_{n}")) for n in names], admin


def _psql(admin: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


def _dbname(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def id_number(n: int) -> str:
    from tongban.identifiers import id_check_char

    first17 = f"11010519800101{n:03d}"
    return first17 + id_check_char(first17)


class Sink:
    """An HTTP endpoint on a free port that counts what it is sent (a relying party's
    back-channel logout endpoint): the logout tokens' ``sid`` claims, in arrival order."""

    def __init__(self, delay: float = 0.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/backchannel"
        self.sids: list[str] = []
        self.delay = delay
        self.cond = threading.Condition()
        self.server = make_server("127.0.0.1", self.port, self._app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _app(self, environ, start_response):
        req = Request(environ)
        token = req.form.get("logout_token", "")
        try:
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            sid = str(claims.get("sid"))
        except (IndexError, ValueError):
            sid = "(not a token)"
        if self.delay:
            time.sleep(self.delay)
        with self.cond:
            self.sids.append(sid)
            self.cond.notify_all()
        return Response("")(environ, start_response)

    def wait_for(self, n: int, timeout: float = DEADLINE) -> list[str]:
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.sids) < n:
                left = end - time.monotonic()
                assert left > 0, f"only {len(self.sids)} of {n} deliveries arrived"
                self.cond.wait(left)
            return list(self.sids)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Workers:
    """Three ``python -m tongban.worker`` processes on a database of their own (a copy of the
    freshly migrated one), started with the servers so their start-up overlaps; a registered
    system whose back-channel logout endpoint is ``sink``. Each worker's connection carries its
    name (``application_name``): the test knows when all three are up."""

    COUNT = 3

    def __init__(self, database: str, env: dict, root: Path):
        from idp import clients as registry
        from people import accounts
        from tongban import create_app
        from tongban.extensions import db

        self.database, self.root = database, root
        self.sink = Sink()
        self.app = create_app({
            "TONGBAN_INSTANCE_DIR": str(root / "ctl-workers"), "SQLALCHEMY_DATABASE_URI": database,
            "REDIS_URL": "", "TONGBAN_ISSUER": env["TONGBAN_ISSUER"], "SECRET_KEY": env["SECRET_KEY"],
            "TONGBAN_KEK": bytes.fromhex(env["TONGBAN_KEK"]), "TONGBAN_AUDIT_KEY": env["TONGBAN_AUDIT_KEY"],
            "TONGBAN_PAIRWISE_SALT": env["TONGBAN_PAIRWISE_SALT"],
            "TONGBAN_OUTBOX_THREAD": False, "TONGBAN_AUDIT_CHAIN_THREAD": False,
        })
        with self.app.app_context():
            row, _secret = registry.create_client(name="退出接收系统", department="测试局", redirect_uris=[REDIRECT],
                                                  backchannel_logout_uri=self.sink.url)
            user = accounts.create_user(id_number(500), "李四", PASSWORD, "13900139000")
            db.session.commit()
            self.client_id, self.sub = row.client_id, user.sub
        self.logs = [root / f"worker-{i}.log" for i in range(self.COUNT)]
        self.procs: list[subprocess.Popen] = []
        for i, log_path in enumerate(self.logs):
            worker_env = server_env({**env, "REDIS_URL": "", "TONGBAN_INSTANCE_DIR": str(root / f"worker-{i}"),
                                     "DATABASE_URL": f"{database}?application_name={self.name(i)}"})
            with open(log_path, "wb") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "tongban.worker"], cwd=PROJECT_ROOT, env=worker_env,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))

    @staticmethod
    def name(i: int) -> str:
        return f"tongban-worker-{i}"

    def all_connected(self) -> bool:
        import psycopg

        for proc, log in zip(self.procs, self.logs, strict=True):
            assert proc.poll() is None, f"a worker exited ({proc.returncode}): {log.read_text()[-2000:]}"
        admin = urlunsplit(urlsplit(self.database.replace("postgresql+psycopg://", "postgresql://"))
                           ._replace(path="/postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
            names = {r[0] for r in conn.execute("SELECT application_name FROM pg_stat_activity WHERE datname = %s",
                                                (_dbname(self.database),))}
        return {self.name(i) for i in range(self.COUNT)} <= names

    def stop(self) -> list[int | None]:
        """SIGTERM each (the current pass finishes), SIGKILL a straggler; the exit codes."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return [proc.returncode for proc in self.procs]

    def close(self) -> None:
        self.stop()
        self.sink.close()
        from tongban.extensions import db

        with self.app.app_context():
            db.session.remove()
            db.engine.dispose()


@dataclass
class Cluster:
    a: str  # server A, http://127.0.0.1:<port>
    b: str  # server B
    issuer: str  # what both call themselves (the load balancer's address)
    env: dict  # what both were started with (minus HOST, PORT and the instance folder)
    ctl: Flask  # an app in this process on the same database and Redis: the operator's commands, test data
    root: Path  # the instance folders and logs
    workers: Workers
    procs: list = field(default_factory=list)
    _n: int = 0

    def browser(self) -> tuple[Browser, Browser]:
        """One browser (one cookie jar) and its view of A and of B, both under the issuer's host."""
        http = requests.Session()
        http.headers["Host"] = urlsplit(self.issuer).netloc
        views = []
        for base in (self.a, self.b):
            view = Browser(base)
            view.http = http
            views.append(view)
        return views[0], views[1]

    def citizen(self) -> str:
        from people import accounts
        from tongban.extensions import db

        self._n += 1
        number = id_number(100 + self._n)
        with self.ctl.app_context():
            accounts.create_user(number, "张三", PASSWORD, f"1380013{self._n:04d}")
            db.session.commit()
        return number

    def system(self, **kw) -> tuple[str, str]:
        from idp import clients as registry
        from tongban.extensions import db

        kw.setdefault("name", "跨服务器测试系统")
        kw.setdefault("department", "测试局")
        kw.setdefault("redirect_uris", [REDIRECT])
        kw.setdefault("grant_types", ["authorization_code", "refresh_token", "client_credentials"])
        kw.setdefault("scopes", ["openid", "profile", "offline_access"])
        kw.setdefault("first_party", True)
        with self.ctl.app_context():
            row, secret = registry.create_client(**kw)
            db.session.commit()
            return row.client_id, secret


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = _postgres_base()
    redis_url = _redis_url()
    (database, worker_db), admin = _databases(base, ["shared", "workers"])
    for url in (database, worker_db):
        _psql(admin, f'DROP DATABASE IF EXISTS "{_dbname(url)}" WITH (FORCE)')
    _psql(admin, f'CREATE DATABASE "{_dbname(database)}"')
    root = tmp_path_factory.mktemp("two-servers")
    port_a, port_b = free_port(), free_port()
    issuer = f"http://127.0.0.1:{port_a}"  # what a load balancer in front of both would be called
    env = {
        "DATABASE_URL": database, "REDIS_URL": redis_url, "TONGBAN_ISSUER": issuer,
        # the instance folders differ (two machines): the secrets they would default to are given
        "SECRET_KEY": secrets.token_hex(32), "TONGBAN_KEK": secrets.token_hex(32),
        "TONGBAN_AUDIT_KEY": secrets.token_hex(32), "TONGBAN_PAIRWISE_SALT": secrets.token_hex(32),
        "WEB_CONCURRENCY": "1", "TONGBAN_OUTBOX_POLL_SECONDS": "1", "TONGBAN_LOGIN_RATE_PER_IP": "1000",
        "TONGBAN_QR_RATE_PER_IP": "6", "TONGBAN_QR_RATE_WINDOW": "100000000",  # no window boundary mid-test
        "TONGBAN_ACCESS_LOG": "0",
    }
    migrate({**env, "TONGBAN_INSTANCE_DIR": str(root / "migrate")})
    # the workers' own database: a copy of this one, made before any server holds a connection
    _psql(admin, f'CREATE DATABASE "{_dbname(worker_db)}" TEMPLATE "{_dbname(database)}"')

    from tongban import create_app

    ctl = create_app({
        "TONGBAN_INSTANCE_DIR": str(root / "ctl"), "SQLALCHEMY_DATABASE_URI": database, "REDIS_URL": redis_url,
        "TONGBAN_ISSUER": issuer, "SECRET_KEY": env["SECRET_KEY"], "TONGBAN_KEK": bytes.fromhex(env["TONGBAN_KEK"]),
        "TONGBAN_AUDIT_KEY": env["TONGBAN_AUDIT_KEY"], "TONGBAN_PAIRWISE_SALT": env["TONGBAN_PAIRWISE_SALT"],
        "TONGBAN_OUTBOX_THREAD": False, "TONGBAN_AUDIT_CHAIN_THREAD": False,
    })
    procs: list = []
    workers = None
    try:
        workers = Workers(worker_db, env, root)
        with ThreadPoolExecutor(2) as pool:  # both start at once (and with the workers): less waiting
            started = list(pool.map(
                lambda p: start_server({**env, "PORT": p[1], "TONGBAN_INSTANCE_DIR": str(root / p[0])}),
                [("a", port_a), ("b", port_b)]))
        procs = [proc for proc, _ in started]
        yield Cluster(a=started[0][1], b=started[1][1], issuer=issuer, env=env, ctl=ctl, root=root,
                      workers=workers, procs=procs)
    finally:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(stop, procs))
        if workers is not None:
            workers.close()
        from tongban.extensions import db

        with ctl.app_context():
            db.session.remove()
            db.engine.dispose()
        for url in (database, worker_db):
            _psql(admin, f'DROP DATABASE IF EXISTS "{_dbname(url)}" WITH (FORCE)')


def _poll(fn, what: str, timeout: float = DEADLINE):
    """``fn()`` until it returns something true, or fail naming ``what``."""
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < end, f"not seen within {timeout:.0f} s: {what}"
        time.sleep(0.2)


def _jwt_header(token: str) -> dict:
    head = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


def _jwt_claims(token: str) -> dict:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def _client_token(base: str, client_id: str, secret: str) -> requests.Response:
    return requests.post(f"{base}/oauth/token", data={"grant_type": "client_credentials", "scope": "openid"},
                         auth=(client_id, secret), timeout=10)


def _refresh(base: str, client_id: str, secret: str, token: str) -> requests.Response:
    return requests.post(f"{base}/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token},
                         auth=(client_id, secret), timeout=10)


def _userinfo(base: str, access_token: str) -> requests.Response:
    return requests.get(f"{base}/oauth/userinfo", headers={"Authorization": f"Bearer {access_token}"}, timeout=10)


# ---------------------------------------------------------------- the flows


def test_code_from_a_redeemed_at_b_refresh_reuse_caught_across_servers(cluster):
    who = cluster.citizen()
    client_id, secret = cluster.system()
    at_a, _ = cluster.browser()
    assert at_a.login(who).status_code == 302

    rp = OAuth2Session(client_id, secret, scope="openid profile offline_access", redirect_uri=REDIRECT,
                       code_challenge_method="S256")
    verifier = generate_token(48)
    url, _state = rp.create_authorization_url(f"{cluster.a}/oauth/authorize", code_verifier=verifier,
                                              nonce=generate_token(12), prompt="consent")
    callback = at_a.walk(url)
    assert callback.kind == "callback", callback.resp.text[:300] if callback.resp is not None else callback.url
    code = callback.params["code"]
    token = rp.fetch_token(f"{cluster.b}/oauth/token", authorization_response=callback.url, code_verifier=verifier)
    assert token.get("refresh_token") and token.get("id_token")

    info = _userinfo(cluster.a, token["access_token"])
    assert info.status_code == 200, info.text
    assert info.json()["sub"] == _jwt_claims(token["id_token"])["sub"]

    first = token["refresh_token"]
    rotated = _refresh(cluster.b, client_id, secret, first)
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["refresh_token"]
    assert second != first
    # the rotated-out token replayed at the other server: refused, and the whole family revoked
    reused = _refresh(cluster.a, client_id, secret, first)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    for base in (cluster.b, cluster.a):
        after = _refresh(base, client_id, secret, second)
        assert after.status_code == 400 and after.json()["error"] == "invalid_grant", (base, after.text)

    # the family's access tokens are denied on both servers too
    for base in (cluster.b, cluster.a):
        assert _userinfo(base, rotated.json()["access_token"]).status_code == 401

    # the code, redeemed at B, replayed at A: refused
    replay = requests.post(f"{cluster.a}/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier},
        auth=(client_id, secret), timeout=10)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"


def test_log_in_at_a_is_honoured_by_b_and_logout_through_b_ends_it(cluster):
    from sqlalchemy import select

    from tongban.extensions import db
    from tongban.outbox import OutboxItem

    sink = Sink()
    try:
        who = cluster.citizen()
        client_id, secret = cluster.system(backchannel_logout_uri=sink.url)
        at_a, at_b = cluster.browser()
        assert at_a.login(who).status_code == 302

        # single sign-on: B's authorize knows the browser A logged in, no log-in page
        rp = OAuth2Session(client_id, secret, scope="openid profile", redirect_uri=REDIRECT,
                           code_challenge_method="S256")
        verifier = generate_token(48)
        url, _ = rp.create_authorization_url(f"{cluster.b}/oauth/authorize", code_verifier=verifier,
                                             nonce=generate_token(12))
        step = at_b.walk(url)
        assert step.kind == "callback" and step.seen == [], (step.kind, step.seen)
        token = rp.fetch_token(f"{cluster.a}/oauth/token", authorization_response=step.url,
                               code_verifier=verifier)
        sid = _jwt_claims(token["id_token"])["sid"]
        assert _userinfo(cluster.b, token["access_token"]).status_code == 200

        # log out through B (the confirmation form: no id_token_hint)
        page = at_b.http.get(f"{cluster.b}/logout", allow_redirects=False)
        assert page.status_code == 200 and "csrf_token" in page.text
        done = at_b.http.post(f"{cluster.b}/logout", data={"csrf_token": _CSRF.search(page.text).group(1)},
                              allow_redirects=False)
        assert done.status_code in (200, 302, 303), done.text[:300]

        # A asks for a log-in again, and refuses the session's access token
        url_a, _ = rp.create_authorization_url(f"{cluster.a}/oauth/authorize", code_verifier=generate_token(48),
                                               nonce=generate_token(12))
        again = at_a.walk(url_a)
        assert again.kind == "login", again.kind
        assert _userinfo(cluster.a, token["access_token"]).status_code == 401

        # the back-channel logout: delivered once (both servers' outbox threads compete for it)
        assert sink.wait_for(1) == [sid]

        def settled():
            with cluster.ctl.app_context():
                rows = db.session.execute(select(OutboxItem.status, OutboxItem.attempts)
                                          .where(OutboxItem.target == sink.url)).all()
                db.session.remove()
            return rows if rows and all(s == "delivered" for s, _ in rows) else None

        assert [tuple(r) for r in _poll(settled, "the outbox item delivered")] == [("delivered", 1)]
        assert sink.sids == [sid]
    finally:
        sink.close()


def test_hot_caches_of_both_servers_follow_changes_made_elsewhere_at_once(cluster):
    """Userinfo answered from each server's hot cache (tongban.hotcache) follows, on the very next
    request, a name changed and a session ended by a third process with plain SQL (no ORM, no
    logout hooks: only the invalidation log tells the servers)."""
    from sqlalchemy import text

    from tongban.extensions import db

    who = cluster.citizen()
    client_id, secret = cluster.system()
    at_a, _ = cluster.browser()
    assert at_a.login(who).status_code == 302
    rp = OAuth2Session(client_id, secret, scope="openid profile", redirect_uri=REDIRECT,
                       code_challenge_method="S256")
    verifier = generate_token(48)
    url, _state = rp.create_authorization_url(f"{cluster.a}/oauth/authorize", code_verifier=verifier,
                                              nonce=generate_token(12))
    callback = at_a.walk(url)
    assert callback.kind == "callback", callback.kind
    token = rp.fetch_token(f"{cluster.b}/oauth/token", authorization_response=callback.url, code_verifier=verifier)
    access, sid = token["access_token"], _jwt_claims(token["id_token"])["sid"]
    for base in (cluster.a, cluster.b):
        for _ in range(4):  # the first answers are the full stack's; then lean, then from the cache
            info = _userinfo(base, access)
            assert info.status_code == 200 and info.json()["name"] == "张三", info.text

    def sql(statement: str, **params) -> None:
        with cluster.ctl.app_context():
            with db.engine.begin() as conn:
                conn.execute(text(statement), params)
            db.session.remove()

    sql("UPDATE users SET name = :name WHERE id_number = :who", name="张三丰", who=who)
    for base in (cluster.a, cluster.b):
        assert _userinfo(base, access).json()["name"] == "张三丰"
    sql("UPDATE login_sessions SET ended_at = CURRENT_TIMESTAMP, end_reason = 'admin' WHERE sid = :sid", sid=sid)
    for base in (cluster.a, cluster.b):
        assert _userinfo(base, access).status_code == 401


def test_one_code_redeemed_at_both_servers_at_once_gives_one_token(cluster):
    who = cluster.citizen()
    client_id, secret = cluster.system()
    at_a, _ = cluster.browser()
    assert at_a.login(who).status_code == 302
    rp = OAuth2Session(client_id, secret, scope="openid", redirect_uri=REDIRECT)
    url, _ = rp.create_authorization_url(f"{cluster.a}/oauth/authorize", nonce=generate_token(12))
    code = at_a.walk(url).params["code"]
    barrier = threading.Barrier(2)

    def redeem(base):
        barrier.wait()
        return requests.post(f"{base}/oauth/token", data={"grant_type": "authorization_code", "code": code,
                                                          "redirect_uri": REDIRECT},
                             auth=(client_id, secret), timeout=20)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(redeem, [cluster.a, cluster.b]))
    assert sorted(r.status_code for r in answers) == [200, 400], [r.text for r in answers]
    loser = next(r for r in answers if r.status_code == 400)
    assert loser.json()["error"] == "invalid_grant"


def test_pairwise_subject_is_the_same_from_both_servers(cluster):
    """The pairwise salt is shared (TONGBAN_PAIRWISE_SALT): a system knows the person by one
    subject whichever server issued the token."""
    who = cluster.citizen()
    client_id, secret = cluster.system(subject_type="pairwise", scopes=["openid"])
    at_a, at_b = cluster.browser()
    assert at_a.login(who).status_code == 302
    subs = []
    for view, token_at in ((at_a, cluster.b), (at_b, cluster.a)):
        rp = OAuth2Session(client_id, secret, scope="openid", redirect_uri=REDIRECT)
        url, _ = rp.create_authorization_url(f"{view.base}/oauth/authorize", nonce=generate_token(12))
        token = rp.fetch_token(f"{token_at}/oauth/token", code=view.walk(url).params["code"])
        subs.append(_jwt_claims(token["id_token"])["sub"])
        info = _userinfo(token_at, token["access_token"])
        assert info.status_code == 200 and info.json()["sub"] == subs[-1]
    assert subs[0] == subs[1]
    with cluster.ctl.app_context():
        from people.models import User
        from tongban.extensions import db

        local = db.session.execute(db.select(User.sub).where(User.id_number == who)).scalar_one()
        db.session.remove()
    assert subs[0] != local  # pairwise indeed


def test_both_servers_are_ready_with_the_same_secrets(cluster):
    """Both started with the shared secrets (tongban/shared_secrets.py): the first recorded their
    fingerprints, the other matches them, and each answers /readyz 200 with the secrets checked."""
    for base in (cluster.a, cluster.b):
        r = requests.get(f"{base}/readyz", timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["checks"]["secrets"] == "ok"
    with cluster.ctl.app_context():
        from tongban.extensions import db
        from tongban.shared_secrets import DeploymentSecret

        names = set(db.session.execute(db.select(DeploymentSecret.name)).scalars())
        db.session.remove()
    assert names == {"SECRET_KEY", "TONGBAN_AUDIT_KEY", "TONGBAN_ISSUER", "TONGBAN_KEK", "TONGBAN_PAIRWISE_SALT"}


def test_keys_rotated_through_a_are_published_and_used_by_b(cluster):
    client_id, secret = cluster.system(grant_types=["client_credentials"], scopes=["openid"])

    def kids(base: str) -> set[str]:
        return {k["kid"] for k in requests.get(f"{base}/jwks.json", timeout=10).json()["keys"]}

    before = kids(cluster.b)
    assert _jwt_header(_client_token(cluster.b, client_id, secret).json()["access_token"])["kid"] in before
    # the operator's command (on a machine of its own: this process, with the servers' settings)
    rotated = cluster.ctl.test_cli_runner().invoke(args=["keys", "rotate", "--delay", "0"])
    assert rotated.exit_code == 0, rotated.output
    new = _poll(lambda: kids(cluster.b) - before, "the rotated keys in B's JWKS")

    def signs_with_new_key():
        token = _client_token(cluster.b, client_id, secret)
        assert token.status_code == 200, token.text
        return _jwt_header(token.json()["access_token"])["kid"] in new

    _poll(signs_with_new_key, "B signing with the rotated key")
    _poll(lambda: kids(cluster.a) >= new, "the rotated keys in A's JWKS")


def test_wrong_passwords_on_both_servers_lock_at_one_threshold(cluster):
    with cluster.ctl.app_context():
        threshold = cluster.ctl.config["TONGBAN_LOCKOUT_THRESHOLD"]
    who = cluster.citizen()
    at_a, at_b = cluster.browser()
    views = [at_a, at_b]
    for i in range(threshold - 1):
        resp = views[i % 2].login(who, "Wrong-Passw0rd!")
        assert resp.status_code == 401, (i, resp.status_code)
    last = views[(threshold - 1) % 2].login(who, "Wrong-Passw0rd!")
    assert last.status_code == 423, last.status_code  # the threshold-th, wherever it lands, locks
    for view in views:  # the right password, on either server: still locked
        assert view.login(who).status_code == 423


def test_rate_limit_budget_is_shared(cluster):
    at_a, _at_b = cluster.browser()
    page = at_a.http.get(f"{cluster.a}/login")
    csrf = _CSRF.search(page.text).group(1)
    budget = int(cluster.env["TONGBAN_QR_RATE_PER_IP"])
    answers = []
    for i in range(budget + 2):
        base = (cluster.a, cluster.b)[i % 2]
        answers.append(at_a.http.post(f"{base}/qr/start", headers={"X-CSRFToken": csrf}).status_code)
    assert answers == [200] * budget + [429, 429], answers


def test_system_registered_and_disabled_through_a_is_known_to_b(cluster):
    from people import accounts
    from tongban.extensions import db

    # B has the register cached (it served a known system)
    known_id, known_secret = cluster.system(grant_types=["client_credentials"], scopes=["openid"])
    assert _client_token(cluster.b, known_id, known_secret).status_code == 200

    admin_id = id_number(900)
    with cluster.ctl.app_context():
        accounts.create_staff(admin_id, "王五", PASSWORD, cluster.ctl.config["TONGBAN_AUTHORITY_USCC"], "admin")
        db.session.commit()
    console, _ = cluster.browser()
    assert console.login(admin_id).status_code == 302
    form = console.http.get(f"{cluster.a}/admin/clients/new")
    assert form.status_code == 200, form.status_code
    created = console.http.post(f"{cluster.a}/admin/clients/new", data={
        "csrf_token": _CSRF.search(form.text).group(1), "name": "新系统", "department": "测试局",
        "redirect_uris": REDIRECT, "grant_types": ["client_credentials"], "scopes": ["openid"],
        "id_token_alg": "RS256"})
    assert created.status_code == 200, created.text[:500]
    new_id = re.search(r'<code class="credential">([^<]+)</code>', created.text).group(1)
    new_secret = re.search(r'<code class="credential secret">([^<]+)</code>', created.text).group(1)
    # at once on B: no waiting for a cache to expire
    ok = _client_token(cluster.b, new_id, new_secret)
    assert ok.status_code == 200, ok.text

    page = console.http.get(f"{cluster.a}/admin/clients/{new_id}/disable")
    disabled = console.http.post(f"{cluster.a}/admin/clients/{new_id}/disable",
                                 data={"csrf_token": _CSRF.search(page.text).group(1)}, allow_redirects=False)
    assert disabled.status_code in (302, 303), disabled.text[:300]
    refused = _client_token(cluster.b, new_id, new_secret)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client", refused.text
    assert _client_token(cluster.b, known_id, known_secret).status_code == 200


def test_one_session_logged_out_on_both_servers_at_once_ends_once(cluster):
    """Two tabs of one browser log out at the same moment, through A and through B: one of them
    ends the session, the other finds it ended — one back-channel logout, not two."""
    from sqlalchemy import func, select

    from tongban.audit import AuditLog
    from tongban.extensions import db
    from tongban.outbox import OutboxItem

    sink = Sink()
    try:
        client_id, secret = cluster.system(backchannel_logout_uri=sink.url)
        who = cluster.citizen()
        sids = []
        for _ in range(3):
            at_a, _at_b = cluster.browser()
            assert at_a.login(who).status_code == 302
            rp = OAuth2Session(client_id, secret, scope="openid", redirect_uri=REDIRECT)
            url, _ = rp.create_authorization_url(f"{cluster.a}/oauth/authorize", nonce=generate_token(12))
            code = at_a.walk(url).params["code"]
            token = rp.fetch_token(f"{cluster.b}/oauth/token", code=code)
            sids.append(_jwt_claims(token["id_token"])["sid"])
            page = at_a.http.get(f"{cluster.a}/logout", allow_redirects=False)
            csrf = _CSRF.search(page.text).group(1)
            cookies = at_a.http.cookies.get_dict()
            barrier = threading.Barrier(2)

            def log_out(base, cookies=cookies, csrf=csrf, barrier=barrier):
                tab = requests.Session()
                tab.headers["Host"] = urlsplit(cluster.issuer).netloc
                tab.cookies.update(cookies)
                barrier.wait()
                return tab.post(f"{base}/logout", data={"csrf_token": csrf}, allow_redirects=False).status_code

            with ThreadPoolExecutor(2) as pool:
                assert list(pool.map(log_out, [cluster.a, cluster.b])) == [200, 200]

        assert sorted(sink.wait_for(len(sids))) == sorted(sids)
        with cluster.ctl.app_context():
            queued = db.session.execute(select(func.count()).select_from(OutboxItem)
                                        .where(OutboxItem.target == sink.url)).scalar_one()
            ended = db.session.execute(select(func.count()).select_from(AuditLog).where(
                AuditLog.action == "session.ended",
                AuditLog.object.in_([f"session:{sid}" for sid in sids]))).scalar_one()
            db.session.remove()
        assert (queued, ended) == (len(sids), len(sids))
        assert sorted(sink.sids) == sorted(sids)
    finally:
        sink.close()


# ---------------------------------------------------------------- several workers, one outbox


def test_three_workers_deliver_every_outbox_item_exactly_once(cluster):
    from sqlalchemy import func, select

    from idp.logout import KIND
    from tongban import audit, outbox
    from tongban.extensions import db

    n = 200
    workers = cluster.workers
    _poll(workers.all_connected, "three workers connected to their database", timeout=90)
    with workers.app.app_context():  # one transaction: every item due at once, three claimants
        for i in range(n):
            outbox.enqueue(KIND, workers.sink.url, {"client_id": workers.client_id, "sid": f"sid-{i:04d}",
                                                    "sub": workers.sub})
            audit.record("test.enqueued", actor="test", object=f"sid-{i:04d}")
        db.session.commit()

    workers.sink.wait_for(n, timeout=90)

    def settled():
        with workers.app.app_context():
            counts = dict(db.session.execute(select(outbox.OutboxItem.status, func.count())
                                             .group_by(outbox.OutboxItem.status)).all())
            db.session.remove()
        return counts if counts == {"delivered": n} else None

    _poll(settled, "every outbox item marked delivered")
    codes = workers.stop()
    seen = Counter(workers.sink.sids)
    assert len(seen) == n and set(seen.values()) == {1}, [s for s, c in seen.items() if c > 1][:10]
    assert codes == [0] * Workers.COUNT, [log.read_text(errors="replace")[-2000:] for log in workers.logs]
    with workers.app.app_context():  # the three chainers raced on one chain: it is whole
        verdict = audit.verify()
        assert verdict.whole, verdict.reason
        assert verdict.count >= n
        db.session.remove()


def test_the_shared_audit_chain_is_whole(cluster):
    """Both servers' chainer threads sealed the events of every test above into one chain."""
    from tongban import audit
    from tongban.extensions import db

    with cluster.ctl.app_context():
        verdict = audit.verify()
        db.session.remove()
    assert verdict.whole, verdict.reason
    assert verdict.count > 0
