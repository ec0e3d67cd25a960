"""CAS 3.0 driven by python-cas (CASClientV3): log-in, validation with attributes, single
logout through the outbox to a real HTTP service; raw HTTP for every refusal."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cas import CASClient
from freezegun import freeze_time
from lxml import etree

from tests.conftest import CITIZEN_ID
from tests.idp.helpers import Browser
from tests.idp.test_logout import Receiver

CAS_NS = {"cas": "http://www.yale.edu/tp/cas"}


@pytest.fixture
def service_app():
    """The CAS service: its SLO endpoint is its service URL (a real HTTP server)."""
    r = Receiver()
    r.url = f"http://127.0.0.1:{r.port}/app/"
    r.start()
    yield r
    r.stop()


@pytest.fixture
def no_thread(app):
    app.config["TONGBAN_OUTBOX_THREAD"] = False
    yield
    app.config["TONGBAN_OUTBOX_THREAD"] = True


@pytest.fixture
def register_cas(app):
    from casserver.services import register_service
    from tongban.extensions import db

    def _make(prefix, scopes=("openid", "profile"), proxy=False, **kw):
        kw.setdefault("name", "老档案系统")
        kw.setdefault("department", "市档案局")
        svc = register_service(service_urls=[prefix], proxy_allowed=proxy, scopes=list(scopes), **kw)
        db.session.commit()
        return svc.client_id

    return _make


def login_client(client) -> None:
    """Log the Flask test client in through the real form (with its CSRF token)."""
    from tests.idp.helpers import _CSRF

    page = client.get("/login").get_data(as_text=True)
    resp = client.post("/login", data={"login": CITIZEN_ID, "password": "Test-Passw0rd!",
                                       "csrf_token": _CSRF.search(page).group(1), "next": "/account"})
    assert resp.status_code == 302


def ticket_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["ticket"][0]


def cas_login(browser: Browser, cas: CASClient, *, login=True) -> str:
    step = browser.walk(cas.get_login_url())
    if step.kind == "login":
        assert login, "a log-in page was shown"
        step = browser.submit_login(step)
    assert step.kind == "callback", step.url
    assert step.url.startswith(cas.service_url)
    return ticket_of(step.url)


def raw_validate(base, ticket, service, path="p3/serviceValidate", **extra):
    resp = requests.get(f"{base}/cas/{path}", params={"ticket": ticket, "service": service, **extra})
    assert resp.status_code == 200
    return resp


def failure_code(resp) -> str:
    root = etree.fromstring(resp.content if hasattr(resp, "content") else resp.data)
    fail = root.find("cas:authenticationFailure", CAS_NS)
    assert fail is not None, resp.text
    return fail.get("code")


def test_login_validate_attributes_and_single_logout(app, live_server, citizen, register_cas, service_app,
                                                     no_thread):
    from tongban import outbox

    client_id = register_cas(service_app.url)
    service = service_app.url + "index.jsp?x=1"
    cas = CASClient(version=3, service_url=service, server_url=live_server + "/cas/")
    browser = Browser(live_server)
    ticket = cas_login(browser, cas)
    assert ticket.startswith("ST-")
    user, attrs, pgtiou = cas.verify_ticket(ticket)
    assert user == citizen.sub  # the stable subject, as OpenID clients see it
    assert attrs["name"] == "张三"
    assert attrs["id_number"] == "110***********002X"  # masked: no id_number permission
    assert attrs["acr"] == "L1" and attrs["isFromNewLogin"] == "true"
    assert attrs["longTermAuthenticationRequestTokenUsed"] == "false"
    assert attrs["authenticationDate"].endswith("Z")
    assert pgtiou is None
    # the same ticket again: refused (one-time), also through the library
    assert cas.verify_ticket(ticket)[0] is None

    # single sign-on: the second log-in needs no password, and says so
    ticket2 = cas_login(browser, cas, login=False)
    user2, attrs2, _ = cas.verify_ticket(ticket2)
    assert user2 == citizen.sub and attrs2["isFromNewLogin"] == "false"

    # usage counted in the register
    from idp import clients as registry

    row = next(r for r in registry.report() if r.client_id == client_id)
    assert row.logins_30d == 2

    # log out at CAS: the service gets a CAS SLO POST per ticket through the outbox
    resp = browser.http.get(cas.get_logout_url(service_app.url), allow_redirects=False)
    assert resp.status_code == 302 and resp.headers["Location"] == service_app.url
    assert outbox.work_once() == {"delivered": 2}
    got = service_app.wait_for(2)
    indexes = set()
    for delivery in got:
        assert delivery["path"] == "/app/index.jsp" and delivery["method"] == "POST"
        slos = cas.get_saml_slos(delivery["form"]["logoutRequest"])
        indexes.update(el.text for el in slos)
    assert indexes == {ticket, ticket2}
    # the SSO session is over: the next log-in asks for the password
    assert browser.walk(cas.get_login_url()).kind == "login"


def test_full_id_number_json_and_serviceValidate(app, live_server, citizen, register_cas):
    register_cas("https://cas.example.gov.cn/app", scopes=("openid", "profile", "id_number"))
    service = "https://cas.example.gov.cn/app/home"
    browser = Browser(live_server)
    cas = CASClient(version=3, service_url=service, server_url=live_server + "/cas/")
    ticket = cas_login(browser, cas)
    body = raw_validate(live_server, ticket, service, format="JSON").json()
    ok = body["serviceResponse"]["authenticationSuccess"]
    assert ok["user"] == citizen.sub and ok["attributes"]["id_number"] == CITIZEN_ID
    # /serviceValidate (CAS 2 style) names the user without attributes
    ticket = cas_login(browser, cas, login=False)
    root = etree.fromstring(raw_validate(live_server, ticket, service, path="serviceValidate").content)
    assert root.findtext("cas:authenticationSuccess/cas:user", namespaces=CAS_NS) == citizen.sub
    assert root.find("cas:authenticationSuccess/cas:attributes", CAS_NS) is None


def test_ticket_replay_late_other_service_and_bad_requests(app, live_server, citizen, register_cas):
    register_cas("https://a.example.gov.cn/app")
    register_cas("https://b.example.gov.cn/", name="另一个系统")
    a, b = "https://a.example.gov.cn/app/", "https://b.example.gov.cn/x"
    browser = Browser(live_server)
    cas_a = CASClient(version=3, service_url=a, server_url=live_server + "/cas/")
    ticket = cas_login(browser, cas_a)
    # for another (registered) service: refused, and the ticket is spent
    assert failure_code(raw_validate(live_server, ticket, b)) == "INVALID_SERVICE"
    assert failure_code(raw_validate(live_server, ticket, a)) == "INVALID_TICKET"
    # the same service with another path under the prefix: not the URL it was issued for
    ticket = cas_login(browser, cas_a, login=False)
    assert failure_code(raw_validate(live_server, ticket, a + "other")) == "INVALID_SERVICE"
    # replay after success
    ticket = cas_login(browser, cas_a, login=False)
    assert "<cas:authenticationSuccess>" in raw_validate(live_server, ticket, a).text
    assert failure_code(raw_validate(live_server, ticket, a)) == "INVALID_TICKET"
    # unknown, missing, proxy tickets
    assert failure_code(raw_validate(live_server, "ST-forged", a)) == "INVALID_TICKET"
    assert failure_code(raw_validate(live_server, "", a)) == "INVALID_REQUEST"
    assert failure_code(raw_validate(live_server, "PT-1", a)) == "INVALID_TICKET_SPEC"
    assert failure_code(raw_validate(live_server, "PT-1", a, path="proxyValidate")) == "UNAUTHORIZED_SERVICE_PROXY"
    body = raw_validate(live_server, "ST-x", a, format="JSON").json()
    assert body["serviceResponse"]["authenticationFailure"]["code"] == "INVALID_TICKET"


def test_ticket_after_ten_seconds_is_refused(app, client, citizen, register_cas):
    register_cas("https://a.example.gov.cn/app")
    service = "https://a.example.gov.cn/app/"
    with freeze_time("2026-12-07 10:00:00") as frozen:
        login_client(client)
        resp = client.get("/cas/login", query_string={"service": service})
        ticket = ticket_of(resp.headers["Location"])
        frozen.tick(timedelta(seconds=11))
        resp = client.get("/cas/serviceValidate", query_string={"ticket": ticket, "service": service})
        assert failure_code(resp) == "INVALID_TICKET"
        # and within 10 s it works
        resp = client.get("/cas/login", query_string={"service": service})
        ticket = ticket_of(resp.headers["Location"])
        frozen.tick(timedelta(seconds=9))
        resp = client.get("/cas/serviceValidate", query_string={"ticket": ticket, "service": service})
        assert b"authenticationSuccess" in resp.data


@pytest.mark.parametrize("service", [
    "https://evil.example.com/app/",                 # unregistered host
    "https://a.example.gov.cn.evil.com/app/",        # suffix of the host
    "https://a.example.gov.cn:8443/app/",            # other port
    "http://a.example.gov.cn/app/",                  # other scheme
    "https://a.example.gov.cn/apple",                # not on a segment boundary
    "https://a.example.gov.cn/app/../admin",         # dot segments
    "https://a.example.gov.cn/app/%2e%2e/admin",     # encoded dot segments
    "https://a.example.gov.cn/app/..;/admin",        # dot segment with a path parameter (servlets)
    "https://a.example.gov.cn/app/%252e%252e/admin", # doubly encoded
    "https://user@a.example.gov.cn/app/",            # userinfo
    "https://a.example.gov.cn/app/#frag",            # fragment
    "//a.example.gov.cn/app/",                       # scheme-relative
    "https://a.example.gov.cn\\@evil.com/app/",      # backslash
])
def test_unregistered_or_lookalike_service_is_refused(app, live_server, citizen, register_cas, service):
    register_cas("https://a.example.gov.cn/app")
    browser = Browser(live_server)
    assert browser.login().status_code == 302
    resp = browser.http.get(f"{live_server}/cas/login", params={"service": service}, allow_redirects=False)
    assert resp.status_code == 400, service
    assert "Location" not in resp.headers
    # gateway never redirects to an unregistered service either
    resp = requests.get(f"{live_server}/cas/login", params={"service": service, "gateway": "true"},
                        allow_redirects=False)
    assert resp.status_code == 400
    # nor does logout
    resp = requests.get(f"{live_server}/cas/logout", params={"service": service}, allow_redirects=False)
    assert resp.status_code == 200 and "Location" not in resp.headers


def test_renew_forces_password_even_with_sso(app, live_server, citizen, register_cas):
    register_cas("https://a.example.gov.cn/app")
    service = "https://a.example.gov.cn/app/"
    browser = Browser(live_server)
    assert browser.login().status_code == 302
    cas = CASClient(version=3, service_url=service, server_url=live_server + "/cas/", renew=True)
    step = browser.walk(cas.get_login_url())
    assert step.kind == "login"  # the SSO session does not answer renew
    step = browser.submit_login(step)
    ticket = ticket_of(step.url)
    resp = raw_validate(live_server, ticket, service, renew="true")
    assert b"<cas:isFromNewLogin>true</cas:isFromNewLogin>" in resp.content
    # a ticket from single sign-on fails a renew validation
    plain = CASClient(version=3, service_url=service, server_url=live_server + "/cas/")
    ticket = cas_login(browser, plain, login=False)
    assert failure_code(raw_validate(live_server, ticket, service, renew="true")) == "INVALID_TICKET"


def test_gateway_without_session_goes_back_without_ticket(app, live_server, register_cas):
    register_cas("https://a.example.gov.cn/app")
    service = "https://a.example.gov.cn/app/?a=b"
    resp = requests.get(f"{live_server}/cas/login", params={"service": service, "gateway": "true"},
                        allow_redirects=False)
    assert resp.status_code == 302 and resp.headers["Location"] == service


def test_ticket_of_an_ended_session_is_refused(app, client, citizen, register_cas):
    register_cas("https://a.example.gov.cn/app")
    service = "https://a.example.gov.cn/app/"
    login_client(client)
    ticket = ticket_of(client.get("/cas/login", query_string={"service": service}).headers["Location"])
    client.get("/cas/logout")
    resp = client.get("/cas/serviceValidate", query_string={"ticket": ticket, "service": service})
    assert failure_code(resp) == "INVALID_TICKET"


def test_tickets_are_stored_hashed(app, client, citizen, register_cas):
    from sqlalchemy import select

    from casserver.models import CasTicket
    from tongban.extensions import db

    register_cas("https://a.example.gov.cn/app")
    login_client(client)
    loc = client.get("/cas/login", query_string={"service": "https://a.example.gov.cn/app/"}).headers["Location"]
    ticket = ticket_of(loc)
    stored = db.session.execute(select(CasTicket.ticket_hash)).scalars().all()
    assert len(stored) == 1 and ticket not in stored[0] and len(stored[0]) == 64


def test_cli_registers_cas_service_in_the_register(app, tmp_path):
    env_app = app
    runner = env_app.test_cli_runner()
    res = runner.invoke(args=["clients", "create", "--protocol", "cas", "--name", "学籍系统", "--department",
                              "市教育局", "--service-url", "https://xj.example.gov.cn/cas", "--approver", "市大数据局",
                              "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["protocol"] == "cas" and data["service_urls"] == ["https://xj.example.gov.cn/cas"]
    res = runner.invoke(args=["clients", "report", "--json"])
    assert any(r["client_id"] == data["client_id"] for r in json.loads(res.output))
    # bad input: one line, non-zero, nothing registered
    for bad in (["--service-url", "http://xj.example.gov.cn/"], ["--service-url", "https://u@xj.example/"], []):
        res = runner.invoke(args=["clients", "create", "--protocol", "cas", "--name", "x", "--department", "y",
                                  *bad])
        assert res.exit_code == 1 and res.output.count("\n") == 1 and res.output.startswith("error:"), res.output
    res = runner.invoke(args=["clients", "report", "--json"])
    assert len(json.loads(res.output)) == 1


def test_cas_service_cannot_use_oauth(app, live_server, register_cas):
    client_id = register_cas("https://a.example.gov.cn/app")
    resp = requests.get(f"{live_server}/oauth/authorize", params={
        "client_id": client_id, "response_type": "code", "redirect_uri": "https://a.example.gov.cn/app/",
        "scope": "openid"}, allow_redirects=False)
    assert resp.status_code == 400



def test_admin_console_lists_cas_and_saml_entries(app, register_cas, live_server):
    from people import accounts
    from tests.conftest import OTHER_ID, PASSWORD
    from tests.idp.test_admin import Browser as AdminBrowser
    from tests.idp.test_admin import login
    from tongban.extensions import db

    accounts.create_staff(OTHER_ID, "王五", PASSWORD, app.config["TONGBAN_AUTHORITY_USCC"], "admin")
    db.session.commit()
    cas_id = register_cas("https://a.example.gov.cn/app", name="老档案系统")
    c = AdminBrowser(app, app.response_class, use_cookies=True)
    login(c)
    page = c.get("/admin/clients").get_data(as_text=True)
    assert "老档案系统" in page and cas_id in page
    assert c.get(f"/admin/clients/{cas_id}").status_code == 200


@pytest.mark.parametrize(("service", "prefix", "ok"), [
    ("https://a.example.gov.cn/app", "https://a.example.gov.cn/app", True),
    ("https://a.example.gov.cn/app/x/y?z=1", "https://a.example.gov.cn/app", True),
    ("https://A.EXAMPLE.gov.cn:443/app/", "https://a.example.gov.cn/app", True),
    ("https://b.example.gov.cn/anything", "https://b.example.gov.cn/", True),
    ("https://a.example.gov.cn/application", "https://a.example.gov.cn/app", False),
    ("https://a.example.gov.cn/app/", "https://a.example.gov.cn/app/", True),
    ("https://a.example.gov.cn/ap", "https://a.example.gov.cn/app/", False),
    ("https://a.example.gov.cn:99999/app", "https://a.example.gov.cn/app", False),
    ("https://a.example.gov.cn/app/\u0000", "https://a.example.gov.cn/app", False),
    ("https://a.example.gov.cn/app/ x", "https://a.example.gov.cn/app", False),
])
def test_service_matching(service, prefix, ok):
    from casserver.services import matches

    assert matches(service, prefix) is ok


def test_any_session_end_queues_the_cas_slo(app, live_server, citizen, register_cas):
    """Not only /cas/logout: a session ended by a password change (or an administrator, expiry…)
    sends the single-logout POST too."""
    from sqlalchemy import select

    from people import sessions
    from tongban.extensions import db
    from tongban.outbox import OutboxItem

    register_cas("https://a.example.gov.cn/app")
    service = "https://a.example.gov.cn/app/"
    cas = CASClient(version=3, service_url=service, server_url=live_server + "/cas/")
    browser = Browser(live_server)
    ticket = cas_login(browser, cas)
    assert cas.verify_ticket(ticket)[0] == citizen.sub
    db.session.expire_all()
    assert sessions.end_all_for_user(citizen, "password_changed", f"user:{citizen.sub}") == 1
    db.session.commit()
    items = db.session.execute(select(OutboxItem).where(OutboxItem.kind == "cas_slo")).scalars().all()
    assert [(i.target, i.data["session_index"]) for i in items] == [(service, ticket)]


def test_rotate_saml_key_cli(app):
    runner = app.test_cli_runner()
    res = runner.invoke(args=["keys", "rotate-saml", "--delay", "60"])
    assert res.exit_code == 0 and " saml  next " in res.output
    from keys import saml as samlkeys

    assert len(samlkeys.published()) == 2
