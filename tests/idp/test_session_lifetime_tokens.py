"""A log-in session past its idle or absolute lifetime stops its tokens even when its browser
never comes back: refresh, introspection and userinfo refuse them, and the session is ended
(refresh tokens revoked, access tokens denied) without waiting for the sweep."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests.idp.test_session_security import _claims, _introspect, _login, _refresh, _system, _tokens, _userinfo
from tongban.extensions import db


def _age(sid: str, *, created: timedelta, seen: timedelta) -> None:
    from people.models import LoginSession

    with db.engine.begin() as conn:
        began, seen_at = conn.execute(select(LoginSession.created_at, LoginSession.last_seen)
                                      .where(LoginSession.sid == sid)).one()
        conn.execute(update(LoginSession).where(LoginSession.sid == sid).values(
            created_at=began - created, last_seen=seen_at - seen))


def _ended(sid: str):
    from people.models import LoginSession

    db.session.rollback()
    return db.session.execute(select(LoginSession.ended_at, LoginSession.end_reason)
                              .where(LoginSession.sid == sid)).one()


@pytest.mark.parametrize("created,seen", [
    (timedelta(hours=13), timedelta(hours=13)),     # the reviewer's case: both limits passed
    (timedelta(hours=3), timedelta(hours=3)),       # idle only (120 min)
    (timedelta(hours=13), timedelta(minutes=0)),    # absolute only (12 h), seen just now
], ids=["both", "idle", "absolute"])
def test_an_expired_sessions_refresh_token_is_refused_and_the_session_ends(app, browser, citizen, make_client,
                                                                          created, seen):
    client_id, secret = _system(make_client)
    b = browser("en")
    assert _login(b).status_code == 302
    tok = _tokens(b, client_id, secret, scope="openid profile")  # no offline_access: bound to the session
    sid = _claims(tok["access_token"])["sid"]
    _age(sid, created=created, seen=seen)

    rp = app.test_client()  # the relying party's back end, not the citizen's browser
    assert _introspect(rp, client_id, secret, tok["refresh_token"]) == {"active": False}
    assert _introspect(rp, client_id, secret, tok["access_token"]) == {"active": False}
    assert _userinfo(rp, tok["access_token"]).status_code == 401
    r = _refresh(rp, client_id, secret, tok["refresh_token"])
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_grant"
    ended_at, reason = _ended(sid)
    assert ended_at is not None and reason == "expired"
    # ended for real: access tokens of the session are on the deny list
    from idp.tokens import is_denied

    assert is_denied(_claims(tok["access_token"])["jti"], sid)


def test_a_live_sessions_refresh_token_still_works(app, browser, citizen, make_client):
    client_id, secret = _system(make_client)
    b = browser("en")
    assert _login(b).status_code == 302
    tok = _tokens(b, client_id, secret, scope="openid profile")
    sid = _claims(tok["access_token"])["sid"]
    _age(sid, created=timedelta(hours=11), seen=timedelta(minutes=100))  # inside both limits
    rp = app.test_client()
    assert _introspect(rp, client_id, secret, tok["access_token"])["active"] is True
    assert _userinfo(rp, tok["access_token"]).status_code == 200
    r = _refresh(rp, client_id, secret, tok["refresh_token"])
    assert r.status_code == 200
    assert _introspect(rp, client_id, secret, r.get_json()["refresh_token"])["active"] is True
    assert _ended(sid)[0] is None


def test_an_offline_refresh_token_outlives_the_session(app, browser, citizen, make_client):
    client_id, secret = _system(make_client)
    b = browser("en")
    assert _login(b).status_code == 302
    tok = _tokens(b, client_id, secret, scope="openid profile offline_access")
    sid = _claims(tok["access_token"])["sid"]
    _age(sid, created=timedelta(hours=13), seen=timedelta(hours=13))
    r = _refresh(app.test_client(), client_id, secret, tok["refresh_token"])
    assert r.status_code == 200
