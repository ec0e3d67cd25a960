"""Offline-verifiable licence tokens and the signed status list.

The token (shown as a QR code on the holder's phone) is modelled on the EU Digital
COVID Certificate: CBOR claims -> COSE_Sign1 (ES256) -> zlib -> Base45, prefixed
``TBL1:``. Claims use CWT keys (1 iss, 4 exp, 6 iat) plus ``-260`` with the licence
fields and ``65535`` = the IETF Token Status List reference ``{"status_list":
{"idx", "uri"}}``. Verifiers check the signature against the published keys
(``/api/v1/licences/offline/keys``, the provider's ES256 keys) and the status in
the signed status list (``statuslist+jwt``, 2 bits per licence:
0 valid, 1 invalid, 2 suspended), fetched once in a while, not per scan.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import zlib
from datetime import UTC, datetime, timedelta

import base45
import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from flask import current_app
from sqlalchemy import select

from keys.services import keyring
from tongban.cache import Generation
from tongban.clock import epoch, utcnow
from tongban.extensions import after_commit, db
from tongban.masking import mask_name, mask_number

PREFIX = "TBL1:"
ALG = "ES256"
COSE_ES256 = -7
CLAIM_LICENCE = -260
CLAIM_STATUS = 65535
STATUS_BITS = 2
STATUS_VALUES = {"valid": 0, "expired": 1, "revoked": 1, "superseded": 1, "suspended": 2}
TOKEN_LIFETIME = 24 * 3600
STATUS_LIST_TTL = 300
STATUS_GENERATION = Generation("licence-status")
_ECDSA = ec.ECDSA(hashes.SHA256())


def status_list_uri() -> str:
    return f"{current_app.config['TONGBAN_ISSUER']}/api/v1/licences/status-list"


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def make_token(lic, now: int | None = None, lifetime: int | None = None) -> str:
    """The compact signed token of a licence's key fields, valid ``lifetime`` seconds (at most
    TOKEN_LIFETIME, never past the licence's own validity)."""
    key = keyring().active(ALG)
    now = now or epoch()
    exp = now + min(lifetime or TOKEN_LIFETIME, TOKEN_LIFETIME)
    if lic.valid_until is not None:
        end = int(datetime(lic.valid_until.year, lic.valid_until.month, lic.valid_until.day,
                           tzinfo=UTC).timestamp()) + 86400
        exp = min(exp, end)
    claims = {
        1: current_app.config["TONGBAN_ISSUER"], 6: now, 4: exp,
        CLAIM_LICENCE: {"id": lic.identifier, "t": lic.type_code, "tn": lic.type_name,
                        "h": mask_name(lic.holder_name), "hid": mask_number(lic.holder_id),
                        "i": lic.issuer_name, "ia": lic.issued_on.isoformat(),
                        "vu": lic.valid_until.isoformat() if lic.valid_until else None},
        CLAIM_STATUS: {"status_list": {"idx": lic.status_idx, "uri": status_list_uri()}},
    }
    protected = cbor2.dumps({1: COSE_ES256, 4: key.kid.encode()})
    payload = cbor2.dumps(claims)
    r, s = decode_dss_signature(key.private_key.sign(_sig_structure(protected, payload), _ECDSA))
    sign1 = cbor2.CBORTag(18, [protected, {}, payload, r.to_bytes(32, "big") + s.to_bytes(32, "big")])
    return PREFIX + base45.b45encode(zlib.compress(cbor2.dumps(sign1), 9)).decode()


class OfflineError(ValueError):
    pass


MAX_CODE_CHARS = 4400  # the most a QR code holds in alphanumeric mode
MAX_TOKEN_BYTES = 4096  # decompressed


def _inflate(data: bytes) -> bytes:
    """zlib-decompress at most MAX_TOKEN_BYTES; a longer (or unfinished) stream is refused."""
    d = zlib.decompressobj()
    out = d.decompress(data, MAX_TOKEN_BYTES)
    if d.unconsumed_tail or not d.eof or d.unused_data:
        raise OfflineError("the code is too large or has trailing data")
    return out


def _cbor_exact(data: bytes):
    """One CBOR item that uses every byte (trailing data refused)."""
    if not isinstance(data, bytes):
        raise OfflineError("the code has the wrong structure")
    fp = io.BytesIO(data)
    value = cbor2.CBORDecoder(fp).decode()
    if fp.tell() != len(data):
        raise OfflineError("the code has trailing data")
    return value


def expires_at(raw: str) -> int:
    """The expiry (epoch seconds) of a token this server made."""
    return int(decode_token(raw)[1].get(4, 0))


def decode_token(raw: str) -> tuple[dict, dict, bytes, bytes, bytes]:
    """(protected header, claims, protected bytes, payload, signature); OfflineError if malformed."""
    raw = (raw or "").strip()
    if not raw.startswith(PREFIX):
        raise OfflineError(f"not a Tongban offline licence code (prefix {PREFIX})")
    if len(raw) > MAX_CODE_CHARS:
        raise OfflineError("the code is too long")
    try:
        obj = _cbor_exact(_inflate(base45.b45decode(raw[len(PREFIX):])))
        if isinstance(obj, cbor2.CBORTag):
            obj = obj.value
        protected, _unprotected, payload, signature = obj
        header = _cbor_exact(protected)
        claims = _cbor_exact(payload)
    except Exception as e:  # any decoding failure is the same answer to a verifier
        raise OfflineError(f"the code cannot be decoded: {type(e).__name__}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise OfflineError("the code has the wrong structure")
    return header, claims, protected, payload, signature


def verify_token(raw: str, public_keys: dict, statuses: bytes | None = None, now: int | None = None) -> dict:
    """Check a token offline: ``public_keys`` maps kid -> cryptography public key;
    ``statuses`` is the decompressed status list (None: status not checked)."""
    header, claims, protected, payload, sig = decode_token(raw)
    if header.get(1) != COSE_ES256:
        raise OfflineError("unsupported algorithm")
    kid = header.get(4, b"")
    key = public_keys.get(kid.decode() if isinstance(kid, bytes) else str(kid))
    if key is None:
        raise OfflineError("signed with an unknown key")
    if len(sig) != 64:
        raise OfflineError("bad signature")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        key.verify(der, _sig_structure(protected, payload), _ECDSA)
    except InvalidSignature:
        raise OfflineError("the signature does not match") from None
    now = now or int(time.time())
    lic = claims.get(CLAIM_LICENCE) or {}
    result = {"signature": True, "expired": claims.get(4, 0) < now, "licence": lic, "status": None}
    ref = (claims.get(CLAIM_STATUS) or {}).get("status_list") or {}
    if statuses is not None and isinstance(ref.get("idx"), int):
        result["status"] = {0: "valid", 1: "invalid", 2: "suspended"}.get(status_at(statuses, ref["idx"]),
                                                                       "unknown")
    return result


# ---------------------------------------------------------------- status list


def status_at(lst: bytes, idx: int, bits: int = STATUS_BITS) -> int:
    per_byte = 8 // bits
    byte = idx // per_byte
    if byte >= len(lst):
        return 0
    return (lst[byte] >> ((idx % per_byte) * bits)) & ((1 << bits) - 1)


def build_status_bytes(rows) -> bytes:
    """rows: (idx, status, valid_until). Little-endian bit packing per the IETF draft."""
    from .services import public_status

    rows = list(rows)
    size = max((r[0] for r in rows), default=-1) + 1
    per_byte = 8 // STATUS_BITS
    out = bytearray((size + per_byte - 1) // per_byte)
    for idx, status, until in rows:
        value = STATUS_VALUES.get(public_status(status, until) if status != "superseded" else status, 1)
        if value:
            out[idx // per_byte] |= value << ((idx % per_byte) * STATUS_BITS)
    return bytes(out)


_cache: dict = {}
_cache_lock = threading.Lock()


def status_list_jwt() -> str:
    """The signed status list (``statuslist+jwt``), rebuilt when a status changes or it ages."""
    from .models import Licence

    app_key = id(current_app._get_current_object())  # type: ignore[attr-defined]
    gen = STATUS_GENERATION.current()
    now = epoch()
    hit = _cache.get(app_key)
    if hit and hit[0] == gen and now - hit[1] < 60:
        return hit[2]
    with _cache_lock:
        rows = db.session.execute(select(Licence.status_idx, Licence.status, Licence.valid_until)).all()
        lst = build_status_bytes(rows)
        claims = {"sub": status_list_uri(), "iss": current_app.config["TONGBAN_ISSUER"], "iat": now,
                  "exp": now + 86400, "ttl": STATUS_LIST_TTL,
                  "status_list": {"bits": STATUS_BITS,
                                  "lst": base64.urlsafe_b64encode(zlib.compress(lst, 9)).rstrip(b"=").decode()}}
        body = keyring().active(ALG).compact_signer("statuslist+jwt").sign(claims)
        _cache[app_key] = (gen, now, body)
        return body


def status_changed() -> None:
    """Every worker rebuilds its status list after this transaction commits."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    after_commit(lambda: STATUS_GENERATION.bump(app))


def verifier_keys() -> dict:
    """The ES256 keys a verifier needs (a JWK set): every key that signed a token still alive.

    Offline tokens live a day, far longer than access tokens, so a rotated-out key stays here
    for ``TOKEN_LIFETIME`` after it stopped signing (the OIDC JWKS drops it much sooner).
    """
    now = utcnow()
    grace = timedelta(seconds=TOKEN_LIFETIME + 60)
    return {"keys": [k.public for k in keyring().keys
                     if k.alg == ALG and not (k.retired_at and k.retired_at + grace <= now)]}


def verifier_keys_json() -> str:
    return json.dumps(verifier_keys(), separators=(",", ":"))
