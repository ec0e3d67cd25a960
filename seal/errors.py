"""Seal errors a caller can act on (mapped to HTTP by tongban.views and to exit 1 by the CLI)."""

from __future__ import annotations

from tongban.errors import Conflict, Forbidden, TongbanError


class BadPdf(TongbanError):
    """Not a PDF, or a PDF too damaged to read."""

    code = "invalid_pdf"
    status = 400


class PdfTooLarge(TongbanError):
    code = "too_large"
    status = 413


class SealNotUsable(Conflict):
    """Suspended, revoked or outside its validity."""

    code = "seal_not_usable"


class SealingRefused(Conflict):
    """The document forbids another signature (certified with no changes allowed)."""

    code = "sealing_refused"


class NotAuthorised(Forbidden):
    """The client or officer may not use this seal."""

    code = "not_authorised"


class TooManySignatures(TongbanError):
    """More signatures (or revisions) than one verification examines (TONGBAN_VERIFY_MAX_SIGNATURES)."""

    code = "too_many_signatures"
    status = 422


class VerificationTooLong(TongbanError):
    """The verification ran past TONGBAN_VERIFY_MAX_SECONDS."""

    code = "verification_too_long"
    status = 422


class VerifierBusy(TongbanError):
    """This worker already runs TONGBAN_VERIFY_CONCURRENCY verifications; try again shortly."""

    code = "verifier_busy"
    status = 503
    retry_after = 5
class BadOfd(TongbanError):
    """Not an OFD package (GB/T 33190), or one too damaged or too large to read."""

    code = "invalid_ofd"
    status = 400


class LicenceSealReserved(Conflict):
    """A licence seal used on an arbitrary document (licence seals seal only the licences issued)."""

    code = "licence_seal_reserved"
