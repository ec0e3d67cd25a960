"""A password log-in made for an authorization request answers that request itself (issue 14).

The POST /login runs the authorization view for the URL the browser would have been sent back
to, inside the same response: the redirect with the code, the consent page, an error — the same
answer the browser's next GET would have had, one round trip sooner. Driven over real HTTP, the
code exchanged by Authlib's client and the ID token validated strictly.
"""

from __future__ import annotations

import html
import re
import time
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest
import requests

from tests.conftest import CITIZEN_ID, PASSWORD
from tests.idp.helpers import _CSRF, REDIRECT, Browser, _input_value, discover, is_consent_page, validate_id_token
from tests.idp.test_oidc_authlib import RP


@pytest.fixture
def disco(live_server):
    return discover(live_server)


def _login_page(browser: Browser, url: str) -> requests.Response:
    step = browser.walk(url)
    assert step.kind == "login", step.kind
    return step.resp


def _post_login(browser: Browser, page: requests.Response) -> requests.Response:
    data = {"csrf_token": _CSRF.search(page.text).group(1), "login": CITIZEN_ID, "password": PASSWORD,
            "next": _input_value(page.text, "next") or ""}
    return browser.http.post(browser._abs("/login"), data=data, allow_redirects=False)


def _set_cookies(resp: requests.Response) -> list[str]:
    return [v.split("=", 1)[0] for k, v in resp.raw.headers.items() if k.lower() == "set-cookie"]


def test_the_log_in_answers_with_the_code(app, live_server, disco, citizen, make_client):
    client_id, secret = make_client(first_party=True)
    rp = RP(disco, client_id, secret)
    browser = Browser(live_server)
    resp = _post_login(browser, _login_page(browser, rp.auth_url()))

    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert location.startswith(REDIRECT)  # no detour through /oauth/authorize
    q = parse_qs(urlsplit(location).query)
    assert q["state"] == [rp.state] and q["iss"] == [disco["issuer"]]
    # one SSO cookie and one cookie session, as a redirect to the request would have set them
    names = _set_cookies(resp)
    assert names.count(app.config["SSO_COOKIE_NAME"]) == 1 and names.count(app.config["SESSION_COOKIE_NAME"]) <= 1
    assert "Content-Security-Policy" in resp.headers and resp.headers["Cache-Control"] == "no-store"

    token = rp.exchange(location)
    claims = validate_id_token(token["id_token"], disco=disco, client_id=client_id, nonce=rp.nonce,
                               access_token=token["access_token"])
    assert claims["sid"] and claims["amr"] == ["pwd"]
    # the session the response started is the browser's: the next system is signed in at once
    again = browser.walk(RP(disco, client_id, secret).auth_url())
    assert again.kind == "callback" and again.seen == []


def test_the_consent_page_is_the_answer(app, live_server, disco, citizen, make_client):
    client_id, secret = make_client(first_party=False)
    rp = RP(disco, client_id, secret)
    browser = Browser(live_server)
    resp = _post_login(browser, _login_page(browser, rp.auth_url()))

    assert resp.status_code == 200 and is_consent_page(resp)
    action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', resp.text).group(1))
    assert action.startswith("/oauth/authorize?") and f"client_id={client_id}" in action
    step = browser.walk(action, method="POST", data={"csrf_token": _CSRF.search(resp.text).group(1),
                                                     "decision": "approve"})
    assert step.kind == "callback"
    token = rp.exchange(step.url)
    validate_id_token(token["id_token"], disco=disco, client_id=client_id, nonce=rp.nonce,
                      access_token=token["access_token"])


@pytest.mark.parametrize("ask", [{"prompt": "login"}, {"max_age": "0"}])
def test_a_log_in_asked_for_again_is_answered_once(app, live_server, disco, citizen, make_client, ask):
    client_id, secret = make_client(first_party=True)
    browser = Browser(live_server)
    assert browser.authorize(RP(disco, client_id, secret).auth_url()).kind == "callback"

    rp = RP(disco, client_id, secret)
    page = _login_page(browser, rp.auth_url(**ask))
    before = int(time.time())
    resp = _post_login(browser, page)
    assert resp.status_code == 302 and resp.headers["Location"].startswith(REDIRECT)
    token = rp.exchange(resp.headers["Location"])
    claims = validate_id_token(token["id_token"], disco=disco, client_id=client_id, nonce=rp.nonce,
                               max_age=0 if "max_age" in ask else None)
    assert claims["auth_time"] >= before  # this log-in's, not the first one's


def test_other_destinations_are_redirected_to(app, live_server, citizen):
    browser = Browser(live_server)
    for target in ("/account", "/oauth/authorizex?client_id=x", "/oauth/authorize/../account"):
        page = browser.http.get(browser._abs("/login"), params={"next": target, "force": "1"})
        resp = _post_login(browser, page)
        assert resp.status_code == 302 and resp.headers["Location"] == target


def test_a_request_the_get_would_refuse_is_left_to_the_get(app, live_server, citizen, make_client):
    client_id, _ = make_client(first_party=True)
    target = "/oauth/authorize?" + urlencode({"response_type": "code", "client_id": client_id,
                                              "redirect_uri": REDIRECT, "scope": "openid",
                                              "state": "a\x00b"})
    browser = Browser(live_server)
    page = browser.http.get(browser._abs("/login"), params={"next": target})
    resp = _post_login(browser, page)
    assert resp.status_code == 302 and resp.headers["Location"] == target
    refused = browser.http.get(browser._abs(target), allow_redirects=False)
    assert refused.status_code == 400


def test_a_client_disabled_meanwhile_gets_the_error_page(app, live_server, disco, citizen, make_client):
    from idp import clients as registry
    from tongban.extensions import db

    client_id, secret = make_client(first_party=True)
    browser = Browser(live_server)
    page = _login_page(browser, RP(disco, client_id, secret).auth_url())
    registry.set_enabled(client_id, False)
    db.session.commit()

    resp = _post_login(browser, page)
    assert resp.status_code in (400, 401) and "Location" not in resp.headers
    assert "invalid_client" in resp.text
    # the log-in itself stands: the browser is logged in
    assert app.config["SSO_COOKIE_NAME"] in _set_cookies(resp)
    assert browser.http.get(browser._abs("/account"), allow_redirects=False).status_code == 200


def test_the_log_in_does_not_read_its_session_again(app, browser, citizen, make_client):
    """The session and the account just written are used as they are in memory: the POST runs
    no query for the log-in session (the GET it replaces looked it up by the cookie)."""
    from sqlalchemy import event

    from tests.flask_flows import _CSRF as PAGE_CSRF
    from tests.idp.test_login_path import _authorize_url, _pkce
    from tongban.extensions import db

    client_id, _ = make_client(first_party=True)
    b = browser()
    nxt = _authorize_url(client_id, "n-1", _pkce()[1])
    page = b.get(nxt)
    seen: list[str] = []

    def on(_conn, _cursor, statement, *_a):
        seen.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", on)
    try:
        resp = b.post("/login", data={"csrf_token": PAGE_CSRF.search(page.get_data(as_text=True)).group(1),
                                      "login": CITIZEN_ID, "password": PASSWORD, "next": nxt})
    finally:
        event.remove(db.engine, "before_cursor_execute", on)
    assert resp.status_code == 302 and resp.headers["Location"].startswith(REDIRECT)
    assert [s for s in seen if "FROM login_sessions" in s] == []
    assert sum(s.startswith("INSERT INTO authorization_codes") for s in seen) == 1


def test_a_failure_while_continuing_leaves_it_to_the_get(app, live_server, disco, citizen, make_client,
                                                         monkeypatch):
    """Whatever breaks while the request continues inside the log-in, the log-in stands (its
    cookie is set) and the browser is sent to the request, as before, to meet the failure there."""
    from idp import views

    client_id, secret = make_client(first_party=True)
    rp = RP(disco, client_id, secret)
    browser = Browser(live_server)
    page = _login_page(browser, rp.auth_url(prompt="login"))
    real = views.stepup
    broken = {"on": True}

    def flaky(*a, **k):
        if broken["on"]:
            raise RuntimeError("boom")
        return real(*a, **k)

    monkeypatch.setattr(views, "stepup", flaky)
    resp = _post_login(browser, page)
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/oauth/authorize?")
    assert app.config["SSO_COOKIE_NAME"] in _set_cookies(resp)
    # the cookie session is as the attempt found it: the GET still counts the fresh log-in
    # (prompt=login is answered, not asked again)
    broken["on"] = False
    step = browser.walk(resp.headers["Location"])
    assert step.kind == "callback", step.kind
    rp.exchange(step.url)


def test_the_authorization_request_shows_the_log_in_page(app, live_server, disco, citizen, make_client):
    """No redirect to /login first: the page is the answer, its form to come back to the
    request (without prompt=login, which this log-in answers), the login_hint filled in."""
    client_id, secret = make_client(first_party=True)
    browser = Browser(live_server)
    assert browser.authorize(RP(disco, client_id, secret).auth_url()).kind == "callback"

    rp = RP(disco, client_id, secret)
    url = rp.auth_url(prompt="login", login_hint=CITIZEN_ID)
    resp = browser.http.get(url, allow_redirects=False)
    assert resp.status_code == 200 and 'action="/login"' in resp.text and 'name="password"' in resp.text
    assert resp.headers["Cache-Control"] == "no-store" and "Content-Security-Policy" in resp.headers
    assert re.search(rf'<input[^>]*name="login"[^>]*value="{CITIZEN_ID}"', resp.text)
    nxt = html.unescape(_input_value(resp.text, "next"))
    params = parse_qs(urlsplit(nxt).query)
    assert nxt.startswith("/oauth/authorize?") and "prompt" not in params and params["client_id"] == [client_id]
    assert params["state"] == [rp.state]
    # an anonymous browser gets the same page
    anon = Browser(live_server).http.get(RP(disco, client_id, secret).auth_url(), allow_redirects=False)
    assert anon.status_code == 200 and 'name="password"' in anon.text


def test_the_log_in_form_cannot_be_sent_again_after_a_logout(app, live_server, disco, citizen, make_client):
    """A shared computer: the next person sends the first one's log-in form again from the
    browser's history. The log-in renewed the CSRF secret, so the old form is refused."""
    client_id, secret = make_client(first_party=False)  # the consent page answers the POST
    browser = Browser(live_server)
    page = _login_page(browser, RP(disco, client_id, secret).auth_url())
    first = _post_login(browser, page)
    assert first.status_code == 200 and is_consent_page(first)
    browser.http.post(browser._abs("/logout"), data={"csrf_token": _CSRF.search(first.text).group(1)})
    assert browser.http.get(browser._abs("/account"), allow_redirects=False).status_code == 302

    again = _post_login(browser, page)  # the same form, its token and password as first sent
    assert again.status_code == 400 and app.config["SSO_COOKIE_NAME"] not in _set_cookies(again)
    assert browser.http.get(browser._abs("/account"), allow_redirects=False).status_code == 302


@pytest.mark.parametrize("target", ["/oauth/authorize#x?client_id={cid}", "/oauth/authorize?client_id={cid}&x=a b",
                                    "/oauth/authorize?client_id={cid}&x=" + "a" * 5000])
def test_a_target_a_browser_would_send_otherwise_is_left_to_the_browser(app, live_server, citizen, make_client,
                                                                         target):
    client_id, _ = make_client(first_party=True)
    target = target.format(cid=client_id)
    browser = Browser(live_server)
    page = browser.http.get(browser._abs("/login"), params={"next": target})
    resp = _post_login(browser, page)
    assert resp.status_code == 302 and unquote(resp.headers["Location"]) == target  # sent there, as it is


def test_the_log_in_form_posted_to_the_pages_own_url_logs_in(app, live_server, disco, citizen, make_client):
    """The page is shown at the authorization request's URL; a client posting its form there
    (rather than to the form's action) is answered as the log-in — and no field of the form, the
    password least of all, is ever carried into a URL."""
    client_id, secret = make_client(first_party=True)
    rp = RP(disco, client_id, secret)
    browser = Browser(live_server)
    url = rp.auth_url()
    page = _login_page(browser, url)
    data = {"csrf_token": _CSRF.search(page.text).group(1), "login": CITIZEN_ID, "password": PASSWORD,
            "next": html.unescape(_input_value(page.text, "next")), "client_id": client_id}
    resp = browser.http.post(url, data=data, allow_redirects=False)
    assert resp.status_code == 302 and resp.headers["Location"].startswith(REDIRECT)
    assert PASSWORD not in resp.headers["Location"] and "password" not in resp.headers["Location"]
    rp.exchange(resp.headers["Location"])
    # without its CSRF token it is refused like any log-in form, and nothing is redirected
    data["csrf_token"] = "x"
    refused = browser.http.post(url, data=data, allow_redirects=False)
    assert refused.status_code == 400 and "Location" not in refused.headers


def test_an_account_disabled_during_the_password_check_gets_nothing(app, live_server, disco, citizen,
                                                                    make_client, monkeypatch):
    """Disabled by an administrator while Argon2 ran: the right password does not log in, and
    no code (nor consent, nor session) is given for the request it was for."""
    from sqlalchemy import update

    from people import accounts
    from people.models import User
    from tongban.extensions import db

    client_id, secret = make_client(first_party=True)
    browser = Browser(live_server)
    page = _login_page(browser, RP(disco, client_id, secret).auth_url())
    real = accounts.verify_password

    def disabled_meanwhile(stored, password):
        ok = real(stored, password)
        with db.engine.begin() as conn:
            conn.execute(update(User).where(User.id == citizen.id).values(disabled=True))
        return ok

    monkeypatch.setattr(accounts, "verify_password", disabled_meanwhile)
    resp = _post_login(browser, page)
    assert resp.status_code == 401 and "Location" not in resp.headers
    assert app.config["SSO_COOKIE_NAME"] not in _set_cookies(resp)


def test_over_https_both_log_in_addresses_check_the_referer(app, browser, citizen, make_client, monkeypatch):
    """Over HTTPS the CSRF check also wants a same-origin Referer, at /login and at the
    authorization URL alike; the pages' Referrer-Policy lets the browser send it to us."""
    from tests.flask_flows import _CSRF as PAGE_CSRF
    from tests.idp.test_login_path import _authorize_url, _pkce

    client_id, _ = make_client(first_party=True)
    base = "https://id.tongban.example.gov.cn"
    b = browser()
    url = _authorize_url(client_id, "n-https", _pkce()[1])
    page = b.get(url, base_url=base)
    assert page.headers["Referrer-Policy"] == "same-origin"
    body = page.get_data(as_text=True)
    form = {"csrf_token": PAGE_CSRF.search(body).group(1), "login": CITIZEN_ID, "password": PASSWORD,
            "next": html.unescape(re.search(r'id="next" name="next" type="hidden" value="([^"]*)"', body).group(1))}
    for target in ("/login", url):
        for referer in ("https://evil.example/", None):
            headers = {"Referer": referer} if referer else {}
            refused = b.post(target, data=form, base_url=base, headers=headers)
            assert refused.status_code == 400 and "Location" not in refused.headers, (target, referer)
    ok = b.post(url, data=form, base_url=base, headers={"Referer": base + url})
    assert ok.status_code == 302 and ok.headers["Location"].startswith(REDIRECT)
