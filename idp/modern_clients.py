"""Per-client settings of the modern profile, checked when a system is registered:
``require_dpop`` (idp/dpop.py), ``subject_type``/``sector_identifier_uri`` (idp/pairwise.py),
``web_origins`` (idp/cors.py) and ``allowed_resources`` (idp/resources.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

from tongban.errors import ValidationError

from . import clients as registry
from . import pairwise, resources

KEYS = ("require_dpop", "subject_type", "sector_identifier_uri", "sector_uris", "web_origins", "allowed_resources")


def check_origin(origin: str) -> str:
    """scheme://host[:port] only (a web origin, RFC 6454); https, or http on a loopback host."""

    origin = (origin or "").strip().rstrip("/")
    parts = urlsplit(origin)
    if parts.path or parts.query or parts.fragment:
        raise ValidationError(f"a web origin is scheme://host[:port] only: {origin!r}", "invalid_web_origin")
    registry.check_uri(origin, "web origin")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def apply(row, modern: dict) -> None:
    """Set the modern-profile columns of a new ``Client`` row from ``modern`` (ValidationError)."""
    unknown = set(modern) - set(KEYS)
    if unknown:
        raise ValidationError(f"unknown client settings {', '.join(sorted(unknown))}", "invalid_client_metadata")
    row.require_dpop = bool(modern.get("require_dpop", False))
    subject_type = modern.get("subject_type") or "public"
    if subject_type not in pairwise.SUBJECT_TYPES:
        raise ValidationError(f"subject_type must be one of {', '.join(pairwise.SUBJECT_TYPES)}",
                              "invalid_client_metadata")
    row.subject_type = subject_type
    sector_uri = modern.get("sector_identifier_uri") or None
    row.sector_identifier_uri = None
    row.sector = None
    if sector_uri:
        sector_uri = registry.check_uri(sector_uri, "sector_identifier_uri")
        listed = modern.get("sector_uris")
        if listed is None:
            raise ValidationError("the sector_identifier_uri was not fetched", "invalid_client_metadata")
        pairwise.check_sector(row.redirect_uris or [], sector_uri, listed)
        row.sector_identifier_uri = sector_uri
    if subject_type == "pairwise":
        row.sector = pairwise.sector_of(row.redirect_uris or [], sector_uri)
        if not row.sector:
            raise ValidationError("a pairwise client needs redirect URIs or a sector_identifier_uri",
                                  "invalid_client_metadata")
    row.web_origins = list(dict.fromkeys(check_origin(o) for o in modern.get("web_origins") or ()))

    row.allowed_resources = resources.check_client_resources(modern.get("allowed_resources") or ())


def describe(row) -> dict:
    """The modern-profile settings of a ``Client`` row (``clients create/show`` output)."""
    return {"require_dpop": bool(row.require_dpop), "subject_type": row.subject_type or "public",
            "sector_identifier_uri": row.sector_identifier_uri, "web_origins": list(row.web_origins or []),
            "resources": list(row.allowed_resources or [])}


registry.on_registration(apply)
