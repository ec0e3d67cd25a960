"""The OpenAPI document against behaviour: every documented operation is routed to the documented
path, other methods answer 405 with Allow, and what bad requests get is among the documented responses."""

from __future__ import annotations

import base64
import io
import re

import pytest
import requests

from tests.conftest import USCC
from tongban.extensions import db

ODD = 'é"\\ x'  # printable, outside the URI-safe set; (NUL and control characters are refused globally)
HTTP_METHODS = ("get", "post", "put", "delete", "patch")


def _operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield path, method, op


def _concrete(path: str, value: str = "sample") -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def _template(rule: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


@pytest.fixture
def doc(client):
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    return r.json


@pytest.fixture
def system_token(client, make_client):
    cid, secret = make_client(scopes=["seal:sign", "licence:verify"], grant_types=["client_credentials"])
    basic = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    r = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "seal:sign licence:verify"},
                    headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200, r.json
    return r.json["access_token"]


def test_every_documented_operation_is_routed_to_its_path(app, doc):
    adapter = app.url_map.bind("localhost")
    for path, method, _op in _operations(doc):
        rule, _args = adapter.match(_concrete(path), method=method.upper(), return_rule=True)
        assert _template(rule.rule).replace("{identifier}", "{id}").replace("{link}", "{token}") == path, \
            (path, method, rule.rule)


def test_other_methods_are_405_with_allow(client, doc):
    for path, item in doc["paths"].items():
        documented = {m.upper() for m in item if m in HTTP_METHODS}
        for method in HTTP_METHODS:
            if method.upper() in documented:
                continue
            r = client.open(_concrete(path), method=method.upper())
            assert r.status_code == 405, (path, method, r.status_code)
            allowed = {m.strip() for m in r.headers.get("Allow", "").split(",")} - {"HEAD", "OPTIONS"}
            assert allowed == documented, (path, method, r.headers.get("Allow"))
            assert "405" in item[next(iter(m for m in item if m in HTTP_METHODS))]["responses"]


def test_get_on_licence_verify_is_not_a_licence_read(client, system_token):
    r = client.get("/api/v1/licences/verify", headers={"Authorization": f"Bearer {system_token}"},
                   query_string={"purpose": "p", "service_item": "s"})
    assert r.status_code == 405 and r.json["error"] == "method_not_allowed"
    assert set(r.headers["Allow"].split(", ")) - {"OPTIONS"} == {"POST"}


def test_bad_requests_get_documented_responses(app, client, doc, system_token):
    auth = {"Authorization": f"Bearer {system_token}"}
    for path, method, op in _operations(doc):
        responses = op["responses"]
        url = _concrete(path)
        secured = bool(op.get("security", doc.get("security", [])))
        if secured:
            r = client.open(url, method=method.upper())
            assert r.status_code == 401 and "401" in responses, (path, method)
        # nothing at all, then odd parameters and an odd path value
        for attempt in range(4):
            for target in (url, _concrete(path, ODD)):
                kwargs = [{}, {"query_string": {"purpose": ODD, "service_item": ODD, "type": ODD}},
                          {"data": {"purpose": "", "service_item": ODD, "file": (io.BytesIO(b"%PDF-1.7 x"), "x")},
                           "content_type": "multipart/form-data"},
                          {"json": {"purpose": ODD, "service_item": ODD, "id": ODD}}][attempt]
                r = client.open(target, method=method.upper(), headers=auth, **kwargs)
                assert str(r.status_code) in responses, (path, method, kwargs, r.status_code, r.data[:200])
                if r.status_code >= 400 and path.startswith("/api/"):
                    assert r.json["error"], (path, method)
        if "requestBody" in op:
            app.config["MAX_CONTENT_LENGTH"], saved = 1000, app.config["MAX_CONTENT_LENGTH"]
            try:
                r = client.open(url, method=method.upper(), headers=auth, data={
                    "file": (io.BytesIO(b"%PDF-1.7\n" + b"x" * 5000), "big.pdf"), "purpose": "p"},
                    content_type="multipart/form-data")
            finally:
                app.config["MAX_CONTENT_LENGTH"] = saved
            # a public endpoint reads the body at once; one behind OAuth may refuse the caller first
            assert str(r.status_code) in responses and (secured or r.status_code == 413), (path, method, r.status_code)
            assert "413" in responses


def test_the_document_says_how_tokens_are_had(doc):
    flows = doc["components"]["securitySchemes"]["oauth2"]["flows"]
    assert "licence:read" in flows["authorizationCode"]["scopes"]
    assert flows["authorizationCode"]["authorizationUrl"].endswith("/oauth/authorize")
    assert "licence:read" not in flows["clientCredentials"]["scopes"]
    assert {"seal:sign", "licence:verify"} <= set(flows["clientCredentials"]["scopes"])
    for name in ("purpose", "service_item"):
        [param] = [p for p in doc["paths"]["/api/v1/licences"]["get"]["parameters"] if p["name"] == name]
        assert param["schema"]["minLength"] == 1
        body = doc["paths"]["/api/v1/licences/{id}/download"]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"]["properties"][name]["minLength"] == 1
    assert {"/ca/root.pem", "/ca/issuing.pem", "/ca/crl", "/ca/root.crl", "/tsa", "/healthz"} <= set(doc["paths"])
    seal_code = doc["components"]["schemas"]["SealSignature"]["properties"]["seal_code"]
    assert seal_code["nullable"] is True and seal_code["pattern"] == "^[0-9]{13}$"


def test_token_parameters_only_from_the_body(client, make_client):
    cid, secret = make_client(scopes=["licence:verify"], grant_types=["client_credentials"])
    basic = {"Authorization": "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()}
    r = client.post("/oauth/token?grant_type=client_credentials", data={"scope": "licence:verify"}, headers=basic)
    assert r.status_code == 400 and r.json["error"] == "invalid_request" and "access_token" not in r.json
    r = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "licence:verify"},
                    headers=basic)
    assert r.status_code == 200


def test_odd_printable_keys_are_404(app, client, system_token, live_server, citizen, make_client):
    from people import accounts
    from tests.conftest import OTHER_ID, PASSWORD
    from tests.flask_flows import login
    from tests.licence.conftest import user_token

    auth = {"Authorization": f"Bearer {system_token}"}
    for key in (ODD, "%E2%80%AE", "x" * 3000, "..%2F..%2Fetc"):
        assert client.get(f"/v/{key}", headers={"Accept": "application/json"}).status_code == 404
        assert client.post(f"/api/v1/seals/{key}/sign", headers=auth, data={"purpose": "p"}).status_code == 404
        assert client.get(f"/api/v1/licences/download/{key}").status_code == 404
    # NUL in general is refused before any view runs (tongban.security); a seal id never reaches SQL
    assert client.post("/api/v1/seals/%00/sign", headers=auth, data={"purpose": "p"}).status_code in (400, 404)

    _cid, _sec, tok, _ = user_token(live_server, make_client)
    why = {"purpose": "核验", "service_item": "1234"}
    user = {"Authorization": f"Bearer {tok}"}
    for key in (ODD, "1.2.156.3005.2.é", "x" * 3000):
        r = requests.get(f"{live_server}/api/v1/licences/{key}", headers=user, params=why)
        assert r.status_code == 404 and r.json()["error"], (key, r.status_code)
    r = requests.get(f"{live_server}/api/v1/licences", headers=user, params={**why, "type": ODD, "holder_id": ODD})
    assert r.status_code == 200 and r.json() == []

    accounts.create_org(USCC, "测试科技有限公司")
    accounts.create_staff(OTHER_ID, "王五", PASSWORD, USCC, "seal-admin")
    db.session.commit()
    assert login(client, OTHER_ID).status_code in (302, 303)
    assert client.get(f"/seals/console/{ODD}").status_code == 404
    assert client.get("/seals/console/%00").status_code in (400, 404)
    assert client.get(f"/seals/console/{ODD}/picture.png").status_code == 404


def test_the_openid_provider_endpoints_are_documented(doc):
    """idp/openapi.py: what a department system calls besides the API, and the authorization endpoint."""
    assert {"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server", "/jwks.json",
            "/oauth/authorize", "/oauth/token", "/oauth/introspect", "/oauth/revoke", "/oauth/par",
            "/oauth/device_authorization", "/oauth/bc-authorize", "/oauth/userinfo"} <= set(doc["paths"])
    assert set(doc["paths"]["/oauth/userinfo"]) == {"get", "post"}
    assert doc["paths"]["/oauth/userinfo"]["get"]["security"] == [{"oauth2": ["openid"]}]
    grants = doc["paths"]["/oauth/token"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
    assert "urn:openid:params:grant-type:ciba" in grants["schema"]["properties"]["grant_type"]["enum"]
    assert {"200", "302", "400"} <= set(doc["paths"]["/oauth/authorize"]["get"]["responses"])


def test_every_operation_documents_the_input_check_and_the_bare_401(doc):
    for _path, _method, op in _operations(doc):
        assert "400" in op["responses"]
        if op.get("security"):
            schema = op["responses"]["401"]["content"]["application/json"]["schema"]
            assert {"type": "object", "maxProperties": 0} in schema["anyOf"]
