"""Fixtures of the federation tests: a real upstream OpenID provider (node-oidc-provider, run by
tests/federation/provider.mjs), a small fake upstream built with joserfc for the forgeries, and
a scripted browser that logs in through an upstream."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.conftest import CITIZEN_ID, _free_port
from tests.idp.helpers import Browser

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / ".venv" / "node-oidc-provider" / "node_modules" / "oidc-provider" / "lib" / "index.js"
CLIENT_ID, CLIENT_SECRET = "tongban", "upstream-test-secret-0123456789abcdef"
NEW_ID = "110101199003070038"  # 李四: no Tongban account yet
THIRD_ID = "320102198511110025"

ACCOUNTS = {
    "zhangsan": {"name": "张三", "id_number": CITIZEN_ID, "id_number_verified": True, "acr": "loa-substantial"},
    "lisi": {"name": "李四", "id_number": NEW_ID, "id_number_verified": True, "acr": "loa-high"},
    "lisi-second": {"name": "李四", "id_number": NEW_ID, "id_number_verified": True, "acr": "loa-high"},
    "unverified": {"name": "王二", "id_number": THIRD_ID, "id_number_verified": False, "acr": "loa-high"},
    "badnumber": {"name": "王二", "id_number": "320102198511110026", "id_number_verified": True},
    "low": {"name": "王二", "id_number": THIRD_ID, "id_number_verified": True, "acr": "loa-low"},
}
ACR_MAP = ["loa-substantial=L2", "loa-high=L3"]


@pytest.fixture(scope="session")
def node_upstream(_live_server):
    """node-oidc-provider on a free port, Tongban (the live server) its registered client."""
    node = shutil.which("node")
    if not node or not MODULE.exists():
        why = "node-oidc-provider is not installed (make install puts it in .venv/node-oidc-provider)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    port = _free_port()
    env = {**os.environ, "OIDC_PROVIDER_MODULE": str(MODULE), "PORT": str(port), "CLIENT_ID": CLIENT_ID,
           "CLIENT_SECRET": CLIENT_SECRET, "REDIRECT_URI": f"{_live_server}/federation/province/callback",
           "BACKCHANNEL_URI": f"{_live_server}/federation/province/backchannel-logout",
           "POST_LOGOUT_URI": f"{_live_server}/federation/logged-out", "ACCOUNTS": json.dumps(ACCOUNTS)}
    env.pop("NODE_ENV", None)
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"upstream-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([node, str(Path(__file__).with_name("provider.mjs"))], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    issuer = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert proc.poll() is None, Path(log.name).read_text()[-2000:]
        assert time.monotonic() < deadline, "node-oidc-provider did not start"
        time.sleep(0.2)
    yield {"issuer": issuer, "log": log.name}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def register(name: str, issuer: str, **kw):
    from federation import metadata, registry
    from tongban.extensions import db

    metadata.clear_cache()
    kw.setdefault("display_name", "省政务服务网")
    kw.setdefault("acr_map", registry.parse_acr_map(ACR_MAP))
    info = registry.add(name=name, issuer=issuer, client_id=kw.pop("client_id", CLIENT_ID),
                        client_secret=kw.pop("client_secret", CLIENT_SECRET), **kw)
    db.session.commit()
    return info


@pytest.fixture
def province(app, live_server, node_upstream):
    """The real upstream registered as ``province``."""
    return register("province", node_upstream["issuer"])


_CSRF = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


class FedBrowser(Browser):
    """The test's browser, which also knows how to log in at the upstream."""

    def start_upstream(self, name: str = "province", next_url: str = "/account") -> requests.Response:
        page = self.http.get(self._abs("/login"), params={"next": next_url})
        assert page.status_code == 200
        csrf = _CSRF.search(page.text).group(1)
        return self.http.post(self._abs(f"/federation/{name}/login"), data={"csrf_token": csrf, "next": next_url},
                              allow_redirects=False)

    def upstream_login(self, login: str, name: str = "province", next_url: str = "/account") -> requests.Response:
        """From the button to Tongban's answer to the callback (returned, not followed)."""
        resp = self.start_upstream(name, next_url)
        assert resp.status_code == 303, resp.text[:500]
        return self.follow_upstream(resp.headers["Location"], login)

    def follow_upstream(self, url: str, login: str) -> requests.Response:
        for _ in range(12):
            if urlsplit(url).netloc == urlsplit(self.base).netloc:
                return self.http.get(url, allow_redirects=False)  # the callback
            resp = self.http.get(url, allow_redirects=False)
            if resp.status_code in (302, 303):
                url = urljoin(url, resp.headers["Location"])
                continue
            assert resp.status_code == 200 and "/interaction/" in url, (url, resp.status_code, resp.text[:300])
            action = re.search(r'action="([^"]+)"', resp.text).group(1)
            post = self.http.post(urljoin(url, action), data={"login": login}, allow_redirects=False)
            assert post.status_code in (302, 303), post.text[:300]
            url = urljoin(url, post.headers["Location"])
        raise AssertionError("too many redirects")


@pytest.fixture
def fed_browser(live_server):
    return lambda: FedBrowser(live_server)


# ---------------------------------------------------------------- a fake upstream (joserfc)


class FakeUpstream:
    """Discovery, JWKS and a token endpoint whose ID token the test shapes (forgeries)."""

    def __init__(self):
        self.port = _free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.key = RSAKey.generate_key(2048, parameters={"kid": "fake-1", "alg": "RS256", "use": "sig"})
        self.published = [self.key]
        self.claims: dict = {}
        self.header: dict = {}
        self.sign_with = None
        self.last_auth: dict = {}
        self.token_requests: list[dict] = []
        self.discovery_extra: dict = {}
        self.delay: dict[str, float] = {}  # path -> seconds to wait before answering (a slow upstream)
        self.server = None

    def metadata(self) -> dict:
        return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/auth",
                "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                "end_session_endpoint": f"{self.issuer}/logout", "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"], **self.discovery_extra}

    def sign(self, claims: dict, header: dict | None = None, key=None) -> str:
        key = key or self.key
        hdr = {"alg": "RS256", "kid": key.kid, **(header or {})}
        return jwt.encode(hdr, claims, key, algorithms=[hdr["alg"]])

    def _app(self, environ, start_response):
        req = Request(environ)
        time.sleep(self.delay.get(req.path, 0))
        if req.path == "/.well-known/openid-configuration":
            resp = Response(json.dumps(self.metadata()), mimetype="application/json")
        elif req.path == "/jwks":
            resp = Response(json.dumps({"keys": [k.as_dict(private=False) for k in self.published]}),
                            mimetype="application/json")
        elif req.path == "/token":
            self.token_requests.append({"form": req.form.to_dict(), "auth": req.authorization})
            now = int(time.time())
            claims = {"iss": self.issuer, "aud": CLIENT_ID, "sub": "fake-sub-1", "iat": now, "exp": now + 300,
                      "nonce": self.last_auth.get("nonce"), "name": "李四", "id_number": NEW_ID,
                      "id_number_verified": True, "acr": "loa-high", "sid": "fake-sid-1"}
            claims.update(self.claims)
            claims = {k: v for k, v in claims.items() if v is not None}
            token = self.sign(claims, self.header, self.sign_with)
            resp = Response(json.dumps({"access_token": "fake-at", "token_type": "Bearer", "expires_in": 300,
                                        "id_token": token}), mimetype="application/json")
        else:
            resp = Response("not found", 404)
        return resp(environ, start_response)

    def start(self):
        self.server = make_server("127.0.0.1", self.port, self._app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def login(self, browser: FedBrowser, name: str = "fake") -> requests.Response:
        """The button, then straight back to Tongban's callback with a code (no log-in page)."""
        resp = browser.start_upstream(name)
        assert resp.status_code == 303, resp.text[:300]
        auth = {k: v[0] for k, v in parse_qs(urlsplit(resp.headers["Location"]).query).items()}
        self.last_auth = auth
        return browser.http.get(browser._abs(f"/federation/{name}/callback"),
                                params={"code": "c0de", "state": auth["state"], "iss": self.issuer},
                                allow_redirects=False)


@pytest.fixture
def fake(app, live_server):
    f = FakeUpstream()
    f.start()
    register("fake", f.issuer, display_name="测试上游")
    yield f
    f.stop()
