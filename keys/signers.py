"""Signers: where a seal's private key lives and how it signs.

Two back-ends behind one interface, chosen per seal (``TONGBAN_SEAL_KEY_BACKEND``
or ``seals create --backend``):

- ``local`` — the key is generated here and stored encrypted under the instance
  KEK (AES-GCM); each process decrypts it once and keeps it in memory.
- ``pkcs11`` — the key is generated inside a PKCS#11 token (an HSM; SoftHSM2 in
  the tests) and never leaves it; configured by ``TONGBAN_PKCS11_MODULE``,
  ``TONGBAN_PKCS11_TOKEN`` and ``TONGBAN_PKCS11_PIN``.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization
from flask import current_app

from .ca import generate_private_key
from .crypto import seal_private_key, unseal_private_key
from .errors import InvalidAlg, InvalidBackend, Pkcs11NotConfigured, Pkcs11NoToken

if TYPE_CHECKING:
    from pyhanko.sign.signers import Signer

BACKENDS = ("local", "pkcs11")


class KeyBackend(Protocol):
    name: str

    def generate(self, alg: str, label: str) -> tuple[object, str, bytes | None]:
        """A new key pair: (cryptography public key, key reference, encrypted private key or None)."""

    def open(self, *, key_ref: str, blob: bytes | None, alg: str, cert: asn1_x509.Certificate,
             chain: list[asn1_x509.Certificate]) -> contextlib.AbstractContextManager[Signer]:
        """A pyHanko signer for the key, valid inside the ``with`` block."""


# ---------------------------------------------------------------- both back-ends


# pyHanko (with aiohttp, its time-stamping client) is the signing engine of PDFs only: the
# Signer classes live in keys/pdfsigners.py, imported when a seal is opened, not at start-up.


_decrypted: dict[str, object] = {}
_lock = threading.Lock()


class LocalBackend:
    name = "local"

    def generate(self, alg: str, label: str):
        key = generate_private_key(alg)
        return key.public_key(), label, seal_private_key(key, f"seal-key:{label}")

    @contextlib.contextmanager
    def open(self, *, key_ref, blob, alg, cert, chain) -> Iterator[Signer]:
        key = _decrypted.get(key_ref)
        if key is None:
            key = unseal_private_key(blob, f"seal-key:{key_ref}")
            with _lock:
                _decrypted[key_ref] = key
        from .pdfsigners import LocalKeySigner

        yield LocalKeySigner(key, cert, chain)


# ---------------------------------------------------------------- PKCS#11 (HSM)

_libs: dict[str, object] = {}


def _pkcs11_session():
    import pkcs11

    cfg = current_app.config
    module = cfg.get("TONGBAN_PKCS11_MODULE") or "/usr/lib/softhsm/libsofthsm2.so"
    token_label = cfg.get("TONGBAN_PKCS11_TOKEN") or ""
    pin = cfg.get("TONGBAN_PKCS11_PIN") or ""
    if not token_label or not pin:
        raise Pkcs11NotConfigured("PKCS#11 needs TONGBAN_PKCS11_TOKEN and TONGBAN_PKCS11_PIN")
    with _lock:
        lib = _libs.get(module)
        if lib is None:
            lib = _libs[module] = pkcs11.lib(module)
    try:
        token = lib.get_token(token_label=token_label)
    except pkcs11.NoSuchToken:
        raise Pkcs11NoToken(f"no PKCS#11 token labelled {token_label!r}") from None
    return token.open(rw=True, user_pin=pin)


@functools.cache
def _pkcs11_signer_class() -> Any:  # a PKCS11Signer subclass (pyHanko, imported lazily)
    from pyhanko.sign.pkcs11 import PKCS11Signer  # python-pkcs11 is imported only when used

    from .pdfsigners import PreEncodedAttributes

    return type("TongbanPKCS11Signer", (PreEncodedAttributes, PKCS11Signer), {})


class PKCS11Backend:
    name = "pkcs11"

    def generate(self, alg: str, label: str):
        from pkcs11 import Attribute, KeyType, Mechanism
        from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
        from pkcs11.util.rsa import encode_rsa_public_key

        with _pkcs11_session() as session:
            if alg == "ec":
                params = session.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True)
                pub, _ = params.generate_keypair(store=True, label=label,
                                                 mechanism=Mechanism.EC_KEY_PAIR_GEN)
                spki = encode_ec_public_key(pub)
            elif alg == "rsa":
                pub, _ = session.generate_keypair(KeyType.RSA, 2048, store=True, label=label)
                spki = asn1_keys.PublicKeyInfo({
                    "algorithm": {"algorithm": "rsa"},
                    "public_key": asn1_keys.RSAPublicKey.load(encode_rsa_public_key(pub)),
                }).dump()
            else:
                raise InvalidAlg(f"unsupported key algorithm {alg!r} (ec or rsa)")
        return serialization.load_der_public_key(spki), label, None

    @contextlib.contextmanager
    def open(self, *, key_ref, blob, alg, cert, chain) -> Iterator[Signer]:
        with _pkcs11_session() as session:
            signer = _pkcs11_signer_class()(
                session, key_label=key_ref, signing_cert=cert, ca_chain=chain,
                cert_label=None, other_certs_to_pull=None,
                # SoftHSM and many HSMs offer only raw ECDSA: hash here, sign there
                use_raw_mechanism=(alg == "ec"))
            yield signer


_BACKENDS: dict[str, KeyBackend] = {"local": LocalBackend(), "pkcs11": PKCS11Backend()}


def backend(name: str | None = None) -> KeyBackend:
    name = name or current_app.config.get("TONGBAN_SEAL_KEY_BACKEND") or "local"
    try:
        return _BACKENDS[name]
    except KeyError:
        raise InvalidBackend(f"unknown key back-end {name!r} (one of {', '.join(BACKENDS)})") from None
