"""SAML 2.0 IdP with pysaml2: SP registration from metadata, the IdP configuration (rebuilt when
the register or the signing key changes), pairwise NameIDs, attributes and single logout."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app
from sqlalchemy import select

from casserver.models import LegacyService
from idp import clients as registry
from keys import saml as samlkeys
from tongban import audit
from tongban.clock import token, utcnow
from tongban.errors import ValidationError
from tongban.extensions import db

from .constants import (
    BINDING_HTTP_POST,
    BINDING_HTTP_REDIRECT,
    BINDING_SOAP,
    DIGEST_SHA256,
    NAME_FORMAT_BASIC,
    NAMEID_FORMAT_PERSISTENT,
    SIG_RSA_SHA256,
)
from .models import SamlLogin, SamlNameId

if TYPE_CHECKING:
    from lxml import etree
    from saml2.server import Server

MD_NS = "urn:oasis:names:tc:SAML:2.0:metadata"
# AuthnContextClassRef for each assurance level (our own URIs: the levels are Tongban's)
ACR_CLASS = "urn:tongban:acr:"


def entity_id() -> str:
    return current_app.config["TONGBAN_ISSUER"] + "/saml/metadata"


# ---------------------------------------------------------------- registration


def _parse_metadata(xml: bytes) -> tuple[str, etree._Element]:
    from lxml import etree  # imported with the first SAML work, not at start-up

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)
    try:
        root = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as e:
        raise ValidationError(f"the metadata is not XML: {e}", "invalid_metadata") from None
    if root.tag != f"{{{MD_NS}}}EntityDescriptor" or not root.get("entityID"):
        raise ValidationError("the metadata must be one md:EntityDescriptor with an entityID", "invalid_metadata")
    sp = root.find(f"{{{MD_NS}}}SPSSODescriptor")
    if sp is None:
        raise ValidationError("the metadata has no SPSSODescriptor", "invalid_metadata")
    acs = [el.get("Location") for el in sp.findall(f"{{{MD_NS}}}AssertionConsumerService")
           if el.get("Binding") == BINDING_HTTP_POST]
    if not acs:
        raise ValidationError("the SP has no AssertionConsumerService with the HTTP-POST binding",
                              "invalid_metadata")
    for url in acs + [el.get("Location") for el in sp.findall(f"{{{MD_NS}}}SingleLogoutService")]:
        registry.check_uri(url or "", "SAML endpoint")
    return root.get("entityID"), root


def register_sp(metadata: bytes, *, actor: str = "admin", **register_fields):
    eid, _root = _parse_metadata(metadata)
    if len(eid) > 500:
        raise ValidationError("the entityID is too long", "invalid_metadata")
    if db.session.execute(select(LegacyService.client_id).where(LegacyService.entity_id == eid)).first():
        raise ValidationError(f"an SP with entityID {eid!r} is registered already", "client_exists")
    xml = metadata.decode("utf-8")
    try:  # pysaml2 must be able to use it
        from . import pysaml

        pysaml.MetadataStore(None, None).load("inline", xml)
    except Exception as e:
        raise ValidationError(f"the metadata cannot be used: {e}"[:300], "invalid_metadata") from None
    row, _ = registry.create_client(redirect_uris=[], grant_types=[], token_endpoint_auth_method="none",
                                    actor=actor, **register_fields)
    svc = LegacyService(client_id=row.client_id, protocol="saml", service_urls=[], proxy_allowed=False,
                        entity_id=eid, metadata_xml=xml, created_at=utcnow())
    db.session.add(svc)
    db.session.flush()
    audit.record("saml.sp_registered", actor=actor, object=f"client:{row.client_id}", detail={"entity_id": eid})
    return svc


@dataclass(frozen=True)
class SP:
    client: registry.RegisteredClient
    entity_id: str
    metadata_xml: str

    @property
    def root(self):
        from lxml import etree

        return etree.fromstring(self.metadata_xml.encode(), etree.XMLParser(resolve_entities=False,
                                                                           no_network=True))

    @property
    def wants_signed_requests(self) -> bool:
        sp = self.root.find(f"{{{MD_NS}}}SPSSODescriptor")
        return (sp.get("AuthnRequestsSigned") or "").lower() in ("true", "1")


def _sp_rows():
    return list(db.session.execute(select(LegacyService).where(LegacyService.protocol == "saml")).scalars())


def service_providers() -> dict[str, SP]:
    """Enabled SPs by entityID."""
    out = {}
    for row in _sp_rows():
        client = registry.get_client(row.client_id)
        if client is not None:
            out[row.entity_id] = SP(client, row.entity_id, row.metadata_xml)
    return out


# ---------------------------------------------------------------- the pysaml2 server


_cache: dict[tuple, Server] = {}
_lock = threading.Lock()


def server(sps: dict[str, SP] | None = None) -> Server:
    """The pysaml2 IdP for the current key and register (cached per process)."""
    sps = service_providers() if sps is None else sps
    key = samlkeys.active()
    fingerprint = (key.kid, current_app.config["TONGBAN_ISSUER"],
                   tuple(sorted((e, hashlib.sha256(sp.metadata_xml.encode()).hexdigest()) for e, sp in sps.items())))
    with _lock:
        srv = _cache.get(fingerprint)
        if srv is not None:
            return srv
    key_file, cert_file = samlkeys.files(key)
    base = current_app.config["TONGBAN_ISSUER"] + "/saml"
    conf = {
        "entityid": entity_id(),
        "xmlsec_binary": current_app.config["TONGBAN_SAML_XMLSEC_BINARY"],
        "key_file": key_file,
        "cert_file": cert_file,
        "metadata": {"inline": [sp.metadata_xml for sp in sps.values()]},
        "accepted_time_diff": 60,
        "signing_algorithm": SIG_RSA_SHA256,
        "digest_algorithm": DIGEST_SHA256,
        "service": {"idp": {
            "name": current_app.config["TONGBAN_AUTHORITY_NAME"],
            "endpoints": {
                "single_sign_on_service": [(f"{base}/sso", BINDING_HTTP_REDIRECT), (f"{base}/sso", BINDING_HTTP_POST)],
                "single_logout_service": [(f"{base}/slo", BINDING_HTTP_REDIRECT), (f"{base}/slo", BINDING_HTTP_POST)],
            },
            "name_id_format": [NAMEID_FORMAT_PERSISTENT],
            "want_authn_requests_signed": False,  # per SP, from its metadata (views.parse_request)
            "sign_response": True,
            "sign_assertion": True,
            "policy": {"default": {
                "lifetime": {"seconds": current_app.config["TONGBAN_SAML_ASSERTION_SECONDS"]},
                "name_form": NAME_FORMAT_BASIC,
                "attribute_restrictions": None,
                "sign": ["response", "assertion"],
            }},
        }},
    }
    from . import pysaml  # pysaml2: loaded on the first SAML request, not at start-up

    srv = pysaml.make_server(conf)
    with _lock:
        if len(_cache) > 8:
            _cache.clear()
        _cache[fingerprint] = srv
    return srv


# ---------------------------------------------------------------- people at SPs


def name_id_for(user_id: int, client_id: str) -> tuple[str, bool]:
    """The person's persistent pairwise NameID at this SP: (value, new). A new one (random, never
    derived from the sub) is stored by the caller with the log-in it answers."""
    found = db.session.execute(select(SamlNameId.name_id).where(
        SamlNameId.user_id == user_id, SamlNameId.client_id == client_id)).scalar_one_or_none()
    return (found, False) if found else (token(24), True)


def attributes(user, sess, client: registry.RegisteredClient) -> dict[str, list[str]]:
    """Attributes as for the OpenID scopes the SP is allowed in the register."""
    from tongban.masking import mask_number

    scopes = client.scope_set
    out: dict[str, list[str]] = {"acr": [sess.acr]}
    if "profile" in scopes:
        out["name"] = [user.name]
    if "id_number" in scopes:
        out["id_number"] = [user.id_number]
    elif "profile" in scopes:
        out["id_number"] = [mask_number(user.id_number)]
    return out


# ---------------------------------------------------------------- single logout


SLO_KIND = "saml_slo"


def slo_endpoint(sp: SP) -> str | None:
    """The SP's SOAP SingleLogoutService (IdP-initiated logout goes back-channel only)."""
    el = sp.root.find(f"{{{MD_NS}}}SPSSODescriptor")
    for s in el.findall(f"{{{MD_NS}}}SingleLogoutService"):
        if s.get("Binding") == BINDING_SOAP:
            return s.get("Location")
    return None


def session_ended(sess) -> None:
    """Queue a signed LogoutRequest (SOAP) to each SP the session signed in to."""
    from tongban import outbox

    rows = list(db.session.execute(select(SamlLogin).where(SamlLogin.sid == sess.sid)
                                   .order_by(SamlLogin.id)).scalars())
    if not rows:
        return
    from flask import g

    initiator = g.get("saml_logout_initiator")  # the SP whose LogoutRequest ended it is answered directly
    by_client = {sp.client.client_id: sp for sp in service_providers().values()}
    for row in rows:
        sp = by_client.get(row.client_id)
        if sp is None or row.client_id == initiator:
            continue
        target = slo_endpoint(sp)
        if not target:
            continue
        outbox.enqueue(SLO_KIND, target, {"client_id": row.client_id, "name_id": row.name_id,
                                          "session_index": row.session_index},
                       subject=f"saml:{row.client_id} session:{sess.sid[:8]}")


def deliver_logout(item) -> None:
    import requests

    from tongban import outbox

    data = item.data
    sps = service_providers()
    sp = next((s for s in sps.values() if s.client.client_id == data["client_id"]), None)
    if sp is None:
        raise outbox.DeliveryError("the SP is disabled or no longer registered")
    from saml2.saml import NameID

    srv = server(sps)
    name_id = NameID(format=NAMEID_FORMAT_PERSISTENT, text=data["name_id"], name_qualifier=entity_id(),
                     sp_name_qualifier=sp.entity_id)
    _req_id, req = srv.create_logout_request(item.target, sp.entity_id, name_id=name_id,
                                             session_indexes=[data["session_index"]], sign=True,
                                             sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256)
    http = srv.apply_binding(BINDING_SOAP, str(req), item.target, sign=False)  # signed already
    timeout = current_app.config["TONGBAN_OUTBOX_TIMEOUT"]
    try:
        resp = requests.post(item.target, data=http["data"].encode("utf-8"),
                             headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": ""},
                             timeout=(min(3, timeout), timeout), allow_redirects=False)
    except requests.RequestException as e:
        raise outbox.DeliveryError(f"{type(e).__name__}: {e}"[:500]) from None
    if resp.status_code != 200:
        raise outbox.DeliveryError(f"HTTP {resp.status_code}: {resp.text[:200]}")


def purge_requests() -> int:
    """Drop AuthnRequests past their time (a chore). Safe for replay protection: a request is
    refused by its IssueInstant long before its row goes (``TONGBAN_SAML_REQUEST_MAX_AGE`` + 60 s)."""
    from datetime import timedelta

    from sqlalchemy import delete

    from .models import SamlRequest

    n = db.session.execute(delete(SamlRequest).where(  # type: ignore[attr-defined]
        SamlRequest.expires_at < utcnow() - timedelta(minutes=10))).rowcount
    db.session.commit()
    return n


def on_session_ended(sess, **_) -> None:
    """``people.signals.session_ended`` receiver: queue this protocol's single-logout messages."""
    session_ended(sess)
