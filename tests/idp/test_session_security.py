"""Ending sessions for real: log-out and password changes end access tokens (deny list by
session), refresh tokens (offline ones too) and the other systems' sessions (back-channel)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

from sqlalchemy import select

from tests.conftest import CITIZEN_ID, PASSWORD
from tongban.extensions import db

REDIRECT = "http://127.0.0.1:9/callback"
BACKCHANNEL = "http://127.0.0.1:9/backchannel"
NEW_PASSWORD = "Another-Passw0rd-2026"
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def _csrf(client, path="/login") -> str:
    return _CSRF.search(client.get(path).get_data(as_text=True)).group(1)


def _login(client, login=CITIZEN_ID, password=PASSWORD, ip="198.51.100.10"):
    return client.post("/login", data={"csrf_token": _csrf(client), "login": login, "password": password,
                                       "next": ""}, environ_base={"REMOTE_ADDR": ip})


def _tokens(client, client_id: str, secret: str, scope="openid profile offline_access") -> dict:
    """The code flow through the browser ``client``; returns the token response."""
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    url = "/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope,
        "state": "s", "nonce": secrets.token_urlsafe(8), "code_challenge": challenge, "code_challenge_method": "S256"})
    resp = client.get(url)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    location = resp.headers["Location"]
    assert location.startswith(REDIRECT), location
    assert "code=" in location, location
    code = parse_qs(urlsplit(location).query)["code"][0]
    auth = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    tok = client.post("/oauth/token", data={"grant_type": "authorization_code", "code": code,
                                            "redirect_uri": REDIRECT, "code_verifier": verifier},
                      headers={"Authorization": f"Basic {auth}"})
    assert tok.status_code == 200, tok.get_data(as_text=True)
    return tok.get_json()


def _refresh(client, client_id, secret, refresh_token):
    auth = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return client.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                       headers={"Authorization": f"Basic {auth}"})


def _userinfo(client, access_token):
    return client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {access_token}"})


def _introspect(client, client_id, secret, token):
    auth = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return client.post("/oauth/introspect", data={"token": token},
                       headers={"Authorization": f"Basic {auth}"}).get_json()


def _claims(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _system(make_client):
    return make_client(first_party=True, backchannel_logout_uri=BACKCHANNEL)


# ---------------------------------------------------------------- log-out


def test_logout_ends_the_sessions_access_tokens(app, browser, citizen, make_client):
    """The attack: an access token kept working for its whole lifetime after log-out."""
    client_id, secret = _system(make_client)
    b = browser("en")
    assert _login(b).status_code == 302
    tok = _tokens(b, client_id, secret, scope="openid profile")
    assert _userinfo(b, tok["access_token"]).status_code == 200
    assert _introspect(b, client_id, secret, tok["access_token"])["active"] is True
    sid = _claims(tok["access_token"])["sid"]

    out = b.post("/logout", data={"id_token_hint": tok["id_token"]})
    assert out.status_code in (200, 302)
    assert _userinfo(b, tok["access_token"]).status_code == 401
    assert _introspect(b, client_id, secret, tok["access_token"]) == {"active": False}
    assert _refresh(b, client_id, secret, tok["refresh_token"]).status_code == 400

    # one deny-list entry for the session, not one per token
    from idp.models import RevokedAccessToken

    keys = set(db.session.execute(select(RevokedAccessToken.jti)).scalars())
    assert f"sid:{sid}" in keys


def test_a_forged_session_denial_needs_a_signature(app, browser, citizen, make_client):
    """Another session's end does not deny this session's tokens."""
    client_id, secret = _system(make_client)
    a, b = browser("en"), browser("en")
    assert _login(a).status_code == 302 and _login(b).status_code == 302
    tok_a = _tokens(a, client_id, secret, scope="openid profile")
    tok_b = _tokens(b, client_id, secret, scope="openid profile")
    assert a.post("/logout", data={"id_token_hint": tok_a["id_token"]}).status_code in (200, 302)
    assert _userinfo(b, tok_a["access_token"]).status_code == 401
    assert _userinfo(b, tok_b["access_token"]).status_code == 200


def test_sessions_ended_elsewhere_end_their_access_tokens(app, browser, citizen, make_client):
    """A system without refresh tokens: nothing recorded its access token's jti anywhere."""
    client_id, secret = make_client(first_party=True, grant_types=["authorization_code"])
    a, b = browser("en"), browser("en")
    assert _login(a).status_code == 302 and _login(b).status_code == 302
    tok_b = _tokens(b, client_id, secret, scope="openid profile")
    # the owner ends the other sessions from the account page
    resp = a.post("/account/sessions/end-others", data={"csrf_token": _csrf(a, "/account")})
    assert resp.status_code == 302
    assert _userinfo(a, tok_b["access_token"]).status_code == 401


# ---------------------------------------------------------------- password change


def test_password_change_ends_every_other_session_and_token(app, browser, citizen, make_client):
    """The attack: someone who knew the old password stays logged in (and keeps an offline
    token) after the owner changed it."""
    from people.models import LoginSession
    from tongban.outbox import OutboxItem

    client_id, secret = _system(make_client)
    thief, owner = browser("en"), browser("en")
    assert _login(thief, ip="192.0.2.50").status_code == 302
    stolen = _tokens(thief, client_id, secret)  # with offline_access: a refresh token that outlives sessions
    stolen_sid = _claims(stolen["access_token"])["sid"]
    # the offline token's next access token no longer carries the session
    refreshed = _refresh(thief, client_id, secret, stolen["refresh_token"]).get_json()
    assert "access_token" in refreshed

    assert _login(owner).status_code == 302
    mine = _tokens(owner, client_id, secret, scope="openid profile")
    resp = owner.post("/account/password", data={"csrf_token": _csrf(owner, "/account"), "current": PASSWORD,
                                                 "new": NEW_PASSWORD, "confirm": NEW_PASSWORD},
                      follow_redirects=True)
    body = resp.get_data(as_text=True)
    assert "password has been changed" in body and "1 other sessions were ended" in body

    # the thief's browser session is over
    assert thief.get("/account").status_code == 302
    db.session.expire_all()
    row = db.session.execute(select(LoginSession).where(LoginSession.sid == stolen_sid)).scalar_one()
    assert row.ended_at is not None and row.end_reason == "password_changed"
    # their access tokens, from the session and from the offline refresh, are denied
    assert _userinfo(thief, stolen["access_token"]).status_code == 401
    assert _userinfo(thief, refreshed["access_token"]).status_code == 401
    # their refresh tokens, offline ones too, are revoked
    again = _refresh(thief, client_id, secret, refreshed["refresh_token"])
    assert again.status_code == 400 and again.get_json()["error"] == "invalid_grant"
    # the system they were signed in to is told (back-channel logout queued)
    items = db.session.execute(select(OutboxItem).where(OutboxItem.kind == "backchannel_logout")).scalars().all()
    assert any(json.loads(i.payload)["sid"] == stolen_sid for i in items)

    # the owner's own session and tokens carry on
    assert owner.get("/account").status_code == 200
    assert _userinfo(owner, mine["access_token"]).status_code == 200
    assert _refresh(owner, client_id, secret, mine["refresh_token"]).status_code == 200
    # and only the new password works
    assert _login(browser("en"), password=PASSWORD, ip="192.0.2.51").status_code == 401
    assert _login(browser("en"), password=NEW_PASSWORD, ip="192.0.2.52").status_code == 302


def test_a_wrong_current_password_ends_nothing(app, browser, citizen):
    other, owner = browser("en"), browser("en")
    assert _login(other).status_code == 302 and _login(owner).status_code == 302
    resp = owner.post("/account/password", data={"csrf_token": _csrf(owner, "/account"),
                                                 "current": "Not-The-Passw0rd", "new": NEW_PASSWORD,
                                                 "confirm": NEW_PASSWORD}, follow_redirects=True)
    assert "current password is wrong" in resp.get_data(as_text=True)
    assert other.get("/account").status_code == 200


def test_a_session_ended_elsewhere_meanwhile_is_not_ended_twice(app, citizen, make_client):
    """Two servers ending one session at once (a logout from two tabs): the one that commits
    second finds it ended and does nothing — no second back-channel logout, no second audit."""
    from sqlalchemy import func, update

    from people import sessions
    from people.models import LoginSession
    from tongban.audit import AuditLog
    from tongban.clock import utcnow
    from tongban.outbox import OutboxItem

    client_id, _ = make_client(backchannel_logout_uri="http://127.0.0.1:9/bc")
    with app.test_request_context("/"):
        sess = sessions.start(citizen, {})
        sessions.note_client(sess, client_id)
        db.session.commit()
        row_id = sess.id
        stale = db.session.get(LoginSession, row_id)  # what this server loaded before the other ended it
        assert stale.ended_at is None
        with db.engine.begin() as other:  # the other server ends it and commits
            other.execute(update(LoginSession).where(LoginSession.id == row_id)
                          .values(ended_at=utcnow(), end_reason="logout"))

    def count(model, *where) -> int:
        return db.session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()

    items = count(OutboxItem, OutboxItem.target == "http://127.0.0.1:9/bc")
    ended = count(AuditLog, AuditLog.action == "session.ended")
    with app.test_request_context("/"):
        assert sessions.end(stale, "logout") is False
        db.session.commit()
    assert stale.ended_at is not None
    assert count(OutboxItem, OutboxItem.target == "http://127.0.0.1:9/bc") == items
    assert count(AuditLog, AuditLog.action == "session.ended") == ended
