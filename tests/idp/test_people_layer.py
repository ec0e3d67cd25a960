"""The people layer and the protocol layer talk through signals, the grant hooks through one
typed per-request context, and failures through error classes mapped in one place
(docs/architecture-idp.md). Attacks on those seams are refused."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.conftest import CITIZEN_ID, OTHER_ID, PASSWORD, USCC
from tests.idp.test_enterprise import _authorise_agent, _claim, _logged_in


def _refresh_token(user, sid: str | None, client_id: str, *, offline: bool = False):
    from idp import tokens
    from tongban.clock import token

    return tokens.save_refresh_token(
        token(32), family_id=tokens.new_family_id(), client_id=client_id, user_id=user.id, sid=sid,
        scope="openid", auth_time=None, acr="L1", amr="pwd", offline=offline, access_jti=token(16),
        access_exp=2_000_000_000)


def test_ending_a_session_revokes_its_tokens_and_queues_back_channel_logout(app, citizen, make_client):
    """people.sessions.end only sends ``session_ended``; idp's receiver does the protocol's part."""
    from idp import tokens
    from idp.logout import KIND
    from people import sessions
    from tongban.extensions import db
    from tongban.outbox import OutboxItem

    client_id, _ = make_client(backchannel_logout_uri="https://rp.example.gov.cn/bclogout")
    with app.test_request_context("/"):
        sess = sessions.start(citizen, {})
        sessions.note_client(sess, client_id)
        bound = _refresh_token(citizen, sess.sid, client_id)
        offline = _refresh_token(citizen, sess.sid, client_id, offline=True)
        db.session.commit()
        sessions.end(sess, "logout")
        db.session.commit()
    db.session.expire_all()
    assert db.session.get(type(bound), bound.id).revoked_at is not None
    assert db.session.get(type(offline), offline.id).revoked_at is None  # offline access outlives it
    assert tokens.is_denied("any-jti", sess.sid)  # the access tokens issued through it are denied
    queued = db.session.execute(select(OutboxItem).where(OutboxItem.kind == KIND)).scalars().all()
    assert [(q.target, q.data["sid"]) for q in queued] == [("https://rp.example.gov.cn/bclogout", sess.sid)]


def test_password_change_revokes_every_refresh_token_through_the_signal(app, citizen, make_client):
    from people import accounts, sessions
    from tongban.extensions import db

    client_id, _ = make_client()
    with app.test_request_context("/"):
        sess = sessions.start(citizen, {})
        kept = _refresh_token(citizen, sess.sid, client_id)
        other = _refresh_token(citizen, None, client_id, offline=True)
        db.session.commit()
        ended = accounts.change_password(citizen, PASSWORD, "Another-Passw0rd!x", keep_sid=sess.sid)
        db.session.commit()
    assert ended == 0
    db.session.expire_all()
    assert db.session.get(type(kept), kept.id).revoked_at is None  # this session's stay
    assert db.session.get(type(other), other.id).revoked_at is not None  # whoever knew the old one is out


def test_only_enabled_registered_systems_are_known(app, make_client):
    """An agent authorisation names systems; the register (idp) answers which exist."""
    from idp import clients as registry
    from people.signals import known_systems
    from tongban.extensions import db

    live, _ = make_client()
    disabled, _ = make_client(name="停用系统")
    registry.set_enabled(disabled, False)
    db.session.commit()
    assert known_systems([live, disabled, "tb_forged0000000"]) == {live}
    assert known_systems([]) == set()


def test_agent_authorised_for_a_forged_system_is_refused(app, live_server, citizen, make_client):
    """The legal representative posts a client_id that is not in the register: refused, nothing stored."""
    from people import accounts, enterprise
    from people.enterprise import AgentAuthorisation
    from tongban.extensions import db

    enterprise.add_register_record(USCC, "通办示范科技有限公司", CITIZEN_ID, "张三")
    accounts.create_user(OTHER_ID, "王五", PASSWORD)
    db.session.commit()
    make_client(scopes=["openid", "profile", "enterprise"])
    rep = _logged_in(live_server, CITIZEN_ID)
    _claim(rep)
    resp = _authorise_agent(rep, ["tb_forged0000000"])
    assert resp.status_code == 303  # back to the page, the message flashed (the form pattern)
    db.session.expire_all()
    assert db.session.execute(select(func.count()).select_from(AgentAuthorisation)).scalar() == 0


def test_grant_context_is_one_typed_object_per_request(app):
    from idp.context import GrantContext, ReusedRefresh, grant_context

    with app.app_context(), app.test_request_context("/oauth/token"):  # a request has its own app context
        ctx = grant_context()
        assert isinstance(ctx, GrantContext) and grant_context() is ctx
        ctx.reused_refresh = ReusedRefresh("family", "client")
    with app.app_context(), app.test_request_context("/oauth/token"):
        assert grant_context().reused_refresh is None  # nothing leaks into the next request


def test_refresh_token_reuse_is_detected_through_the_context(app, live_server, citizen, make_client):
    """A rotated refresh token replayed: invalid_grant, and its whole family is revoked (RFC 9700 §4.14)."""
    import requests

    from idp.models import RefreshToken
    from tongban.clock import digest
    from tongban.extensions import db

    client_id, secret = make_client()
    row = _refresh_token(citizen, None, client_id, offline=True)
    raw = "r-" + "x" * 40
    row.token_hash = digest(raw)
    db.session.commit()
    first = requests.post(f"{live_server}/oauth/token", data={"grant_type": "refresh_token", "refresh_token": raw},
                          auth=(client_id, secret), timeout=10)
    assert first.status_code == 200, first.text
    second = requests.post(f"{live_server}/oauth/token", data={"grant_type": "refresh_token", "refresh_token": raw},
                           auth=(client_id, secret), timeout=10)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    db.session.expire_all()
    family = db.session.execute(select(RefreshToken).where(RefreshToken.family_id == row.family_id)).scalars().all()
    assert len(family) == 2 and all(r.revoked_at is not None for r in family)


@pytest.mark.parametrize("package", ["people", "idp", "keys"])
def test_every_error_class_has_its_own_code(package):
    import importlib
    import inspect

    from tongban.errors import TongbanError

    module = importlib.import_module(f"{package}.errors")
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, TongbanError) and c.__module__ == module.__name__ and not c.__name__.startswith("_")]
    assert classes
    codes = [c.code for c in classes if c.code != "not_found"]
    assert len(codes) == len(set(codes)), f"{package}.errors: a code used twice"


def test_domain_errors_map_to_json_for_apis_and_to_a_page_for_browsers(app):
    """One mapping (tongban.views): the same failure answers JSON {"error": code} or a page."""
    from people.errors import UnknownUser

    with app.app_context(), app.test_request_context("/api/v1/licences"):
        api = app.make_response(app.handle_user_exception(UnknownUser("没有这个账号。")))
    assert api.status_code == 404
    assert api.get_json() == {"error": "unknown_user", "error_description": "没有这个账号。"}
    with app.app_context(), app.test_request_context("/account", headers={"Accept": "text/html"}):
        page = app.make_response(app.handle_user_exception(UnknownUser("没有这个账号。")))
    assert page.status_code == 404 and "没有这个账号。" in page.get_data(as_text=True)


def test_form_without_csrf_token_is_refused_in_chinese_and_changes_nothing(app, live_server, citizen):
    """Ending a session by a forged cross-site POST (no CSRF token): 400, the session lives on."""
    from people.models import LoginSession
    from tests.idp.helpers import Browser
    from tongban.extensions import db

    b = Browser(live_server)
    assert b.login(CITIZEN_ID).status_code == 302
    sid = db.session.execute(select(LoginSession.sid).where(LoginSession.ended_at.is_(None))).scalar_one()
    resp = b.http.post(b._abs(f"/account/sessions/{sid}/end"), data={}, allow_redirects=False,
                       headers={"Accept-Language": "zh-CN"})
    assert resp.status_code == 400
    db.session.expire_all()
    assert db.session.execute(select(LoginSession.ended_at).where(LoginSession.sid == sid)).scalar_one() is None


def test_role_required_lets_staff_in_and_refuses_everybody_else(app, citizen, monkeypatch):
    """people.auth.role_required: no session → log-in page; a citizen → 403 and an audit event;
    a clerk of the operating authority → the page."""
    from people import accounts, auth
    from tongban.audit import AuditLog
    from tongban.extensions import db

    @auth.role_required("clerk")
    def page():
        return "counter"

    with app.app_context(), app.test_request_context("/clerk/x"):
        monkeypatch.setattr(auth, "current_user", lambda: None)
        resp = page()
        assert resp.status_code == 302 and "/login" in resp.location
    with app.app_context(), app.test_request_context("/clerk/x"):
        user = db.session.merge(citizen)
        monkeypatch.setattr(auth, "current_user", lambda: user)
        _body, status = page()
        assert status == 403
        assert db.session.execute(select(func.count()).select_from(AuditLog).where(
            AuditLog.action == "staff.access_denied")).scalar() == 1
        org = accounts.ensure_org(app.config["TONGBAN_AUTHORITY_USCC"], "通办运营中心")
        accounts.add_role(user, org, "clerk")
        db.session.commit()
        assert page() == "counter"
