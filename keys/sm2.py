"""国密: SM2 signatures (GB/T 32918) and the SM3 hash (GB/T 32905), and how SM2 keys are encoded.

SM2 signing and verification run in C: GmSSL 3 through ``gmssl_pyx`` (measured against the
pure-Python ``gmssl`` in ``bench/sm2.py``). SM3 comes from ``cryptography`` (OpenSSL). Every
signature is SM3withSM2 with a distinguishing identifier (the default ``1234567812345678`` of
GM/T 0009, what OpenSSL, GmSSL and the province's systems assume), DER-encoded as
``SEQUENCE { r INTEGER, s INTEGER }`` (GM/T 0009 §7).

Keys are a 32-byte private scalar and a 64-byte public point (x ‖ y). Public keys travel as
X.509 SubjectPublicKeyInfo: id-ecPublicKey with the named curve sm2p256v1
(1.2.156.10197.1.301), the form OpenSSL reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import keys as asn1_keys
from asn1crypto import pem as asn1_pem
from cryptography.hazmat.primitives import hashes
from gmssl_pyx import gmsslext

from .crypto import seal, unseal

OID_SM2_CURVE = "1.2.156.10197.1.301"   # sm2p256v1 (GM/T 0006)
OID_SM3 = "1.2.156.10197.1.401"         # sm3
OID_SM3_WITH_SM2 = "1.2.156.10197.1.501"  # SM3withSM2 (GM/T 0006)
DEFAULT_ID = b"1234567812345678"

# so that asn1crypto can describe SM2 public keys (curve name and size) like any other EC key
if OID_SM2_CURVE not in asn1_keys.NamedCurve._map:
    asn1_keys.NamedCurve.register("sm2p256v1", OID_SM2_CURVE, 32)

_BLOB_TAG = b"SM2\x01"


def sm3(data: bytes) -> bytes:
    """The 32-byte SM3 digest of ``data``."""
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize()


class SM2Error(ValueError):
    """Not an SM2 key."""


@dataclass(frozen=True)
class SM2PublicKey:
    point: bytes  # x ‖ y, 64 bytes

    def verify(self, message: bytes, signature: bytes, ident: bytes = DEFAULT_ID) -> bool:
        """True when ``signature`` (DER) is this key's SM3withSM2 signature of ``message``."""
        if not isinstance(signature, bytes | bytearray) or not 8 <= len(signature) <= 80:
            return False
        try:
            return bool(gmsslext.sm2_verify(self.point, bytes(message), bytes(signature), ident))
        except Exception:  # GmSSL refuses malformed signatures and points off the curve
            return False

    def spki(self) -> asn1_keys.PublicKeyInfo:
        return asn1_keys.PublicKeyInfo({
            "algorithm": {"algorithm": "ec", "parameters": ("named", OID_SM2_CURVE)},
            "public_key": b"\x04" + self.point,
        })

    def spki_der(self) -> bytes:
        return self.spki().dump()

    def pem(self) -> str:
        return asn1_pem.armor("PUBLIC KEY", self.spki_der()).decode()

    @classmethod
    def from_spki(cls, spki: asn1_keys.PublicKeyInfo | bytes) -> SM2PublicKey:
        """The key of a SubjectPublicKeyInfo; SM2Error unless it is an uncompressed sm2p256v1 point."""
        try:
            if isinstance(spki, bytes | bytearray):
                spki = asn1_keys.PublicKeyInfo.load(bytes(spki))
            algo = spki["algorithm"]
            if algo["algorithm"].dotted != "1.2.840.10045.2.1":
                raise SM2Error("not an EC public key")
            params = algo["parameters"]
            if params.name != "named" or params.chosen.dotted != OID_SM2_CURVE:
                raise SM2Error("not an SM2 public key")
            point = bytes(spki["public_key"].native)
        except SM2Error:
            raise
        except Exception as e:
            raise SM2Error(f"not a public key: {type(e).__name__}") from None
        if len(point) != 65 or point[0] != 4:
            raise SM2Error("not an uncompressed SM2 point")
        return cls(point[1:])


@dataclass(frozen=True)
class SM2PrivateKey:
    d: bytes        # 32 bytes
    point: bytes    # the public key, x ‖ y

    def sign(self, message: bytes, ident: bytes = DEFAULT_ID) -> bytes:
        """SM3withSM2 over ``message`` (Z_A computed from ``ident``), DER ``SEQUENCE {r, s}``."""
        return gmsslext.sm2_sign(self.d, self.point, bytes(message), ident)

    def public_key(self) -> SM2PublicKey:
        return SM2PublicKey(self.point)

    def to_bytes(self) -> bytes:
        return _BLOB_TAG + self.d + self.point

    @classmethod
    def from_bytes(cls, raw: bytes) -> SM2PrivateKey:
        if len(raw) != 100 or raw[:4] != _BLOB_TAG:
            raise SM2Error("not an SM2 private key")
        return cls(raw[4:36], raw[36:])


def generate() -> SM2PrivateKey:
    point, d = gmsslext.sm2_key_generate()
    return SM2PrivateKey(d, point)


def seal_key(key: SM2PrivateKey, label: str) -> bytes:
    """The key encrypted at rest (AES-256-GCM under the instance KEK, bound to ``label``)."""
    return seal(key.to_bytes(), label)


def unseal_key(blob: bytes, label: str) -> SM2PrivateKey:
    return SM2PrivateKey.from_bytes(unseal(blob, label))


__all__ = ["DEFAULT_ID", "OID_SM2_CURVE", "OID_SM3", "OID_SM3_WITH_SM2", "SM2Error", "SM2PrivateKey",
           "SM2PublicKey", "generate", "seal_key", "sm3", "unseal_key"]
