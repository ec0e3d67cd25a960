"""The demo department portals over real HTTP: log in at one, the other is logged in
already, log out at one, and both are logged out (by a back-channel logout token)."""

from __future__ import annotations

import re
import threading
import time

import pytest
import requests
from werkzeug.serving import make_server

from tests.conftest import CITIZEN_ID, PASSWORD, _free_port
from tests.idp.helpers import _input_value, is_login_page


@pytest.fixture
def portals(app, live_server, citizen):
    from demo import PORTALS
    from demo.portal import create_portal
    from idp import clients as registry
    from tongban.extensions import db

    running = []
    for spec in PORTALS:
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        _, secret = registry.create_client(
            client_id=spec.client_id, name=spec.name, department=spec.department, first_party=True,
            redirect_uris=[f"{base}/callback"], post_logout_redirect_uris=[f"{base}/"],
            backchannel_logout_uri=f"{base}/backchannel-logout", scopes=["openid", "profile"])
        db.session.commit()
        portal = create_portal(spec, issuer=live_server, client_secret=secret, base_url=base)
        server = make_server("127.0.0.1", port, portal, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running.append((base, server, portal))
    yield [base for base, _, _ in running], [portal for _, _, portal in running]
    for _, server, _ in running:
        server.shutdown()
        server.server_close()


def _login_at(http: requests.Session, base: str) -> None:
    page = http.get(f"{base}/login")
    assert is_login_page(page), page.text[:300]
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    done = http.post(page.url.split("?")[0], data={"csrf_token": csrf, "login": CITIZEN_ID, "password": PASSWORD,
                                                   "next": _input_value(page.text, "next") or ""})
    assert done.status_code == 200 and done.url.rstrip("/") == base, done.url


def _whoami(http, base):
    return http.get(f"{base}/whoami").json()


def test_sso_across_portals_and_logout_everywhere(portals, live_server):
    (housing, social), _ = portals
    http = requests.Session()
    first = http.get(f"{housing}/")  # a silent try at Tongban (prompt=none) finds no session
    assert first.status_code == 200 and first.url.rstrip("/") == housing and 'href="/login"' in first.text
    _login_at(http, housing)
    me = _whoami(http, housing)
    assert me["logged_in"] and me["sid"]
    # the other portal: already logged in, no password asked
    page = http.get(f"{social}/")
    assert page.url.rstrip("/") == social and 'action="/logout"' in page.text
    assert _whoami(http, social)["sid"] == me["sid"]
    # log out at one ...
    out = http.post(f"{housing}/logout")
    assert out.url.rstrip("/") == housing and not _whoami(http, housing)["logged_in"]
    # ... and the other is told by its back-channel: logged out too
    deadline = time.monotonic() + 15
    while _whoami(http, social)["logged_in"]:
        assert time.monotonic() < deadline, "the back-channel logout did not arrive"
        time.sleep(0.1)
    assert http.get(f"{live_server}/account", allow_redirects=False).status_code == 302
    assert 'href="/login"' in http.get(f"{social}/").text


def test_portal_refuses_bad_logout_tokens(portals, app):
    from joserfc import jwt

    from demo import PORTALS
    from idp import clients as registry
    from idp.logout import logout_token
    from keys.services import keyring

    (housing, _), _ = portals
    client = registry.get_client(PORTALS[0].client_id)
    good = logout_token(client, "sid-1", "sub-1")
    assert requests.post(f"{housing}/backchannel-logout", data={"logout_token": good}).status_code == 200
    # replayed
    assert requests.post(f"{housing}/backchannel-logout", data={"logout_token": good}).status_code == 400
    key = keyring().active("RS256")
    claims = jwt.decode(good, key.signer).claims

    def forge(header=None, **over):
        body = {**claims, "jti": str(time.time()), **over}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(header or {"alg": "RS256", "kid": key.kid, "typ": "logout+jwt"}, body, key.signer)

    for bad in (forge(header={"alg": "RS256", "kid": key.kid, "typ": "JWT"}), forge(nonce="n"),
                forge(aud="someone-else"), forge(events={}), forge(iss="http://evil"), forge(sid=None, sub=None)):
        assert requests.post(f"{housing}/backchannel-logout", data={"logout_token": bad}).status_code == 400


def test_demo_seed_registers_both_portals(app, tmp_path):
    from demo import PORTALS
    from demo.seed import register_portals
    from idp import clients as registry
    from tongban.extensions import db

    first = register_portals(tmp_path)
    db.session.commit()
    again = register_portals(tmp_path)  # idempotent
    db.session.commit()
    assert first == again and len(first) == 2
    for spec in PORTALS:
        c = registry.get_client(spec.client_id)
        assert c.first_party and c.redirect_uris == (f"{spec.base_url}/callback",)
        assert c.backchannel_logout_uri == f"{spec.base_url}/backchannel-logout"
        assert c.post_logout_redirect_uris == (f"{spec.base_url}/",)
        assert c.check_client_secret((tmp_path / f"demo_{spec.key}_secret").read_text().strip())
    assert PORTALS[0].cookie != PORTALS[1].cookie and "localhost" in PORTALS[0].base_url
