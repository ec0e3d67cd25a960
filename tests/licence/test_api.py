from io import BytesIO

import requests

from licence import services
from tests.conftest import OTHER_ID
from tests.licence.conftest import client_token, user_token
from tongban.extensions import db

WHY = {"purpose": "办理公积金提取", "service_item": "330100-GJJ-001"}


def _h(tok):
    return {"Authorization": f"Bearer {tok}"}


def test_purpose_and_service_item_required(live_server, citizen, make_client, issue):
    issue("结婚证")
    _cid, _sec, tok, _ = user_token(live_server, make_client)
    r = requests.get(f"{live_server}/api/v1/licences", headers=_h(tok))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = requests.get(f"{live_server}/api/v1/licences", headers=_h(tok), params={"purpose": "x"})
    assert r.status_code == 400
    r = requests.get(f"{live_server}/api/v1/licence-types", headers=_h(tok), params=WHY)
    assert r.status_code == 200 and len(r.json()) == 14
    assert requests.get(f"{live_server}/api/v1/licences", params=WHY).status_code == 401


def test_consented_user_reads_own_licences_only(live_server, citizen, make_client, issue):
    mine = issue("结婚证")
    other = issue("残疾人证", holder=(OTHER_ID, "王五"))
    cid, _sec, tok, step = user_token(live_server, make_client)
    assert "consent" in step.seen
    r = requests.get(f"{live_server}/api/v1/licences", headers=_h(tok), params=WHY)
    assert r.status_code == 200 and [x["id"] for x in r.json()] == [mine.identifier]
    one = requests.get(f"{live_server}/api/v1/licences/{mine.identifier}", headers=_h(tok), params=WHY).json()
    assert set(one) >= {"id", "type", "type_name", "status", "holder_id", "holder_name", "issuer", "issued_at",
                        "valid_until", "version", "data", "metadata"}
    assert one["holder_name"] == "张三" and one["metadata"]["ZZBS"] == mine.identifier
    assert one["metadata"]["CZZTDMLX"] == "111" and one["version"] == "001"
    r = requests.get(f"{live_server}/api/v1/licences/{other.identifier}", headers=_h(tok), params=WHY)
    assert r.status_code == 404
    # the holder sees who read it, when and why
    log = services.access_log(services.find(mine.identifier))
    assert {a.operation for a in log} == {"list", "read"} and all(a.purpose == WHY["purpose"] for a in log)
    assert all(a.client_id == cid for a in log)


def test_denied_consent_gives_no_token(live_server, citizen, make_client):
    _cid, _sec, tok, _ = user_token(live_server, make_client, consent="deny")
    assert tok is None


def test_first_party_without_consent_is_refused(live_server, citizen, make_client, issue):
    issue("结婚证")
    _cid, _sec, tok, step = user_token(live_server, make_client, first_party=True)
    assert "consent" not in step.seen
    r = requests.get(f"{live_server}/api/v1/licences", headers=_h(tok), params=WHY)
    assert r.status_code == 403


def test_client_credentials_cannot_list_but_can_verify(live_server, make_client, issue):
    lic = issue()
    cid, sec = make_client(scopes=["licence:read", "licence:verify"])
    tok = client_token(live_server, cid, sec, "licence:read licence:verify")
    r = requests.get(f"{live_server}/api/v1/licences", headers=_h(tok), params=WHY)
    assert r.status_code == 403
    r = requests.post(f"{live_server}/api/v1/licences/verify", headers=_h(tok), json={"id": lic.identifier, **WHY})
    body = r.json()
    assert r.status_code == 200 and body["valid"] is True and body["status"] == "valid"
    assert body["licence"]["holder_name"] == "通" + "*" * 9 and body["seal"]["valid"] is True
    r = requests.post(f"{live_server}/api/v1/licences/verify", headers=_h(tok), data=WHY,
                      files={"file": ("l.pdf", BytesIO(lic.pdf), "application/pdf")})
    assert r.status_code == 200 and r.json()["valid"] is True
    r = requests.post(f"{live_server}/api/v1/licences/verify", headers=_h(tok), json={"id": lic.identifier})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert {a.operation for a in services.access_log(services.find(lic.identifier))} == {"verify"}


def test_one_time_download_link(live_server, citizen, make_client, issue, app):
    lic = issue("结婚证")
    _cid, _sec, tok, _ = user_token(live_server, make_client)
    r = requests.post(f"{live_server}/api/v1/licences/{lic.identifier}/download", headers=_h(tok), json=WHY)
    assert r.status_code == 200 and set(r.json()) == {"url", "expires_at"}
    url = r.json()["url"]
    first = requests.get(url)
    assert first.status_code == 200 and first.content.startswith(b"%PDF-")
    assert first.content != lic.pdf  # a watermarked, freshly sealed copy
    verdict = services._seal_services().verify_pdf(first.content)
    assert verdict["valid"] is True
    assert requests.get(url).status_code == 404
    # expired links do not work either
    r = requests.post(f"{live_server}/api/v1/licences/{lic.identifier}/download", headers=_h(tok), json=WHY)
    from licence.models import DownloadLink
    from tongban.clock import utcnow

    db.session.remove()
    for link in db.session.query(DownloadLink).filter(DownloadLink.used_at.is_(None)):
        link.expires_at = utcnow()
    db.session.commit()
    assert requests.get(r.json()["url"]).status_code == 404
    ops = [a.operation for a in services.access_log(services.find(lic.identifier))]
    assert ops.count("download") == 2 and ops.count("fetch") == 1


def test_openapi_paths():
    from licence.openapi import PATHS

    assert {"/api/v1/licences", "/api/v1/licences/{id}", "/api/v1/licences/verify",
            "/api/v1/licences/{id}/download", "/api/v1/licence-types"} <= set(PATHS)


def test_openapi_document_served(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert "/api/v1/licences/{id}/download" in doc["paths"]
    assert "licence:read" in str(doc["components"]["securitySchemes"])
