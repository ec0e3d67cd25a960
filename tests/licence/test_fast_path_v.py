"""``GET /v/<code>`` as JSON on the lean path: the full stack's answer, and the pages stay pages."""

from licence import services
from tests.idp.conftest import fast  # noqa: F401  (fixture)
from tests.idp.test_fast_path import _headers, both, not_lean
from tongban.extensions import db

JSON = {"Accept": "application/json"}


def test_v_json_lean_same_as_full(app, client, fast, issue):  # noqa: F811
    lic = issue("结婚证")
    path = f"/v/{lic.verify_code}"
    client.get(path)  # a browser's page first: it must not teach the JSON answer its headers
    lean, full = both(app, client, fast, "GET", path, headers=JSON)
    assert lean.status_code == full.status_code == 200
    assert lean.data == full.data and _headers(lean) == _headers(full)
    assert lean.get_json()["valid"] is True and lean.get_json()["licence"]["holder_name"] == "张*"
    services.revoke(lic.identifier, "错误登记", "test")
    db.session.commit()
    lean, full = both(app, client, fast, "GET", path, headers=JSON)
    assert lean.get_json()["status"] == full.get_json()["status"] == "revoked"


def test_v_pages_and_unknown_codes_are_the_full_stacks(app, client, fast, issue):  # noqa: F811
    lic = issue("社会保障卡")
    page = not_lean(app, client, fast, "GET", f"/v/{lic.verify_code}")
    assert page.status_code == 200 and page.mimetype == "text/html"
    resp = not_lean(app, client, fast, "GET", "/v/unknown-code-0000", headers=JSON)
    assert resp.status_code == 404 and resp.get_json()["status"] == "unknown"
    resp = not_lean(app, client, fast, "GET", f"/v/{lic.verify_code}",
                    headers={"Accept": "application/json, text/html;q=0.9"})
    assert resp.status_code == 200 and resp.get_json()["valid"] is True
