"""The password log-in path made cheaper (issue 14) refuses what it refused before.

- WTForms' messages come from a catalogue loaded once per locale: each request still gets its
  own language.
- The log-in page's upstream buttons are cached per generation: adding, enabling or disabling
  an upstream shows at once, here and (through the generation) in every other process.
- The authorization request is validated once per HTTP request; the nonce replay check still
  runs right before the code is issued, so a code issued meanwhile for the same nonce (a
  concurrent request) is refused.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.conftest import CITIZEN_ID, PASSWORD
from tests.flask_flows import _CSRF, REDIRECT, basic, csrf_token, login


def _post_empty_login(client, lang: str) -> str:
    token = csrf_token(client, f"/login?lang={lang}")
    resp = client.post(f"/login?lang={lang}", data={"csrf_token": token, "login": "", "password": ""})
    assert resp.status_code == 400
    return resp.get_data(as_text=True)


def test_wtforms_messages_follow_each_requests_language(client, app):
    english = _post_empty_login(client, "en")
    assert "This field is required." in english and "该字段是必填字段。" not in english
    chinese = _post_empty_login(client, "zh_CN")
    assert "该字段是必填字段。" in chinese and "This field is required." not in chinese
    again = _post_empty_login(client, "en")  # the cached Chinese catalogue does not leak
    assert "This field is required." in again and "该字段是必填字段。" not in again


def _add_upstream(name: str, display: str):
    from federation import registry
    from tongban.extensions import db

    registry.add(name=name, issuer=f"http://127.0.0.1:9/{name}", client_id="tongban", client_secret="s3cret",
                 display_name=display)
    db.session.commit()


def _buttons_on_page(client) -> str:
    return client.get("/login?lang=en").get_data(as_text=True)


def test_upstream_buttons_follow_every_change(client, app):
    from federation import registry
    from federation.models import Upstream
    from tongban.extensions import db

    assert "Log in with" not in _buttons_on_page(client)
    _add_upstream("province", "省政务服务网")
    assert "Log in with 省政务服务网" in _buttons_on_page(client)

    registry.set_enabled("province", False)
    db.session.rollback()  # never committed: nothing changes, the cache included
    assert "Log in with 省政务服务网" in _buttons_on_page(client)

    registry.set_enabled("province", False)
    db.session.commit()
    assert "Log in with 省政务服务网" not in _buttons_on_page(client)

    # another process enables it: its commit moves the generation, which this process sees
    db.session.execute(Upstream.__table__.update().values(enabled=True))
    db.session.commit()
    registry.UPSTREAMS_GENERATION.bump(app)
    assert "Log in with 省政务服务网" in _buttons_on_page(client)


def _authorize_url(client_id: str, nonce: str, challenge: str) -> str:
    return "/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": "openid profile",
        "state": "st4te", "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"})


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def test_whole_log_in_answers_once_with_iss_and_state(client, citizen, make_client, app):
    """The full path the benchmark drives: authorize (the log-in page), POST (answered with the
    code), token."""
    client_id, secret = make_client(first_party=True)
    verifier, challenge = _pkce()
    url = _authorize_url(client_id, "n-1", challenge)
    page = client.get(url)
    assert page.status_code == 200 and 'action="/login"' in page.get_data(as_text=True)
    token = _CSRF.search(page.get_data(as_text=True)).group(1)
    nxt = html.unescape(re.search(r'id="next" name="next" type="hidden" value="([^"]*)"',
                                  page.get_data(as_text=True)).group(1))
    assert nxt == url
    resp = client.post("/login", data={"csrf_token": token, "login": CITIZEN_ID, "password": PASSWORD, "next": nxt})
    assert resp.status_code == 302
    q = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert resp.headers["Location"].startswith(REDIRECT)
    assert q["state"] == ["st4te"] and q["iss"] == [app.config["TONGBAN_ISSUER"]] and len(q["code"]) == 1
    # a wrong verifier is still refused (PKCE checked at the token endpoint)
    bad = client.post("/oauth/token", data={"grant_type": "authorization_code", "code": q["code"][0],
                                            "redirect_uri": REDIRECT, "code_verifier": verifier + "x"},
                      headers=basic(client_id, secret))
    assert bad.status_code == 400


def test_nonce_replayed_in_a_later_request_is_refused(client, citizen, make_client):
    client_id, _ = make_client(first_party=True)
    assert login(client).status_code == 302
    _, challenge = _pkce()
    first = client.get(_authorize_url(client_id, "same-nonce", challenge))
    assert "code" in parse_qs(urlsplit(first.headers["Location"]).query)
    again = client.get(_authorize_url(client_id, "same-nonce", challenge))
    q = parse_qs(urlsplit(again.headers["Location"]).query)
    assert again.headers["Location"].startswith(REDIRECT)
    assert q.get("error") == ["invalid_request"] and "code" not in q


def test_nonce_used_by_a_concurrent_request_meanwhile_is_refused(client, citizen, make_client, monkeypatch):
    """The request was validated (nonce unused) before a concurrent request issued a code with
    the same nonce: the check right before issuing sees it, no second code is issued."""
    from idp import views
    from idp.models import AuthorizationCode
    from tongban.clock import digest, epoch, utcnow
    from tongban.extensions import db

    client_id, _ = make_client(first_party=True)
    assert login(client).status_code == 302
    real_note = views.sessions.note_client

    def note_and_race(sess, cid):  # runs after get_consent_grant, before the code is created
        real_note(sess, cid)
        now = utcnow()
        db.session.add(AuthorizationCode(
            code_hash=digest(secrets.token_urlsafe(16)), client_id=cid, user_id=citizen.id, redirect_uri=REDIRECT,
            response_type="code", scope="openid profile", nonce="raced-nonce", auth_time=epoch(),
            created_at=now, expires_at=now + timedelta(minutes=1)))
        db.session.flush()

    monkeypatch.setattr(views.sessions, "note_client", note_and_race)
    _, challenge = _pkce()
    resp = client.get(_authorize_url(client_id, "raced-nonce", challenge))
    location = resp.headers["Location"]
    q = parse_qs(urlsplit(location).query)
    assert location.startswith(REDIRECT)
    assert q.get("error") == ["invalid_request"] and "code" not in q
    assert q["state"] == ["st4te"] and "iss" in q


def test_a_bad_redirect_uri_is_still_refused_on_the_page(client, citizen, make_client):
    client_id, _ = make_client(first_party=True)
    assert login(client).status_code == 302
    _, challenge = _pkce()
    url = _authorize_url(client_id, "n-2", challenge).replace("callback", "callbackx")
    resp = client.get(url)
    assert resp.status_code == 400 and "Location" not in resp.headers


def test_argon2_runs_at_most_the_configured_number_at_once(app, monkeypatch):
    """Request threads queue for Argon2 instead of time-slicing it; every check still answers
    right (a wrong password is still wrong, an unknown account still costs a check)."""
    import threading
    import time

    from people import argon2_memory, passwords

    monkeypatch.setitem(app.config, "TONGBAN_ARGON2_CONCURRENCY", 1)
    stored = passwords.hash_password("Right-Passw0rd!")
    inside, most, lock = [0], [0], threading.Lock()
    real_verify = argon2_memory.verify_password

    def counting_verify(hash, password, **kwargs):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.02)  # let the other threads try to get in
        try:
            return real_verify(hash, password, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(argon2_memory, "verify_password", counting_verify)
    results: dict[int, bool] = {}

    def check(i: int) -> None:
        with app.app_context():
            pw = "Right-Passw0rd!" if i % 3 == 0 else "Wrong-Passw0rd!"
            results[i] = passwords.verify_password(None if i % 3 == 2 else stored, pw)

    threads = [threading.Thread(target=check, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
    assert results == {0: True, 1: False, 2: False, 3: True, 4: False, 5: False}


def test_argon2_gate_never_refuses_a_check(app, monkeypatch):
    """A run that waited its longest runs anyway (the bound delays, it never fails a log-in)."""
    from people import passwords

    monkeypatch.setitem(app.config, "TONGBAN_ARGON2_CONCURRENCY", 1)
    monkeypatch.setattr(passwords, "_GATE_WAIT", 0.01)
    stored = passwords.hash_password("Right-Passw0rd!")
    gate = passwords._gate()
    assert gate.acquire(timeout=1)  # another run holds the only turn
    try:
        assert passwords.verify_password(stored, "Right-Passw0rd!") is True
        assert passwords.verify_password(stored, "Wrong-Passw0rd!") is False
    finally:
        gate.release()
    assert gate.acquire(timeout=1)  # its turn was given back exactly once
    gate.release()
