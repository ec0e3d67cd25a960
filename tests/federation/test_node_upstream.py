"""Logging in through a real upstream OpenID provider (node-oidc-provider from the npm registry,
tests/federation/provider.mjs): accounts created and linked at the mapped level, amr fed,
failures that leave the password log-in working, and logging out both ways."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urljoin, urlsplit

import requests
from sqlalchemy import select

from tests.conftest import CITIZEN_ID, PASSWORD
from tests.federation.conftest import CLIENT_ID, NEW_ID, register
from tests.idp.helpers import LOGOUT_REDIRECT, discover
from tests.idp.test_logout import receiver, strict_logout_token  # noqa: F401  (fixture)
from tests.idp.test_oidc_authlib import RP


def _user(id_number):
    from people.models import User
    from tongban.extensions import db

    db.session.expire_all()
    return db.session.execute(select(User).where(User.id_number == id_number)).scalar_one_or_none()


def _sessions(user):
    from people.models import LoginSession
    from tongban.extensions import db

    db.session.expire_all()
    return list(db.session.execute(select(LoginSession).where(LoginSession.user_id == user.id)
                                   .order_by(LoginSession.id)).scalars())


def _audit(action):
    from tongban.audit import AuditLog
    from tongban.extensions import db

    db.session.expire_all()
    return list(db.session.execute(select(AuditLog).where(AuditLog.action == action)).scalars())


def test_login_page_offers_the_upstream(client, province):
    page = client.get("/login")
    assert "用省政务服务网登录" in page.get_data(as_text=True)
    assert 'action="/federation/province/login"' in page.get_data(as_text=True)


def test_first_login_creates_the_account_at_the_mapped_level_then_links(province, fed_browser, live_server,
                                                                        make_client):
    from federation.models import FederatedSession, UpstreamLink
    from tongban.extensions import db

    b = fed_browser()
    resp = b.upstream_login("lisi")
    assert resp.status_code == 302 and resp.headers["Location"] == "/account", resp.text[:500]
    user = _user(NEW_ID)
    assert user is not None and user.name == "李四" and user.assurance_level == 3  # loa-high=L3
    [sess] = _sessions(user)
    assert sess.amr == "fed" and sess.acr == "L3" and sess.ended_at is None
    fed = db.session.get(FederatedSession, sess.sid)
    assert fed.upstream_sub == "lisi" and fed.upstream_acr == "loa-high" and fed.upstream_sid
    [login] = _audit("federation.login")
    assert '"upstream_acr": "loa-high"' in login.detail and '"upstream_sub": "lisi"' in login.detail

    # a system logging in through Tongban sees amr fed and the level
    cid, secret = make_client(first_party=True)
    disco = discover(live_server)
    _, claims = RP(disco, cid, secret).login(b)
    assert claims["amr"] == ["fed"] and claims["acr"] == "L3" and claims["sub"] == user.sub

    # the second log-in (another browser) links to the same account
    again = fed_browser().upstream_login("lisi")
    assert again.status_code == 302
    assert _user(NEW_ID).id == user.id
    links = list(db.session.execute(select(UpstreamLink)).scalars())
    assert [(lk.upstream_sub, lk.user_id) for lk in links] == [("lisi", user.id)]
    assert len(_sessions(user)) == 2


def test_existing_password_account_is_linked_by_id_number(province, fed_browser, citizen):
    resp = fed_browser().upstream_login("zhangsan")
    assert resp.status_code == 302
    user = _user(CITIZEN_ID)
    assert user.sub == citizen.sub
    assert user.assurance_level == 2  # loa-substantial=L2
    [sess] = _sessions(user)
    assert (sess.acr, sess.amr) == ("L2", "fed")


def test_unmapped_acr_gives_l1(province, fed_browser):
    from tests.federation.conftest import THIRD_ID

    assert fed_browser().upstream_login("low").status_code == 302
    user = _user(THIRD_ID)
    assert user.assurance_level == 1 and _sessions(user)[0].acr == "L1"


def test_refused_at_the_upstream_gives_a_clear_page_and_the_password_still_works(province, fed_browser,
                                                                                  citizen):
    b = fed_browser()
    resp = b.upstream_login("nobody")  # the upstream answers error=access_denied
    assert resp.status_code == 403
    text = resp.text
    assert "省政务服务网" in text and "登录已取消或被拒绝" in text
    assert 'href="/login?' in text
    [failed] = _audit("federation.login_failed")
    assert "upstream_error" in failed.detail and "access_denied" in failed.detail
    assert b.login(CITIZEN_ID, PASSWORD).status_code == 302


def test_unverified_or_invalid_id_number_is_refused(province, fed_browser):
    from tests.federation.conftest import THIRD_ID

    for login in ("unverified", "badnumber"):
        resp = fed_browser().upstream_login(login)
        assert resp.status_code == 403 and "没有确认您的身份证号" in resp.text
    assert _user(THIRD_ID) is None


def test_another_upstream_subject_with_the_same_id_number(app, province, fed_browser):
    """An untrusted upstream cannot move an ID number to another of its subjects; a trusted one
    can (the link is replaced, audited)."""
    from federation.models import Upstream, UpstreamLink
    from tongban.extensions import db

    assert fed_browser().upstream_login("lisi").status_code == 302
    resp = fed_browser().upstream_login("lisi-second")
    assert resp.status_code == 403 and "身份证" in resp.text
    [conflict] = _audit("federation.login_failed")
    assert "link_conflict" in conflict.detail
    db.session.execute(select(Upstream)).scalar_one().trusted_id_numbers = True
    db.session.commit()
    assert fed_browser().upstream_login("lisi-second").status_code == 302
    db.session.expire_all()
    assert [lk.upstream_sub for lk in db.session.execute(select(UpstreamLink)).scalars()] == ["lisi-second"]
    assert len(_audit("federation.link_replaced")) == 1


def test_upstream_down_gives_a_clear_page_and_the_password_still_works(app, live_server, fed_browser, citizen):
    from tests.conftest import _free_port

    register("province", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    b = fed_browser()
    resp = b.start_upstream()
    assert resp.status_code == 502
    assert "省政务服务网暂时无法登录，请使用密码登录" in resp.text
    [failed] = _audit("federation.login_failed")
    assert failed.outcome == "failure" and "unreachable" in failed.detail
    assert b.login(CITIZEN_ID, PASSWORD).status_code == 302


def test_logout_at_tongban_logs_out_at_the_upstream(province, fed_browser, live_server, make_client,
                                                    node_upstream):
    cid, secret = make_client(first_party=True, post_logout_redirect_uris=[LOGOUT_REDIRECT])
    disco = discover(live_server)
    b = fed_browser()
    assert b.upstream_login("lisi").status_code == 302
    token, _ = RP(disco, cid, secret).login(b)
    resp = b.http.get(disco["end_session_endpoint"], params={
        "id_token_hint": token["id_token"], "post_logout_redirect_uri": LOGOUT_REDIRECT, "state": "s1"},
        allow_redirects=False)
    assert resp.status_code == 302
    where = urlsplit(resp.headers["Location"])
    assert f"{where.scheme}://{where.netloc}" == node_upstream["issuer"]
    q = {k: v[0] for k, v in parse_qs(where.query).items()}
    assert q["post_logout_redirect_uri"] == f"{live_server}/federation/logged-out"
    assert q["client_id"] == CLIENT_ID and q["id_token_hint"].count(".") == 2
    assert [s.ended_at is not None for s in _sessions(_user(NEW_ID))] == [True]
    # at the upstream: its confirmation form, then back to Tongban, then on to the system
    page = b.http.get(resp.headers["Location"], allow_redirects=False)
    assert page.status_code == 200 and "logoutForm" in page.text
    import re

    action = re.search(r'action="([^"]+)"', page.text).group(1)
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text).group(1)
    back = b.http.post(urljoin(resp.headers["Location"], action), data={"xsrf": xsrf, "logout": "yes"},
                       allow_redirects=False)
    assert back.status_code in (302, 303)
    assert back.headers["Location"].startswith(f"{live_server}/federation/logged-out")
    final = b.http.get(back.headers["Location"], allow_redirects=False)
    assert final.status_code == 302 and final.headers["Location"] == LOGOUT_REDIRECT + "?state=s1"


def test_upstream_backchannel_logout_ends_the_session_and_fans_out(province, fed_browser, live_server,
                                                                   make_client, node_upstream, receiver):  # noqa: F811
    cid, secret = make_client(first_party=True, backchannel_logout_uri=receiver.url)
    disco = discover(live_server)
    b = fed_browser()
    assert b.upstream_login("lisi").status_code == 302
    _, claims = RP(disco, cid, secret).login(b)
    # the person logs out at the upstream (its own end_session, no Tongban involved)
    issuer = node_upstream["issuer"]
    page = b.http.get(f"{issuer}/session/end", allow_redirects=False)
    import re

    action = re.search(r'action="([^"]+)"', page.text).group(1)
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text).group(1)
    done = b.http.post(urljoin(issuer, action), data={"xsrf": xsrf, "logout": "yes"}, allow_redirects=False)
    assert done.status_code in (200, 302, 303)
    [got] = receiver.wait_for(1)
    logout = strict_logout_token(got["form"]["logout_token"], disco=disco, client_id=cid)
    assert logout["sid"] == claims["sid"]
    deadline = time.monotonic() + 5
    while not all(s.ended_at for s in _sessions(_user(NEW_ID))):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    [sess] = _sessions(_user(NEW_ID))
    assert sess.end_reason == "upstream_logout"
    [event] = [e for e in _audit("federation.backchannel_logout") if e.outcome == "success"]
    assert '"ended": 1' in event.detail
    assert b.http.get(f"{live_server}/account", allow_redirects=False).status_code == 302  # logged out
    assert requests.get(f"{live_server}/account", allow_redirects=False).status_code == 302
