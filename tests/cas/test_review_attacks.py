"""Attacks tried in review against the CAS server (all must be refused): a ticket carried to a
neighbouring service of another system on the same host, to the same prefix without its query,
a renew validation of a single-sign-on ticket, and markup in a name to forge attributes."""

from __future__ import annotations

import json

from lxml import etree

from tests.cas.test_cas import CAS_NS, failure_code, login_client, register_cas, ticket_of  # noqa: F401


def _ticket(client, service: str) -> str:
    resp = client.get("/cas/login", query_string={"service": service})
    assert resp.status_code == 302, resp.data
    return ticket_of(resp.headers["Location"])


def test_ticket_of_one_system_is_refused_by_its_neighbour_on_the_same_host(app, client, citizen, register_cas):  # noqa: F811
    low = register_cas("https://a.example.gov.cn/app")
    high = register_cas("https://a.example.gov.cn/app/admin", name="管理后台")
    assert low != high
    login_client(client)
    # a ticket for the low-privilege system, presented at the admin system's prefix
    ticket = _ticket(client, "https://a.example.gov.cn/app/x")
    resp = client.get("/cas/serviceValidate",
                      query_string={"ticket": ticket, "service": "https://a.example.gov.cn/app/admin/"})
    assert failure_code(resp) == "INVALID_SERVICE"
    # and the other way round; the refused attempt spent the ticket
    ticket = _ticket(client, "https://a.example.gov.cn/app/admin/")
    resp = client.get("/cas/serviceValidate",
                      query_string={"ticket": ticket, "service": "https://a.example.gov.cn/app/"})
    assert failure_code(resp) == "INVALID_SERVICE"
    resp = client.get("/cas/serviceValidate",
                      query_string={"ticket": ticket, "service": "https://a.example.gov.cn/app/admin/"})
    assert failure_code(resp) == "INVALID_TICKET"


def test_ticket_is_bound_to_the_exact_service_url_query_included(app, client, citizen, register_cas):  # noqa: F811
    register_cas("https://a.example.gov.cn/app")
    login_client(client)
    for other in ("https://a.example.gov.cn/app/", "https://A.example.gov.cn/app/?next=/report",
                  "https://a.example.gov.cn:443/app/?next=/report", "https://a.example.gov.cn/app/?next=/admin"):
        ticket = _ticket(client, "https://a.example.gov.cn/app/?next=/report")  # a fresh one each time
        resp = client.get("/cas/p3/serviceValidate", query_string={"ticket": ticket, "service": other})
        assert failure_code(resp) == "INVALID_SERVICE"


def test_renew_validation_refuses_a_single_sign_on_ticket(app, client, citizen, register_cas):  # noqa: F811
    register_cas("https://a.example.gov.cn/app")
    service = "https://a.example.gov.cn/app/"
    login_client(client)  # the session exists before CAS is asked: the ticket is from SSO
    ticket = _ticket(client, service)
    resp = client.get("/cas/p3/serviceValidate", query_string={"ticket": ticket, "service": service, "renew": "true"})
    assert failure_code(resp) == "INVALID_TICKET"


def test_markup_in_the_name_cannot_forge_user_or_attributes(app, client, citizen, register_cas):  # noqa: F811
    from tongban.extensions import db

    forged = '</cas:name><cas:user>admin</cas:user><cas:id_number>1"}'
    citizen.name = forged
    db.session.commit()
    register_cas("https://a.example.gov.cn/app")
    service = "https://a.example.gov.cn/app/"
    login_client(client)
    resp = client.get("/cas/p3/serviceValidate", query_string={"ticket": _ticket(client, service), "service": service})
    root = etree.fromstring(resp.data)
    ok = root.find("cas:authenticationSuccess", CAS_NS)
    assert [u.text for u in ok.findall("cas:user", CAS_NS)] == [citizen.sub]
    attrs = ok.find("cas:attributes", CAS_NS)
    assert attrs.find("cas:name", CAS_NS).text == forged
    assert len(attrs.findall("cas:id_number", CAS_NS)) == 1
    resp = client.get("/cas/p3/serviceValidate",
                      query_string={"ticket": _ticket(client, service), "service": service, "format": "JSON"})
    body = json.loads(resp.data)["serviceResponse"]["authenticationSuccess"]
    assert body["user"] == citizen.sub and body["attributes"]["name"] == forged
