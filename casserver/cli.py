"""``clients create --protocol cas``: the register entry plus the CAS service's part."""

from __future__ import annotations

from idp import clients as registry
from tongban.errors import ValidationError

from .services import register_service


def create_cas(protocol: str, fields: dict, *, service_urls: list[str], allow_proxy: bool,
               metadata: bytes | None) -> tuple[dict, str]:
    """Register a CAS service; returns what ``emit`` prints (JSON data, text)."""
    if metadata:
        raise ValidationError("--metadata is for --protocol saml", "invalid_client_metadata")
    svc = register_service(service_urls=service_urls, proxy_allowed=allow_proxy, **fields)
    data = {"client_id": svc.client_id, "protocol": "cas", "service_urls": svc.service_urls,
            "proxy_allowed": svc.proxy_allowed}
    row = registry.get_row(svc.client_id)
    data.update(name=row.name, department=row.department, scope=" ".join(row.scopes))
    return data, f"client_id: {svc.client_id} ({protocol})"
