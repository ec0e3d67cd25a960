"""The RFC 3161 time-stamping authority: the responder behind ``POST /tsa`` and, in-process,
the time-stamper our own sealing uses (no HTTP round trip)."""

from __future__ import annotations

import asyncio
import functools
import secrets
from datetime import UTC, datetime

from asn1crypto import cms, tsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from .ca import ca

# the TSA's policy: an arc under the project's (private) OID space
POLICY_OID = "1.3.6.1.4.1.61224.1.1"
ACCEPTED_DIGESTS = {"sha256", "sha384", "sha512"}
_DIGEST_LEN = {"sha256": 32, "sha384": 48, "sha512": 64}


def _der_sequence(body: bytes) -> bytes:
    n = len(body)
    length = bytes([n]) if n < 128 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes(
        (n.bit_length() + 7) // 8, "big")
    return b"\x30" + length + body


def _rejection(fail: str, text: str) -> bytes:
    """A DER TimeStampResp with only a status (asn1crypto insists on a token, so encoded by hand)."""
    status = tsp.PKIStatusInfo({
        "status": tsp.PKIStatus("rejection"),
        "status_string": tsp.PKIFreeText([text]),
        "fail_info": tsp.PKIFailureInfo({fail}),
    })
    return _der_sequence(status.dump())


class _Issuer:
    """What every token of one CA state shares, prepared once: the key, the certificates'
    DER, the signing-certificate-v2 attribute and the TSA's name."""

    def __init__(self):
        from pyhanko.sign.general import as_signing_certificate_v2  # pyHanko: imported when first used

        state = ca()
        tsa = state["tsa"]
        self.key = tsa.private_key
        self.is_ec = isinstance(self.key, ec.EllipticCurvePrivateKey)
        self.certs_der = [c.dump() for c in (tsa.asn1, state["issuing"].asn1, state["root"].asn1)]
        self.sid = cms.SignerIdentifier(name="issuer_and_serial_number", value=cms.IssuerAndSerialNumber({
            "issuer": tsa.asn1.issuer, "serial_number": tsa.asn1.serial_number})).dump()
        self.signing_cert_attr = cms.CMSAttribute({
            "type": "signing_certificate_v2", "values": [as_signing_certificate_v2(tsa.asn1)]}).dump()
        self.name = asn1_x509.GeneralName(name="directory_name", value=tsa.asn1.subject).dump()

    def sign(self, data: bytes, md: str) -> bytes:
        h = getattr(hashes, md.upper())()
        if self.is_ec:
            return self.key.sign(data, ec.ECDSA(h))
        return self.key.sign(data, padding.PKCS1v15(), h)


def _issuer() -> _Issuer:
    return ca().memo("tsa-issuer", _Issuer)


def _token(issuer: _Issuer, tst_info: bytes, md: str, gen_time: datetime, with_certs: bool) -> cms.ContentInfo:
    """The CMS SignedData over ``tst_info`` (RFC 3161 section 2.4.2), signed with the TSA key.

    Built here rather than through pyHanko's general CMS signer: a token is a fixed shape
    (content type, signing time, message digest, ESS signing-certificate-v2; the TSA
    certificate and its chain), and assembling it from pre-encoded parts keeps asn1crypto
    from re-encoding whole certificate trees for every timestamp.
    """
    digest = hashes.Hash(getattr(hashes, md.upper())())
    digest.update(tst_info)
    attrs = cms.CMSAttributes([
        cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
        cms.CMSAttribute({"type": "signing_time", "values": [cms.Time(name="utc_time", value=gen_time)]}),
        cms.CMSAttribute({"type": "message_digest", "values": [digest.finalize()]}),
        cms.CMSAttribute.load(issuer.signing_cert_attr),
    ])
    signed_attrs = attrs.dump()
    signature = issuer.sign(signed_attrs, md)
    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier.load(issuer.sid),
        "digest_algorithm": {"algorithm": md},
        "signed_attrs": cms.CMSAttributes.load(signed_attrs),
        "signature_algorithm": {"algorithm": f"{md}_ecdsa" if issuer.is_ec else f"{md}_rsa"},
        "signature": signature,
    })
    signed_data = {
        "version": "v3",
        "digest_algorithms": [{"algorithm": md}],
        "encap_content_info": {"content_type": "tst_info", "content": cms.ParsableOctetString(tst_info)},
        "signer_infos": [signer_info],
    }
    if with_certs:
        signed_data["certificates"] = [asn1_x509.Certificate.load(der) for der in issuer.certs_der]
    return cms.ContentInfo({"content_type": "signed_data", "content": cms.SignedData(signed_data)})


class Rejected(Exception):
    def __init__(self, der: bytes):
        self.der = der


async def async_respond(req: tsp.TimeStampReq) -> tsp.TimeStampResp:
    """A granted response, or ``Rejected`` carrying the DER rejection."""
    imprint = req["message_imprint"]
    md = imprint["hash_algorithm"]["algorithm"].native
    if md not in ACCEPTED_DIGESTS:
        raise Rejected(_rejection("bad_alg", f"unsupported digest algorithm {md}"))
    if len(imprint["hashed_message"].native) != _DIGEST_LEN[md]:
        raise Rejected(_rejection("bad_data_format", "the message imprint has the wrong length"))
    if req["req_policy"].native not in (None, POLICY_OID):
        raise Rejected(_rejection("unaccepted_policy", "unknown policy"))
    issuer = _issuer()
    gen_time = datetime.now(UTC).replace(microsecond=0)
    info = {
        "version": "v1",
        "policy": POLICY_OID,
        "message_imprint": imprint,
        "serial_number": secrets.randbits(120),
        "gen_time": gen_time,
        "accuracy": {"seconds": 1},
        "tsa": asn1_x509.GeneralName.load(issuer.name),
    }
    if req["nonce"].native is not None:
        info["nonce"] = req["nonce"]
    token = _token(issuer, tsp.TSTInfo(info).dump(), md, gen_time, bool(req["cert_req"].native))
    resp = tsp.TimeStampResp({"status": tsp.PKIStatusInfo({"status": tsp.PKIStatus("granted")}),
                              "time_stamp_token": token})
    # hand back a parsed, unmodified object: asn1crypto re-encodes a constructed one (and every
    # structure it is embedded in) on each dump, which pyHanko does several times per signature
    return tsp.TimeStampResp.load(resp.dump())


def respond_der(body: bytes) -> bytes:
    """Answer one DER TimeStampReq (the HTTP endpoint); a malformed request gets a rejection."""
    try:
        req = tsp.TimeStampReq.load(body)
        req.native  # noqa: B018  (parse everything now: asn1crypto is lazy)
    except Exception:  # asn1crypto raises ValueError, TypeError, KeyError... on garbage
        return _rejection("bad_request", "not a DER TimeStampReq")
    try:
        return asyncio.run(async_respond(req)).dump()
    except Rejected as e:
        return e.der


@functools.cache
def _timestamper_class() -> type:
    """pyHanko's TimeStamper, answered by our own TSA in this process (the class is made on
    first use: pyHanko is imported when something is sealed, not when the app starts)."""
    from pyhanko.sign.timestamps.api import TimeStamper

    class InProcessTimeStamper(TimeStamper):
        def __init__(self):
            super().__init__(include_nonce=True)
            state = ca()
            for cert in (state["tsa"].asn1, state["issuing"].asn1, state["root"].asn1):
                self.cert_registry.register(cert)

        async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
            return await async_respond(req)

    return InProcessTimeStamper


def timestamper():
    """The in-process pyHanko TimeStamper: one per CA state, so pyHanko's cached size-estimate
    response (the "dummy" token) is made once, not once per seal."""
    return ca().memo("timestamper", _timestamper_class())


__all__ = ["POLICY_OID", "async_respond", "respond_der", "timestamper"]
