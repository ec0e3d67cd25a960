"""Key store: creation, rotation with a publish-before-use delay, JWKS, cached signers.

State is derived from time: a key is ``next`` until ``activates_at``; then
``active`` until a newer key of its algorithm activates; then ``retired``, and
still published for as long as tokens it signed may live.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask, current_app
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import select

from tongban import audit
from tongban.cache import CachedLoader, Generation
from tongban.clock import utcnow
from tongban.extensions import after_commit, db

from .crypto import seal_private_key, unseal_private_key
from .errors import InvalidAlg, NoSigningKey
from .models import SigningKey

ALGORITHMS = ("ES256", "RS256")
KEYS_GENERATION = Generation("keys")


def _generate(alg: str):
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise InvalidAlg(f"unsupported key algorithm {alg}")


def _jwk(alg: str, private_key):
    cls = RSAKey if alg == "RS256" else ECKey
    return cls.import_key(private_key)


def create_key(alg: str, activates_at: datetime | None = None) -> SigningKey:
    now = utcnow()
    private = _generate(alg)
    jwk = _jwk(alg, private)
    kid = jwk.thumbprint()
    public = jwk.as_dict(private=False)
    public.update(kid=kid, alg=alg, use="sig")
    row = SigningKey(kid=kid, alg=alg, created_at=now, activates_at=activates_at or now,
                     public_jwk=json.dumps(public, sort_keys=True),
                     private_key=seal_private_key(private, kid))
    db.session.add(row)
    db.session.flush()
    return row


def ensure_keys() -> list[SigningKey]:
    """On a new instance: one active key per algorithm (idempotent)."""
    created = []
    for alg in ALGORITHMS:
        if db.session.execute(select(SigningKey.kid).where(SigningKey.alg == alg).limit(1)).first() is None:
            created.append(create_key(alg))
            audit.record("key.created", actor="system", object=created[-1].kid, detail={"alg": alg})
    if created:
        _changed()
    return created


def rotate(algs: tuple[str, ...] = ALGORITHMS, delay: int | None = None) -> list[SigningKey]:
    """Publish a new key per algorithm now; it signs only after ``delay`` seconds."""
    if delay is None:
        delay = current_app.config["TONGBAN_KEY_ACTIVATION_DELAY"]
    start = utcnow() + timedelta(seconds=delay)
    rows = []
    for alg in algs:
        rows.append(create_key(alg, start))
        audit.record("key.rotated", actor="admin", object=rows[-1].kid,
                     detail={"alg": alg, "activates_at": start.isoformat(timespec="seconds")})
    _changed()
    return rows


def _changed() -> None:
    """Once the new keys are committed, every worker reloads them (not before: a worker that
    reloaded between the bump and the commit would keep the old set until the next bump),
    this one at once (not after its next periodic generation check)."""

    after_commit(_ring.invalidate)  # the bump, and this process's ring dropped even if the bump fails


def max_token_lifetime() -> int:
    c = current_app.config
    return max(c["TONGBAN_ACCESS_TOKEN_LIFETIME"], c["TONGBAN_ID_TOKEN_LIFETIME"]) + 60


@dataclass
class KeyInfo:
    kid: str
    alg: str
    created_at: datetime
    activates_at: datetime
    public: dict
    blob: bytes
    _signer: object = None
    retired_at: datetime | None = None
    _private: object = None
    _public: object = None
    _compact: dict | None = None

    def state(self, now: datetime) -> str:
        if self.activates_at > now:
            return "next"
        return "retired" if self.retired_at and self.retired_at <= now else "active"

    @property
    def private_key(self):
        if self._private is None:
            self._private = unseal_private_key(self.blob, self.kid)
        return self._private

    @property
    def public_key(self):
        """The ``cryptography`` public key (verification needs no decryption)."""
        if self._public is None:
            self._public = _jwk(self.alg, self.public).get_op_key("verify")
        return self._public

    @property
    def signer(self):
        """A joserfc key (ID tokens and anything general)."""
        if self._signer is None:
            self._signer = _jwk(self.alg, self.private_key)
        return self._signer

    def compact_signer(self, typ: str):
        """A pre-built fast signer for our own compact JWTs (access tokens)."""
        if self._compact is None:
            self._compact = {}
        signer = self._compact.get(typ)
        if signer is None:
            from .jws import CompactSigner

            signer = self._compact[typ] = CompactSigner(self.private_key, self.alg, self.kid, typ)
        return signer


class KeyRing:
    def __init__(self, keys: list[KeyInfo]):
        self.keys = keys
        by_alg: dict[str, list[KeyInfo]] = {}
        for k in sorted(keys, key=lambda k: (k.activates_at, k.created_at)):
            by_alg.setdefault(k.alg, []).append(k)
        for ks in by_alg.values():
            for older, newer in pairwise(ks):
                older.retired_at = newer.activates_at
        self.by_alg = by_alg
        self._jwks_cache: tuple[int, str, bytes] | None = None

    def active(self, alg: str, now: datetime | None = None) -> KeyInfo:
        now = now or utcnow()
        for k in reversed(self.by_alg.get(alg, [])):
            if k.activates_at <= now:
                return k
        raise NoSigningKey(f"no active {alg} signing key: run `flask db upgrade`")

    def published(self, now: datetime | None = None) -> list[KeyInfo]:
        now = now or utcnow()
        grace = timedelta(seconds=max_token_lifetime())
        return [k for k in self.keys if not (k.retired_at and k.retired_at + grace <= now)]

    def jwks_json(self) -> str:
        # recomputed at most once a minute: states change with time, not only on rotation
        minute = int(utcnow().timestamp() // 60)
        if self._jwks_cache is None or self._jwks_cache[0] != minute:
            body = json.dumps({"keys": [k.public for k in self.published()]}, separators=(",", ":"))
            self._jwks_cache = (minute, body, body.encode())
        return self._jwks_cache[1]

    def jwks_bytes_if_current(self) -> bytes | None:
        """``jwks_json()``'s body, encoded, when it was computed this minute (None: compute it
        with ``jwks_json``, which needs the application's configuration)."""
        cached = self._jwks_cache
        if cached is not None and cached[0] == int(utcnow().timestamp() // 60):
            return cached[2]
        return None

    def find(self, kid: str) -> KeyInfo | None:
        for k in self.keys:
            if k.kid == kid:
                return k
        return None


# The key objects unsealed and built from each key row, carried from one load of the ring to the
# next: the ring is loaded again at every change of the keys' generation and at least every
# minute (CachedLoader.max_age), and unsealing a key (AES-GCM, then the DER load, which checks an
# RSA key's consistency) and building its signers costs milliseconds, in the request that
# happens to come next. Reused only for a row whose kid, algorithm, public JWK and sealed private
# key are the very same bytes, under the same key-encryption key; only the last load's keys
# are kept.
_BUILT: dict[tuple, KeyInfo] = {}


def _load() -> KeyRing:
    rows = db.session.execute(select(SigningKey)).scalars().all()
    kek = bytes(current_app.config["TONGBAN_KEK"])
    keys, built = [], {}
    for r in rows:
        info = KeyInfo(r.kid, r.alg, r.created_at, r.activates_at, json.loads(r.public_jwk), r.private_key)
        same = (r.kid, r.alg, r.public_jwk, bytes(r.private_key), kek)
        before = _BUILT.get(same)
        if before is not None:
            info._private, info._public, info._signer, info._compact = (before._private, before._public,
                                                                        before._signer, before._compact)
        built[same] = info
        keys.append(info)
    _BUILT.clear()
    _BUILT.update(built)
    return KeyRing(keys)


_ring = CachedLoader(KEYS_GENERATION, _load, check_every=1.0)


def keyring() -> KeyRing:
    return _ring.get()


def fresh_keyring(app: Flask) -> KeyRing | None:
    """The key ring ``keyring()`` would return without looking at the keys' generation (it did
    less than a second ago), or None. No application context needed."""
    return _ring.fresh(app)


def current_keyring(app: Flask) -> KeyRing | None:
    """The key ring ``keyring()`` would return when that needs no loading (its generation checked
    as ``keyring()`` checks it), or None. No application context needed."""
    return _ring.current(app)


def list_keys() -> list[tuple[KeyInfo, str]]:
    ring = _load()
    now = utcnow()
    return [(k, k.state(now)) for k in sorted(ring.keys, key=lambda k: (k.alg, k.created_at))]
