"""Scan-to-log-in over real HTTP: a desktop browser (requests) asks for a QR code, the
QR code is decoded with zxing-cpp, a logged-in phone (the scripted browser) confirms,
and only the desktop that asked can turn the confirmation into a session."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
import requests
import zxingcpp
from PIL import Image, ImageDraw
from sqlalchemy import select, update

from tests.conftest import OTHER_ID, PASSWORD
from tests.idp.helpers import _CSRF, Browser

_SVG_MODULE = re.compile(r"M(\d+),(\d+)H")


def decode_qr(data_uri: str) -> str:
    """The URL in the QR code the desktop shows: the SVG's modules drawn and read by zxing-cpp."""
    import base64

    svg = base64.b64decode(data_uri.split(",", 1)[1]).decode()
    size = int(re.search(r'viewBox="0 0 (\d+) (\d+)"', svg).group(1))
    scale = 8
    img = Image.new("L", (size * scale, size * scale), 255)
    draw = ImageDraw.Draw(img)
    for x, y in _SVG_MODULE.findall(svg):
        x, y = int(x), int(y)
        draw.rectangle([x * scale, y * scale, (x + 1) * scale - 1, (y + 1) * scale - 1], fill=0)
    found = zxingcpp.read_barcodes(img)
    assert found, "no QR code found in the SVG"
    return found[0].text


class Desktop:
    """A desktop browser on the log-in page (what static/js/qrlogin.js does, without JS)."""

    def __init__(self, base: str, next_url: str = "/account"):
        self.base = base
        self.http = requests.Session()
        page = self.http.get(f"{base}/login", params={"next": next_url})
        assert page.status_code == 200
        self.page = page.text
        self.csrf = re.search(r'data-csrf="([^"]+)"', page.text).group(1)
        self.next_url = next_url

    def start(self) -> requests.Response:
        return self.http.post(f"{self.base}/qr/start", headers={"X-CSRFToken": self.csrf})

    def start_ok(self) -> str:
        resp = self.start()
        assert resp.status_code == 200, resp.text
        data = resp.json()
        assert data["state"] == "waiting" and data["expires_in"] == 120 and data["interval_ms"] == 1500
        return decode_qr(data["image"])

    def status(self) -> str:
        resp = self.http.get(f"{self.base}/qr/status")
        assert resp.status_code == 200
        assert "no-store" in resp.headers["Cache-Control"]
        return resp.json()["state"]

    def complete(self) -> requests.Response:
        return self.http.post(f"{self.base}/qr/complete", data={"csrf_token": self.csrf, "next": self.next_url},
                              allow_redirects=False)


class Phone(Browser):
    def open(self, url: str) -> requests.Response:
        return self.http.get(url, allow_redirects=False)

    def decide(self, url: str, page: requests.Response, decision: str) -> requests.Response:
        csrf = _CSRF.search(page.text).group(1)
        return self.http.post(url, data={"csrf_token": csrf, "decision": decision}, allow_redirects=False)


@pytest.fixture
def other(app):
    from people import accounts
    from tongban.extensions import db

    user = accounts.create_user(OTHER_ID, "李四", PASSWORD, "13900139000")
    db.session.commit()
    return user


def _phone(base, login=None) -> Phone:
    phone = Phone(base)
    resp = phone.login(login=login) if login else phone.login()
    assert resp.status_code == 302
    return phone


def _actions(app) -> list[str]:
    from tongban.audit import AuditLog
    from tongban.extensions import db

    db.session.expire_all()
    return list(db.session.execute(select(AuditLog.action).where(AuditLog.action.like("qr.%"))
                                   .order_by(AuditLog.id)).scalars())


def _rows(app):
    from idp.qrlogin import QrLogin
    from tongban.extensions import db

    db.session.expire_all()
    return list(db.session.execute(select(QrLogin).order_by(QrLogin.id)).scalars())


# ---------------------------------------------------------------- the happy path


def test_login_page_offers_the_panel_without_inline_script(live_server):
    desktop = Desktop(live_server)
    assert 'id="qr-login"' in desktop.page and " hidden" in desktop.page  # shown by the script only
    assert '<script src="/static/js/qrlogin.js' in desktop.page
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", desktop.page), "inline script"
    assert 'action="/login"' in desktop.page  # the password form still works without JS
    js = requests.get(f"{live_server}/static/js/qrlogin.js")
    assert js.status_code == 200 and "X-CSRFToken" in js.text


def test_waiting_scanned_confirmed_consumed(app, live_server, citizen):
    desktop = Desktop(live_server, next_url="/account")
    url = desktop.start_ok()
    assert re.fullmatch(rf"{re.escape(live_server)}/qr/[A-Za-z0-9_-]{{32}}", url)
    cookie = next(c for c in desktop.http.cookies if c.name == "tb_qr")
    assert cookie.path == "/qr" and cookie.has_nonstandard_attr("HttpOnly")
    assert desktop.status() == "waiting"

    # only digests are stored
    (row,) = _rows(app)
    code = url.rsplit("/", 1)[1]
    assert code not in (row.code_hash, row.binding_hash) and cookie.value not in (row.code_hash, row.binding_hash)

    phone = _phone(live_server)
    page = phone.open(url)
    assert page.status_code == 200
    assert 'name="decision" value="approve"' in page.text
    assert desktop.status() == "scanned"
    assert phone.open(url).status_code == 200  # seeing it again is harmless
    assert desktop.status() == "scanned"

    done = phone.decide(url, page, "approve")
    assert done.status_code == 200, done.text
    assert desktop.status() == "confirmed"

    resp = desktop.complete()
    assert resp.status_code == 302 and resp.headers["Location"] == "/account"
    assert desktop.http.get(f"{live_server}/account", allow_redirects=False).status_code == 200
    assert desktop.status() == "expired"  # the binding cookie is gone

    (row,) = _rows(app)
    assert row.state == "consumed" and row.user_id == citizen.id and row.new_sid

    from people.models import LoginSession
    from tongban.extensions import db

    sessions = {s.sid: s for s in db.session.execute(select(LoginSession)).scalars()}
    new, phone_sess = sessions[row.new_sid], sessions[row.phone_sid]
    assert new.amr == "mca" and new.acr == phone_sess.acr and new.ended_at is None
    assert phone_sess.ended_at is None  # the phone stays logged in
    assert _actions(app) == ["qr.created", "qr.scanned", "qr.confirmed", "qr.consumed"]

    # single use: neither the desktop again nor the phone can reuse it. The log-in renewed the
    # desktop's CSRF secret, so the page's own form is refused as stale first; with a token of
    # the new secret the code is found consumed
    again = desktop.complete()
    assert again.status_code == 400
    fresh = desktop.http.get(f"{live_server}/login", params={"force": "1", "next": "/account"})
    desktop.csrf = re.search(r'data-csrf="([^"]+)"', fresh.text).group(1)
    again = desktop.complete()
    assert again.status_code == 302 and again.headers["Location"].startswith("/login")
    assert phone.open(url).status_code == 410


def test_acr_is_the_phone_sessions_not_the_accounts(app, live_server, citizen):
    from people.models import LoginSession
    from tongban.extensions import db

    citizen.assurance_level = 3
    db.session.commit()
    phone = _phone(live_server)
    db.session.execute(update(LoginSession).values(acr="L2"))  # e.g. a session started before verification
    db.session.commit()
    desktop = Desktop(live_server)
    url = desktop.start_ok()
    phone.decide(url, phone.open(url), "approve")
    assert desktop.complete().status_code == 302
    (row,) = _rows(app)
    new = db.session.execute(select(LoginSession).where(LoginSession.sid == row.new_sid)).scalar_one()
    assert new.acr == "L2"


def test_the_next_url_is_followed_and_checked(live_server, citizen):
    desktop = Desktop(live_server, next_url="//evil.example/")
    url = desktop.start_ok()
    phone = _phone(live_server)
    phone.decide(url, phone.open(url), "approve")
    resp = desktop.complete()
    assert resp.status_code == 302 and resp.headers["Location"] == "/account"


# ---------------------------------------------------------------- refusals


def test_a_leaked_code_cannot_be_completed_elsewhere(app, live_server, citizen):
    desktop = Desktop(live_server)
    url = desktop.start_ok()
    phone = _phone(live_server)
    phone.decide(url, phone.open(url), "approve")

    # an attacker who saw the QR code, with a browser of their own and even a QR code of their own
    attacker = Desktop(live_server)
    assert attacker.complete().headers["Location"].startswith("/login")
    attacker.start_ok()
    assert attacker.status() == "waiting"  # their own code, not the victim's
    resp = attacker.complete()
    assert resp.headers["Location"].startswith("/login")
    assert attacker.http.get(f"{live_server}/account", allow_redirects=False).status_code == 302
    # nor does opening the QR URL log anybody in
    assert attacker.http.get(url, allow_redirects=False).headers["Location"].startswith("/login")

    # the desktop that asked still can
    assert desktop.status() == "confirmed"
    assert desktop.complete().headers["Location"] == "/account"


def test_a_forged_binding_cookie_does_not_help(live_server, citizen):
    desktop = Desktop(live_server)
    url = desktop.start_ok()
    phone = _phone(live_server)
    phone.decide(url, phone.open(url), "approve")
    attacker = Desktop(live_server)
    attacker.http.cookies.set("tb_qr", url.rsplit("/", 1)[1], path="/qr")  # the code is not the binding
    assert attacker.status() == "expired"
    assert attacker.complete().headers["Location"].startswith("/login")


def test_expiry_after_two_minutes(app, live_server, citizen):
    from idp.qrlogin import QrLogin
    from tongban.clock import utcnow
    from tongban.extensions import db

    desktop = Desktop(live_server)
    url = desktop.start_ok()
    (row,) = _rows(app)
    assert row.expires_at - row.created_at == timedelta(minutes=2)
    phone = _phone(live_server)
    page = phone.open(url)
    assert desktop.status() == "scanned"
    db.session.execute(update(QrLogin).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()

    assert phone.decide(url, page, "approve").status_code == 410
    assert desktop.status() == "expired"
    assert phone.open(url).status_code == 410
    assert desktop.complete().headers["Location"].startswith("/login")
    assert _actions(app) == ["qr.created", "qr.scanned", "qr.expired", "qr.complete_rejected"]


def test_the_phone_can_decline(app, live_server, citizen):
    desktop = Desktop(live_server)
    url = desktop.start_ok()
    phone = _phone(live_server)
    resp = phone.decide(url, phone.open(url), "deny")
    assert resp.status_code == 200
    assert desktop.status() == "denied"
    assert desktop.complete().headers["Location"].startswith("/login")
    assert phone.open(url).status_code == 410


def test_the_phone_must_be_logged_in(live_server, citizen):
    desktop = Desktop(live_server)
    url = desktop.start_ok()
    phone = Phone(live_server)
    resp = phone.open(url)
    assert resp.status_code == 302 and resp.headers["Location"].startswith(("/login?next=/qr/", "/login?next=%2Fqr%2F"))
    assert desktop.status() == "waiting"
    # logging in on the phone comes back to the confirmation page
    resp = phone.login(next_url=url.replace(live_server, ""))
    assert resp.headers["Location"] == url.replace(live_server, "")
    assert phone.open(url).status_code == 200


def test_confirmation_needs_the_csrf_token(live_server, citizen):
    desktop = Desktop(live_server)
    url = desktop.start_ok()
    phone = _phone(live_server)
    phone.open(url)
    resp = phone.http.post(url, data={"decision": "approve"}, allow_redirects=False)
    assert resp.status_code == 400
    assert desktop.status() == "scanned"
    # and so does starting one
    assert desktop.http.post(f"{live_server}/qr/start").status_code == 400


def test_unknown_codes(live_server, citizen):
    phone = _phone(live_server)
    assert phone.open(f"{live_server}/qr/not-a-real-code").status_code == 404


def test_creation_is_rate_limited_per_ip(app, live_server, monkeypatch):
    monkeypatch.setitem(app.config, "TONGBAN_QR_RATE_PER_IP", 3)
    desktop = Desktop(live_server)
    codes = [desktop.start() for _ in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429]
    assert int(codes[-1].headers["Retry-After"]) >= 1


# ---------------------------------------------------------------- the race


def test_two_confirmations_race_exactly_one_wins(app, live_server, citizen, other):
    """Two phones (two citizens) confirm one code at the same moment: one wins, and the
    desktop is logged in as that one."""
    from people.models import LoginSession
    from tongban.extensions import db

    rounds = 3
    phones = [_phone(live_server), _phone(live_server, login=OTHER_ID)]
    for _ in range(rounds):
        desktop = Desktop(live_server)
        url = desktop.start_ok()
        pages = [p.open(url) for p in phones]
        barrier = threading.Barrier(len(phones))
        results: list[int | None] = [None] * len(phones)

        def confirm(i, phones=phones, pages=pages, url=url, barrier=barrier, results=results):
            barrier.wait()
            results[i] = phones[i].decide(url, pages[i], "approve").status_code

        threads = [threading.Thread(target=confirm, args=(i,)) for i in range(len(phones))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == [200, 410], results
        winner = (citizen.id, other.id)[results.index(200)]

        assert desktop.complete().headers["Location"] == "/account"
        row = _rows(app)[-1]
        assert row.state == "consumed" and row.user_id == winner
        new = db.session.execute(select(LoginSession).where(LoginSession.sid == row.new_sid)).scalar_one()
        assert new.user_id == winner
    assert _actions(app).count("qr.confirmed") == rounds


def test_two_completions_race_exactly_one_session(app, live_server, citizen):
    """The same desktop completing twice at once (a double submit): one session, not two."""
    from people.models import LoginSession
    from tongban.extensions import db

    desktop = Desktop(live_server)
    url = desktop.start_ok()
    phone = _phone(live_server)
    phone.decide(url, phone.open(url), "approve")
    binding = desktop.http.cookies.get("tb_qr", path="/qr")
    clones = []
    for _ in range(3):
        s = Desktop.__new__(Desktop)
        s.base, s.csrf, s.next_url = desktop.base, desktop.csrf, desktop.next_url
        s.http = requests.Session()
        s.http.cookies.update(desktop.http.cookies)
        s.http.cookies.set("tb_qr", binding, path="/qr")
        clones.append(s)
    barrier = threading.Barrier(len(clones))
    locations: list[str] = []

    def go(s):
        barrier.wait()
        locations.append(s.complete().headers["Location"])

    threads = [threading.Thread(target=go, args=(s,)) for s in clones]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert locations.count("/account") == 1, locations
    count = db.session.execute(select(LoginSession).where(LoginSession.amr == "mca")).scalars().all()
    assert len(count) == 1


def test_old_rows_are_purged(app):
    """The worker's hourly chore deletes QR log-ins and device codes a day past expiry."""
    from datetime import timedelta

    from idp import device, qrlogin
    from tongban.clock import utcnow
    from tongban.extensions import db

    now = utcnow()
    db.session.add(qrlogin.QrLogin(code_hash="a" * 64, binding_hash="b" * 64, state="expired",
                                   created_at=now - timedelta(days=3), expires_at=now - timedelta(days=2)))
    db.session.add(qrlogin.QrLogin(code_hash="c" * 64, binding_hash="d" * 64, state="waiting",
                                   created_at=now, expires_at=now + timedelta(minutes=2)))
    db.session.commit()
    qrlogin._purge_chore()
    device._purge_chore()
    assert [r.code_hash[0] for r in db.session.query(qrlogin.QrLogin)] == ["c"]
