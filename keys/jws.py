"""Compact JWS for the hot paths (access tokens): ES256/RS256 with key objects built once.

joserfc does the general work (ID tokens, JWKS, decoding anything unusual); this
signs and verifies our own compact tokens with the header pre-encoded and the
``cryptography`` key object reused, which is what the token, userinfo and
introspection endpoints spend their time on. Cross-checked against joserfc in
the tests.

Decoding is strict, so that one token has exactly one spelling: each segment must be
unpadded base64url whose trailing bits are zero (Python's decoder silently skips characters
outside the alphabet, so ``****`` inserted into a signature would still verify), and an ES256
signature must have ``0 < r < n`` and a low ``s`` (``s <= n/2``; our signer always produces
that form, so the other signature ``(r, n - s)`` of the same token is refused).
"""

from __future__ import annotations

import base64
import binascii
import json
import re

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from .errors import NotCanonicalBase64url

_SHA256 = hashes.SHA256()
_ECDSA = ec.ECDSA(_SHA256)
_PKCS1 = padding.PKCS1v15()


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64e(data: bytes) -> bytes:
    """``base64.urlsafe_b64encode(data).rstrip(b"=")``, without its two Python-level calls."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


def b64d(data: str | bytes) -> bytes:
    if isinstance(data, str):
        data = data.encode("ascii")
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


_B64URL = re.compile(rb"[A-Za-z0-9_-]*")
# the order of the P-256 group
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_HALF_N = P256_N // 2


def b64d_strict(data: str | bytes) -> bytes:
    """Canonical unpadded base64url only (RFC 7515 §2): ValueError for anything else."""
    if isinstance(data, str):
        data = data.encode("ascii")
    if len(data) % 4 == 1 or not _B64URL.fullmatch(data):
        raise NotCanonicalBase64url("not canonical base64url")
    raw = base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))
    if len(data) % 4 and b64e(raw) != data:  # non-zero trailing bits: another spelling
        raise NotCanonicalBase64url("not canonical base64url")
    return raw


def compact_json(obj) -> bytes:
    """``json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()``, by orjson (the same
    bytes for the str, int, list and dict of JWT claims, in a fraction of the time); anything
    orjson refuses (an integer beyond 64 bits, a subclass it does not know) through ``json``."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class CompactSigner:
    """Signs claims under a fixed header (alg, typ, kid)."""

    def __init__(self, private_key, alg: str, kid: str, typ: str):
        self.key = private_key
        self.alg = alg
        header = {"alg": alg, "kid": kid, "typ": typ}
        self.prefix = b64e(json.dumps(header, separators=(",", ":")).encode()) + b"."

    def sign(self, claims: dict) -> str:
        signing_input = self.prefix + b64e(compact_json(claims))
        if self.alg == "ES256":
            r, s = decode_dss_signature(self.key.sign(signing_input, _ECDSA))
            if s > _HALF_N:  # the low-S form: the only one ``verify`` accepts
                s = P256_N - s
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            sig = self.key.sign(signing_input, _PKCS1, _SHA256)
        return (signing_input + b"." + b64e(sig)).decode("ascii")


def parse(token: str) -> tuple[dict, bytes, bytes, bytes] | None:
    """(header, signing input, payload, signature) of a compact JWS, or None if malformed
    (including any segment that is not canonical base64url)."""
    try:
        h, p, s = token.split(".")
        header = json.loads(b64d_strict(h))
        if not isinstance(header, dict):
            return None
        return header, f"{h}.{p}".encode("ascii"), b64d_strict(p), b64d_strict(s)
    except (ValueError, UnicodeError, TypeError, binascii.Error, RecursionError):
        return None


def verify(public_key, alg: str, signing_input: bytes, signature: bytes, *, low_s: bool = True) -> bool:
    """``low_s=False`` accepts either ES256 form (for signatures made by other software)."""
    try:
        if alg == "ES256":
            if len(signature) != 64:
                return False
            r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            if not (0 < r < P256_N and 0 < s < P256_N) or (low_s and s > _HALF_N):
                return False
            public_key.verify(encode_dss_signature(r, s), signing_input, _ECDSA)
        elif alg == "RS256":
            public_key.verify(signature, signing_input, _PKCS1, _SHA256)
        else:
            return False
    except InvalidSignature:
        return False
    return True
