"""The device authorization grant (RFC 8628) over real HTTP: a kiosk driven by plain
``requests`` exactly as the RFC describes, and by Authlib's OAuth2Session; the citizen
approves on the /device page with the scripted browser; ID tokens validated by joserfc."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import requests
from authlib.integrations.base_client.errors import OAuthError as ClientOAuth2Error
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8628 import DEVICE_CODE_GRANT_TYPE
from sqlalchemy import select, update

from tests.idp.helpers import _CSRF, Browser, bearer, discover, validate_id_token

USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")


@pytest.fixture
def disco(live_server):
    return discover(live_server)


@pytest.fixture
def kiosk(make_client):
    """A public self-service kiosk: no secret, device grant + refresh tokens."""
    cid, _ = make_client(name="公积金自助终端", department="住房公积金管理中心", redirect_uris=[],
                         grant_types=[DEVICE_CODE_GRANT_TYPE, "refresh_token"], token_endpoint_auth_method="none",
                         scopes=["openid", "profile", "phone"])
    return cid


@pytest.fixture
def phone(live_server, citizen):
    b = Browser(live_server)
    b.http.cookies.set("lang", "en")  # the messages asserted below are the English msgids
    assert b.login().status_code == 302
    return b


def _start(disco, client_id, scope="openid profile", auth=None) -> requests.Response:
    data = {"scope": scope}
    if auth is None:
        data["client_id"] = client_id
    return requests.post(disco["device_authorization_endpoint"], data=data, auth=auth)


def _poll(disco, client_id, device_code, auth=None) -> requests.Response:
    data = {"grant_type": DEVICE_CODE_GRANT_TYPE, "device_code": device_code}
    if auth is None:
        data["client_id"] = client_id
    return requests.post(disco["token_endpoint"], data=data, auth=auth)


def _error(resp, error, status=400):
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.json()["error"] == error, resp.text
    assert "no-store" in resp.headers.get("Cache-Control", "")


def _rewind_poll(app):
    """As if the kiosk had waited its interval (instead of sleeping in the test)."""
    from idp.device import DeviceAuthorization
    from tongban.extensions import db

    db.session.execute(update(DeviceAuthorization).values(last_polled_at=None))
    db.session.commit()


def _row(app):
    from idp.device import DeviceAuthorization
    from tongban.extensions import db

    db.session.expire_all()
    return db.session.execute(select(DeviceAuthorization).order_by(DeviceAuthorization.id.desc())).scalars().first()


def _approve(phone: Browser, url: str, decision: str = "approve") -> requests.Response:
    page = phone.http.get(url, allow_redirects=False)
    assert page.status_code == 200, page.text[:300]
    csrf = _CSRF.search(page.text).group(1)
    code = re.search(r'name="user_code" value="([^"]+)"', page.text).group(1)
    return phone.http.post(phone._abs("/device"), data={"csrf_token": csrf, "user_code": code,
                                                        "decision": decision}, allow_redirects=False)


# ---------------------------------------------------------------- discovery & registration


def test_discovery_and_registration(disco, make_client):
    assert disco["device_authorization_endpoint"] == disco["issuer"] + "/oauth/device_authorization"
    assert DEVICE_CODE_GRANT_TYPE in disco["grant_types_supported"]
    from idp.clients import GRANT_TYPES

    assert DEVICE_CODE_GRANT_TYPE in GRANT_TYPES
    make_client(redirect_uris=[], grant_types=[DEVICE_CODE_GRANT_TYPE], token_endpoint_auth_method="none")


def test_cli_accepts_the_grant_type(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["clients", "create", "--name", "自助机", "--department", "人社局",
                                 "--grant-type", DEVICE_CODE_GRANT_TYPE, "--grant-type", "refresh_token",
                                 "--public", "--json"])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- RFC 8628 with plain requests


def test_device_flow_per_rfc8628(app, disco, kiosk, phone, citizen):
    resp = _start(disco, kiosk, scope="openid profile")
    assert resp.status_code == 200, resp.text
    assert "no-store" in resp.headers["Cache-Control"]
    d = resp.json()
    assert USER_CODE.match(d["user_code"])
    assert d["verification_uri"] == disco["issuer"] + "/device"
    assert d["verification_uri_complete"] == d["verification_uri"] + "?user_code=" + d["user_code"]
    assert d["expires_in"] == 600 and d["interval"] == 5 and len(d["device_code"]) >= 40
    row = _row(app)
    assert d["device_code"] not in (row.device_code_hash, row.user_code_hash)
    assert d["user_code"] not in (row.device_code_hash, row.user_code_hash)

    # RFC 8628 §3.5: pending, then slow_down when polled faster than the interval (+5 s)
    _error(_poll(disco, kiosk, d["device_code"]), "authorization_pending")
    _error(_poll(disco, kiosk, d["device_code"]), "slow_down")
    assert _row(app).poll_interval == 10
    _error(_poll(disco, kiosk, d["device_code"]), "slow_down")
    assert _row(app).poll_interval == 15
    _rewind_poll(app)
    _error(_poll(disco, kiosk, d["device_code"]), "authorization_pending")

    # the citizen enters the code on the phone (typed loosely), sees who asks, approves
    page = phone.http.get(phone._abs("/device"))
    assert page.status_code == 200 and 'name="user_code"' in page.text
    csrf = _CSRF.search(page.text).group(1)
    typed = d["user_code"].replace("-", " ").lower()
    review = phone.http.post(phone._abs("/device"), data={"csrf_token": csrf, "user_code": typed})
    assert review.status_code == 200
    assert "公积金自助终端" in review.text and "住房公积金管理中心" in review.text
    assert d["user_code"] in review.text
    done = phone.http.post(phone._abs("/device"), data={"csrf_token": csrf, "user_code": typed,
                                                          "decision": "approve"})
    assert done.status_code == 200

    _rewind_poll(app)
    tok = _poll(disco, kiosk, d["device_code"])
    assert tok.status_code == 200, tok.text
    t = tok.json()
    assert t["token_type"] == "Bearer" and t["scope"] == "openid profile" and t["refresh_token"]
    claims = validate_id_token(t["id_token"], disco=disco, client_id=kiosk, nonce=None,
                               access_token=t["access_token"])
    assert claims["sub"] == citizen.sub and claims["acr"] == "L1" and claims["amr"] == ["pwd"]
    assert claims["azp"] == kiosk and claims["name"] == citizen.name
    info = requests.get(disco["userinfo_endpoint"], headers=bearer(t["access_token"]))
    assert info.status_code == 200 and info.json()["sub"] == citizen.sub

    # single use
    _error(_poll(disco, kiosk, d["device_code"]), "invalid_grant")
    # a refresh token per grant, rotating as in the code flow
    r = requests.post(disco["token_endpoint"], data={"grant_type": "refresh_token", "client_id": kiosk,
                                                     "refresh_token": t["refresh_token"]})
    assert r.status_code == 200, r.text
    assert r.json()["refresh_token"] != t["refresh_token"]

    from tongban.audit import AuditLog
    from tongban.extensions import db

    actions = list(db.session.execute(select(AuditLog.action).where(AuditLog.action.like("device.%"))
                                      .order_by(AuditLog.id)).scalars())
    assert actions == ["device.requested", "device.approved", "device.token_issued"]


def test_verification_uri_complete_and_deny(app, disco, kiosk, phone):
    d = _start(disco, kiosk).json()
    resp = _approve(phone, d["verification_uri_complete"], "deny")
    assert resp.status_code == 200
    _error(_poll(disco, kiosk, d["device_code"]), "access_denied")
    _rewind_poll(app)
    _error(_poll(disco, kiosk, d["device_code"]), "access_denied")
    # the code cannot be approved afterwards
    page = phone.http.get(d["verification_uri_complete"])
    assert page.status_code == 400 and "already been used" in page.text


def test_expired_token(app, disco, kiosk, phone):
    from idp.device import DeviceAuthorization
    from tongban.clock import utcnow
    from tongban.extensions import db

    d = _start(disco, kiosk).json()
    db.session.execute(update(DeviceAuthorization).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    _error(_poll(disco, kiosk, d["device_code"]), "expired_token")
    page = phone.http.get(d["verification_uri_complete"])
    assert page.status_code == 400 and "expired" in page.text


def test_request_errors(app, disco, kiosk, make_client, phone):
    # a system not registered for the grant may not start one
    other, secret = make_client()
    _error(_start(disco, other, auth=(other, secret)), "unauthorized_client")
    assert _start(disco, "no-such-client").json()["error"] == "invalid_client"
    # a confidential kiosk must authenticate
    conf, conf_secret = make_client(redirect_uris=[], grant_types=[DEVICE_CODE_GRANT_TYPE])
    assert _start(disco, conf).status_code in (400, 401)
    d = _start(disco, conf, auth=(conf, conf_secret)).json()
    _error(_poll(disco, conf, d["device_code"], auth=(conf, "wrong")), "invalid_client", 401)
    # another client's device code, an unknown one, a missing one
    _error(_poll(disco, kiosk, d["device_code"]), "invalid_grant")
    _error(_poll(disco, kiosk, "not-a-device-code"), "invalid_grant")
    r = requests.post(disco["token_endpoint"], data={"grant_type": DEVICE_CODE_GRANT_TYPE, "client_id": kiosk})
    _error(r, "invalid_request")
    # a system that is not registered for the grant cannot poll either
    _error(_poll(disco, other, d["device_code"], auth=(other, secret)), "unauthorized_client")


def test_device_page_needs_log_in_and_a_real_code(live_server, disco, kiosk, phone):
    anon = requests.get(f"{live_server}/device?user_code=BCDF-GHJK", allow_redirects=False)
    assert anon.status_code == 302 and anon.headers["Location"].startswith("/login?next=")
    page = phone.http.get(phone._abs("/device"))
    csrf = _CSRF.search(page.text).group(1)
    bad = phone.http.post(phone._abs("/device"), data={"csrf_token": csrf, "user_code": "AEIO-U123"})
    assert bad.status_code == 400 and "eight letters" in bad.text
    unknown = phone.http.post(phone._abs("/device"), data={"csrf_token": csrf, "user_code": "BCDF-GHJK"})
    assert unknown.status_code == 400 and "not found" in unknown.text
    no_csrf = phone.http.post(phone._abs("/device"), data={"user_code": "BCDF-GHJK", "decision": "approve"})
    assert no_csrf.status_code == 400


# ---------------------------------------------------------------- Authlib's client


def test_device_flow_with_authlib_oauth2session(app, disco, make_client, phone, citizen):
    cid, secret = make_client(name="社保自助终端", department="人力资源和社会保障局", redirect_uris=[],
                              grant_types=[DEVICE_CODE_GRANT_TYPE],  # no refresh_token grant: none issued
                              scopes=["openid", "phone"], id_token_signed_response_alg="ES256")
    kiosk = OAuth2Session(cid, secret, scope="openid phone")
    d = kiosk.post(disco["device_authorization_endpoint"], data={"scope": "openid phone"},
                   auth=(cid, secret)).json()
    with pytest.raises(ClientOAuth2Error) as pending:
        kiosk.fetch_token(disco["token_endpoint"], grant_type=DEVICE_CODE_GRANT_TYPE, device_code=d["device_code"])
    assert pending.value.error == "authorization_pending"

    assert _approve(phone, d["verification_uri_complete"]).status_code == 200
    _rewind_poll(app)
    token = kiosk.fetch_token(disco["token_endpoint"], grant_type=DEVICE_CODE_GRANT_TYPE,
                              device_code=d["device_code"])
    assert "refresh_token" not in token
    claims = validate_id_token(token["id_token"], disco=disco, client_id=cid, nonce=None,
                               access_token=token["access_token"], alg="ES256")
    assert claims["sub"] == citizen.sub and claims["phone_number"] == "+8613800138000"
    with pytest.raises(ClientOAuth2Error) as again:
        kiosk.fetch_token(disco["token_endpoint"], grant_type=DEVICE_CODE_GRANT_TYPE, device_code=d["device_code"])
    assert again.value.error == "invalid_grant"


def test_kiosk_tokens_end_with_the_approving_session(app, disco, kiosk, phone):
    d = _start(disco, kiosk, scope="openid").json()
    _approve(phone, d["verification_uri_complete"])
    t = _poll(disco, kiosk, d["device_code"]).json()
    from people import sessions
    from people.models import LoginSession, SessionClient
    from tongban.extensions import db

    sess = db.session.execute(select(LoginSession)).scalar_one()
    assert kiosk in [c.client_id for c in db.session.execute(select(SessionClient)).scalars()]
    sessions.end(sess, "logout")
    db.session.commit()
    r = requests.post(disco["token_endpoint"], data={"grant_type": "refresh_token", "client_id": kiosk,
                                                     "refresh_token": t["refresh_token"]})
    _error(r, "invalid_grant")


def test_concurrent_polls_of_an_approved_code_issue_tokens_once(app, disco, kiosk, phone):
    import threading

    d = _start(disco, kiosk, scope="openid").json()
    _approve(phone, d["verification_uri_complete"])
    barrier = threading.Barrier(4)
    results: list[requests.Response] = []

    def poll():
        barrier.wait()
        results.append(_poll(disco, kiosk, d["device_code"]))

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.status_code for r in results) == [200, 400, 400, 400]
    assert {r.json()["error"] for r in results if r.status_code == 400} == {"invalid_grant"}
