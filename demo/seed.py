"""Registers the demo portals as first-party systems (``flask demo seed`` calls this)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tongban.clock import digest, token
from tongban.config import instance_dir
from tongban.extensions import db

from . import PORTALS, PortalSpec


def portal_secret(spec: PortalSpec, folder: Path | None = None) -> str:
    """The portal's client secret, kept (0600) in the instance folder so the dev server finds it."""
    path = (folder or instance_dir()) / f"demo_{spec.key}_secret"
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(token(32))
    return path.read_text().strip()


def register_portals(folder: Path | None = None) -> list[dict]:
    from idp import clients as registry
    from idp.models import Client

    out = []
    for spec in PORTALS:
        secret = portal_secret(spec, folder)
        base = spec.base_url
        meta: dict[str, Any] = {
            "redirect_uris": [f"{base}/callback"],
            "post_logout_redirect_uris": [f"{base}/"],
            "backchannel_logout_uri": f"{base}/backchannel-logout",
        }
        row = db.session.execute(select(Client).where(Client.client_id == spec.client_id)).scalar_one_or_none()
        if row is None:
            row, _ = registry.create_client(
                client_id=spec.client_id, name=spec.name, department=spec.department,
                grant_types=["authorization_code", "refresh_token"], scopes=["openid", "profile"],
                first_party=True, function="演示：部门办事门户（单点登录与统一退出）", scope_of_use="全市",
                approver=spec.department, funding_source="财政拨款", contact=base, actor="demo", **meta)
        else:
            changes = {k: v for k, v in meta.items() if getattr(row, k) != v}
            if changes:
                registry.update_client(spec.client_id, actor="demo", **changes)
        row.secret_hash = digest(secret)
        out.append({"name": spec.name, "url": f"{base}/", "client_id": spec.client_id})
    return out
