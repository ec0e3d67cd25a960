"""Attacks tried in review against SAML single logout (all must fail): a registered SP logging
someone out of another SP with that SP's NameID, and a LogoutRequest in another SP's name signed
with the attacker's own key (HTTP-Redirect and HTTP-POST bindings)."""

from __future__ import annotations

import base64

from saml2 import BINDING_HTTP_REDIRECT
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID

from tests.idp.helpers import Browser
from tests.saml.sp import SamlSP
from tests.saml.test_saml import register_sp, sso  # noqa: F401

RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"


def _logout_request(attacker: SamlSP, live_server: str, name_id: NameID, sign_xml: bool = False) -> str:
    _, lr = attacker.client.create_logout_request(f"{live_server}/saml/slo", attacker.idp_entity_id,
                                                  name_id=name_id, sign=sign_xml, sign_alg=RSA_SHA256 if sign_xml
                                                  else None)
    return str(lr)


def _still_signed_in(browser: Browser, sp: SamlSP) -> None:
    assert browser.walk(sp.start()[0]).kind != "login", "the victim's session was ended"


def test_one_sp_cannot_log_a_citizen_out_with_another_sps_name_id(app, live_server, citizen, register_sp):  # noqa: F811
    sp1 = SamlSP("sp1", "http://127.0.0.1:9", live_server)
    sp2 = SamlSP("sp2", "http://127.0.0.1:9", live_server)
    register_sp(sp1)
    register_sp(sp2, name="第二个系统")
    victim = Browser(live_server)
    authn = sp1.consume(sso(victim, sp1)["SAMLResponse"])
    # sp2 (registered, its own key) learnt the victim's NameID at sp1 and asks for a logout
    name_id = NameID(format=NAMEID_FORMAT_PERSISTENT, text=authn.name_id.text,
                     name_qualifier=authn.name_id.name_qualifier, sp_name_qualifier=sp1.entity_id)
    http = sp2.client.apply_binding(BINDING_HTTP_REDIRECT, _logout_request(sp2, live_server, name_id),
                                    f"{live_server}/saml/slo", "rs", sign=True, sigalg=RSA_SHA256)
    Browser(live_server).http.get(dict(http["headers"])["Location"], allow_redirects=False)
    _still_signed_in(victim, sp1)


def test_logout_request_in_another_sps_name_with_the_attackers_key_is_refused(app, live_server, citizen,
                                                                              register_sp):  # noqa: F811
    sp1 = SamlSP("sp1", "http://127.0.0.1:9", live_server)
    sp2 = SamlSP("sp2", "http://127.0.0.1:9", live_server)
    register_sp(sp1)
    register_sp(sp2, name="第二个系统")
    victim = Browser(live_server)
    authn = sp1.consume(sso(victim, sp1)["SAMLResponse"])
    name_id = NameID(format=NAMEID_FORMAT_PERSISTENT, text=authn.name_id.text,
                     name_qualifier=authn.name_id.name_qualifier, sp_name_qualifier=sp1.entity_id)
    forged = SamlSP("sp1", "http://127.0.0.1:9", live_server, key="sp2")  # Issuer sp1, sp2's key
    attacker = Browser(live_server)
    # HTTP-Redirect: a query-string signature
    http = forged.client.apply_binding(BINDING_HTTP_REDIRECT, _logout_request(forged, live_server, name_id),
                                       f"{live_server}/saml/slo", "rs", sign=True, sigalg=RSA_SHA256)
    assert attacker.http.get(dict(http["headers"])["Location"], allow_redirects=False).status_code == 400
    _still_signed_in(victim, sp1)
    # HTTP-POST: an enveloped XML signature
    xml = _logout_request(forged, live_server, name_id, sign_xml=True)
    assert "Signature" in xml
    resp = attacker.http.post(f"{live_server}/saml/slo", data={"SAMLRequest": base64.b64encode(xml.encode()).decode(),
                                                               "RelayState": "rs"}, allow_redirects=False)
    assert resp.status_code == 400
    _still_signed_in(victim, sp1)
    # the control: the same request signed by sp1's own key does end the session
    xml = _logout_request(sp1, live_server, name_id, sign_xml=True)
    resp = attacker.http.post(f"{live_server}/saml/slo", data={"SAMLRequest": base64.b64encode(xml.encode()).decode(),
                                                               "RelayState": "rs"}, allow_redirects=False)
    assert resp.status_code == 200
    assert victim.walk(sp1.start()[0]).kind == "login"
