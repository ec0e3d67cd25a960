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
from typing import Any, Protocol

from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from flask import current_app
from pyhanko.sign.attributes import SigningCertificateV2Provider
from pyhanko.sign.general import as_signing_certificate_v2
from pyhanko.sign.signers import Signer
from pyhanko_certvalidator.registry import SimpleCertificateStore

from .ca import generate_private_key
from .crypto import seal_private_key, unseal_private_key
from .errors import InvalidAlg, InvalidBackend, Pkcs11NotConfigured, Pkcs11NoToken

BACKENDS = ("local", "pkcs11")


class KeyBackend(Protocol):
    name: str

    def generate(self, alg: str, label: str) -> tuple[object, str, bytes | None]:
        """A new key pair: (cryptography public key, key reference, encrypted private key or None)."""

    def open(self, *, key_ref: str, blob: bytes | None, alg: str, cert: asn1_x509.Certificate,
             chain: list[asn1_x509.Certificate]) -> contextlib.AbstractContextManager[Signer]:
        """A pyHanko signer for the key, valid inside the ``with`` block."""


# ---------------------------------------------------------------- both back-ends


@functools.lru_cache(maxsize=512)
def _signing_certificate_v2_der(cert_der: bytes) -> bytes:
    return as_signing_certificate_v2(asn1_x509.Certificate.load(cert_der)).dump()


class _PreEncodedSigningCertificate(SigningCertificateV2Provider):
    async def build_attr_value(self, dry_run=False) -> tsp.SigningCertificateV2:
        return tsp.SigningCertificateV2.load(_signing_certificate_v2_der(self.signing_cert.dump()))


class PreEncodedAttributes:
    """Give pyHanko the ESS signing-certificate-v2 attribute parsed from DER, encoded once per certificate.

    asn1crypto never forgets that a value it built was modified, so every ``dump()`` of a
    freshly built ``SigningCertificateV2`` re-encodes its issuer name, and pyHanko dumps the
    signed attributes many times while it assembles a signature: with our multi-attribute
    Chinese names that alone cost ~20 ms per seal. A value loaded from DER dumps as a copy
    of its bytes. The encoding is identical.
    """

    def _signed_attr_providers(self, *args, **kwargs):
        for prov in super()._signed_attr_providers(*args, **kwargs):
            if type(prov) is SigningCertificateV2Provider:
                prov = _PreEncodedSigningCertificate(prov.signing_cert)
            yield prov


# ---------------------------------------------------------------- local key files


class LocalKeySigner(PreEncodedAttributes, Signer):
    """A pyHanko signer over an in-memory ``cryptography`` key (loaded once, not per signature)."""

    def __init__(self, private_key, cert: asn1_x509.Certificate, chain: list[asn1_x509.Certificate]):
        self._key = private_key
        super().__init__(signing_cert=cert, cert_registry=SimpleCertificateStore.from_certs(chain),
                         embed_roots=True)

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        if dry_run:
            return bytes(256 if not isinstance(self._key, ec.EllipticCurvePrivateKey) else 72)
        h = getattr(hashes, digest_algorithm.upper())()
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(data, ec.ECDSA(h))
        return self._key.sign(data, padding.PKCS1v15(), h)


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
