"""Pairwise subject identifiers (OIDC Core §8.1), CORS for browser clients, and the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.idp.dpop_helpers import authorize_code
from tests.idp.helpers import REDIRECT, Browser

SALT = bytes(range(32, 64))


@pytest.fixture
def salted(app):
    app.config["TONGBAN_PAIRWISE_SALT"] = SALT
    app.extensions.pop("tongban.pairwise_salt", None)
    yield
    app.extensions.pop("tongban.pairwise_salt", None)


def _expected(sector: str, sub: str) -> str:
    d = hashlib.sha256(sector.encode() + b"\x00" + sub.encode() + b"\x00" + SALT).digest()
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode()


def _tokens(base, cid, secret, **extra):
    code, verifier = authorize_code(base, cid, **extra)
    r = requests.post(f"{base}/oauth/token", auth=(cid, secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier})
    assert r.status_code == 200, r.text
    return r.json()


def _decode(base, raw, alg):
    keys = KeySet.import_key_set(requests.get(f"{base}/jwks.json").json())
    return jwt.decode(raw, keys, algorithms=[alg]).claims


def test_pairwise_sub_everywhere(app, salted, live_server, citizen, make_client):
    base = live_server
    pw, pw_secret = make_client(first_party=True, subject_type="pairwise", introspection_allowed=True)
    pw2, pw2_secret = make_client(first_party=True, subject_type="pairwise")
    pub, pub_secret = make_client(first_party=True)
    expected = _expected("127.0.0.1", citizen.sub)
    tok = _tokens(base, pw, pw_secret)
    id_claims = _decode(base, tok["id_token"], "RS256")
    at_claims = _decode(base, tok["access_token"], "ES256")
    assert id_claims["sub"] == expected != citizen.sub
    assert at_claims["sub"] == expected
    assert citizen.sub not in json.dumps(at_claims)  # the local sub only sealed (tb_ref)
    info = requests.get(f"{base}/oauth/userinfo", headers={"Authorization": f"Bearer {tok['access_token']}"}).json()
    assert info["sub"] == expected
    for t in (tok["access_token"], tok["refresh_token"]):
        r = requests.post(f"{base}/oauth/introspect", data={"token": t}, auth=(pw, pw_secret))
        assert r.json()["sub"] == expected
    # another client of the same sector: the same sub; a public client: the local sub
    assert _decode(base, _tokens(base, pw2, pw2_secret)["id_token"], "RS256")["sub"] == expected
    assert _decode(base, _tokens(base, pub, pub_secret)["id_token"], "RS256")["sub"] == citizen.sub
    # id_token_hint with the pairwise sub is the logged-in person
    b = Browser(base)
    code_step = b.authorize(f"{base}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": pw, "redirect_uri": REDIRECT, "scope": "openid",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"}))
    assert "code" in code_step.params
    step = b.walk(f"{base}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": pw, "redirect_uri": REDIRECT, "scope": "openid", "prompt": "none",
        "id_token_hint": tok["id_token"], "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256"}))
    assert step.kind == "callback" and "code" in step.params, step.params
    # the back-channel logout token names the person by the same sub
    from idp import clients as registry
    from idp.logout import logout_token

    claims = jwt.decode(logout_token(registry.get_client(pw), "sid-1", citizen.sub),
                        KeySet.import_key_set(requests.get(f"{base}/jwks.json").json()), algorithms=["RS256"]).claims
    assert claims["sub"] == expected


def test_pairwise_token_still_reaches_the_person_at_the_apis(app, salted, live_server, citizen, make_client):
    from idp import tokens

    pw, secret = make_client(first_party=True, subject_type="pairwise")
    at = _tokens(live_server, pw, secret)["access_token"]
    tok = tokens.decode_access_token(at)
    assert tok.sub == citizen.sub and tok.is_user_token
    # an altered reference is no person at all
    forged = tokens.AccessToken({**tok.claims, "tb_ref": tok.claims["tb_ref"][:-4] + "AAAA"})
    assert forged.sub == ""


def test_pairwise_registration_rules(app):
    from idp import clients as registry
    from tongban.errors import ValidationError

    with pytest.raises(ValidationError, match="sector_identifier_uri"):
        registry.create_client(name="x", department="y", subject_type="pairwise",
                               redirect_uris=["https://a.example.gov.cn/cb", "https://b.example.gov.cn/cb"])
    with pytest.raises(ValidationError, match="does not list"):
        registry.create_client(name="x", department="y", subject_type="pairwise",
                               redirect_uris=["https://a.example.gov.cn/cb", "https://b.example.gov.cn/cb"],
                               sector_identifier_uri="https://sector.example.gov.cn/uris.json",
                               sector_uris=["https://a.example.gov.cn/cb"])
    row, _ = registry.create_client(name="x", department="y", subject_type="pairwise",
                                    redirect_uris=["https://a.example.gov.cn/cb", "https://b.example.gov.cn/cb"],
                                    sector_identifier_uri="https://sector.example.gov.cn/uris.json",
                                    sector_uris=["https://a.example.gov.cn/cb", "https://b.example.gov.cn/cb"])
    assert row.sector == "sector.example.gov.cn"


# ---------------------------------------------------------------- CORS


def test_cors(live_server, make_client):
    base = live_server
    make_client(token_endpoint_auth_method="none", redirect_uris=["http://localhost:5173/callback"],
                grant_types=["authorization_code", "refresh_token"])
    make_client(web_origins=["https://spa.example.gov.cn"])
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "dpop, content-type"}
    for origin in ("http://localhost:5173", "https://spa.example.gov.cn"):
        r = requests.options(f"{base}/oauth/token", headers={"Origin": origin, **pre})
        assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == origin
        assert "DPoP" in r.headers["Access-Control-Allow-Headers"] and "Origin" in r.headers["Vary"]
        r = requests.post(f"{base}/oauth/token", headers={"Origin": origin}, data={"grant_type": "x"})
        assert r.headers["Access-Control-Allow-Origin"] == origin
        assert "DPoP-Nonce" in r.headers["Access-Control-Expose-Headers"]
    # an origin nobody registered (or a confidential client's redirect URI host) gets no ACAO
    for origin in ("https://evil.example", "http://127.0.0.1:9", "null"):
        for method, path in (("OPTIONS", "/oauth/token"), ("POST", "/oauth/token"), ("GET", "/oauth/userinfo"),
                             ("OPTIONS", "/oauth/revoke")):
            r = requests.request(method, f"{base}{path}", headers={"Origin": origin, **pre})
            assert "Access-Control-Allow-Origin" not in r.headers, (origin, path)
            assert "Origin" in r.headers.get("Vary", "")
    # PAR and introspection are server-to-server
    r = requests.options(f"{base}/oauth/introspect", headers={"Origin": "http://localhost:5173", **pre})
    assert "Access-Control-Allow-Origin" not in r.headers
    # discovery and the JWKS: anyone
    for path in ("/.well-known/openid-configuration", "/jwks.json"):
        r = requests.get(f"{base}{path}", headers={"Origin": "https://evil.example"})
        assert r.headers["Access-Control-Allow-Origin"] == "*"


# ---------------------------------------------------------------- the command line


def test_cli_clients_and_resources(app, tmp_path, monkeypatch):
    monkeypatch.setitem(app.config, "TONGBAN_FETCH_ALLOW_PRIVATE", True)  # the sector_identifier_uri is on loopback
    runner = app.test_cli_runner()
    (tmp_path / "uris.json").write_text(json.dumps(["https://a.example.gov.cn/cb", "https://b.example.gov.cn/cb"]))
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = partial(Quiet, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sector_uri = f"http://127.0.0.1:{server.server_port}/uris.json"
        result = runner.invoke(args=["clients", "create", "--name", "SPA", "--department", "局", "--public",
                                     "--redirect-uri", "https://a.example.gov.cn/cb", "--redirect-uri",
                                     "https://b.example.gov.cn/cb", "--subject-type", "pairwise",
                                     "--sector-identifier-uri", sector_uri, "--require-dpop", "--web-origin",
                                     "https://a.example.gov.cn", "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["require_dpop"] and data["subject_type"] == "pairwise"
        assert data["sector_identifier_uri"] == sector_uri
        assert data["web_origins"] == ["https://a.example.gov.cn"]
        bad = runner.invoke(args=["clients", "create", "--name", "SPA", "--department", "局", "--public",
                                  "--redirect-uri", "https://c.example.gov.cn/cb", "--subject-type", "pairwise",
                                  "--sector-identifier-uri", sector_uri])
        assert bad.exit_code == 1 and "does not list" in bad.output
    finally:
        server.shutdown()
    bad = runner.invoke(args=["clients", "create", "--name", "x", "--department", "y", "--redirect-uri",
                              "https://a.example.gov.cn/cb", "--web-origin", "https://a.example.gov.cn/path"])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1
    bad = runner.invoke(args=["clients", "create", "--name", "x", "--department", "y", "--redirect-uri",
                              "https://a.example.gov.cn/cb", "--resource", "https://unknown.example.gov.cn/api"])
    assert bad.exit_code == 1 and "unknown resource" in bad.output
    ok = runner.invoke(args=["resources", "add", "--uri", "https://api.gjj.example.gov.cn/v1", "--name", "公积金",
                             "--department", "公积金中心", "--scope", "profile"])
    assert ok.exit_code == 0, ok.output
    again = runner.invoke(args=["resources", "add", "--uri", "https://api.gjj.example.gov.cn/v1", "--name", "x",
                                "--department", "y"])
    assert again.exit_code == 1 and "registered already" in again.output
    for uri in ("not a uri", "https://x.example.gov.cn/a#f", "http://api.example.gov.cn/"):
        bad = runner.invoke(args=["resources", "add", "--uri", uri, "--name", "x", "--department", "y"])
        assert bad.exit_code == 1 and bad.output.count("\n") == 1, (uri, bad.output)
    listed = json.loads(runner.invoke(args=["resources", "list", "--json"]).output)
    assert {r["uri"] for r in listed} >= {"https://api.gjj.example.gov.cn/v1",
                                          app.config["TONGBAN_ISSUER"] + "/api/v1/licences"}
    assert runner.invoke(args=["resources", "disable", "https://api.gjj.example.gov.cn/v1"]).exit_code == 0
    assert runner.invoke(args=["resources", "disable", "https://nope.example.gov.cn/"]).exit_code == 1
    listed = json.loads(runner.invoke(args=["resources", "list", "--json"]).output)
    assert [r["enabled"] for r in listed if r["uri"] == "https://api.gjj.example.gov.cn/v1"] == [False]
