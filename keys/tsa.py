"""The RFC 3161 time-stamping authority: the responder behind ``POST /tsa`` and, in-process,
the time-stamper our own sealing uses (no HTTP round trip)."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

from asn1crypto import cms, tsp
from asn1crypto import x509 as asn1_x509
from pyhanko.sign.timestamps.api import TimeStamper

from .ca import ca
from .signers import LocalKeySigner

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


def _signer() -> LocalKeySigner:
    state = ca()
    tsa = state["tsa"]
    return LocalKeySigner(tsa.private_key, tsa.asn1, [state["issuing"].asn1, state["root"].asn1])


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
    signer = _signer()
    info = {
        "version": "v1",
        "policy": POLICY_OID,
        "message_imprint": imprint,
        "serial_number": secrets.randbits(120),
        "gen_time": datetime.now(UTC).replace(microsecond=0),
        "accuracy": {"seconds": 1},
        "tsa": asn1_x509.GeneralName(name="directory_name", value=signer.signing_cert.subject),
    }
    if req["nonce"].native is not None:
        info["nonce"] = req["nonce"]
    tst_info = tsp.TSTInfo(info)
    token = await signer.async_sign_general_data(
        cms.EncapsulatedContentInfo({"content_type": "tst_info",
                                     "content": cms.ParsableOctetString(tst_info.dump())}),
        md, detached=False, use_cades=True)
    if not req["cert_req"].native:
        token["content"]["certificates"] = cms.CertificateSet([])
    return tsp.TimeStampResp({"status": tsp.PKIStatusInfo({"status": tsp.PKIStatus("granted")}),
                              "time_stamp_token": token})


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


class InProcessTimeStamper(TimeStamper):
    """pyHanko's TimeStamper, answered by our own TSA in this process.

    Use ``timestamper()``: one per CA state, so pyHanko's cached size-estimate response
    (the "dummy" token) is made once, not once per seal.
    """

    def __init__(self):
        super().__init__(include_nonce=True)
        state = ca()
        for cert in (state["tsa"].asn1, state["issuing"].asn1, state["root"].asn1):
            self.cert_registry.register(cert)

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        return await async_respond(req)


def timestamper() -> InProcessTimeStamper:
    state = ca()
    ts = state._vc_cache.get("timestamper")
    if ts is None:
        ts = state._vc_cache["timestamper"] = InProcessTimeStamper()
    return ts


__all__ = ["POLICY_OID", "InProcessTimeStamper", "async_respond", "respond_der", "timestamper"]
