"""GB/T 38540-2020 e-seal data, version 4: the seal (SESeal, 印章数据) and the signature a seal
makes on a document (SES_Signature, 电子签章数据), as ASN.1 with asn1crypto.

::

    SESeal ::= SEQUENCE { eSealInfo SES_SealInfo, cert OCTET STRING (制章者证书),
                          signAlgID OBJECT IDENTIFIER, signedValue BIT STRING }
    SES_SealInfo ::= SEQUENCE { header SES_Header, esID IA5String, property SES_ESPropertyInfo,
                                picture SES_ESPictrueInfo, extDatas ExtensionDatas OPTIONAL }
    SES_Header ::= SEQUENCE { ID IA5String ("ES"), version INTEGER (4), Vid IA5String }
    SES_ESPropertyInfo ::= SEQUENCE { type INTEGER, name UTF8String, certListType INTEGER (1),
                                      certList SEQUENCE OF OCTET STRING, createDate GeneralizedTime,
                                      validStart GeneralizedTime, validEnd GeneralizedTime }
    SES_ESPictrueInfo ::= SEQUENCE { type IA5String, data OCTET STRING, width INTEGER, height INTEGER }
    SES_Signature ::= SEQUENCE { toSign TBS_Sign, cert OCTET STRING (签章者证书),
                                 signatureAlgID OBJECT IDENTIFIER, signature BIT STRING,
                                 timeStamp [0] BIT STRING OPTIONAL }
    TBS_Sign ::= SEQUENCE { version INTEGER (4), eseal SESeal, timeInfo GeneralizedTime,
                            dataHash BIT STRING, propertyInfo IA5String, extDatas ExtensionDatas OPTIONAL }

Widths and heights are in millimetres. The seal maker signs the DER of ``SES_SealInfo``; the
signer signs the DER of ``TBS_Sign``; both SM3withSM2 with the default identifier. The
time-stamp is an RFC 3161 TimeStampToken (DER) over the signature value; readers that write
it untagged are accepted too.
"""

from __future__ import annotations

from datetime import UTC, datetime

from asn1crypto import core
from asn1crypto import x509 as asn1_x509

from keys import sm2

SEAL_VERSION = 4
VENDOR_ID = "Tongban"
SEAL_TYPE_ORGANISATION = 1  # 单位印章 (2 would be a person's seal)


class SESError(ValueError):
    """Not GB/T 38540 v4 seal or signature data."""


class ExtData(core.Sequence):
    _fields = [("extn_id", core.ObjectIdentifier), ("critical", core.Boolean, {"default": False}),
               ("extn_value", core.OctetString)]


class ExtensionDatas(core.SequenceOf):
    _child_spec = ExtData


class SESHeader(core.Sequence):
    _fields = [("id", core.IA5String), ("version", core.Integer), ("vid", core.IA5String)]


class CertList(core.SequenceOf):
    _child_spec = core.OctetString


class SESPropertyInfo(core.Sequence):
    _fields = [("type", core.Integer), ("name", core.UTF8String), ("cert_list_type", core.Integer),
               ("cert_list", CertList), ("create_date", core.GeneralizedTime),
               ("valid_start", core.GeneralizedTime), ("valid_end", core.GeneralizedTime)]


class SESPictureInfo(core.Sequence):
    _fields = [("type", core.IA5String), ("data", core.OctetString), ("width", core.Integer),
               ("height", core.Integer)]


class SESSealInfo(core.Sequence):
    _fields = [("header", SESHeader), ("es_id", core.IA5String), ("property", SESPropertyInfo),
               ("picture", SESPictureInfo), ("ext_datas", ExtensionDatas, {"optional": True})]


class SESeal(core.Sequence):
    _fields = [("seal_info", SESSealInfo), ("cert", core.OctetString), ("sign_alg_id", core.ObjectIdentifier),
               ("signed_value", core.OctetBitString)]


class TBSSign(core.Sequence):
    _fields = [("version", core.Integer), ("eseal", SESeal), ("time_info", core.GeneralizedTime),
               ("data_hash", core.OctetBitString), ("property_info", core.IA5String),
               ("ext_datas", ExtensionDatas, {"optional": True})]


class SESSignature(core.Sequence):
    _fields = [("to_sign", TBSSign), ("cert", core.OctetString), ("signature_alg_id", core.ObjectIdentifier),
               ("signature", core.OctetBitString),
               ("time_stamp", core.OctetBitString, {"explicit": 0, "optional": True})]


class _SESSignatureUntaggedTS(core.Sequence):
    _fields = [*SESSignature._fields[:4], ("time_stamp", core.OctetBitString, {"optional": True})]


def _gtime(dt: datetime) -> core.GeneralizedTime:
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return core.GeneralizedTime(dt.replace(microsecond=0))


# ---------------------------------------------------------------- the seal (印章数据)


def make_eseal(*, code: str, name: str, signer_cert_der: bytes, valid_start: datetime, valid_end: datetime,
               picture: bytes, picture_type: str, width_mm: int, height_mm: int, maker_cert_der: bytes,
               maker_key: sm2.SM2PrivateKey, created: datetime) -> bytes:
    """The DER SESeal v4 of one seal, signed by the seal maker."""
    info = SESSealInfo({
        "header": {"id": "ES", "version": SEAL_VERSION, "vid": VENDOR_ID},
        "es_id": code,
        "property": {"type": SEAL_TYPE_ORGANISATION, "name": name, "cert_list_type": 1,
                     "cert_list": [signer_cert_der], "create_date": _gtime(created),
                     "valid_start": _gtime(valid_start), "valid_end": _gtime(valid_end)},
        "picture": {"type": picture_type, "data": picture, "width": width_mm, "height": height_mm},
    })
    return SESeal({"seal_info": info, "cert": maker_cert_der, "sign_alg_id": sm2.OID_SM3_WITH_SM2,
                   "signed_value": maker_key.sign(info.dump())}).dump()


def load_eseal(der: bytes) -> SESeal:
    try:
        seal = SESeal.load(bytes(der), strict=True)
        seal.native  # noqa: B018  (asn1crypto parses lazily: everything now)
    except Exception as e:
        raise SESError(f"not a GB/T 38540 seal: {type(e).__name__}") from None
    header = seal["seal_info"]["header"]
    if header["id"].native != "ES" or header["version"].native != SEAL_VERSION:
        raise SESError("not a version 4 seal (header ES/4)")
    return seal


def describe_eseal(seal: SESeal) -> dict:
    info = seal["seal_info"]
    prop = info["property"]
    return {"es_id": info["es_id"].native, "name": prop["name"].native, "type": prop["type"].native,
            "valid_start": prop["valid_start"].native, "valid_end": prop["valid_end"].native,
            "picture_type": info["picture"]["type"].native, "width_mm": info["picture"]["width"].native,
            "height_mm": info["picture"]["height"].native,
            "signer_certs": [c.native for c in prop["cert_list"]]}


def eseal_maker_signature_ok(seal: SESeal) -> bool:
    """The seal maker's SM3withSM2 signature over SES_SealInfo verifies with the maker certificate."""
    from keys.sm2ca import public_key_of

    try:
        if seal["sign_alg_id"].dotted != sm2.OID_SM3_WITH_SM2:
            return False
        maker = asn1_x509.Certificate.load(seal["cert"].native)
        return public_key_of(maker).verify(seal["seal_info"].dump(), seal["signed_value"].native)
    except Exception:
        return False


# ---------------------------------------------------------------- the signature (电子签章数据)


def make_tbs(eseal_der: bytes, *, time_info: datetime, data_hash: bytes, property_info: str) -> TBSSign:
    return TBSSign({"version": SEAL_VERSION, "eseal": SESeal.load(eseal_der), "time_info": _gtime(time_info),
                    "data_hash": data_hash, "property_info": property_info})


def make_signature(tbs: TBSSign, *, signer_cert_der: bytes, signature: bytes, time_stamp: bytes | None) -> bytes:
    value = {"to_sign": tbs, "cert": signer_cert_der, "signature_alg_id": sm2.OID_SM3_WITH_SM2,
             "signature": signature}
    if time_stamp is not None:
        value["time_stamp"] = time_stamp
    return SESSignature(value).dump()


def load_signature(der: bytes) -> SESSignature:
    """A parsed SES_Signature v4; SESError when ``der`` is anything else (or has trailing data)."""
    last = None
    for cls in (SESSignature, _SESSignatureUntaggedTS):
        try:
            sig = cls.load(bytes(der), strict=True)
            sig.native  # noqa: B018
        except Exception as e:
            last = e
            continue
        if sig["to_sign"]["version"].native != SEAL_VERSION:
            raise SESError("not a version 4 signature")
        return sig
    raise SESError(f"not a GB/T 38540 signature: {type(last).__name__}")


__all__ = ["SESError", "SESSignature", "SESeal", "describe_eseal", "eseal_maker_signature_ok", "load_eseal",
           "load_signature", "make_eseal", "make_signature", "make_tbs"]
