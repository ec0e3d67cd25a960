"""``clients create --protocol saml``: the register entry plus the SAML SP's metadata."""

from __future__ import annotations

from idp import clients as registry
from tongban.errors import ValidationError

from .services import register_sp


def create_sp(protocol: str, fields: dict, *, service_urls: list[str], allow_proxy: bool,
              metadata: bytes | None) -> tuple[dict, str]:
    """Register a SAML service provider from its metadata; returns what ``emit`` prints."""
    if service_urls or allow_proxy:
        raise ValidationError("--service-url and --allow-proxy are for --protocol cas", "invalid_client_metadata")
    if not metadata:
        raise ValidationError("a SAML service provider is registered from its metadata: --metadata FILE",
                              "invalid_metadata")
    svc = register_sp(metadata, **fields)
    data = {"client_id": svc.client_id, "protocol": "saml", "entity_id": svc.entity_id}
    row = registry.get_row(svc.client_id)
    data.update(name=row.name, department=row.department, scope=" ".join(row.scopes))
    return data, f"client_id: {svc.client_id} ({protocol})"
