"""CIBA (OpenID Client-Initiated Backchannel Authentication, poll mode) over real HTTP: a
window clerk's system asks /oauth/bc-authorize and polls the token endpoint (plain
``requests``, as the spec describes); the citizen answers on /ciba with the scripted
browser; ID tokens validated strictly by joserfc. Every attack is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from sqlalchemy import select, update

from tests.conftest import CITIZEN_ID, OTHER_ID, PASSWORD
from tests.idp.helpers import _CSRF, Browser, discover, validate_id_token

CIBA = "urn:openid:params:grant-type:ciba"


@pytest.fixture
def disco(live_server):
    return discover(live_server)


@pytest.fixture
def clerk_system(make_client):
    return make_client(client_id="window-desk", name="政务服务窗口系统", department="政务服务中心",
                       redirect_uris=[], grant_types=[CIBA], scopes=["openid", "profile", "phone"])


@pytest.fixture
def phone(live_server, citizen):
    b = Browser(live_server)
    b.http.cookies.set("lang", "en")  # the messages asserted below are the English msgids
    assert b.login().status_code == 302
    return b


def _ask(disco, auth, **data) -> requests.Response:
    data.setdefault("scope", "openid profile")
    data.setdefault("login_hint", CITIZEN_ID)
    return requests.post(disco["backchannel_authentication_endpoint"], data=data, auth=auth)


def _poll(disco, auth, auth_req_id) -> requests.Response:
    return requests.post(disco["token_endpoint"], data={"grant_type": CIBA, "auth_req_id": auth_req_id}, auth=auth)


def _error(resp, error, status=400):
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.json()["error"] == error, resp.text
    assert "no-store" in resp.headers.get("Cache-Control", "")


def _rewind_poll():
    """As if the system had waited its interval (instead of sleeping in the test)."""
    from idp.ciba import CibaRequest
    from tongban.extensions import db

    db.session.execute(update(CibaRequest).values(last_polled_at=None))
    db.session.commit()


def _row():
    from idp.ciba import CibaRequest
    from tongban.extensions import db

    db.session.expire_all()
    return db.session.execute(select(CibaRequest).order_by(CibaRequest.id.desc())).scalars().first()


def _answer(browser: Browser, request_id: int, decision: str = "approve") -> requests.Response:
    page = browser.http.get(browser._abs("/account"))  # a form is on it even when /ciba lists nothing
    assert page.status_code == 200, page.text[:300]
    csrf = _CSRF.search(page.text).group(1)
    return browser.http.post(browser._abs(f"/ciba/{request_id}"), data={"csrf_token": csrf, "decision": decision},
                             allow_redirects=False)


def _audit(action):
    from tongban.audit import AuditLog
    from tongban.extensions import db

    db.session.expire_all()
    return db.session.execute(select(AuditLog).where(AuditLog.action == action)).scalars().all()


def test_discovery(disco):
    assert disco["backchannel_authentication_endpoint"].endswith("/oauth/bc-authorize")
    assert disco["backchannel_token_delivery_modes_supported"] == ["poll"]
    assert disco["backchannel_user_code_parameter_supported"] is False
    assert CIBA in disco["grant_types_supported"]


def test_ciba_poll_flow(app, disco, clerk_system, phone, citizen):
    resp = _ask(disco, clerk_system, binding_message="窗口 7 号 · 4821", scope="openid profile phone",
                requested_expiry="120")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"auth_req_id", "expires_in", "interval"}
    assert body["expires_in"] == 120 and body["interval"] == 5
    assert "no-store" in resp.headers["Cache-Control"]
    row = _row()
    assert row.auth_req_id_hash != body["auth_req_id"] and body["auth_req_id"] not in row.auth_req_id_hash
    _error(_poll(disco, clerk_system, body["auth_req_id"]), "authorization_pending")
    _error(_poll(disco, clerk_system, body["auth_req_id"]), "slow_down")  # polled sooner than the interval
    assert _row().poll_interval == 10
    # the citizen's account page points at the waiting request; /ciba shows who asks and the message
    account = phone.http.get(phone._abs("/account"))
    assert "/ciba" in account.text and "waiting for your answer" in account.text
    page = phone.http.get(phone._abs("/ciba"))
    assert "政务服务窗口系统" in page.text and "政务服务中心" in page.text and "窗口 7 号 · 4821" in page.text
    done = _answer(phone, row.id)
    assert done.status_code == 303 and done.headers["Location"].endswith("/ciba")
    _rewind_poll()
    tok = _poll(disco, clerk_system, body["auth_req_id"])
    assert tok.status_code == 200, tok.text
    t = tok.json()
    assert "refresh_token" not in t  # not registered for refresh_token
    claims = validate_id_token(t["id_token"], disco=disco, client_id="window-desk", nonce=None,
                               access_token=t["access_token"])
    assert claims["sub"] == citizen.sub and claims["acr"] == "L1" and claims["name"] == "张三"
    from people.models import LoginSession
    from tongban.clock import to_epoch
    from tongban.extensions import db

    sess = db.session.execute(select(LoginSession).where(LoginSession.user_id == citizen.id)).scalar_one()
    # the phone session that approved: no session was started on the clerk's machine
    assert claims["sid"] == sess.sid and claims["auth_time"] == to_epoch(sess.auth_time)
    assert db.session.query(LoginSession).count() == 1
    info = requests.get(disco["userinfo_endpoint"], headers={"Authorization": f"Bearer {t['access_token']}"})
    assert info.status_code == 200 and info.json()["phone_number"] == "+8613800138000"
    # one time only
    _rewind_poll()
    _error(_poll(disco, clerk_system, body["auth_req_id"]), "invalid_grant")
    assert [r.action for r in _audit("ciba.token_issued")] == ["ciba.token_issued"]
    assert len(_audit("ciba.requested")) == 1 and len(_audit("ciba.approved")) == 1


def test_denied(app, disco, clerk_system, phone):
    body = _ask(disco, clerk_system, binding_message="4821").json()
    assert _answer(phone, _row().id, "deny").status_code == 303
    _error(_poll(disco, clerk_system, body["auth_req_id"]), "access_denied")
    # answered once: approving after denying changes nothing
    again = _answer(phone, _row().id, "approve")
    assert again.status_code == 303 and _row().state == "denied"


def test_another_account_cannot_approve(app, disco, clerk_system, phone, live_server):
    from people import accounts
    from tongban.extensions import db

    accounts.create_user(OTHER_ID, "李四", PASSWORD)
    db.session.commit()
    other = Browser(live_server)
    other.http.cookies.set("lang", "en")
    assert other.login(OTHER_ID).status_code == 302
    body = _ask(disco, clerk_system, binding_message="4821").json()
    row = _row()
    # not listed for the other account, and answering it by id is refused like an unknown request
    assert "4821" not in other.http.get(other._abs("/ciba")).text
    resp = _answer(other, row.id)
    assert resp.status_code == 303
    assert "not found" in other.http.get(other._abs("/ciba")).text
    assert _row().state == "pending"
    assert len(_audit("ciba.wrong_account")) == 1
    _rewind_poll()
    _error(_poll(disco, clerk_system, body["auth_req_id"]), "authorization_pending")


def test_auth_req_id_bound_to_its_system(app, disco, clerk_system, phone, make_client):
    other = make_client(client_id="other-desk", redirect_uris=[], grant_types=[CIBA], scopes=["openid"])
    body = _ask(disco, clerk_system).json()
    _answer(phone, _row().id)
    _error(_poll(disco, other, body["auth_req_id"]), "invalid_grant")
    _error(_poll(disco, clerk_system, "forged-" + body["auth_req_id"]), "invalid_grant")
    bad_secret = (clerk_system[0], "wrong")
    assert _poll(disco, bad_secret, body["auth_req_id"]).status_code == 401
    # still there for its own system
    assert _poll(disco, clerk_system, body["auth_req_id"]).status_code == 200


def test_expired_request(app, disco, clerk_system, phone):
    from idp.ciba import CibaRequest
    from tongban.clock import utcnow
    from tongban.extensions import db

    body = _ask(disco, clerk_system, binding_message="4821").json()
    row = _row()
    db.session.execute(update(CibaRequest).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    _error(_poll(disco, clerk_system, body["auth_req_id"]), "expired_token")
    assert "4821" not in phone.http.get(phone._abs("/ciba")).text
    _answer(phone, row.id)
    assert "expired" in phone.http.get(phone._abs("/ciba")).text and _row().state == "pending"


@pytest.mark.parametrize("message", ["ok\x07bell", "line\nbreak", "\u202eevil", " padded", "x" * 41])
def test_binding_message_is_checked(app, disco, clerk_system, citizen, message):
    resp = _ask(disco, clerk_system, binding_message=message)
    # C0 controls are already refused for every form field (invalid_request); the rest here
    _error(resp, "invalid_request" if "\x07" in message else "invalid_binding_message")
    assert _row() is None


def test_request_errors(app, disco, clerk_system, citizen, make_client, monkeypatch):
    _error(_ask(disco, clerk_system, login_hint="110105194912310021"), "unknown_user_id")  # no such account
    _error(_ask(disco, clerk_system, login_hint="not-an-id"), "unknown_user_id")
    _error(_ask(disco, clerk_system, login_hint=""), "invalid_request")
    _error(_ask(disco, clerk_system, scope="profile"), "invalid_scope")
    _error(_ask(disco, clerk_system, scope="openid id_number"), "invalid_scope")  # not registered
    _error(_ask(disco, clerk_system, id_token_hint="x.y.z"), "invalid_request")
    _error(_ask(disco, clerk_system, login_hint_token="x"), "invalid_request")
    _error(_ask(disco, clerk_system, user_code="1234"), "invalid_request")
    _error(_ask(disco, clerk_system, requested_expiry="0"), "invalid_request")
    _error(_ask(disco, clerk_system, requested_expiry="100000"), "invalid_request")
    _error(_ask(disco, clerk_system, requested_expiry="１２"), "invalid_request")
    _error(_ask(disco, clerk_system, acr_values="L9"), "invalid_request")
    plain = make_client(client_id="no-ciba", redirect_uris=[], grant_types=["client_credentials"], scopes=["openid"])
    _error(_ask(disco, plain), "unauthorized_client")
    assert _ask(disco, (clerk_system[0], "wrong")).status_code == 401
    from tongban.errors import ValidationError

    with pytest.raises(ValidationError):  # a public client cannot register for CIBA
        make_client(name="公开", redirect_uris=[], grant_types=[CIBA], token_endpoint_auth_method="none")
    assert _row() is None
    assert len(_audit("ciba.refused")) == 13


def test_throttled_per_client_and_per_person(app, disco, clerk_system, citizen, monkeypatch):
    monkeypatch.setitem(app.config, "TONGBAN_CIBA_PENDING_PER_USER", 2)
    assert _ask(disco, clerk_system).status_code == 200
    assert _ask(disco, clerk_system).status_code == 200
    _error(_ask(disco, clerk_system), "access_denied", 403)  # a citizen is not flooded with requests
    monkeypatch.setitem(app.config, "TONGBAN_CIBA_RATE_PER_CLIENT", 3)
    resp = _ask(disco, clerk_system)
    _error(resp, "slow_down", 429)
    assert resp.headers["Retry-After"]


def test_stale_session_must_log_in_again(app, disco, clerk_system, phone, citizen):
    from people.models import LoginSession
    from tongban.clock import utcnow
    from tongban.extensions import db

    _ask(disco, clerk_system)
    db.session.execute(update(LoginSession).values(auth_time=utcnow() - timedelta(hours=2)))
    db.session.commit()
    resp = _answer(phone, _row().id)
    assert resp.status_code == 302 and "/login" in resp.headers["Location"] and "force=1" in resp.headers["Location"]
    assert _row().state == "pending"
    # denying needs no fresh log-in
    assert _answer(phone, _row().id, "deny").status_code == 303 and _row().state == "denied"


def test_requested_level_needs_step_up(app, disco, clerk_system, phone):
    _ask(disco, clerk_system, acr_values="L3")
    resp = _answer(phone, _row().id)
    where = resp.headers.get("Location", "")
    assert resp.status_code == 302 and "/mfa/verify" in where and "acr=L3" in where
    assert _row().state == "pending"


def test_approved_at_a_higher_level(app, disco, clerk_system, live_server, citizen):
    from tests.idp.helpers import prove

    phone = Browser(live_server)
    phone.http.cookies.set("lang", "en")
    assert phone.login().status_code == 302
    prove(phone, citizen)
    body = _ask(disco, clerk_system, acr_values="L3").json()
    assert _answer(phone, _row().id).status_code == 303
    t = _poll(disco, clerk_system, body["auth_req_id"]).json()
    claims = validate_id_token(t["id_token"], disco=disco, client_id="window-desk", nonce=None)
    assert claims["acr"] == "L3" and "sms" in claims["amr"]


def test_tokens_end_with_the_approving_session(app, disco, clerk_system, phone, citizen):
    from people import sessions
    from people.models import LoginSession
    from tongban.extensions import db

    body = _ask(disco, clerk_system).json()
    _answer(phone, _row().id)
    t = _poll(disco, clerk_system, body["auth_req_id"]).json()
    sess = db.session.execute(select(LoginSession).where(LoginSession.user_id == citizen.id)).scalar_one()
    sessions.end(sess, "logout")
    db.session.commit()
    info = requests.get(disco["userinfo_endpoint"], headers={"Authorization": f"Bearer {t['access_token']}"})
    assert info.status_code == 401


def test_page_needs_log_in_and_csrf(app, live_server, phone, disco, clerk_system):
    anon = requests.get(f"{live_server}/ciba", allow_redirects=False)
    assert anon.status_code == 302 and "/login" in anon.headers["Location"]
    _ask(disco, clerk_system)
    no_csrf = phone.http.post(phone._abs(f"/ciba/{_row().id}"), data={"decision": "approve"}, allow_redirects=False)
    assert no_csrf.status_code == 400 and _row().state == "pending"


def test_cli_registers_a_ciba_system(app):
    runner = app.test_cli_runner()
    ok = runner.invoke(args=["clients", "create", "--name", "窗口", "--department", "政务服务中心",
                             "--grant-type", CIBA, "--scope", "openid profile", "--json"])
    assert ok.exit_code == 0, ok.output
    assert '"backchannel_token_delivery_mode": "poll"' in ok.output
    bad = runner.invoke(args=["clients", "create", "--name", "x", "--department", "y", "--grant-type",
                              "client_credentials", "--backchannel-token-delivery-mode", "poll"])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1, bad.output


def test_no_tokens_once_the_approving_session_ended(app, disco, clerk_system, phone, citizen):
    from people import sessions
    from people.models import LoginSession
    from tongban.extensions import db

    body = _ask(disco, clerk_system).json()
    _answer(phone, _row().id)
    sess = db.session.execute(select(LoginSession).where(LoginSession.user_id == citizen.id)).scalar_one()
    sessions.end(sess, "logout")
    db.session.commit()
    _error(_poll(disco, clerk_system, body["auth_req_id"]), "access_denied")
