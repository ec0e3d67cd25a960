"""openid-client 6 (Node; a certified, strict relying party) drives token exchange, CIBA and the
device authorization grant against the live provider (tests/idp/openid_client_grants.mjs), while
this test answers as the citizen over HTTP when the script waits for them.

openid-client is looked for in ``$TONGBAN_OPENID_CLIENT`` or ``.venv/openid-client``::

    mkdir -p .venv/openid-client && (cd .venv/openid-client && npm init -y && npm install openid-client@6.9.1)

Without node or the library the test is skipped, except in CI (``CI=true``) where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import CITIZEN_ID
from tests.idp import node_rp
from tests.idp.helpers import _CSRF, Browser, discover
from tests.idp.test_token_exchange import TE, _citizen_token

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
CIBA = "urn:openid:params:grant-type:ciba"
DEVICE = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture
def modules() -> Path:
    node_rp.require()  # skipped without node and openid-client; failed in CI
    return node_rp.modules()


def _approve_ciba(phone: Browser) -> None:
    page = phone.http.get(phone._abs("/ciba")).text
    request_id = re.search(r'action="/ciba/(\d+)"', page).group(1)
    csrf = _CSRF.search(page).group(1)
    resp = phone.http.post(phone._abs(f"/ciba/{request_id}"), data={"csrf_token": csrf, "decision": "approve"},
                           allow_redirects=False)
    assert resp.status_code == 303, resp.text[:300]


def _approve_device(phone: Browser, url: str) -> None:
    page = phone.http.get(url, allow_redirects=False).text
    csrf = _CSRF.search(page).group(1)
    code = re.search(r'name="user_code" value="([^"]+)"', page).group(1)
    resp = phone.http.post(phone._abs("/device"), data={"csrf_token": csrf, "user_code": code, "decision": "approve"},
                           allow_redirects=False)
    assert resp.status_code == 200, resp.text[:300]


def test_openid_client_drives_exchange_ciba_and_device(app, live_server, citizen, make_client, modules,
                                                       monkeypatch):
    monkeypatch.setitem(app.config, "TONGBAN_CIBA_INTERVAL", 1)
    monkeypatch.setitem(app.config, "TONGBAN_DEVICE_INTERVAL", 1)
    disco = discover(live_server)
    target = make_client(client_id="dept-b", name="社保系统", department="人社局", redirect_uris=[],
                         grant_types=["client_credentials"], scopes=["openid", "profile"])
    exchanger = make_client(client_id="dept-a", name="公积金系统", department="住房公积金管理中心", first_party=True,
                            grant_types=["authorization_code", TE], scopes=["openid", "profile", "phone"],
                            exchange_targets=["dept-b"])
    clerk = make_client(client_id="window-desk", name="政务服务窗口系统", department="政务服务中心",
                        redirect_uris=[], grant_types=[CIBA], scopes=["openid", "profile"])
    kiosk, _ = make_client(client_id="kiosk", name="自助终端", department="人社局", redirect_uris=[],
                           grant_types=[DEVICE, "refresh_token"], token_endpoint_auth_method="none",
                           scopes=["openid", "profile"])
    subject = _citizen_token(live_server, disco, exchanger)
    phone = Browser(live_server)
    assert phone.login().status_code == 302

    script = modules / "tongban_openid_client_grants.mjs"
    node_rp._copy(HERE / "openid_client_grants.mjs", script)
    args = {"issuer": live_server, "exchanger": {"clientId": exchanger[0], "secret": exchanger[1]},
            "subjectToken": subject["access_token"], "audience": target[0],
            "clerk": {"clientId": clerk[0], "secret": clerk[1]}, "loginHint": CITIZEN_ID,
            "bindingMessage": "窗口 7 号", "kiosk": {"clientId": kiosk}}
    proc = subprocess.Popen([shutil.which("node"), str(script)], cwd=modules, text=True,
                            env={**os.environ, "OC_ARGS": json.dumps(args)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killer = threading.Timer(150, proc.kill)
    killer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            msg = json.loads(line)
            if msg.get("waiting") == "ciba":
                _approve_ciba(phone)
            elif msg.get("waiting") == "device":
                _approve_device(phone, msg["verificationUriComplete"])
        proc.wait()
    finally:
        killer.cancel()
    stderr = proc.stderr.read()
    assert proc.returncode == 0, stderr[-2000:]
    out = json.loads(lines[-1])

    d = out["discovery"]
    assert TE in d["grantTypes"] and CIBA in d["grantTypes"] and DEVICE in d["grantTypes"]
    assert d["backchannelEndpoint"].endswith("/oauth/bc-authorize") and d["deliveryModes"] == ["poll"]
    assert d["userCode"] is False

    ex = out["exchange"]
    assert "failed" not in ex, ex
    assert ex["issuedTokenType"] == "urn:ietf:params:oauth:token-type:access_token"
    assert ex["tokenType"].lower() == "bearer" and ex["refresh"] is None and 0 < ex["expiresIn"] <= 600
    assert ex["claims"]["sub"] == citizen.sub and ex["claims"]["aud"] == "dept-b"
    assert ex["claims"]["act"] == {"sub": "dept-a"} and ex["scope"] == "openid profile"
    assert out["exchangeRefused"]["failed"]["error"] == "invalid_target", out["exchangeRefused"]

    ciba = out["ciba"]
    assert "failed" not in ciba, ciba
    assert ciba["sub"] == citizen.sub and ciba["name"] == "张三" and ciba["acr"] == "L1" and ciba["sid"]
    assert ciba["refresh"] is None

    device = out["device"]
    assert "failed" not in device, device
    assert device["sub"] == citizen.sub and device["sid"] == ciba["sid"] and device["refreshed"] is True
