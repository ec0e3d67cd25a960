"""Driving the HTML pages and the OAuth endpoints with Flask's test client (CSRF on)."""

from __future__ import annotations

import base64
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.conftest import CITIZEN_ID, PASSWORD

REDIRECT = "http://127.0.0.1:9/callback"
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_token(client, url: str) -> str:
    page = client.get(url)
    m = _CSRF.search(page.get_data(as_text=True))
    assert m, f"no CSRF token on {url}: {page.status_code} {page.get_data(as_text=True)[:300]}"
    return m.group(1)


def login(client, login: str = CITIZEN_ID, password: str = PASSWORD, **kw):
    token = csrf_token(client, "/login?force=1&lang=en")
    return client.post("/login?lang=en", data={"csrf_token": token, "login": login, "password": password,
                                                "next": ""}, **kw)


def basic(client_id: str, secret: str) -> dict:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def authorize_code(client, client_id: str, scope: str = "openid profile", approve: bool = True) -> str:
    """With a logged-in browser: authorize, consent if asked, return the code from the callback."""
    url = "/oauth/authorize?" + urlencode({"response_type": "code", "client_id": client_id,
                                           "redirect_uri": REDIRECT, "scope": scope, "state": "st4te",
                                           "nonce": secrets.token_urlsafe(8)})
    resp = client.get(url)
    if resp.status_code == 200 and 'name="decision"' in resp.get_data(as_text=True):
        token = _CSRF.search(resp.get_data(as_text=True)).group(1)
        resp = client.post(url, data={"csrf_token": token, "decision": "approve" if approve else "deny"})
    assert resp.status_code in (302, 303), resp.get_data(as_text=True)[:500]
    location = resp.headers["Location"]
    assert location.startswith(REDIRECT), location
    q = parse_qs(urlsplit(location).query)
    assert "code" in q, location
    return q["code"][0]


def exchange(client, client_id: str, secret: str, code: str):
    return client.post("/oauth/token", data={"grant_type": "authorization_code", "code": code,
                                             "redirect_uri": REDIRECT}, headers=basic(client_id, secret))


def sms_code_for(phone: str) -> str | None:
    """The latest six-digit code texted to ``phone`` (read as the SMS gateway would)."""
    import re

    from sqlalchemy import select

    from people.mfa import SmsOutbox, outbox_text
    from tongban.extensions import db

    db.session.expire_all()
    for body in db.session.execute(select(SmsOutbox.body).where(SmsOutbox.phone == phone)
                                   .order_by(SmsOutbox.id.desc())).scalars():
        m = re.search(r"\b(\d{6})\b", outbox_text(body))
        return m.group(1) if m else None
    return None


def registration_code(client, phone: str, **kw) -> str | None:
    """Press "send code" on the registration form; returns the code texted to ``phone``."""
    resp = client.post("/register/code", data={"phone": phone, "csrf_token": csrf_token(client, "/register")},
                       **kw)
    assert resp.status_code == 200, resp.status_code
    return sms_code_for(phone)
