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


class BadOfd(TongbanError):
    """Not an OFD package (GB/T 33190), or one too damaged or too large to read."""

    code = "invalid_ofd"
    status = 400
