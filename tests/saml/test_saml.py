"""The SAML 2.0 IdP driven by a pysaml2 service provider: metadata, SSO with both bindings,
signatures checked by the SP library, pairwise persistent NameIDs, single logout; refusals."""

from __future__ import annotations

import json

import pytest
import requests
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT

from tests.conftest import CITIZEN_ID
from tests.idp.helpers import Browser
from tests.idp.test_logout import Receiver
from tests.saml.sp import SamlSP, post_form


@pytest.fixture
def soap():
    r = Receiver()
    r.url = f"http://127.0.0.1:{r.port}/sp1/slo-soap"
    r.start()
    yield r
    r.stop()


@pytest.fixture
def no_thread(app):
    app.config["TONGBAN_OUTBOX_THREAD"] = False
    yield
    app.config["TONGBAN_OUTBOX_THREAD"] = True


@pytest.fixture
def register_sp(app):
    from saml.services import register_sp as register
    from tongban.extensions import db

    def _make(sp: SamlSP, scopes=("openid", "profile"), **kw):
        kw.setdefault("name", "人事档案系统")
        kw.setdefault("department", "市人社局")
        svc = register(sp.metadata(), scopes=list(scopes), **kw)
        db.session.commit()
        return svc.client_id

    return _make


def sso(browser: Browser, sp: SamlSP, binding=BINDING_HTTP_REDIRECT, login=True, **kw):
    url, fields = sp.start(binding, **kw)
    step = browser.walk(url, method="POST" if fields else "GET", data=fields)
    if step.kind == "login":
        assert login, "a log-in page was shown"
        step = browser.submit_login(step)
    assert step.kind == "page" and step.resp.status_code == 200, (step.kind, step.url, step.resp.text[:500])
    action, form = post_form(step.resp.text)
    assert action == sp.acs
    return form


def test_metadata_is_signed_and_complete(app, live_server, tmp_path):
    from saml2.mdstore import MetadataStore
    from saml2.sigver import security_context

    from tests.saml.sp import idp_metadata

    xml = idp_metadata(live_server)
    assert f'entityID="{live_server}/saml/metadata"' in xml
    for binding in (BINDING_HTTP_REDIRECT, BINDING_HTTP_POST):
        assert f'Binding="{binding}" Location="{live_server}/saml/sso"' in xml
    assert "SingleLogoutService" in xml and "X509Certificate" in xml
    assert "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" in xml
    # the signature verifies with xmlsec1 against the certificate it carries
    sp = SamlSP("sp1", "http://127.0.0.1:9", live_server)
    sec = security_context(sp.config)
    import re
    import textwrap

    b64 = re.search(r"X509Certificate>([^<]+)<", xml).group(1).strip()
    pem = tmp_path / "idp.crt"
    pem.write_text("-----BEGIN CERTIFICATE-----\n" + "\n".join(textwrap.wrap(b64, 64))
                   + "\n-----END CERTIFICATE-----\n")
    assert sec.verify_signature(xml, cert_file=str(pem), cert_type="pem",
                                node_name="urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor")
    md = MetadataStore(None, None)
    md.load("inline", xml)
    assert md.single_sign_on_service(f"{live_server}/saml/metadata", BINDING_HTTP_POST)


@pytest.mark.parametrize("binding", [BINDING_HTTP_REDIRECT, BINDING_HTTP_POST])
def test_sso_both_bindings_signed_and_checked_by_the_sp(app, live_server, citizen, register_sp, binding):
    sp = SamlSP("sp1", "http://127.0.0.1:9", live_server)
    register_sp(sp)
    browser = Browser(live_server)
    form = sso(browser, sp, binding)
    assert form["RelayState"] == "rs-1"
    resp = sp.consume(form["SAMLResponse"])  # raises on a bad signature, audience, InResponseTo, ...
    assert resp.response.signature is not None and resp.assertion.signature is not None
    assert resp.name_id.format == "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
    ident = resp.get_identity()
    assert ident["name"] == ["张三"] and ident["id_number"] == ["110***********002X"]
    assert ident["acr"] == ["L1"]
    ctx = resp.assertion.authn_statement[0].authn_context.authn_context_class_ref.text
    assert ctx == "urn:tongban:acr:L1"
    assert resp.assertion.conditions.audience_restriction[0].audience[0].text == sp.entity_id


def test_nameid_stable_per_sp_and_different_between_sps(app, live_server, citizen, register_sp):
    sp1 = SamlSP("sp1", "http://127.0.0.1:9", live_server)
    sp2 = SamlSP("sp2", "http://127.0.0.1:9", live_server)
    register_sp(sp1)
    register_sp(sp2, scopes=("openid", "profile", "id_number"), name="第二个系统")
    browser = Browser(live_server)
    first = sp1.consume(sso(browser, sp1)["SAMLResponse"]).name_id.text
    again = sp1.consume(sso(browser, sp1, login=False)["SAMLResponse"]).name_id.text
    other = sp2.consume(sso(browser, sp2, login=False)["SAMLResponse"])
    assert first == again
    assert other.name_id.text != first and citizen.sub not in (first, other.name_id.text)
    assert other.get_identity()["id_number"] == [CITIZEN_ID]  # full: the SP has the id_number permission


def test_refusals(app, live_server, citizen, register_sp):
    sp1 = SamlSP("sp1", "http://127.0.0.1:9", live_server)
    register_sp(sp1)
    browser = Browser(live_server)
    assert browser.login().status_code == 302
    # an unregistered SP
    stranger = SamlSP("sp2", "http://127.0.0.1:9", live_server)
    url, _ = stranger.start()
    resp = browser.http.get(url, allow_redirects=False)
    assert resp.status_code == 400 and "Location" not in resp.headers
    # an ACS URL not in the SP's metadata
    url, _ = sp1.start(assertion_consumer_service_url="https://evil.example.com/acs")
    resp = browser.http.get(url, allow_redirects=False)
    assert resp.status_code == 400
    # unsigned AuthnRequest from an SP whose metadata says AuthnRequestsSigned
    unsigned = SamlSP("sp1", "http://127.0.0.1:9", live_server, sign_requests=False)
    url, _ = unsigned.start()
    resp = browser.http.get(url, allow_redirects=False)
    assert resp.status_code == 400
    # a forged signature: the request signed by another key than the SP's
    forged = SamlSP("sp1", "http://127.0.0.1:9", live_server, key="sp2")
    url, _ = forged.start()
    assert browser.http.get(url, allow_redirects=False).status_code == 400
    # replay: the same AuthnRequest twice
    url, _ = sp1.start()
    assert browser.http.get(url, allow_redirects=False).status_code == 302
    assert browser.http.get(url, allow_redirects=False).status_code == 400


def test_late_request_refused(app, live_server, citizen, register_sp):
    from datetime import timedelta

    from freezegun import freeze_time

    sp1 = SamlSP("sp1", "http://127.0.0.1:9", live_server)
    register_sp(sp1)
    with freeze_time(timedelta(minutes=-10), tick=True):
        url, _ = sp1.start()
    resp = requests.get(url, allow_redirects=False)
    assert resp.status_code == 400


def test_response_bound_to_the_browser_that_asked(app, live_server, citizen, register_sp):
    sp1 = SamlSP("sp1", "http://127.0.0.1:9", live_server)
    register_sp(sp1)
    victim = Browser(live_server)
    assert victim.login().status_code == 302
    attacker = Browser(live_server)
    url, _ = sp1.start()
    cont = attacker.http.get(url, allow_redirects=False).headers["Location"]
    # the victim, lured to the attacker's pending request, gets no assertion for it
    resp = victim.http.get(requests.compat.urljoin(live_server, cont), allow_redirects=False)
    assert resp.status_code == 400


def test_sp_initiated_logout_ends_the_session_and_idp_logout_reaches_the_sp(app, live_server, citizen,
                                                                              register_sp, soap, no_thread):
    from saml2 import BINDING_SOAP
    from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID

    from tongban import outbox

    sp1 = SamlSP("sp1", f"http://127.0.0.1:{soap.port}", live_server, soap_slo=soap.url)
    register_sp(sp1)
    browser = Browser(live_server)
    authn = sp1.consume(sso(browser, sp1)["SAMLResponse"])
    session_index = authn.assertion.authn_statement[0].session_index
    # Tongban ends the session (logout at Tongban): the SP gets a signed LogoutRequest over SOAP
    page = browser.http.get(f"{live_server}/logout")
    from tests.idp.helpers import _CSRF

    browser.http.post(f"{live_server}/logout", data={"csrf_token": _CSRF.search(page.text).group(1)})
    assert outbox.work_once() == {"delivered": 1}, [i.last_error for i in outbox.recent()]
    got = soap.wait_for(1)[0]
    req = sp1.client.parse_logout_request(got["body"], BINDING_SOAP)
    assert sp1.client.sec.correctly_signed_logout_request(req.xmlstr, must=True)
    assert req.message.name_id.text == authn.name_id.text
    assert [s.text for s in req.message.session_index] == [session_index]

    # SP-initiated: a signed LogoutRequest ends the Tongban session
    authn = sp1.consume(sso(browser, sp1)["SAMLResponse"])
    name_id = NameID(format=NAMEID_FORMAT_PERSISTENT, text=authn.name_id.text,
                     name_qualifier=authn.name_id.name_qualifier, sp_name_qualifier=sp1.entity_id)
    req_id, lr = sp1.client.create_logout_request(f"{live_server}/saml/slo", sp1.idp_entity_id, name_id=name_id,
                                                  session_indexes=[authn.assertion.authn_statement[0].session_index])
    http = sp1.client.apply_binding(BINDING_HTTP_REDIRECT, str(lr), f"{live_server}/saml/slo", "rs", sign=True,
                                    sigalg="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256")
    url = dict(http["headers"])["Location"]
    resp = browser.http.get(url, allow_redirects=False)
    assert resp.status_code == 200
    action, form = post_form(resp.text)  # the signed LogoutResponse, posted back to the SP
    assert action == f"{sp1.base}/sp1/slo"
    lresp = sp1.client.parse_logout_request_response(form["SAMLResponse"], BINDING_HTTP_POST)
    assert lresp.response.signature is not None and lresp.in_response_to == req_id
    assert lresp.response.status.status_code.value == "urn:oasis:names:tc:SAML:2.0:status:Success"
    assert outbox.work_once() == {}, "the SP that asked is not sent a LogoutRequest of its own"
    assert browser.walk(sp1.start()[0]).kind == "login"  # the SSO session is over
    # an unsigned LogoutRequest is refused
    http = sp1.client.apply_binding(BINDING_HTTP_REDIRECT, str(lr), f"{live_server}/saml/slo", "rs", sign=False)
    assert "Signature=" not in dict(http["headers"])["Location"]
    assert requests.get(dict(http["headers"])["Location"], allow_redirects=False).status_code == 400


def test_cli_registers_an_sp_from_metadata(app, live_server, tmp_path):
    sp = SamlSP("sp1", "http://127.0.0.1:9", live_server)
    path = tmp_path / "sp.xml"
    path.write_bytes(sp.metadata())
    runner = app.test_cli_runner()
    res = runner.invoke(args=["clients", "create", "--protocol", "saml", "--metadata", str(path), "--name", "SP",
                              "--department", "市局", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["entity_id"] == sp.entity_id
    # twice: refused; not XML: refused
    res = runner.invoke(args=["clients", "create", "--protocol", "saml", "--metadata", str(path), "--name", "SP",
                              "--department", "市局"])
    assert res.exit_code == 1 and res.output.startswith("error:")
    path.write_text("<not-metadata/>")
    res = runner.invoke(args=["clients", "create", "--protocol", "saml", "--metadata", str(path), "--name", "SP",
                              "--department", "市局"])
    assert res.exit_code == 1 and res.output.count("\n") == 1


def test_signing_key_rotation_publishes_first_then_signs(app, live_server, citizen, register_sp):
    from sqlalchemy import update

    from keys import saml as samlkeys
    from tongban.clock import utcnow
    from tongban.extensions import db

    old = samlkeys.active()
    new = samlkeys.rotate(delay=3600)
    db.session.commit()
    sp1 = SamlSP("sp1", "http://127.0.0.1:9", live_server)  # loads the metadata: both certificates
    register_sp(sp1)
    md = requests.get(f"{live_server}/saml/metadata").text
    assert samlkeys.cert_body(old)[:60] in md and samlkeys.cert_body(new)[:60] in md
    browser = Browser(live_server)
    form = sso(browser, sp1)
    xml = __import__("base64").b64decode(form["SAMLResponse"]).decode()
    assert samlkeys.cert_body(old)[:60] in xml and samlkeys.cert_body(new)[:60] not in xml
    sp1.consume(form["SAMLResponse"])
    # the new key's time comes: it signs, and the SP that read the metadata before trusts it
    db.session.execute(update(samlkeys.SamlKey).where(samlkeys.SamlKey.kid == new.kid)
                       .values(activates_at=utcnow()))
    db.session.commit()
    form = sso(browser, sp1, login=False)
    xml = __import__("base64").b64decode(form["SAMLResponse"]).decode()
    assert samlkeys.cert_body(new)[:60] in xml
    assert sp1.consume(form["SAMLResponse"]).name_id.text


def test_is_passive_without_session_answers_no_passive(app, live_server, citizen, register_sp):
    from saml2.response import StatusNoPassive

    sp1 = SamlSP("sp1", "http://127.0.0.1:9", live_server)
    register_sp(sp1)
    browser = Browser(live_server)
    url, _ = sp1.start(is_passive="true")
    step = browser.walk(url)
    assert step.kind == "page", "no log-in page for a passive request"
    _action, form = post_form(step.resp.text)
    with pytest.raises(StatusNoPassive):
        sp1.consume(form["SAMLResponse"])
