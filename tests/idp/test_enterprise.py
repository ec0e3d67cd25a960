"""Enterprises (legal persons) over real HTTP: claiming, administrators, agents, acting for an
enterprise at one system and not another, and authority ending everywhere at once.

The relying party is Authlib's OAuth2Session; ID tokens are validated with joserfc."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
import requests

from tests.conftest import CITIZEN_ID, OTHER_ID, PASSWORD, USCC
from tests.idp.helpers import _CSRF, Browser, Step, bearer, discover, prove, proven_session, validate_id_token
from tests.idp.test_oidc_authlib import RP

ENTERPRISE_NAME = "通办示范科技有限公司"
AGENT_NAME = "王五"
SCOPE = "openid profile enterprise"


@pytest.fixture
def disco(live_server):
    return discover(live_server)


@pytest.fixture
def register(app):
    from people import enterprise
    from tongban.extensions import db

    enterprise.add_register_record(USCC, ENTERPRISE_NAME, CITIZEN_ID, "张三")
    db.session.commit()


@pytest.fixture
def agent_user(app):
    from people import accounts
    from tongban.extensions import db

    user = accounts.create_user(OTHER_ID, AGENT_NAME, PASSWORD)
    db.session.commit()
    return user


@pytest.fixture
def systems(make_client):
    scopes = ["openid", "profile", "enterprise", "offline_access"]
    x = make_client(name="公积金系统", scopes=scopes)
    y = make_client(name="社保系统", scopes=scopes)
    return x, y


def _id_number(seq: int) -> str:
    from tongban.identifiers import id_check_char

    first17 = f"11010519900101{seq:03d}"
    return first17 + id_check_char(first17)


def _citizen(id_number: str, name: str = "赵六"):
    from people import accounts
    from tongban.extensions import db

    user = accounts.create_user(id_number, name, PASSWORD)
    user.assurance_level = 3  # identity verified: administrators must be
    db.session.commit()
    return user


def _post_form(browser: Browser, page_url: str, action: str, data: dict) -> requests.Response:
    page = browser.http.get(browser._abs(page_url))
    assert page.status_code == 200, page.text[:300]
    data = {"csrf_token": _CSRF.search(page.text).group(1), **data}
    return browser.http.post(browser._abs(action), data=data, allow_redirects=False)


def _logged_in(live_server, login: str, *, proven: bool = True) -> Browser:
    """A browser logged in as ``login``; ``proven``: identity-verified, SMS second factor in the session."""
    from people import accounts

    b = Browser(live_server)
    assert b.login(login).status_code == 302
    if proven:
        prove(b, accounts.find_user_by_login(login), phone=f"1370013{login[-4:].replace('X', '0')}")
    return b


def _claim(browser: Browser, uscc: str = USCC) -> requests.Response:
    return _post_form(browser, "/enterprise/", "/enterprise/claim", {"uscc": uscc})


def _authorise_agent(browser: Browser, client_ids: list[str], until_days: int = 30) -> requests.Response:
    from idp.enterprise_views import _LOCAL_FORMAT, _to_local
    from tongban.clock import utcnow

    start = _to_local(utcnow() - timedelta(minutes=5))
    return _post_form(browser, f"/enterprise/{USCC}", f"/enterprise/{USCC}/agents", {
        "id_number": OTHER_ID, "systems": client_ids, "valid_from": start.strftime(_LOCAL_FORMAT),
        "valid_until": (start + timedelta(days=until_days)).strftime(_LOCAL_FORMAT)})


def _is_chooser(step: Step) -> bool:
    return step.kind == "page" and step.resp is not None and 'name="choice"' in step.resp.text


def _choices(step: Step) -> list[str]:
    return [html.unescape(v) for v in re.findall(r'name="choice" value="([^"]+)"', step.resp.text)]


def _choose(browser: Browser, step: Step, choice: str) -> Step:
    page = step.resp.text
    fields = {name: html.unescape(value) for name, value in
              re.findall(r'<input[^>]*name="(csrf_token|next|client_id)"[^>]*value="([^"]*)"', page)}
    fields.update({name: html.unescape(value) for value, name in
                   re.findall(r'<input[^>]*value="([^"]*)"[^>]*name="(next|client_id)"', page)})
    fields["choice"] = choice
    return browser.walk("/enterprise/act", method="POST", data=fields, seen=step.seen)


def _sign_in(rp: RP, browser: Browser, login: str, choice: str | None) -> tuple[dict, dict, list[str]]:
    """Authorize at ``rp`` (log in, choose, consent); returns (token, ID token claims, choices offered)."""
    step = browser.walk(rp.auth_url())
    if step.kind == "login":
        step = browser.submit_login(step, login)
    offered: list[str] = []
    if _is_chooser(step):
        offered = _choices(step)
        step = _choose(browser, step, choice or "self")
    if step.kind == "consent":
        step = browser.submit_consent(step)
    assert step.kind == "callback", step.resp.text[:500] if step.resp is not None else step.url
    token = rp.exchange(step.url)
    claims = validate_id_token(token["id_token"], disco=rp.disco, client_id=rp.client_id, nonce=rp.nonce,
                               access_token=token["access_token"])
    return token, claims, offered


def _session(sid: str):
    from people.models import LoginSession
    from tongban.extensions import db

    db.session.expire_all()
    return db.session.query(LoginSession).filter_by(sid=sid).one()


# ---------------------------------------------------------------- claiming


def test_claim_confirmed_by_register(live_server, citizen, register):
    from people.models import Organisation
    from tongban.audit import AuditLog
    from tongban.extensions import db

    b = _logged_in(live_server, CITIZEN_ID)
    resp = _claim(b, USCC.lower())
    assert resp.status_code == 303 and resp.headers["Location"].endswith(f"/enterprise/{USCC}")
    db.session.expire_all()
    org = db.session.query(Organisation).filter_by(uscc=USCC).one()
    assert org.legal_rep_id == citizen.id and org.name == ENTERPRISE_NAME
    assert db.session.query(AuditLog).filter_by(action="enterprise.claim", outcome="success").count() == 1
    page = b.http.get(f"{live_server}/enterprise/{USCC}")
    assert page.status_code == 200 and ENTERPRISE_NAME in page.text


def test_claim_refused_by_register(live_server, citizen, agent_user, register):
    from people.models import Organisation
    from tongban.audit import AuditLog
    from tongban.extensions import db

    b = _logged_in(live_server, OTHER_ID)  # not the registered legal representative
    assert _claim(b).status_code == 303
    assert _claim(b, USCC[:-1] + ("0" if USCC[-1] != "0" else "1")).status_code == 303  # bad check char
    db.session.expire_all()
    assert db.session.query(Organisation).filter_by(uscc=USCC).one_or_none() is None
    refused = db.session.query(AuditLog).filter_by(action="enterprise.claim", outcome="failure").count()
    assert refused == 1
    assert b.http.get(f"{live_server}/enterprise/{USCC}").status_code == 404


# ---------------------------------------------------------------- administrators


def test_at_most_five_admins(app, live_server, citizen, register):
    from people import enterprise
    from people.enterprise import EnterpriseAdmin
    from tongban.errors import Conflict
    from tongban.extensions import db

    b = _logged_in(live_server, CITIZEN_ID)
    _claim(b)
    ids = [_id_number(i) for i in range(1, 7)]
    for n, id_number in enumerate(ids):
        _citizen(id_number, f"管理员{n}")
    for id_number in ids[:5]:
        resp = _post_form(b, f"/enterprise/{USCC}", f"/enterprise/{USCC}/admins", {"id_number": id_number})
        assert resp.status_code == 303
    page = b.http.get(f"{live_server}/enterprise/{USCC}").text
    assert f"/enterprise/{USCC}/admins\"" not in page  # the appoint form is gone at five
    db.session.expire_all()
    ctx = app.test_request_context()  # services translate their messages: they need a request
    ctx.push()
    org = enterprise.get_enterprise(USCC)
    assert len(enterprise.admins(org)) == 5
    with pytest.raises(Conflict):
        enterprise.appoint_admin(org.legal_rep, org, ids[5], proven_session(org.legal_rep))
    db.session.rollback()
    # an admin may authorise agents but not appoint admins; removing one frees a place
    admin = enterprise.admins(org)[0]
    from tongban.errors import Forbidden

    with pytest.raises(Forbidden):
        enterprise.appoint_admin(admin.user, org, ids[5], proven_session(admin.user))
    db.session.rollback()
    resp = _post_form(b, f"/enterprise/{USCC}", f"/enterprise/{USCC}/admins/{admin.id}/remove", {})
    assert resp.status_code == 303
    db.session.expire_all()
    assert db.session.query(EnterpriseAdmin).count() == 4
    enterprise.appoint_admin(org.legal_rep, org, ids[5], proven_session(org.legal_rep))
    db.session.commit()
    ctx.pop()


# ---------------------------------------------------------------- acting for the enterprise


def test_agent_acts_at_authorised_system_only(live_server, disco, citizen, agent_user, register, systems):
    (x_id, x_secret), (y_id, y_secret) = systems
    rep = _logged_in(live_server, CITIZEN_ID)
    _claim(rep)
    assert _authorise_agent(rep, [x_id]).status_code == 303
    from people.enterprise import AgentAuthorisation
    from tongban.extensions import db

    auth = db.session.query(AgentAuthorisation).one()
    assert auth.client_ids == [x_id]

    agent = Browser(live_server)
    rp_x = RP(disco, x_id, x_secret, scope=SCOPE)
    token, claims, offered = _sign_in(rp_x, agent, OTHER_ID, f"agent:{auth.id}")
    assert offered == ["self", f"agent:{auth.id}"]
    assert claims["sub"] == agent_user.sub
    assert (claims["org_uscc"], claims["org_name"], claims["org_role"]) == (USCC, ENTERPRISE_NAME, "agent")
    assert claims["org_authorised_until"] > claims["iat"]
    info = requests.get(disco["userinfo_endpoint"], headers=bearer(token["access_token"])).json()
    assert info["org_uscc"] == USCC and info["org_role"] == "agent" and info["name"] == AGENT_NAME

    # the same session at system Y: no authority there, so no chooser and no enterprise claims
    rp_y = RP(disco, y_id, y_secret, scope=SCOPE)
    _token_y, claims_y, offered_y = _sign_in(rp_y, agent, OTHER_ID, None)
    assert offered_y == []
    assert "org_uscc" not in claims_y and claims_y["sub"] == agent_user.sub
    # asking again (prompt=select_account) still offers nothing at Y
    step = agent.walk(rp_y.auth_url(prompt="select_account"))
    assert step.kind in ("consent", "callback")

    # the legal representative chooses the enterprise at Y as legal_rep
    rp_y2 = RP(disco, y_id, y_secret, scope=SCOPE)
    from people.models import Organisation

    org = db.session.query(Organisation).filter_by(uscc=USCC).one()
    _t, claims_rep, offered_rep = _sign_in(rp_y2, rep, CITIZEN_ID, f"legal_rep:{org.id}")
    assert offered_rep == ["self", f"legal_rep:{org.id}"]
    assert claims_rep["org_role"] == "legal_rep" and "org_authorised_until" not in claims_rep

    # acting as oneself releases no enterprise claims
    rep2 = _logged_in(live_server, CITIZEN_ID)
    _t, claims_self, _offered = _sign_in(RP(disco, x_id, x_secret, scope=SCOPE), rep2, CITIZEN_ID, "self")
    assert "org_uscc" not in claims_self


def test_forged_choice_refused(live_server, disco, citizen, agent_user, register, systems):
    (x_id, x_secret), (y_id, _y_secret) = systems
    rep = _logged_in(live_server, CITIZEN_ID)
    _claim(rep)
    _authorise_agent(rep, [x_id])
    from people.enterprise import AgentAuthorisation
    from tongban.extensions import db

    auth = db.session.query(AgentAuthorisation).one()
    agent = _logged_in(live_server, OTHER_ID)
    rp_x = RP(disco, x_id, x_secret, scope=SCOPE)
    chooser = agent.walk(rp_x.auth_url())
    assert _is_chooser(chooser)
    fields = dict(re.findall(r'<input[^>]*name="(csrf_token)"[^>]*value="([^"]*)"', chooser.resp.text))
    resp = agent.http.post(f"{live_server}/enterprise/act", allow_redirects=False, data={
        **fields, "client_id": y_id, "next": "/oauth/authorize?x=1", "choice": f"agent:{auth.id}"})
    assert resp.status_code == 403
    resp = agent.http.post(f"{live_server}/enterprise/act", allow_redirects=False, data={
        **fields, "client_id": x_id, "next": "https://evil.example/", "choice": "self"})
    assert resp.status_code == 400
    # prompt=none cannot choose
    step = agent.walk(RP(disco, x_id, x_secret, scope=SCOPE).auth_url(prompt="none"))
    assert step.kind == "callback" and step.params["error"] == "account_selection_required"
    assert step.params["iss"] == disco["issuer"] and step.params["state"]  # RFC 9207, RFC 6749 §4.1.2.1


# ---------------------------------------------------------------- authority ending


def _agent_signed_in(live_server, disco, systems):
    (x_id, x_secret), _y = systems
    rep = _logged_in(live_server, CITIZEN_ID)
    _claim(rep)
    assert _authorise_agent(rep, [x_id]).status_code == 303
    from people.enterprise import AgentAuthorisation
    from tongban.extensions import db

    auth = db.session.query(AgentAuthorisation).one()
    agent = Browser(live_server)
    rp = RP(disco, x_id, x_secret, scope=SCOPE)
    token, claims, _offered = _sign_in(rp, agent, OTHER_ID, f"agent:{auth.id}")
    assert claims["org_role"] == "agent"
    # the agent also uses system Y as themself in the same session
    rp_y = RP(disco, systems[1][0], systems[1][1], scope="openid profile")
    token_y, _claims_y, _o = _sign_in(rp_y, agent, OTHER_ID, None)
    return rep, agent, rp, token, claims, auth, rp_y, token_y


def _assert_ended(rp, token, claims, disco, reason):
    resp = rp.token_post(grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    assert requests.get(disco["userinfo_endpoint"], headers=bearer(token["access_token"])).status_code == 401
    intro = requests.post(disco["introspection_endpoint"], data={"token": token["refresh_token"]},
                          auth=(rp.client_id, rp.secret)).json()
    assert intro == {"active": False}
    sess = _session(claims["sid"])
    assert sess.ended_at is not None and sess.end_reason == reason


def test_withdrawal_ends_agent_session(live_server, disco, citizen, agent_user, register, systems):
    rep, agent, rp, token, claims, auth, rp_y, token_y = _agent_signed_in(live_server, disco, systems)
    refreshed = rp.token_post(grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert refreshed.status_code == 200
    token = refreshed.json()
    resp = _post_form(rep, f"/enterprise/{USCC}", f"/enterprise/{USCC}/agents/{auth.id}/withdraw", {})
    assert resp.status_code == 303
    _assert_ended(rp, token, claims, disco, "enterprise_authority_withdrawn")
    # gone from every system at once: Y's refresh token (same session) stops working too
    resp = rp_y.token_post(grant_type="refresh_token", refresh_token=token_y["refresh_token"])
    assert resp.status_code == 400
    # the agent's browser is logged out; logging in again offers no enterprise at X
    step = agent.walk(RP(disco, rp.client_id, rp.secret, scope=SCOPE).auth_url())
    assert step.kind == "login"


def test_expiry_ends_agent_session_on_use(live_server, disco, citizen, agent_user, register, systems):
    _rep, _agent, rp, token, claims, auth, _rp_y, _token_y = _agent_signed_in(live_server, disco, systems)
    from people.enterprise import AgentAuthorisation
    from tongban.clock import utcnow
    from tongban.extensions import db

    row = db.session.get(AgentAuthorisation, auth.id)
    row.valid_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    _assert_ended(rp, token, claims, disco, "enterprise_authority_expired")
    db.session.expire_all()
    assert db.session.get(AgentAuthorisation, auth.id).ended_at is not None


def test_expire_command_ends_sessions(app, live_server, disco, citizen, agent_user, register, systems):
    _rep, _agent, rp, token, claims, auth, _rp_y, _token_y = _agent_signed_in(live_server, disco, systems)
    from people.enterprise import AgentAuthorisation
    from tongban.clock import utcnow
    from tongban.extensions import db

    row = db.session.get(AgentAuthorisation, auth.id)
    row.valid_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    result = app.test_cli_runner().invoke(args=["enterprises", "expire"])
    assert result.exit_code == 0 and "1 authorisation(s) ended" in result.output
    sess = _session(claims["sid"])
    assert sess.ended_at is not None and sess.end_reason == "enterprise_authority_expired"
    resp = rp.token_post(grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert resp.status_code == 400
    again = app.test_cli_runner().invoke(args=["enterprises", "expire"])
    assert "0 authorisation(s) ended" in again.output


def test_wallet_shows_enterprise_to_admin(app, citizen, register):
    from licence import services
    from people import enterprise
    from tongban.extensions import db

    admin = _citizen(_id_number(9), "钱七")
    with app.test_request_context():
        org = enterprise.claim(citizen, USCC, proven_session(citizen))
        enterprise.appoint_admin(citizen, org, admin.id_number, proven_session(citizen))
        db.session.commit()
    assert USCC in services.holder_ids_for(admin) and USCC in services.holder_ids_for(citizen)


def test_an_authorisation_ended_by_another_servers_sweep_is_not_ended_twice(app, live_server, disco, citizen,
                                                                            agent_user, register, systems):
    """Two servers' minute sweeps at once: the one that claims the authorisation second leaves it."""
    _rep, _agent, _rp, _token, _claims, auth, _rp_y, _token_y = _agent_signed_in(live_server, disco, systems)
    from sqlalchemy import update

    from people import enterprise
    from people.enterprise import AgentAuthorisation
    from tongban.clock import utcnow
    from tongban.extensions import db

    stale = db.session.get(AgentAuthorisation, auth.id)  # what this server's sweep selected
    assert stale.ended_at is None
    with db.engine.begin() as other:  # the other server's sweep ended it and committed
        other.execute(update(AgentAuthorisation).where(AgentAuthorisation.id == auth.id).values(ended_at=utcnow()))
    assert enterprise.claim_end(stale, utcnow()) is False
    assert stale.ended_at is not None
    db.session.rollback()
