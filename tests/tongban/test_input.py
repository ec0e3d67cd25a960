"""The shell's input rules: typed settings, Secure cookies, trusted proxies, control characters."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from tests.conftest import CITIZEN_ID, PASSWORD
from tongban import config as cfg
from tongban.config import PROJECT_ROOT, ConfigError

_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
KEEP = ("TESTING", "TONGBAN_INSTANCE_DIR", "SQLALCHEMY_DATABASE_URI", "SECRET_KEY", "TONGBAN_KEK", "REDIS_URL")


@pytest.fixture
def make_app(app):
    """Another app on the test database, built from the test config plus ``overrides``."""
    from tongban import create_app

    def _make(**overrides):
        return create_app({**{k: app.config[k] for k in KEEP}, "TONGBAN_ISSUER": app.config["TONGBAN_ISSUER"],
                           "TONGBAN_OUTBOX_THREAD": False, "TONGBAN_USAGE_FLUSH_SECONDS": 0, **overrides})

    return _make


# ---------------------------------------------------------------- typed settings


def _loaded(monkeypatch, tmp_path, env: dict, overrides: dict | None = None) -> Flask:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = Flask("t")
    cfg.load(app, {"TONGBAN_INSTANCE_DIR": str(tmp_path), "SECRET_KEY": "x", **(overrides or {})})
    return app


@pytest.mark.parametrize("env,key,value", [
    ({"TONGBAN_MFA_WINDOW": "600"}, "TONGBAN_MFA_WINDOW", 600),  # crashed as the string '600'
    ({"TONGBAN_MFA_WINDOW": "10m"}, "TONGBAN_MFA_WINDOW", 600),
    ({"TONGBAN_ACCESS_TOKEN_LIFETIME": "1h"}, "TONGBAN_ACCESS_TOKEN_LIFETIME", 3600),
    ({"TONGBAN_REFRESH_TOKEN_LIFETIME": "30d"}, "TONGBAN_REFRESH_TOKEN_LIFETIME", 30 * 86400),
    ({"TONGBAN_QR_RATE_PER_IP": " 7 "}, "TONGBAN_QR_RATE_PER_IP", 7),
    ({"TONGBAN_PUBLIC_REGISTRATION": "off"}, "TONGBAN_PUBLIC_REGISTRATION", False),
    ({"TONGBAN_OUTBOX_THREAD": "YES"}, "TONGBAN_OUTBOX_THREAD", True),
    ({"TONGBAN_OUTBOX_TIMEOUT": "2.5"}, "TONGBAN_OUTBOX_TIMEOUT", 2.5),
    ({"TONGBAN_TRUSTED_PROXIES": "2"}, "TONGBAN_TRUSTED_PROXIES", 2),
    ({"TONGBAN_SEAL_MAX_BYTES": "1_000_000"}, "TONGBAN_SEAL_MAX_BYTES", 1_000_000),
    ({"TONGBAN_LICENCE_READ_ACR": "L3"}, "TONGBAN_LICENCE_READ_ACR", "L3"),
])
def test_environment_values_are_converted(monkeypatch, tmp_path, env, key, value):
    app = _loaded(monkeypatch, tmp_path, env)
    assert app.config[key] == value and type(app.config[key]) is type(value)


@pytest.mark.parametrize("key,raw", [
    ("TONGBAN_MFA_WINDOW", "ten"), ("TONGBAN_MFA_WINDOW", "-5"), ("TONGBAN_MFA_WINDOW", "5y"),
    ("TONGBAN_LOCKOUT_THRESHOLD", "5.5"), ("TONGBAN_PUBLIC_REGISTRATION", "maybe"),
    ("TONGBAN_OUTBOX_TIMEOUT", "nan"), ("TONGBAN_TRUSTED_PROXIES", "-1"), ("TONGBAN_KEK", "zz"),
])
def test_a_bad_value_names_the_variable(monkeypatch, tmp_path, key, raw):
    with pytest.raises(ConfigError) as err:
        _loaded(monkeypatch, tmp_path, {key: raw})
    assert str(err.value).startswith(f"{key}=") and "\n" not in str(err.value)


def test_instance_config_strings_are_converted_and_overrides_win(monkeypatch, tmp_path):
    (tmp_path / "config.py").write_text('TONGBAN_MFA_WINDOW = "2m"\nTONGBAN_LOCKOUT_THRESHOLD = 3\n')
    app = _loaded(monkeypatch, tmp_path, {"TONGBAN_LOCKOUT_THRESHOLD": "9"}, {"TONGBAN_DORMANT_DAYS": 7})
    assert app.config["TONGBAN_MFA_WINDOW"] == 120
    assert app.config["TONGBAN_LOCKOUT_THRESHOLD"] == 9  # environment over the config file
    assert app.config["TONGBAN_DORMANT_DAYS"] == 7


def test_every_default_has_a_type():
    for key, setting in cfg.schema().items():
        assert setting.type in cfg.CONVERTERS, key
        assert setting.default is None or cfg.convert(key, str(setting.default).lower()
                                                      if isinstance(setting.default, bool)
                                                      else ",".join(setting.default)
                                                      if isinstance(setting.default, list)
                                                      else str(setting.default)) == setting.default, key


def test_package_declarations(monkeypatch, tmp_path):
    monkeypatch.setenv("TONGBAN_TEST_PKG_LIMIT", "12")
    monkeypatch.setenv("TONGBAN_TEST_PKG_FLAG", "no")
    monkeypatch.setenv("TONGBAN_TEST_PKG_WINDOW", "3m")
    app = _loaded(monkeypatch, tmp_path, {})
    app.config.setdefault("TONGBAN_TEST_PKG_LIMIT", 5)  # the old way: a package's own default
    cfg.declare(app, {"TONGBAN_TEST_PKG_FLAG": True, "TONGBAN_TEST_PKG_WINDOW": 60},
                types={"TONGBAN_TEST_PKG_WINDOW": "seconds"})
    cfg.finish(app)
    assert app.config["TONGBAN_TEST_PKG_LIMIT"] == 12
    assert app.config["TONGBAN_TEST_PKG_FLAG"] is False
    assert app.config["TONGBAN_TEST_PKG_WINDOW"] == 180
    cfg._SCHEMA.pop("TONGBAN_TEST_PKG_FLAG"), cfg._SCHEMA.pop("TONGBAN_TEST_PKG_WINDOW")


def test_bad_setting_stops_the_start_with_one_line(tmp_path):
    env = {**os.environ, "TONGBAN_INSTANCE_DIR": str(tmp_path), "TONGBAN_MFA_WINDOW": "soon"}
    env.pop("TONGBAN_SERVE_ISSUER", None)
    proc = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "configuration error: TONGBAN_MFA_WINDOW='soon' (environment): expected a duration in seconds "
        "(600, 10m, 2h, 1d)"]


# ---------------------------------------------------------------- database files 0600


def test_sqlite_files_are_private(tmp_path):
    from sqlalchemy import create_engine, text

    db_file = tmp_path / "new.db"
    cfg._private_sqlite_file(f"sqlite:///{db_file}")
    engine = create_engine(f"sqlite:///{db_file}")
    with engine.begin() as conn:
        conn.execute(text("PRAGMA journal_mode=WAL"))
        conn.execute(text("CREATE TABLE t (x)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
        made = [p for p in (db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm")) if p.exists()]
        assert len(made) == 3
        for p in made:
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    engine.dispose()
    old = tmp_path / "old.db"
    old.write_bytes(b"")
    old.chmod(0o644)
    cfg._private_sqlite_file(f"sqlite:///{old}")  # one an older version made is tightened
    assert stat.S_IMODE(old.stat().st_mode) == 0o600


def test_the_default_database_file_is_private(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    app = _loaded(monkeypatch, tmp_path, {})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'tongban.db'}"
    assert stat.S_IMODE((tmp_path / "tongban.db").stat().st_mode) == 0o600


# ---------------------------------------------------------------- cookies


def _cookies(resp) -> list[str]:
    return resp.headers.getlist("Set-Cookie")


def test_every_cookie_is_secure_with_an_https_issuer(make_app, citizen):
    https = make_app(TONGBAN_ISSUER="https://id.tongban.example.gov.cn")
    assert https.config["SESSION_COOKIE_SECURE"] is True

    @https.route("/_test/plain-cookie")
    def _plain():  # a cookie set without thinking about Secure
        from flask import make_response

        resp = make_response("ok")
        resp.set_cookie("plain", "1", secure=False)
        return resp

    c = https.test_client()
    base = "https://id.tongban.example.gov.cn"
    seen: list[str] = []
    page = c.get("/login?force=1", base_url=base)
    seen += _cookies(page)
    token = _CSRF.search(page.get_data(as_text=True)).group(1)
    resp = c.post("/login", data={"csrf_token": token, "login": CITIZEN_ID, "password": PASSWORD, "next": ""},
                  base_url=base, headers={"Referer": base + "/login"})  # CSRF over https checks it
    assert resp.status_code in (302, 303), resp.get_data(as_text=True)[:300]
    seen += _cookies(resp)
    seen += _cookies(c.get("/lang/en", base_url=base))
    c.get("/logout", base_url=base)
    page = c.get("/login?force=1", base_url=base)
    token = _CSRF.search(page.get_data(as_text=True)).group(1)
    qr = c.post("/qr/start", headers={"X-CSRFToken": token, "Referer": base + "/login"}, base_url=base)
    assert qr.status_code == 200
    seen += _cookies(qr)
    seen += _cookies(c.get("/_test/plain-cookie", base_url=base))
    names = {cookie.split("=", 1)[0] for cookie in seen}
    assert {"tongban_ui", "tongban_sso", "lang", "tb_qr", "plain"} <= names, names
    for cookie in seen:
        attrs = [a.strip().lower() for a in cookie.split(";")[1:]]
        assert "secure" in attrs, cookie


def test_http_issuer_cookies_are_not_secure(client, citizen):
    page = client.get("/login?force=1")
    assert _cookies(page) and all("secure" not in c.lower() for c in _cookies(page))


# ---------------------------------------------------------------- trusted proxies


def _throttled_logins(c, addresses: list[str]) -> list[int]:
    codes = []
    for ip in addresses:
        page = c.get("/login?force=1")
        token = _CSRF.search(page.get_data(as_text=True)).group(1)
        codes.append(c.post("/login", data={"csrf_token": token, "login": CITIZEN_ID, "password": "wrong",
                                            "next": ""}, headers={"X-Forwarded-For": ip}).status_code)
    return codes


def _audit_ips(action: str) -> list[str]:
    from tongban.audit import AuditLog
    from tongban.extensions import db

    db.session.expire_all()
    return [r.ip for r in db.session.execute(select(AuditLog).where(AuditLog.action == action)
                                             .order_by(AuditLog.id)).scalars()]


def test_forwarded_for_is_ignored_without_trusted_proxies(make_app, citizen):
    direct = make_app(TONGBAN_LOGIN_RATE_PER_IP=2)
    assert direct.config["TONGBAN_TRUSTED_PROXIES"] == 0
    codes = _throttled_logins(direct.test_client(), ["203.0.113.1", "203.0.113.2", "203.0.113.3"])
    assert codes == [401, 401, 429]  # forged addresses do not buy fresh throttle buckets
    assert _audit_ips("login.throttled") == ["127.0.0.1"]


def test_forwarded_for_from_a_trusted_proxy(make_app, citizen):
    proxied = make_app(TONGBAN_LOGIN_RATE_PER_IP=2, TONGBAN_TRUSTED_PROXIES=1)
    c = proxied.test_client()
    # one proxy: the right-most address is the one it saw; what the client claimed before it is not used
    codes = _throttled_logins(c, ["198.51.100.9, 203.0.113.1", "198.51.100.9, 203.0.113.1", "203.0.113.2",
                                  "203.0.113.1"])
    assert codes == [401, 401, 401, 429]
    assert _audit_ips("login.throttled") == ["203.0.113.1"]
    assert "198.51.100.9" not in _audit_ips("login.failed")
    resp = c.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" in resp.headers


# ---------------------------------------------------------------- control characters


@pytest.mark.parametrize("path", ["/v/%00", "/api/v1/licences/%00", "/v/\xff", "/seals/console/%00/picture.png",
                                  "/v/abc%0d%0a", "/api/v1/licences/\xc3("])
def test_control_characters_in_the_path(client, path):
    # bytes that are not UTF-8 go in as a server hands them over (the test client would replace them)
    resp = client.get(path) if "%" in path else client.get("/", environ_overrides={"PATH_INFO": path})
    assert resp.status_code == 400
    if path.startswith("/api/"):
        assert resp.get_json()["error"] == "invalid_request"
    else:
        assert "控制字符" in resp.get_data(as_text=True)


@pytest.mark.parametrize("query", ["type=%00", "q=a%0Ab", "q=%ff", "q=%c3%28", "%00=1", "q=%7f", "q=%c2%85",
                                   "q=\x01"])
def test_control_characters_in_the_query(client, query):
    resp = client.get("/api/v1/licences/offline/keys?" + query)
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "invalid_request"


def test_nul_at_authorize_is_refused_before_anything(client, citizen, make_client):
    client_id, _ = make_client()
    resp = client.get(f"/oauth/authorize?response_type=code&client_id={client_id}&scope=openid"
                      "&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&nonce=a%00b")
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_request"


@pytest.mark.parametrize("login", ["1101\x0005", "13800138000\x00", "\x1b[31m"])
def test_control_characters_in_a_form(client, citizen, login):
    from tongban.audit import AuditLog
    from tongban.extensions import db

    before = db.session.execute(select(AuditLog.id)).all()
    page = client.get("/login?force=1")
    token = _CSRF.search(page.get_data(as_text=True)).group(1)
    resp = client.post("/login", data={"csrf_token": token, "login": login, "password": PASSWORD, "next": ""})
    assert resp.status_code == 400
    assert "控制字符" in resp.get_data(as_text=True)
    assert db.session.execute(select(AuditLog.id)).all() == before  # nothing happened


def test_non_utf8_form_body(client, citizen):
    resp = client.post("/login", data=b"login=%ff%fe&password=x",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 400
    resp = client.post("/oauth/token", data=b"grant_type=client_credentials&scope=\xff",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_request"


def test_multipart_fields_are_checked_not_file_contents(client):
    import io

    resp = client.post("/api/v1/seals/verify", data={"note": "a\x00b", "file": (io.BytesIO(b"%PDF\x00\x01"), "a.pdf")},
                       content_type="multipart/form-data")
    assert resp.status_code == 400


def test_multipart_part_without_a_name_is_not_a_server_error(client):
    """Found by the API fuzzer: a form-data part with no name= came through as the key None."""
    body = (b'--b\r\nContent-Disposition: form-data\r\n\r\nvalue\r\n'
            b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\np\r\n--b--\r\n')
    resp = client.post("/api/v1/seals/verify", data=body, content_type="multipart/form-data; boundary=b")
    assert resp.status_code == 400 and resp.get_json()["error"]  # no file: the verifier's own refusal
    body = body.replace(b"\r\nvalue", b"\r\nva\x00lue")
    resp = client.post("/api/v1/seals/verify", data=body, content_type="multipart/form-data; boundary=b")
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_request"


@pytest.mark.parametrize("body", [{"purpose": "a\x00b"}, {"x": ["ok", {"service_item": "\x07"}]},
                                  {"k\x00": 1}, {"deep": "\u0085"}])
def test_control_characters_in_json(client, body):
    resp = client.post("/api/v1/licences/verify", data=json.dumps(body), content_type="application/json")
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "invalid_request"


def test_deep_json_is_refused(client):
    resp = client.post("/api/v1/licences/verify", data="[" * 100_000, content_type="application/json")
    assert resp.status_code == 400


def test_multi_line_text_is_allowed_in_bodies(app):
    from tongban.security import check_input

    for data in ({"reason": "第一行\r\n第二行\tend"},):
        with app.test_request_context("/x", method="POST", data=data):
            check_input()
        with app.test_request_context("/x", method="POST", json=data):
            check_input()
        with app.test_request_context("/x", method="POST", data={**data, "file": (__import__("io").BytesIO(b"\0"),
                                                                                   "f.bin")}):
            check_input()
    with app.test_request_context("/x?q=a%0Ab"), pytest.raises(Exception) as err:
        check_input()  # but never in the query string
    assert getattr(err.value, "code", "") == "invalid_request"


def test_make_serve_checks_settings_before_starting_workers(monkeypatch, capsys):
    from tongban import serve

    monkeypatch.setenv("TONGBAN_LOGIN_RATE_PER_IP", "lots")
    monkeypatch.setattr(serve.os, "execv", lambda *a: pytest.fail("workers started"))
    with pytest.raises(SystemExit) as err:
        serve.main()
    assert str(err.value) == "configuration error: TONGBAN_LOGIN_RATE_PER_IP='lots' (environment): expected an integer"
