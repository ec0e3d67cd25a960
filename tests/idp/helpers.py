"""Shared helpers for the OpenID Connect protocol tests: a scripted browser (log-in with
CSRF, consent, redirects up to the client's callback) and strict ID token validation."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urljoin, urlsplit

import requests
from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from tests.conftest import CITIZEN_ID, PASSWORD

REDIRECT = "http://127.0.0.1:9/callback"
REDIRECT_2 = "http://127.0.0.1:9/second/callback"
LOGOUT_REDIRECT = "http://127.0.0.1:9/logged-out"

_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def _input_value(page: str, name: str) -> str | None:
    """The value of ``<input name=NAME ...>`` in ``page`` (attribute order agnostic)."""
    for tag in re.findall(r"<input\b[^>]*>", page):
        if re.search(rf'\bname="{re.escape(name)}"', tag):
            m = re.search(r'\bvalue="([^"]*)"', tag)
            return html.unescape(m.group(1)) if m else ""
    return None


def is_login_page(resp: requests.Response) -> bool:
    return resp.status_code == 200 and 'name="password"' in resp.text and 'action="/login"' in resp.text


def is_consent_page(resp: requests.Response) -> bool:
    return resp.status_code == 200 and 'name="decision"' in resp.text


@dataclass
class Step:
    """Where a walk through the provider stopped."""

    kind: str  # "callback" | "login" | "consent" | "page"
    url: str  # the callback URL, or the URL of the page shown
    resp: requests.Response | None = None
    seen: list[str] = field(default_factory=list)  # kinds of pages shown on the way ("login", "consent")

    @property
    def params(self) -> dict[str, str]:
        assert self.kind == "callback", f"stopped at {self.kind}: {self.url}"
        return {k: v[0] for k, v in parse_qs(urlsplit(self.url).query).items()}


class Browser:
    """A browser driving the provider's HTML pages (no JavaScript needed)."""

    def __init__(self, base: str):
        self.base = base
        self.http = requests.Session()

    def _abs(self, url: str) -> str:
        return urljoin(self.base + "/", url)

    def _is_provider(self, url: str) -> bool:
        return urlsplit(self._abs(url)).netloc == urlsplit(self.base).netloc

    def login(self, login: str = CITIZEN_ID, password: str = PASSWORD, next_url: str | None = None):
        """Log in directly at /login; returns the POST response (302 on success)."""
        page = self.http.get(self._abs("/login"), params={"next": next_url} if next_url else None,
                             allow_redirects=False)
        assert is_login_page(page), page.text[:300]
        return self._post_login(page, login, password, follow=False)

    def _post_login(self, page: requests.Response, login: str, password: str, follow: bool):
        csrf = _CSRF.search(page.text).group(1)
        data = {"csrf_token": csrf, "login": login, "password": password,
                "next": _input_value(page.text, "next") or ""}
        return self.http.post(self._abs("/login"), data=data, allow_redirects=False)

    def walk(self, url: str, *, method: str = "GET", data: dict | None = None,
             seen: list[str] | None = None) -> Step:
        """Follow redirects inside the provider until a page is shown or the client's
        callback is reached (never fetched: the client is not listening)."""
        seen = [] if seen is None else seen
        url = self._abs(url)
        for _ in range(12):
            if not self._is_provider(url):
                return Step("callback", url, None, seen)
            if method == "POST":
                resp = self.http.post(url, data=data, allow_redirects=False)
                method, data = "GET", None
            else:
                resp = self.http.get(url, allow_redirects=False)
            if resp.status_code in (301, 302, 303, 307):
                url = self._abs(resp.headers["Location"])
                continue
            kind = "login" if is_login_page(resp) else "consent" if is_consent_page(resp) else "page"
            if kind != "page":
                seen.append(kind)
            return Step(kind, url, resp, seen)
        raise AssertionError("too many redirects")

    def submit_login(self, step: Step, login: str = CITIZEN_ID, password: str = PASSWORD) -> Step:
        assert step.kind == "login", f"expected the login page, got {step.kind}: {step.url}"
        resp = self._post_login(step.resp, login, password, follow=True)
        if resp.status_code in (301, 302, 303, 307):
            return self.walk(resp.headers["Location"], seen=step.seen)
        # the authorization request continues in the log-in's response: its page (consent,
        # chooser, an error) is the answer to the POST
        assert resp.status_code == 200 and not is_login_page(resp), f"log-in failed ({resp.status_code})"
        kind = "consent" if is_consent_page(resp) else "page"
        if kind != "page":
            step.seen.append(kind)
        return Step(kind, resp.url, resp, step.seen)

    def submit_consent(self, step: Step, decision: str = "approve") -> Step:
        assert step.kind == "consent", f"expected the consent page, got {step.kind}: {step.url}"
        page = step.resp.text
        action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', page).group(1))
        csrf = _CSRF.search(page).group(1)
        return self.walk(action, method="POST", data={"csrf_token": csrf, "decision": decision},
                         seen=step.seen)

    def authorize(self, url: str, *, consent: str = "approve", login: str = CITIZEN_ID,
                  password: str = PASSWORD) -> Step:
        """Run an authorization request to the callback: log in and approve when asked."""
        step = self.walk(url)
        if step.kind == "login":
            step = self.submit_login(step, login, password)
        if step.kind == "consent":
            step = self.submit_consent(step, consent)
        assert step.kind == "callback", f"stopped at {step.kind} ({step.url}): " + (
            step.resp.text[:500] if step.resp is not None else "")
        return step


# ---------------------------------------------------------------- discovery & tokens


def discover(base: str) -> dict:
    resp = requests.get(f"{base}/.well-known/openid-configuration")
    assert resp.status_code == 200
    return resp.json()


def jwks(disco: dict) -> KeySet:
    return KeySet.import_key_set(requests.get(disco["jwks_uri"]).json())


def half_hash(value: str, alg: str) -> str:
    """at_hash / c_hash (OIDC Core §3.1.3.6): left half of the hash matching ``alg``."""
    bits = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}[alg[-3:]]
    d = bits(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(d[: len(d) // 2]).rstrip(b"=").decode()


def validate_id_token(raw: str, *, disco: dict, client_id: str, nonce: str | None,
                      access_token: str | None = None, alg: str = "RS256", max_age: int | None = None,
                      now: int | None = None) -> dict:
    """Validate an ID token as a strict relying party would (OIDC Core §3.1.3.7)."""
    import time

    header = extract_compact(raw.encode()).headers()
    assert header["alg"] == alg, f"ID token alg {header['alg']}, expected {alg}"
    keys = jwks(disco)
    assert header.get("kid") and keys.get_by_kid(header["kid"]), "kid not in the published JWKS"
    token = jwt.decode(raw, keys, algorithms=[alg])  # signature
    claims = token.claims
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": disco["issuer"]},
        aud={"essential": True, "value": client_id},
        exp={"essential": True}, iat={"essential": True}, sub={"essential": True},
        auth_time={"essential": True}, sid={"essential": True},
    )
    registry.validate(claims)  # also checks exp/iat against the clock
    aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    assert client_id in aud
    if len(aud) > 1 or "azp" in claims:
        assert claims["azp"] == client_id
    now = now or int(time.time())
    assert claims["iat"] <= now + 5 and claims["exp"] > now
    assert claims["auth_time"] <= now + 5
    if max_age is not None:
        assert now - claims["auth_time"] <= max_age + 5
    if nonce is not None:
        assert claims.get("nonce") == nonce
    else:
        assert "nonce" not in claims
    if access_token is not None:
        assert claims["at_hash"] == half_hash(access_token, alg)
    return claims


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def callback_params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# ---------------------------------------------------------------- identity proofing


def prove(browser: Browser, user, phone: str = "13700137999", acr: str = "L3", level: int = 3) -> None:
    """Make ``user`` identity-verified (L3, as if the population register confirmed it) and step
    the browser's log-in session up with an SMS code read from the SMS outbox: the session then
    has ``acr`` L3 and ``amr`` pwd sms mfa (what claiming an enterprise needs)."""
    from people.mfa import SmsOutbox, outbox_text
    from people.models import User
    from tongban.extensions import db

    db.session.expire_all()
    row = db.session.get(User, user.id)
    row.assurance_level = max(row.assurance_level, level)
    row.phone = row.phone or phone
    db.session.commit()
    params = {"acr": acr, "next": "/account"}
    page = browser.http.get(browser._abs("/mfa/verify"), params=params, allow_redirects=False)
    assert page.status_code == 200, page.status_code
    csrf = _CSRF.search(page.text).group(1)
    sent = browser.http.post(browser._abs("/mfa/verify/sms/send"), params=params, data={"csrf_token": csrf},
                             allow_redirects=False)
    assert sent.status_code == 302, sent.text[:300]
    db.session.expire_all()
    body = db.session.query(SmsOutbox).filter_by(phone=row.phone).order_by(SmsOutbox.id.desc()).first().body
    code = re.search(r"\b(\d{6})\b", outbox_text(body)).group(1)
    done = browser.http.post(browser._abs("/mfa/verify/sms"), params=params, data={"csrf_token": csrf, "code": code},
                             allow_redirects=False)
    assert done.status_code == 302, done.text[:300]
    if level >= 3:
        after = browser.http.get(browser._abs(done.headers["Location"]), allow_redirects=False)
        assert after.status_code == 302 and after.headers["Location"].endswith("/account"), after.text[:500]


def proven_session(user):
    """A log-in session row proven at L3 with a second factor (for service-level tests)."""
    from people.models import LoginSession
    from tongban.clock import digest, token, utcnow
    from tongban.extensions import db

    user.assurance_level = max(user.assurance_level, 3)
    now = utcnow()
    sess = LoginSession(sid=token(24), token_hash=digest(token(32)), user_id=user.id, auth_time=now, acr="L3",
                        amr="pwd sms mfa", created_at=now, last_seen=now)
    db.session.add(sess)
    db.session.flush()
    return sess
