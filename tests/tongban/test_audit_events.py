"""Events that were missing from the audit log (issue 10): refusals at the department APIs,
client authentication failures at the token endpoints, a clerk looking up a holder, opening a
licence or checking a PDF, administrators reading the audit log or the SMS outbox. Refusals
are kept although the refused request's own transaction rolls back; reads although a page
never commits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import BytesIO

from freezegun import freeze_time
from sqlalchemy import select

from tests.conftest import CITIZEN_ID, OTHER_ID, PASSWORD
from tests.flask_flows import basic, csrf_token, login
from tests.licence.conftest import issue  # noqa: F401 - the fixture
from tongban import audit
from tongban.audit import AuditLog
from tongban.extensions import db


def _rows(action: str) -> list[AuditLog]:
    db.session.expire_all()
    return list(db.session.execute(select(AuditLog).where(AuditLog.action == action)
                                   .order_by(AuditLog.id)).scalars())


def _chain_is_whole():
    verdict = audit.verify()
    assert verdict.whole, verdict.reason


def test_client_authentication_failures_at_the_token_endpoints(app, client, make_client):
    client_id, secret = make_client()
    for path in ("/oauth/token", "/oauth/introspect", "/oauth/revoke"):
        resp = client.post(path, data={"grant_type": "client_credentials", "token": "x"},
                           headers=basic(client_id, "wrong-secret"))
        assert resp.status_code == 401, (path, resp.status_code)
    resp = client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": "nobody",
                                             "client_secret": "guess"})
    assert resp.status_code in (400, 401)
    rows = _rows("client.auth_failed")
    assert [r.object for r in rows] == ["/oauth/token", "/oauth/introspect", "/oauth/revoke", "/oauth/token"]
    assert {r.actor for r in rows} == {f"client:{client_id}", "client:nobody"}
    assert all(r.outcome == "failure" and "wrong-secret" not in r.detail for r in rows)
    # a client that authenticates is not recorded as a failure
    ok = client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(client_id, secret))
    assert ok.status_code == 200
    assert len(_rows("client.auth_failed")) == 4
    _chain_is_whole()


def test_refusals_at_the_licence_sharing_api(app, client, make_client):
    client_id, secret = make_client(scopes=["openid", "licence:read", "licence:verify"])
    token = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "licence:read"},
                        headers=basic(client_id, secret)).get_json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    # a client-credentials token cannot read a person's licences
    r = client.get("/api/v1/licences?purpose=核验&service_item=11330800", headers=bearer)
    assert r.status_code == 403
    # no purpose / service item
    r = client.get("/api/v1/licence-types", headers=bearer)
    assert r.status_code == 400
    # a forged token
    r = client.get("/api/v1/licences?purpose=x&service_item=y", headers={"Authorization": "Bearer forged"})
    assert r.status_code == 401
    # no credentials at all: an anonymous probe is not written to the log
    assert client.get("/api/v1/licences?purpose=x&service_item=y").status_code == 401
    rows = _rows("api.refused")
    assert [(r.object, r.outcome) for r in rows] == [
        ("GET /api/v1/licences", "refused"), ("GET /api/v1/licence-types", "refused"),
        ("GET /api/v1/licences", "refused")]
    assert rows[0].actor == f"client:{client_id}" and '"status": 403' in rows[0].detail
    assert '"purpose": "核验"' in rows[0].detail
    assert rows[2].actor == ""
    _chain_is_whole()


def test_clerk_lookups_licence_views_and_pdf_checks(app, client, citizen, issue):  # noqa: F811
    from licence import services
    from people import accounts

    clerk = accounts.create_staff(OTHER_ID, "王五", PASSWORD, app.config["TONGBAN_AUTHORITY_USCC"], "clerk")
    db.session.commit()
    lic = issue("营业执照")
    assert login(client, login=OTHER_ID).status_code == 302
    t = services.get_type("残疾人证")
    assert client.get(f"/clerk/issue/{t.code}?holder_id={CITIZEN_ID}").status_code == 200
    assert client.get(f"/clerk/licences/{lic.identifier}").status_code in (200, 403)
    token = csrf_token(client, "/clerk/verify")
    r = client.post("/clerk/verify", data={"csrf_token": token, "file": (BytesIO(lic.pdf), "l.pdf")},
                    content_type="multipart/form-data")
    assert r.status_code == 200

    lookup = _rows("clerk.holder_lookup")
    assert len(lookup) == 1 and lookup[0].actor == f"user:{clerk.sub}"
    assert CITIZEN_ID not in lookup[0].object and "110***********002X" in lookup[0].object
    opened = _rows("clerk.licence_opened")
    assert [r.object for r in opened] == [f"licence:{lic.identifier}"]
    checked = _rows("clerk.pdf_checked")
    assert len(checked) == 1 and checked[0].object == f"licence:{lic.identifier}"
    assert '"status": "valid"' in checked[0].detail
    _chain_is_whole()


def test_administrators_reading_the_audit_log_and_sms_outbox(app, client):
    from people import accounts

    admin = accounts.create_staff(OTHER_ID, "王五", PASSWORD, app.config["TONGBAN_AUTHORITY_USCC"], "admin")
    db.session.commit()
    assert login(client, login=OTHER_ID).status_code == 302
    assert client.get("/admin/audit?action=login.").status_code == 200
    assert client.get("/admin/sms").status_code == 200
    read = _rows("admin.audit_read")
    assert len(read) == 1 and read[0].actor == f"user:{admin.sub}" and '"filter": "login."' in read[0].detail
    assert len(_rows("admin.sms_read")) == 1
    # the audit page shows entries not chained yet, newest first
    page = client.get("/admin/audit").get_data(as_text=True)
    assert "admin.sms_read" in page
    _chain_is_whole()


def test_strangers_cannot_fill_the_log(app, client, monkeypatch):
    """Junk bearer tokens and made-up client ids are audited up to a limit per source and minute;
    past it one row says how the rest were suppressed, and nothing more is written."""
    monkeypatch.setitem(app.config, "TONGBAN_AUDIT_REFUSALS_PER_MINUTE", 5)
    # all 24 requests inside one budget minute (the clock stands still at the start of the next
    # minute): a test that straddled a minute boundary got two budgets
    minute = datetime.now(UTC).replace(second=0, microsecond=0, tzinfo=None) + timedelta(minutes=1, seconds=1)
    with freeze_time(minute):
        for i in range(12):
            client.get("/api/v1/licences", headers={"Authorization": f"Bearer junk{i}"})
        for i in range(12):
            client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": f"nobody{i}",
                                              "client_secret": "x"})
    refused = _rows("api.refused") + _rows("client.auth_failed")
    assert len(refused) == 5  # one budget per source, whatever the endpoint
    suppressed = _rows("audit.refusals_suppressed")
    assert len(suppressed) == 1 and suppressed[0].object == "127.0.0.1"
    _chain_is_whole()
