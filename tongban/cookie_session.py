"""Flask's signed-cookie session and Flask-WTF's CSRF tokens, with their signers built once per secret key.

Flask builds an ``itsdangerous`` serializer for every request that reads or writes the session
cookie, and the signer derives its HMAC key (a keyed hash of the salt) again for every
signature made or checked. Both depend only on the secret keys and fixed settings, so they are
kept: per process, per (secret key, fallbacks). The cookie is byte for byte what Flask writes,
and rotating ``SECRET_KEY`` (or its fallbacks) builds a new serializer."""

from __future__ import annotations

import threading

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import Signer, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import want_bytes


class _KeptKeySigner(TimestampSigner):
    """A timestamp signer whose derived keys are computed once per secret key (the salt, the
    derivation and the digest are fixed per signer)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._derived: dict[bytes, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        raw = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        found = self._derived.get(raw)
        if found is None:
            found = self._derived[raw] = super().derive_key(raw)
        return found


class _KeptSerializer(URLSafeTimedSerializer):
    """Makes its signer once per salt (Flask's session serializer always asks for the same one)."""

    default_signer = _KeptKeySigner

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._signers: dict[bytes, Signer] = {}

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        key = want_bytes(self.salt if salt is None else salt)
        found = self._signers.get(key)
        if found is None:
            found = self._signers[key] = super().make_signer(salt)
        return found


class KeptSignerSessionInterface(SecureCookieSessionInterface):
    """``SecureCookieSessionInterface`` reusing its serializer while the secret keys stay the same."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: tuple[tuple, URLSafeTimedSerializer] | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if not app.secret_key:
            return None
        keys: list[str | bytes] = list(app.config["SECRET_KEY_FALLBACKS"] or ())
        keys.append(app.secret_key)  # itsdangerous expects the current key last
        ident = (tuple(keys), self.salt, self.key_derivation, self.digest_method, self.serializer)
        held = self._held
        if held is not None and held[0] == ident:
            return held[1]
        made = _KeptSerializer(keys, salt=self.salt, serializer=self.serializer,  # type: ignore[arg-type]
                               signer_kwargs={"key_derivation": self.key_derivation,
                                              "digest_method": self.digest_method})
        with self._lock:
            self._held = (ident, made)
        return made


# Flask-WTF builds ``URLSafeTimedSerializer(secret_key, salt="wtf-csrf-token")`` for every CSRF
# token it makes or checks: the same serializer, kept per (secret key, salt) (a handful at most).
_csrf_serializers: dict[tuple, URLSafeTimedSerializer] = {}


def _csrf_serializer(secret_key, salt: str | bytes = b"itsdangerous", **kwargs) -> URLSafeTimedSerializer:
    if kwargs:  # not how Flask-WTF calls it: as it asked
        return URLSafeTimedSerializer(secret_key, salt=salt, **kwargs)
    ident = (secret_key if isinstance(secret_key, str | bytes) else tuple(secret_key), salt)
    found = _csrf_serializers.get(ident)
    if found is None:
        if len(_csrf_serializers) > 16:  # secret keys come and go (tests): never grow without bound
            _csrf_serializers.clear()
        found = _csrf_serializers[ident] = _KeptSerializer(secret_key, salt=salt)
    return found


def init_app(app: Flask) -> None:
    if type(app.session_interface) is SecureCookieSessionInterface:  # not replaced by a deployment
        app.session_interface = KeptSignerSessionInterface()
    import flask_wtf.csrf

    flask_wtf.csrf.URLSafeTimedSerializer = _csrf_serializer  # type: ignore[assignment,misc]  # Flask-WTF 1.x
