"""The account page's "log out everywhere": every session of the account ends (this device
and every other), and every system signed in through any of them gets a strict back-channel
logout token for its session; a forged request (no CSRF token, another site) changes nothing."""

from __future__ import annotations

import re

from sqlalchemy import select

from tests.idp.helpers import Browser
from tests.idp.test_logout import Receiver, disco, receiver, strict_logout_token  # noqa: F401 (fixtures)
from tests.idp.test_oidc_authlib import RP


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def _everywhere_form(page: str) -> str:
    """The csrf token of the form posting to /account/logout-everywhere (the button is there)."""
    m = re.search(r'<form method="post" action="/account/logout-everywhere">\s*'
                  r'<input id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert m, "no log-out-everywhere form on the account page"
    return m.group(1)


def test_log_out_everywhere_ends_every_session_and_tells_every_system(app, disco, live_server, citizen,  # noqa: F811
                                                                     make_client, receiver):  # noqa: F811
    a, sa = make_client(name="公积金系统", first_party=True, backchannel_logout_uri=receiver.url + "/a")
    b, sb = make_client(name="社保系统", first_party=True, backchannel_logout_uri=receiver.url + "/b")
    laptop, phone = Browser(live_server), Browser(live_server)
    # two devices, each signed in to both systems: two sessions, four (system, session) pairs
    ta_l, ia_l = RP(disco, a, sa).login(laptop)
    tb_l, ib_l = RP(disco, b, sb).login(laptop)
    ta_p, ia_p = RP(disco, a, sa).login(phone)
    tb_p, ib_p = RP(disco, b, sb).login(phone)
    assert ia_l["sid"] == ib_l["sid"] != ia_p["sid"] == ib_p["sid"]

    page = phone.http.get(f"{live_server}/account?lang=en")
    assert "Log out everywhere" in page.text
    r = phone.http.post(f"{live_server}/account/logout-everywhere?lang=en",
                        data={"csrf_token": _everywhere_form(page.text)}, allow_redirects=False)
    assert r.status_code == 200 and "You are logged out" in r.text
    assert "logged out on every device (2 sessions ended)" in r.text
    assert "Expires=Thu, 01 Jan 1970" in r.headers.get("Set-Cookie", "")  # this browser's cookie cleared

    # both devices are logged out of Tongban
    for device in (laptop, phone):
        resp = device.http.get(f"{live_server}/account", allow_redirects=False)
        assert resp.status_code == 302 and "/login" in resp.headers["Location"]

    # every system of both sessions got a strict logout token for its own session
    got = receiver.wait_for(4)
    pairs = set()
    for d in got:
        cid = {"/backchannel/a": a, "/backchannel/b": b}[d["path"]]
        claims = strict_logout_token(d["form"]["logout_token"], disco=disco, client_id=cid)
        assert claims["sub"] == citizen.sub
        pairs.add((cid, claims["sid"]))
    assert pairs == {(a, ia_l["sid"]), (b, ia_l["sid"]), (a, ia_p["sid"]), (b, ia_p["sid"])}

    # the session-bound refresh tokens died with the sessions, on both devices
    for cid, secret, tok in ((a, sa, ta_l), (b, sb, tb_l), (a, sa, ta_p), (b, sb, tb_p)):
        assert RP(disco, cid, secret).refresh(tok["refresh_token"]).json()["error"] == "invalid_grant"

    from people.models import LoginSession
    from tongban.audit import AuditLog
    from tongban.extensions import db

    db.session.expire_all()
    rows = db.session.execute(select(LoginSession).where(LoginSession.user_id == citizen.id)).scalars().all()
    assert rows and all(s.ended_at is not None and s.end_reason == "logout_everywhere" for s in rows)
    events = db.session.execute(select(AuditLog).where(AuditLog.action == "account.logout_everywhere")).scalars()
    assert [e.actor for e in events] == [f"user:{citizen.sub}"]


def test_log_out_everywhere_is_refused_without_the_csrf_token(app, disco, live_server, citizen,  # noqa: F811
                                                              make_client, receiver):  # noqa: F811
    a, sa = make_client(first_party=True, backchannel_logout_uri=receiver.url)
    laptop, phone = Browser(live_server), Browser(live_server)
    RP(disco, a, sa).login(laptop)
    RP(disco, a, sa).login(phone)
    # a cross-site form post (the attacker has the cookie ride along, not the token)
    r = phone.http.post(f"{live_server}/account/logout-everywhere", data={"csrf_token": "forged"},
                        headers={"Origin": "https://evil.example"}, allow_redirects=False)
    assert r.status_code == 400
    r = phone.http.post(f"{live_server}/account/logout-everywhere", allow_redirects=False)
    assert r.status_code == 400
    for device in (laptop, phone):
        assert device.http.get(f"{live_server}/account", allow_redirects=False).status_code == 200
    assert receiver.received == []


def test_log_out_everywhere_needs_a_session(live_server):
    r = Browser(live_server).http.post(f"{live_server}/account/logout-everywhere", allow_redirects=False)
    assert r.status_code == 400  # no session, no CSRF token: refused before anything
