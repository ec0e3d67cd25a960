"""Compact JWS for the hot paths (access tokens): ES256/RS256 with key objects built once.

joserfc does the general work (ID tokens, JWKS, decoding anything unusual); this
signs and verifies our own compact tokens with the header pre-encoded and the
``cryptography`` key object reused, which is what the token, userinfo and
introspection endpoints spend their time on. Cross-checked against joserfc in
the tests.
"""

from __future__ import annotations

import base64
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

_SHA256 = hashes.SHA256()
_ECDSA = ec.ECDSA(_SHA256)
_PKCS1 = padding.PKCS1v15()


def b64e(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def b64d(data: str | bytes) -> bytes:
    if isinstance(data, str):
        data = data.encode("ascii")
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


class CompactSigner:
    """Signs claims under a fixed header (alg, typ, kid)."""

    def __init__(self, private_key, alg: str, kid: str, typ: str):
        self.key = private_key
        self.alg = alg
        header = {"alg": alg, "kid": kid, "typ": typ}
        self.prefix = b64e(json.dumps(header, separators=(",", ":")).encode()) + b"."

    def sign(self, claims: dict) -> str:
        signing_input = self.prefix + b64e(json.dumps(claims, separators=(",", ":"),
                                                      ensure_ascii=False).encode())
        if self.alg == "ES256":
            r, s = decode_dss_signature(self.key.sign(signing_input, _ECDSA))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            sig = self.key.sign(signing_input, _PKCS1, _SHA256)
        return (signing_input + b"." + b64e(sig)).decode("ascii")


def parse(token: str) -> tuple[dict, bytes, bytes, bytes] | None:
    """(header, signing input, payload, signature) of a compact JWS, or None if malformed."""
    try:
        h, p, s = token.split(".")
        header = json.loads(b64d(h))
        if not isinstance(header, dict):
            return None
        return header, f"{h}.{p}".encode("ascii"), b64d(p), b64d(s)
    except (ValueError, UnicodeError, TypeError):
        return None


def verify(public_key, alg: str, signing_input: bytes, signature: bytes) -> bool:
    try:
        if alg == "ES256":
            if len(signature) != 64:
                return False
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                       int.from_bytes(signature[32:], "big"))
            public_key.verify(der, signing_input, _ECDSA)
        elif alg == "RS256":
            public_key.verify(signature, signing_input, _PKCS1, _SHA256)
        else:
            return False
    except InvalidSignature:
        return False
    return True
