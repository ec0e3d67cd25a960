"""One log-in, three protocols: an OpenID client (Authlib), a CAS service (python-cas) and a SAML
SP (pysaml2) are signed in through one Tongban session; logging out everywhere (the account's
"log out" at Tongban) tells each one in its own protocol, through the durable outbox."""

from __future__ import annotations

from cas import CASClient
from saml2 import BINDING_SOAP

from tests.cas.test_cas import cas_login
from tests.idp.helpers import _CSRF, Browser, discover
from tests.idp.test_logout import Receiver, strict_logout_token
from tests.idp.test_oidc_authlib import RP
from tests.saml.sp import SamlSP
from tests.saml.test_saml import sso


def test_one_login_three_protocols_logout_everywhere(app, live_server, citizen, make_client):
    from casserver.services import register_service
    from saml.services import register_sp
    from tongban import outbox
    from tongban.extensions import db

    app.config["TONGBAN_OUTBOX_THREAD"] = False
    receiver = Receiver()
    receiver.start()
    try:
        base = f"http://127.0.0.1:{receiver.port}"
        disco = discover(live_server)
        oidc_id, secret = make_client(first_party=True, backchannel_logout_uri=f"{base}/oidc/backchannel")
        register_service(service_urls=[f"{base}/cas/"], name="CAS 系统", department="市档案局",
                         scopes=["openid", "profile"])
        sp = SamlSP("sp1", base, live_server, soap_slo=f"{base}/sp1/slo-soap")
        register_sp(sp.metadata(), name="SAML 系统", department="市人社局", scopes=["openid", "profile"])
        db.session.commit()

        browser = Browser(live_server)
        _token, claims = RP(disco, oidc_id, secret).login(browser)  # the password, once
        cas = CASClient(version=3, service_url=f"{base}/cas/app", server_url=live_server + "/cas/")
        ticket = cas_login(browser, cas, login=False)
        user, _attrs, _ = cas.verify_ticket(ticket)
        assert user == claims["sub"]
        authn = sp.consume(sso(browser, sp, login=False)["SAMLResponse"])

        # log out at Tongban (the confirmation form): every system hears of it
        page = browser.http.get(f"{live_server}/logout")
        resp = browser.http.post(f"{live_server}/logout", data={"csrf_token": _CSRF.search(page.text).group(1)})
        assert resp.status_code == 200
        assert outbox.work_once() == {"delivered": 3}
        by_path = {d["path"]: d for d in receiver.wait_for(3)}
        assert set(by_path) == {"/oidc/backchannel", "/cas/app", "/sp1/slo-soap"}
        # OpenID Connect: a back-channel logout token for the session
        token = strict_logout_token(by_path["/oidc/backchannel"]["form"]["logout_token"], disco=disco,
                                    client_id=oidc_id)
        assert token["sid"] == claims["sid"]
        # CAS: the SLO POST names the service ticket
        assert [el.text for el in cas.get_saml_slos(by_path["/cas/app"]["form"]["logoutRequest"])] == [ticket]
        # SAML: a LogoutRequest signed by the IdP for the person's NameID and session index
        req = sp.client.parse_logout_request(by_path["/sp1/slo-soap"]["body"], BINDING_SOAP)
        assert sp.client.sec.correctly_signed_logout_request(req.xmlstr, must=True)
        assert req.message.name_id.text == authn.name_id.text
        assert [s.text for s in req.message.session_index] == [authn.assertion.authn_statement[0].session_index]
    finally:
        receiver.stop()
        app.config["TONGBAN_OUTBOX_THREAD"] = True
