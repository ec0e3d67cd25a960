"""pyHanko's side of the seal signers (keys/signers.py): the ``Signer`` classes over a local
key and the pre-encoded signing-certificate attribute. Imported when a seal's key is opened to
sign, not when the app starts: pyHanko, pyhanko-certvalidator and aiohttp (which pyHanko's
time-stamping client imports) are many megabytes of a worker that only serves tokens."""

from __future__ import annotations

import functools

from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from pyhanko.sign.attributes import SigningCertificateV2Provider
from pyhanko.sign.general import as_signing_certificate_v2
from pyhanko.sign.signers import Signer
from pyhanko_certvalidator.registry import SimpleCertificateStore


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
