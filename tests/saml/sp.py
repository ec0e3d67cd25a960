"""A SAML 2.0 service provider for the tests, built with pysaml2 (Saml2Client), with fixed keys."""

from __future__ import annotations

import html
import re
from pathlib import Path

import requests
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, BINDING_SOAP
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import entity_descriptor
from saml2.saml import NAMEID_FORMAT_PERSISTENT
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

HERE = Path(__file__).parent


def idp_metadata(base: str) -> str:
    resp = requests.get(f"{base}/saml/metadata")
    assert resp.status_code == 200, resp.text[:300]
    return resp.text


class SamlSP:
    def __init__(self, name: str, base: str, idp_base: str, *, sign_requests: bool = True,
                 soap_slo: str | None = None, key: str | None = None):
        self.name, self.base = name, base
        self.entity_id = f"{base}/{name}/metadata"
        self.acs = f"{base}/{name}/acs"
        endpoints = {"assertion_consumer_service": [(self.acs, BINDING_HTTP_POST)],
                     "single_logout_service": [(f"{base}/{name}/slo", BINDING_HTTP_POST)]}
        if soap_slo:
            endpoints["single_logout_service"].insert(0, (soap_slo, BINDING_SOAP))
        key = key or name
        conf = {
            "entityid": self.entity_id,
            "xmlsec_binary": "/usr/bin/xmlsec1",
            "key_file": str(HERE / f"{key}.key"),
            "cert_file": str(HERE / f"{key}.crt"),
            "metadata": {"inline": [idp_metadata(idp_base)]},
            "signing_algorithm": SIG_RSA_SHA256,
            "digest_algorithm": DIGEST_SHA256,
            "allow_unknown_attributes": True,
            "service": {"sp": {
                "endpoints": endpoints,
                "authn_requests_signed": sign_requests,
                "want_assertions_signed": True,
                "want_response_signed": True,
                "allow_unsolicited": False,
                "name_id_format": NAMEID_FORMAT_PERSISTENT,
            }},
        }
        cfg = SPConfig()
        cfg.load(conf)
        self.config = cfg
        self.client = Saml2Client(config=cfg)
        self.idp_entity_id = f"{idp_base}/saml/metadata"
        self.outstanding: dict[str, str] = {}

    def metadata(self) -> bytes:
        return str(entity_descriptor(self.config)).encode()

    def start(self, binding=BINDING_HTTP_REDIRECT, relay_state="rs-1", **kw) -> tuple[str, dict | None]:
        """An AuthnRequest: (URL, None) for HTTP-Redirect, (URL, form fields) for HTTP-POST."""
        req_id, info = self.client.prepare_for_authenticate(entityid=self.idp_entity_id, relay_state=relay_state,
                                                            binding=binding, sigalg=SIG_RSA_SHA256,
                                                            digest_alg=DIGEST_SHA256, **kw)
        self.outstanding[req_id] = "/"
        if binding == BINDING_HTTP_REDIRECT:
            return dict(info["headers"])["Location"], None
        page = info["data"]
        fields = {m.group(1): html.unescape(m.group(2))
                  for m in re.finditer(r'name="([^"]+)" value="([^"]*)"', page)}
        action = html.unescape(re.search(r'action="([^"]+)"', page).group(1))
        return action, fields

    def consume(self, saml_response: str):
        """The SP library checks the response: signatures, InResponseTo, audience, destination, time."""
        return self.client.parse_authn_request_response(saml_response, BINDING_HTTP_POST,
                                                        outstanding=self.outstanding)


def post_form(page: str) -> tuple[str, dict[str, str]]:
    """The (action, fields) of the IdP's auto-submitting SAML form."""
    action = html.unescape(re.search(r'<form id="saml-post" method="post" action="([^"]+)"', page).group(1))
    fields = {}
    for tag in re.findall(r"<input\b[^>]*>", page):
        n = re.search(r'name="([^"]+)"', tag)
        v = re.search(r'value="([^"]*)"', tag)
        if n and v:
            fields[n.group(1)] = html.unescape(v.group(1))
    return action, fields
