"""The seal CLI (exit codes, JSON shapes) and HTTP API (verify, sign, OpenAPI, the verify page)."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest

from seal import services
from tests.conftest import USCC
from tongban.extensions import db

SIG_KEYS = {"seal_name", "seal_code", "organisation", "signer", "signed_at", "intact", "covers_whole_document",
            "trusted", "revoked"}


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def _files(tmp_path, plain_pdf):
    (tmp_path / "plain.pdf").write_bytes(plain_pdf)
    (tmp_path / "junk.pdf").write_bytes(b"this is not a PDF\n")
    return tmp_path / "plain.pdf", tmp_path / "sealed.pdf", tmp_path / "junk.pdf"


def test_cli_create_sign_verify_revoke(app, org, runner, tmp_path, plain_pdf):
    plain, sealed, junk = _files(tmp_path, plain_pdf)
    r = runner.invoke(args=["seals", "create", "--org", USCC, "--name", "测试科技有限公司", "--kind", "official",
                            "--json"])
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)
    assert isinstance(created["seal_id"], str) and re.fullmatch(r"[0-9]{13}", created["code"])

    r = runner.invoke(args=["seals", "sign-pdf", "--seal", created["seal_id"], str(plain), str(sealed)])
    assert r.exit_code == 0, r.output
    assert sealed.read_bytes().startswith(b"%PDF-")

    r = runner.invoke(args=["seals", "verify", str(sealed), "--json"])
    assert r.exit_code == 0, r.output
    verdict = json.loads(r.stdout)
    assert verdict["valid"] is True and set(verdict["signatures"][0]) >= SIG_KEYS

    r = runner.invoke(args=["seals", "verify", str(plain), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout) == {"valid": False, "signatures": [],
                                                         "message": "no seal found"}

    r = runner.invoke(args=["seals", "verify", str(junk), "--json"])
    assert r.exit_code == 2
    bad = json.loads(r.stdout)
    assert bad["valid"] is False and bad["error"]

    r = runner.invoke(args=["seals", "verify", str(tmp_path / "missing.pdf"), "--json"])
    assert r.exit_code == 2

    r = runner.invoke(args=["seals", "revoke", created["seal_id"], "--reason", "lost"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(args=["seals", "verify", str(sealed), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["signatures"][0]["revoked"] is True

    r = runner.invoke(args=["seals", "log", created["seal_id"], "--json"])
    actions = [row["action"] for row in json.loads(r.stdout)]
    assert "seal.used" in actions and "seal.revoked" in actions


def test_cli_errors_exit_1_and_change_nothing(app, org, runner):
    from seal.models import Seal

    before = db.session.query(Seal).count()
    r = runner.invoke(args=["seals", "create", "--org", "91350100M000100Y44", "--name", "x", "--json"])
    assert r.exit_code == 1 and r.stdout == "" and r.stderr.count("\n") == 1
    r = runner.invoke(args=["seals", "create", "--org", "91350100M000100Y43", "--name", "x", "--kind", "nope"])
    assert r.exit_code == 2  # a usage error
    r = runner.invoke(args=["seals", "sign-pdf", "--seal", "nope", "a.pdf", "b.pdf"])
    assert r.exit_code == 1
    r = runner.invoke(args=["seals", "revoke", "nope", "--reason", "x"])
    assert r.exit_code == 1
    db.session.remove()
    assert db.session.query(Seal).count() == before


def test_cli_trust_root(app, runner, client):
    r = runner.invoke(args=["seals", "trust-root"])
    assert r.exit_code == 0 and r.stdout.startswith("-----BEGIN CERTIFICATE-----")
    assert client.get("/ca/root.pem").data.decode() == r.stdout


def test_cli_officer_must_be_seal_admin(app, seal, runner, tmp_path, plain_pdf):
    from people import accounts
    from tests.conftest import CITIZEN_ID, OTHER_ID, PASSWORD

    accounts.create_staff(CITIZEN_ID, "印章管理员", PASSWORD, USCC, "seal-admin")
    accounts.create_staff(OTHER_ID, "窗口人员", PASSWORD, USCC, "clerk")
    db.session.commit()
    assert [u.id_number for u in services.officers(seal)] == [CITIZEN_ID]
    plain, sealed, _ = _files(tmp_path, plain_pdf)
    base = ["seals", "sign-pdf", "--seal", seal.id, str(plain), str(sealed), "--purpose", "合同"]
    assert runner.invoke(args=[*base, "--officer", OTHER_ID]).exit_code == 1
    assert runner.invoke(args=[*base, "--officer", CITIZEN_ID]).exit_code == 0


# ---------------------------------------------------------------- HTTP: verify


def _upload(client, data: bytes, url="/api/v1/seals/verify", **form):
    return client.post(url, data={"file": (io.BytesIO(data), "doc.pdf"), **form}, content_type="multipart/form-data")


def test_api_verify(seal, client, plain_pdf):
    sealed = services.sign_pdf(seal, plain_pdf, purpose="p", actor="t")
    db.session.commit()
    r = _upload(client, sealed)
    assert r.status_code == 200 and r.json["valid"] is True and set(r.json["signatures"][0]) >= SIG_KEYS
    r = _upload(client, plain_pdf)
    assert r.status_code == 200 and r.json["valid"] is False and r.json["signatures"] == []
    r = _upload(client, b"not a PDF\n")
    assert r.status_code == 400 and r.json["error"] == "invalid_pdf"
    r = _upload(client, sealed[: len(sealed) // 3])
    assert r.status_code in (200, 400) and (r.status_code == 400 or r.json["valid"] is False)
    r = client.post("/api/v1/seals/verify", data={}, content_type="multipart/form-data")
    assert r.status_code == 400


def test_api_verify_too_large(app, client, plain_pdf):
    old = app.config["TONGBAN_SEAL_MAX_BYTES"]
    app.config["TONGBAN_SEAL_MAX_BYTES"] = 1000
    try:
        r = _upload(client, plain_pdf + b"\n%" + b"x" * 200_000)
        assert r.status_code == 413 and r.json["error"] == "too_large"
    finally:
        app.config["TONGBAN_SEAL_MAX_BYTES"] = old


def test_api_verify_is_rate_limited(app, client, plain_pdf):
    old = app.config["TONGBAN_SEAL_VERIFY_RATE"]
    app.config["TONGBAN_SEAL_VERIFY_RATE"] = 2
    try:
        codes = [_upload(client, plain_pdf).status_code for _ in range(3)]
        assert codes[:2] == [200, 200] and codes[2] == 429
    finally:
        app.config["TONGBAN_SEAL_VERIFY_RATE"] = old


def test_verify_page(seal, client, plain_pdf):
    page = client.get("/seals/verify")
    assert page.status_code == 200 and "style=" not in page.text
    # no inline script (CSP): only the page's own files
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert all(re.search(r'src="/static/js/[\w-]+\.js"', attrs) and not body.strip() for attrs, body in scripts)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    sealed = services.sign_pdf(seal, plain_pdf, purpose="p", actor="t")
    db.session.commit()
    r = _upload(client, sealed, url="/seals/verify", csrf_token=token)
    assert r.status_code == 200 and seal.code in r.text and "测试科技有限公司" in r.text
    r = _upload(client, b"junk", url="/seals/verify", csrf_token=token)
    assert r.status_code == 400


# ---------------------------------------------------------------- HTTP: the department sealing API


def _token(client, client_id, secret, scope):
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    r = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": scope},
                    headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200, r.json
    return r.json["access_token"]


def test_sign_api(seal, client, make_client, plain_pdf):
    cid, secret = make_client(scopes=["seal:sign"], grant_types=["client_credentials"])
    token = _token(client, cid, secret, "seal:sign")
    auth = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/seals/{seal.id}/sign"

    def post(headers=auth, **form):
        form.setdefault("purpose", "合同签订")
        return client.post(url, data={"file": (io.BytesIO(plain_pdf), "doc.pdf"), **form},
                           headers=headers, content_type="multipart/form-data")

    assert post(headers={}).status_code == 401
    r = post()
    assert r.status_code == 403 and r.json["error"] == "not_authorised"  # not authorised by the org yet

    services.authorise_client(seal.id, cid)
    db.session.commit()
    assert post(purpose="").status_code == 400
    r = post()
    assert r.status_code == 200 and r.mimetype == "application/pdf"
    verdict = services.verify_pdf(r.data)
    assert verdict["valid"] is True and verdict["signatures"][0]["seal_code"] == seal.code
    [use] = [u for u in services.uses(seal.id) if u.action == "seal.used"]
    assert use.actor == f"client:{cid}" and "合同签订" in use.detail

    assert client.post("/api/v1/seals/nope/sign", data={"purpose": "x"}, headers=auth).status_code == 404


def test_sign_api_needs_the_scope(seal, client, make_client, plain_pdf):
    cid, secret = make_client(scopes=["openid", "profile"], grant_types=["client_credentials"])
    services.authorise_client(seal.id, cid)
    db.session.commit()
    token = _token(client, cid, secret, "profile")
    r = client.post(f"/api/v1/seals/{seal.id}/sign",
                    data={"file": (io.BytesIO(plain_pdf), "doc.pdf"), "purpose": "x"},
                    headers={"Authorization": f"Bearer {token}"}, content_type="multipart/form-data")
    assert r.status_code == 403


def test_openapi_describes_the_seal_endpoints(client):
    doc = client.get("/api/v1/openapi.json").json
    assert doc["openapi"].startswith("3.")
    assert "post" in doc["paths"]["/api/v1/seals/verify"]
    sign = doc["paths"]["/api/v1/seals/{seal_id}/sign"]["post"]
    assert sign["security"] == [{"oauth2": ["seal:sign"]}]
    assert "seal:sign" in doc["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]["scopes"]
