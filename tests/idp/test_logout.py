"""Logging out everywhere: RP-initiated logout, back-channel logout tokens validated strictly
with two independent libraries (joserfc and pyoidc), delivery to a real HTTP receiver through
the durable outbox (retries with back-off, survives a restart), front-channel iframes, the
account page and the administrators' console."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jws import extract_compact
from oic.oic.message import BackChannelLogoutRequest
from oic.utils.keyio import KeyJar
from sqlalchemy import select, update
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.conftest import _free_port
from tests.idp.helpers import LOGOUT_REDIRECT, Browser, discover, jwks
from tests.idp.test_oidc_authlib import RP

EVENT = "http://schemas.openid.net/event/backchannel-logout"


# ---------------------------------------------------------------- a back-channel receiver


class Receiver:
    """A relying party's back-channel logout endpoint on a real port."""

    def __init__(self):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/backchannel"
        self.received: list[dict] = []
        self.fail_with: int | None = None
        self.cond = threading.Condition()
        self.server = None

    def _app(self, environ, start_response):
        req = Request(environ)
        with self.cond:
            self.received.append({"path": req.path, "method": req.method, "content_type": req.mimetype,
                                  "body": req.get_data(as_text=True), "form": req.form.to_dict()})
            self.cond.notify_all()
        status = self.fail_with or 200
        return Response("" if status == 200 else "nope", status=status)(environ, start_response)

    def start(self):
        self.server = make_server("127.0.0.1", self.port, self._app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def wait_for(self, n: int, timeout: float = 15) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.received) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"only {len(self.received)} of {n} deliveries arrived"
                self.cond.wait(left)
            return list(self.received)


@pytest.fixture
def receiver():
    r = Receiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture
def disco(live_server):
    return discover(live_server)


@pytest.fixture
def no_thread(app):
    """Deliveries only when the test says so (the worker thread skips its passes)."""
    app.config["TONGBAN_OUTBOX_THREAD"] = False
    yield
    app.config["TONGBAN_OUTBOX_THREAD"] = True


def strict_logout_token(raw: str, *, disco: dict, client_id: str, alg: str = "RS256") -> dict:
    """Back-Channel Logout 1.0 §2.4/§2.6, checked with joserfc."""
    header = extract_compact(raw.encode()).headers()
    assert header["typ"] == "logout+jwt"
    assert header["alg"] == alg
    keys = jwks(disco)
    assert header.get("kid") and keys.get_by_kid(header["kid"])
    claims = jwt.decode(raw, keys, algorithms=[alg]).claims
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": disco["issuer"]}, aud={"essential": True, "value": client_id},
        iat={"essential": True}, exp={"essential": True}, jti={"essential": True},
        sid={"essential": True}, sub={"essential": True}, events={"essential": True},
    ).validate(claims)
    now = time.time()
    assert claims["iat"] <= now + 5 and claims["exp"] > now and claims["exp"] - claims["iat"] <= 300
    assert claims["events"] == {EVENT: {}}
    assert "nonce" not in claims
    return claims


def pyoidc_logout_token(body: str, *, disco: dict, client_id: str) -> dict:
    """The same token checked by pyoidc (an independent implementation)."""
    kj = KeyJar()
    kj.import_jwks(requests.get(disco["jwks_uri"]).json(), disco["issuer"])
    req = BackChannelLogoutRequest().from_urlencoded(body)
    assert req.verify(keyjar=kj, iss=disco["issuer"], aud=client_id)
    return req["logout_token"].to_dict()


def outbox_rows():
    from tongban.extensions import db
    from tongban.outbox import OutboxItem

    db.session.expire_all()
    return list(db.session.execute(select(OutboxItem).order_by(OutboxItem.id)).scalars())


def _end_with_hint(http, disco, id_token, **extra):
    return http.get(disco["end_session_endpoint"], params={"id_token_hint": id_token, **extra},
                    allow_redirects=False)


# ---------------------------------------------------------------- discovery


def test_discovery_advertises_logout(client):
    d = client.get("/.well-known/openid-configuration").get_json()
    assert d["end_session_endpoint"].endswith("/oauth/logout")
    for k in ("backchannel_logout_supported", "backchannel_logout_session_supported",
              "frontchannel_logout_supported", "frontchannel_logout_session_supported"):
        assert d[k] is True


# ---------------------------------------------------------------- back-channel logout


def test_logout_notifies_every_other_system_with_a_strict_logout_token(disco, live_server, citizen, make_client,
                                                                       receiver):
    a, sa = make_client(first_party=True, post_logout_redirect_uris=[LOGOUT_REDIRECT],
                        backchannel_logout_uri=receiver.url + "/a")
    b, sb = make_client(first_party=True, backchannel_logout_uri=receiver.url + "/b")
    c, sc = make_client(first_party=True, backchannel_logout_uri=receiver.url + "/c",
                        id_token_signed_response_alg="ES256")
    quiet, sq = make_client(first_party=True)  # no back-channel URI: nothing to send
    browser = Browser(live_server)
    ta, ida = RP(disco, a, sa).login(browser)
    tb, idb = RP(disco, b, sb).login(browser)
    tc, _ = _login_es256(disco, c, sc, browser)
    RP(disco, quiet, sq).login(browser)
    assert ida["sid"] == idb["sid"]

    r = _end_with_hint(browser.http, disco, ta["id_token"], post_logout_redirect_uri=LOGOUT_REDIRECT, state="s1")
    assert r.status_code == 302 and r.headers["Location"] == LOGOUT_REDIRECT + "?state=s1"
    got = receiver.wait_for(2)
    time.sleep(0.3)
    assert len(receiver.received) == 2, "the system that logged out is not told again; quiet has no URI"
    by_path = {d["path"]: d for d in got}
    assert set(by_path) == {"/backchannel/b", "/backchannel/c"}
    for path, cid, alg in (("/backchannel/b", b, "RS256"), ("/backchannel/c", c, "ES256")):
        d = by_path[path]
        assert d["method"] == "POST" and d["content_type"] == "application/x-www-form-urlencoded"
        assert set(d["form"]) == {"logout_token"}
        claims = strict_logout_token(d["form"]["logout_token"], disco=disco, client_id=cid, alg=alg)
        assert claims["sid"] == ida["sid"] and claims["sub"] == ida["sub"]
        assert claims["aud"] in (cid, [cid])
        other = pyoidc_logout_token(d["body"], disco=disco, client_id=cid)
        assert other["sid"] == ida["sid"] and "nonce" not in other
    jtis = {parse_qs(d["body"])["logout_token"][0].split(".")[1] for d in got}
    assert len(jtis) == 2
    assert [row.status for row in outbox_rows()] == ["delivered", "delivered"]
    # the session-bound refresh token of the other system died with the session
    assert RP(disco, b, sb).refresh(tb["refresh_token"]).json()["error"] == "invalid_grant"
    assert RP(disco, c, sc).refresh(tc["refresh_token"]).json()["error"] == "invalid_grant"


def _login_es256(disco, cid, secret, browser):
    rp = RP(disco, cid, secret)
    step = browser.authorize(rp.auth_url())
    return rp.exchange(step.url), None


def test_offline_access_refresh_token_outlives_the_logout(disco, live_server, citizen, make_client, receiver):
    a, sa = make_client(first_party=True, backchannel_logout_uri=receiver.url)
    browser = Browser(live_server)
    t_off, _ = RP(disco, a, sa, scope="openid offline_access").login(browser)
    r = browser.http.post(disco["end_session_endpoint"], data={"id_token_hint": t_off["id_token"]},
                          allow_redirects=False)
    assert r.status_code == 200
    assert RP(disco, a, sa).refresh(t_off["refresh_token"]).status_code == 200


def test_failed_delivery_is_retried_with_back_off_and_never_blocks(app, disco, live_server, citizen, make_client,
                                                                   receiver, no_thread):
    from tongban import outbox
    from tongban.clock import utcnow
    from tongban.extensions import db

    b, sb = make_client(first_party=True, backchannel_logout_uri=receiver.url)
    browser = Browser(live_server)
    RP(disco, b, sb).login(browser)
    page = browser.http.get(f"{live_server}/logout")
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    receiver.fail_with = 503
    t0 = time.monotonic()
    r = browser.http.post(f"{live_server}/logout", data={"csrf_token": token}, allow_redirects=False)
    assert r.status_code == 200 and time.monotonic() - t0 < 5
    [row] = outbox_rows()
    assert row.status == "pending" and row.attempts == 0 and row.target == receiver.url

    assert outbox.work_once() == {"pending": 1}
    [row] = outbox_rows()
    assert row.attempts == 1 and row.status == "pending" and "HTTP 503" in row.last_error
    wait = (row.next_try - utcnow()).total_seconds()
    assert 5 < wait <= 10
    assert outbox.work_once() == {}, "not due yet: nothing is tried before next_try"

    def make_due():
        db.session.execute(update(outbox.OutboxItem).values(next_try=utcnow() - timedelta(seconds=1)))
        db.session.commit()

    make_due()
    assert outbox.work_once() == {"pending": 1}
    [row] = outbox_rows()
    assert row.attempts == 2 and 50 < (row.next_try - utcnow()).total_seconds() <= 60  # back-off grows

    # the admin console shows the failure
    admin_http = _admin_browser(live_server)
    page = admin_http.get(f"{live_server}/admin/outbox")
    assert page.status_code == 200 and "HTTP 503" in page.text and receiver.url in page.text

    receiver.fail_with = None
    make_due()
    assert outbox.work_once() == {"delivered": 1}
    [row] = outbox_rows()
    assert row.status == "delivered" and row.attempts == 3 and row.last_error is None
    assert len(receiver.received) == 3
    strict_logout_token(receiver.received[-1]["form"]["logout_token"], disco=disco, client_id=b)


def test_gives_up_after_max_attempts(app, disco, live_server, citizen, make_client, no_thread):
    from tongban import outbox
    from tongban.clock import utcnow
    from tongban.extensions import db

    dead = f"http://127.0.0.1:{_free_port()}/bc"  # nobody listens
    b, sb = make_client(first_party=True, backchannel_logout_uri=dead)
    browser = Browser(live_server)
    t, _ = RP(disco, b, sb).login(browser)
    _end_with_hint(requests, disco, t["id_token"])  # another browser: nothing ends
    assert outbox_rows() == []
    from people import sessions
    from people.models import User

    user = db.session.execute(select(User)).scalar_one()
    sessions.end_all_for_user(user, "ended_by_admin", "test")
    db.session.commit()
    db.session.execute(update(outbox.OutboxItem).values(max_attempts=2))
    db.session.commit()
    outbox.work_once()
    db.session.execute(update(outbox.OutboxItem).values(next_try=utcnow()))
    db.session.commit()
    assert outbox.work_once() == {"failed": 1}
    [row] = outbox_rows()
    assert row.status == "failed" and row.attempts == 2 and row.last_error.startswith("ConnectionError")


def test_queue_survives_a_restart(app, disco, live_server, citizen, make_client, receiver, no_thread):
    """Rows are in the database, not in memory: a new app (a restarted process) delivers them."""
    from click.testing import CliRunner
    from flask.cli import ScriptInfo

    from tongban import create_app

    b, sb = make_client(first_party=True, backchannel_logout_uri=receiver.url)
    browser = Browser(live_server)
    RP(disco, b, sb).login(browser)
    page = browser.http.get(f"{live_server}/logout")
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    browser.http.post(f"{live_server}/logout", data={"csrf_token": csrf})
    assert [r.status for r in outbox_rows()] == ["pending"]
    assert receiver.received == []

    keep = ("TESTING", "TONGBAN_INSTANCE_DIR", "SQLALCHEMY_DATABASE_URI", "TONGBAN_ISSUER", "SECRET_KEY",
            "TONGBAN_KEK", "REDIS_URL")
    fresh = create_app({**{k: app.config[k] for k in keep}, "TONGBAN_OUTBOX_THREAD": False})
    result = CliRunner().invoke(fresh.cli, ["outbox", "work", "--once"], obj=ScriptInfo(create_app=lambda: fresh))
    assert result.exit_code == 0, result.output
    assert '"delivered": 1' in result.output
    assert [r.status for r in outbox_rows()] == ["delivered"]
    strict_logout_token(receiver.wait_for(1)[0]["form"]["logout_token"], disco=disco, client_id=b)


def test_concurrent_workers_deliver_each_item_once(app, disco, live_server, citizen, make_client, receiver,
                                                   no_thread):
    from people import sessions
    from people.models import User
    from tongban import outbox
    from tongban.extensions import db

    clients = [make_client(first_party=True, backchannel_logout_uri=f"{receiver.url}/{i}") for i in range(4)]
    browser = Browser(live_server)
    for cid, secret in clients:
        RP(disco, cid, secret).login(browser)
    user = db.session.execute(select(User)).scalar_one()
    sessions.end_all_for_user(user, "ended_by_admin", "test")
    db.session.commit()
    results = []

    def work():
        with app.app_context():
            results.append(outbox.work_once())

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.get("delivered", 0) for r in results) == 4
    assert len(receiver.wait_for(4)) == 4
    time.sleep(0.2)
    assert sorted(d["path"] for d in receiver.received) == sorted(f"/backchannel/{i}" for i in range(4))


# ---------------------------------------------------------------- sessions ended otherwise


def test_expired_sessions_are_swept_and_logged_out_everywhere(app, disco, live_server, citizen, make_client,
                                                               no_thread):
    from idp.logout import end_expired_sessions
    from people.models import LoginSession
    from tongban.clock import utcnow
    from tongban.extensions import db

    b, sb = make_client(first_party=True, backchannel_logout_uri="http://127.0.0.1:9/bc")
    browser = Browser(live_server)
    t, _ = RP(disco, b, sb).login(browser)
    db.session.execute(update(LoginSession).values(last_seen=utcnow() - timedelta(days=1)))
    db.session.commit()
    assert end_expired_sessions() == 1
    assert end_expired_sessions() == 0
    sess = db.session.execute(select(LoginSession)).scalar_one()
    assert sess.end_reason == "expired"
    assert [(r.kind, r.status) for r in outbox_rows()] == [("backchannel_logout", "pending")]
    assert RP(disco, b, sb).refresh(t["refresh_token"]).json()["error"] == "invalid_grant"


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def _admin_browser(live_server):
    from people import accounts
    from tests.conftest import OTHER_ID, PASSWORD
    from tongban.extensions import db

    cfg = __import__("flask").current_app.config
    admin = accounts.create_user(OTHER_ID, "李管理", PASSWORD, "13900000001")
    org = accounts.ensure_org(cfg["TONGBAN_AUTHORITY_USCC"], cfg["TONGBAN_AUTHORITY_NAME"])
    accounts.add_role(admin, org, "admin", actor="test")
    db.session.commit()
    b = Browser(live_server)
    assert b.login(OTHER_ID, PASSWORD).status_code == 302
    return b.http


def test_account_page_lists_systems_and_ends_other_sessions(app, disco, live_server, citizen, make_client,
                                                            no_thread):
    b, sb = make_client(name="公积金系统", first_party=True, backchannel_logout_uri="http://127.0.0.1:9/bc")
    laptop, phone = Browser(live_server), Browser(live_server)
    RP(disco, b, sb).login(laptop)
    RP(disco, b, sb).login(phone)
    page = phone.http.get(f"{live_server}/account?lang=en")
    assert page.status_code == 200
    assert page.text.count("公积金系统") >= 2 and "End all other sessions" in page.text
    r = phone.http.post(f"{live_server}/account/sessions/end-others", data={"csrf_token": _csrf(page.text)},
                        allow_redirects=False)
    assert r.status_code == 302
    assert len(outbox_rows()) == 1  # the laptop's session: the system in it is told
    assert "/login" in laptop.http.get(f"{live_server}/account", allow_redirects=False).headers["Location"]
    assert phone.http.get(f"{live_server}/account", allow_redirects=False).status_code == 200


def test_admin_ending_a_users_sessions_logs_them_out_everywhere(app, disco, live_server, citizen, make_client,
                                                                no_thread):
    b, sb = make_client(first_party=True, backchannel_logout_uri="http://127.0.0.1:9/bc")
    RP(disco, b, sb).login(Browser(live_server))
    RP(disco, b, sb).login(Browser(live_server))
    admin = _admin_browser(live_server)
    page = admin.get(f"{live_server}/admin/users/{citizen.sub}")
    r = admin.post(f"{live_server}/admin/users/{citizen.sub}/end-sessions", data={"csrf_token": _csrf(page.text)},
                   allow_redirects=False)
    assert r.status_code == 302
    assert len(outbox_rows()) == 2
    assert "Deliveries" in admin.get(f"{live_server}/admin/outbox?lang=en").text


# ---------------------------------------------------------------- front-channel logout


def test_front_channel_iframes_and_their_csp(app, disco, live_server, citizen, make_client):
    fc, sfc = make_client(first_party=True, frontchannel_logout_uri="http://127.0.0.1:9/fc?x=1")
    fc2, sfc2 = make_client(first_party=True, frontchannel_logout_uri="http://localhost:7/fc")
    browser = Browser(live_server)
    _, claims = RP(disco, fc, sfc).login(browser)
    RP(disco, fc2, sfc2).login(browser)
    page = browser.http.get(f"{live_server}/logout")
    r = browser.http.post(f"{live_server}/logout?ui_locales=en", data={"csrf_token": _csrf(page.text)})
    assert r.status_code == 200 and "You are logged out" in r.text
    srcs = [s.replace("&amp;", "&") for s in re.findall(r'<iframe[^>]*\bsrc="([^"]+)"', r.text)]
    assert len(srcs) == 2
    q = {k: v[0] for k, v in parse_qs(urlsplit(srcs[0]).query).items()}
    assert srcs[0].startswith("http://127.0.0.1:9/fc?x=1&")
    assert q == {"x": "1", "iss": disco["issuer"], "sid": claims["sid"]}
    csp = r.headers["Content-Security-Policy"]
    frame_src = re.search(r"frame-src ([^;]+)", csp).group(1).split()
    assert sorted(frame_src) == ["http://127.0.0.1:9", "http://localhost:7"]
    assert "script-src 'self'" in csp and "<script" not in r.text and "style=" not in r.text
    # a plain page (no front-channel systems) keeps the default policy
    assert "frame-src" not in browser.http.get(f"{live_server}/logout").headers["Content-Security-Policy"]


def test_front_channel_then_redirect(app, disco, live_server, citizen, make_client):
    fc, sfc = make_client(first_party=True, post_logout_redirect_uris=[LOGOUT_REDIRECT])
    other, so = make_client(first_party=True, frontchannel_logout_uri="http://127.0.0.1:9/fc")
    browser = Browser(live_server)
    t, _ = RP(disco, fc, sfc).login(browser)
    RP(disco, other, so).login(browser)
    r = _end_with_hint(browser.http, disco, t["id_token"], post_logout_redirect_uri=LOGOUT_REDIRECT, state="z")
    assert r.status_code == 200  # the iframes need a page; it moves on by itself (no script)
    assert f'content="3;url={LOGOUT_REDIRECT}?state=z"' in r.text
    assert f'href="{LOGOUT_REDIRECT}?state=z"' in r.text


# ---------------------------------------------------------------- RP-initiated logout


def test_no_hint_asks_for_confirmation_then_redirects_for_a_known_client(disco, live_server, citizen, make_client):
    a, sa = make_client(first_party=True, post_logout_redirect_uris=[LOGOUT_REDIRECT])
    browser = Browser(live_server)
    RP(disco, a, sa).login(browser)
    params = {"client_id": a, "post_logout_redirect_uri": LOGOUT_REDIRECT, "state": "st", "ui_locales": "en"}
    page = browser.http.get(disco["end_session_endpoint"], params=params, allow_redirects=False)
    assert page.status_code == 200 and "Log out of Tongban?" in page.text
    assert browser.http.get(f"{live_server}/account", allow_redirects=False).status_code == 200  # still in
    action = re.search(r'<form method="post" action="([^"]+)"', page.text).group(1).replace("&amp;", "&")
    r = browser.http.post(live_server + action, data={"csrf_token": _csrf(page.text)}, allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == LOGOUT_REDIRECT + "?state=st"
    assert browser.http.get(f"{live_server}/account", allow_redirects=False).status_code == 302
    # a POST without the confirmation form's CSRF token does nothing
    RP(disco, a, sa).login(browser)
    r = browser.http.post(disco["end_session_endpoint"], data=params, allow_redirects=False)
    assert r.status_code == 200 and "csrf_token" in r.text
    assert browser.http.get(f"{live_server}/account", allow_redirects=False).status_code == 200


def test_hint_checks(app, disco, live_server, citizen, make_client, restore_keys):
    from keys.services import keyring

    a, sa = make_client(first_party=True, post_logout_redirect_uris=[LOGOUT_REDIRECT])
    other, _ = make_client(first_party=True)
    browser = Browser(live_server)
    t, claims = RP(disco, a, sa).login(browser)
    # client_id must match the hint's audience
    r = _end_with_hint(browser.http, disco, t["id_token"], client_id=other)
    assert r.status_code == 400
    # a hint from another issuer (signed with our key, even) is refused
    key = keyring().active("RS256")
    now = int(time.time())

    def signed(**over):
        body = {"iss": disco["issuer"], "aud": [a], "sub": claims["sub"], "sid": claims["sid"],
                "iat": now - 7200, "exp": now - 3600, **over}
        return jwt.encode({"alg": "RS256", "kid": key.kid}, body, key.signer)

    r = _end_with_hint(browser.http, disco, signed(iss="https://evil.example"),
                       post_logout_redirect_uri=LOGOUT_REDIRECT)
    assert r.status_code == 400 and "Location" not in r.headers
    assert browser.http.get(f"{live_server}/account", allow_redirects=False).status_code == 200
    # an expired hint is still a hint: logged out, redirected, state echoed, ui_locales honoured
    r = _end_with_hint(browser.http, disco, signed(), post_logout_redirect_uri=LOGOUT_REDIRECT, state="e")
    assert r.status_code == 302 and r.headers["Location"] == LOGOUT_REDIRECT + "?state=e"
    assert browser.http.get(f"{live_server}/account", allow_redirects=False).status_code == 302
    # unregistered target: logged out page, no redirect; in the language asked for
    RP(disco, a, sa).login(browser)
    r = _end_with_hint(browser.http, disco, signed(), post_logout_redirect_uri="http://127.0.0.1:9/x",
                       ui_locales="en-GB zh-CN")
    assert r.status_code == 200 and "Location" not in r.headers and "You are logged out" in r.text
    RP(disco, a, sa).login(browser)
    r = _end_with_hint(browser.http, disco, signed(), ui_locales="zh-CN")
    assert r.status_code == 200 and "You are logged out" not in r.text


def test_hint_for_someone_else_asks_first(disco, live_server, citizen, make_client):
    from people import accounts
    from tests.conftest import OTHER_ID, PASSWORD
    from tongban.extensions import db

    accounts.create_user(OTHER_ID, "李四", PASSWORD, "13900000002")
    db.session.commit()
    a, sa = make_client(first_party=True, post_logout_redirect_uris=[LOGOUT_REDIRECT])
    mine, theirs = Browser(live_server), Browser(live_server)
    RP(disco, a, sa).login(mine)
    step = theirs.authorize(RP(disco, a, sa).auth_url(), login=OTHER_ID)
    assert step.kind == "callback"
    rp = RP(disco, a, sa)
    t_other, _ = rp.login(theirs)
    r = _end_with_hint(mine.http, disco, t_other["id_token"], post_logout_redirect_uri=LOGOUT_REDIRECT)
    assert r.status_code == 200 and "csrf_token" in r.text  # confirmation, not a silent logout
    assert mine.http.get(f"{live_server}/account", allow_redirects=False).status_code == 200


def test_cli_registers_a_front_channel_uri(app):
    import json

    result = app.test_cli_runner().invoke(args=[
        "clients", "create", "--name", "前端系统", "--department", "测试局", "--redirect-uri",
        "http://127.0.0.1:9/cb", "--frontchannel-logout-uri", "http://127.0.0.1:9/fc",
        "--backchannel-logout-uri", "http://127.0.0.1:9/bc", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["frontchannel_logout_uri"] == "http://127.0.0.1:9/fc"
    bad = app.test_cli_runner().invoke(args=[
        "clients", "create", "--name", "x", "--department", "y", "--redirect-uri", "http://127.0.0.1:9/cb",
        "--frontchannel-logout-uri", "http://example.com/fc", "--json"])
    assert bad.exit_code != 0
