"""``clients create --protocol cas|saml``: the register entry plus the protocol's part."""

from __future__ import annotations

from tongban.errors import ValidationError


def create_legacy(protocol: str, fields: dict, *, service_urls: list[str], allow_proxy: bool,
                  metadata: bytes | None) -> tuple[dict, str]:
    """Register a CAS service or SAML SP; returns what ``emit`` prints (JSON data, text)."""
    from idp import clients as registry

    if protocol == "cas":
        if metadata:
            raise ValidationError("--metadata is for --protocol saml", "invalid_client_metadata")
        from .services import register_service

        svc = register_service(service_urls=service_urls, proxy_allowed=allow_proxy, **fields)
        data = {"client_id": svc.client_id, "protocol": "cas", "service_urls": svc.service_urls,
                "proxy_allowed": svc.proxy_allowed}
    else:
        if service_urls or allow_proxy:
            raise ValidationError("--service-url and --allow-proxy are for --protocol cas", "invalid_client_metadata")
        if not metadata:
            raise ValidationError("a SAML service provider is registered from its metadata: --metadata FILE",
                                  "invalid_metadata")
        from saml.services import register_sp

        svc = register_sp(metadata, **fields)
        data = {"client_id": svc.client_id, "protocol": "saml", "entity_id": svc.entity_id}
    row = registry.get_row(svc.client_id)
    data.update(name=row.name, department=row.department, scope=" ".join(row.scopes))
    return data, f"client_id: {svc.client_id} ({protocol})"
