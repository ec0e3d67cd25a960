"""Failures of keys/ a caller can act on, one class per failure (as ``seal/errors.py``).

Mapped to HTTP by ``tongban.views`` and to exit 1 by the CLI. ``keys.sm2.SM2Error`` and
``keys.sm2ca.SM2CertError`` (malformed 国密 input) stay where they are defined.
"""

from __future__ import annotations

from tongban.errors import NotFound, TongbanError, ValidationError


class InvalidAlg(ValidationError):
    """Not a supported key algorithm (ec or rsa)."""

    code = "invalid_alg"


class UnknownCertificate(NotFound):
    """No certificate has this serial number."""

    code = "unknown_certificate"


class NoCrl(NotFound):
    """No CRL yet: run `flask db upgrade`."""

    code = "no_crl"


class Pkcs11NotConfigured(ValidationError):
    """PKCS#11 needs TONGBAN_PKCS11_TOKEN and TONGBAN_PKCS11_PIN."""

    code = "pkcs11_not_configured"


class Pkcs11NoToken(ValidationError):
    """No PKCS#11 token has this label."""

    code = "pkcs11_no_token"


class InvalidBackend(ValidationError):
    """Not a known key back-end."""

    code = "invalid_backend"


class KekMisconfigured(TongbanError):
    """TONGBAN_KEK is not 32 bytes (64 hex characters): nothing can be sealed or unsealed."""

    code = "kek_misconfigured"
    status = 500


class UnknownKeyFormat(TongbanError, ValueError):
    """A sealed blob of an unknown format (not written by ``keys.crypto.seal``)."""

    code = "unknown_key_format"
    status = 500


class NotCanonicalBase64url(ValidationError, ValueError):
    """Not canonical unpadded base64url (RFC 7515 §2)."""

    code = "invalid_base64url"


class NoSigningKey(TongbanError, LookupError):
    """No active signing key for the algorithm: the keys were not created (``flask db upgrade``)."""

    code = "no_signing_key"
    status = 503


class CaMissing(TongbanError, LookupError):
    """The seal CA (RSA/ECDSA or SM2) does not exist yet (``flask db upgrade``)."""

    code = "ca_missing"
    status = 503
