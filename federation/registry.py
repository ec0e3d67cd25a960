"""The register of upstream OpenID providers: adding one (its client secret sealed under the
instance KEK), enabling and disabling, and the levels its ``acr`` values map to."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy import select

from keys.crypto import seal, unseal
from tongban import audit
from tongban.cache import CachedLoader, Generation
from tongban.clock import utcnow
from tongban.errors import Conflict, NotFound, ValidationError
from tongban.extensions import after_commit, db

from .models import Upstream

LEVELS = ("L1", "L2", "L3", "L4", "L5")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _label(name: str) -> str:
    return f"federation:upstream:{name}:client_secret"


@dataclass(frozen=True)
class UpstreamInfo:
    """An upstream as the flows use it (no database row: no transaction held across HTTP)."""

    id: int
    name: str
    display_name: str
    issuer: str
    client_id: str
    scope: str
    id_number_claim: str
    verified_claim: str
    name_claim: str
    acr_map: dict = field(default_factory=dict)
    trusted_id_numbers: bool = False
    enabled: bool = True

    def client_secret(self) -> str:
        row = db.session.get(Upstream, self.id)
        return unseal(row.client_secret, _label(self.name)).decode()


def _info(row: Upstream) -> UpstreamInfo:
    return UpstreamInfo(id=row.id, name=row.name, display_name=row.display_name, issuer=row.issuer,
                        client_id=row.client_id, scope=row.scope, id_number_claim=row.id_number_claim,
                        verified_claim=row.verified_claim, name_claim=row.name_claim,
                        acr_map=dict(row.acr_map or {}), trusted_id_numbers=bool(row.trusted_id_numbers),
                        enabled=bool(row.enabled))


def check_issuer(issuer: str) -> str:
    """An https URL (http only on loopback), no query or fragment (OIDC Discovery §2)."""
    parts = urlsplit(issuer or "")
    loopback = parts.scheme == "http" and parts.hostname in _LOOPBACK
    if parts.scheme != "https" and not loopback:
        raise ValidationError("the issuer must be an https:// URL (http:// only on loopback hosts)",
                              "invalid_issuer")
    if not parts.hostname or parts.query or parts.fragment or parts.username or parts.password:
        raise ValidationError("the issuer must be a URL with a host and no query, fragment or user",
                              "invalid_issuer")
    return issuer


def parse_acr_map(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        upstream_acr, sep, level = item.rpartition("=")
        if not sep or not upstream_acr or level not in LEVELS:
            raise ValidationError(f"--acr-map {item!r}: expected UPSTREAM_ACR=L1..L5", "invalid_acr_map")
        out[upstream_acr] = level
    return out


def add(*, name: str, issuer: str, client_id: str, client_secret: str, display_name: str | None = None,
        scope: str = "openid profile", id_number_claim: str = "id_number",
        verified_claim: str = "id_number_verified", name_claim: str = "name", acr_map: dict | None = None,
        trusted_id_numbers: bool = False, actor: str = "admin") -> UpstreamInfo:
    if not _NAME.match(name or ""):
        raise ValidationError("the name must be 1-40 lower-case letters, digits or dashes", "invalid_name")
    check_issuer(issuer)
    if not client_id or len(client_id) > 200:
        raise ValidationError("a client id is needed (at most 200 characters)", "invalid_client_id")
    if not client_secret:
        raise ValidationError("the client secret is empty", "invalid_client_secret")
    if "openid" not in scope.split():
        raise ValidationError("the scope must include openid", "invalid_scope")
    for claim in (id_number_claim, verified_claim, name_claim):
        if not claim or len(claim) > 100:
            raise ValidationError("claim names must be 1-100 characters", "invalid_claim")
    if db.session.execute(select(Upstream.id).where(Upstream.name == name)).first():
        raise Conflict(f"an upstream named {name} exists already", "upstream_exists")
    row = Upstream(name=name, display_name=(display_name or name)[:100], issuer=issuer, client_id=client_id,
                   client_secret=seal(client_secret.encode(), _label(name)), scope=scope,
                   id_number_claim=id_number_claim, verified_claim=verified_claim, name_claim=name_claim,
                   acr_map=dict(acr_map or {}), trusted_id_numbers=trusted_id_numbers, enabled=True,
                   created_at=utcnow())
    db.session.add(row)
    db.session.flush()
    audit.record("federation.upstream_added", actor=actor, object=f"upstream:{name}",
                 detail={"issuer": issuer, "client_id": client_id, "acr_map": row.acr_map,
                         "trusted_id_numbers": trusted_id_numbers})
    after_commit(_changed)
    return _info(row)


def set_enabled(name: str, enabled: bool, actor: str = "admin") -> UpstreamInfo:
    row = db.session.execute(select(Upstream).where(Upstream.name == name)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no upstream named {name}", "unknown_upstream")
    row.enabled = enabled
    audit.record("federation.upstream_enabled" if enabled else "federation.upstream_disabled", actor=actor,
                 object=f"upstream:{name}")
    after_commit(_changed)
    return _info(row)


def get(name: str, *, enabled_only: bool = True) -> UpstreamInfo | None:
    row = db.session.execute(select(Upstream).where(Upstream.name == name)).scalar_one_or_none()
    if row is None or (enabled_only and not row.enabled):
        return None
    return _info(row)


def get_by_id(upstream_id: int) -> UpstreamInfo | None:
    row = db.session.get(Upstream, upstream_id)
    return _info(row) if row is not None else None


def all_upstreams(*, enabled_only: bool = False) -> list[UpstreamInfo]:
    stmt = select(Upstream).order_by(Upstream.name)
    if enabled_only:
        stmt = stmt.where(Upstream.enabled.is_(True))
    return [_info(r) for r in db.session.execute(stmt).scalars()]


# The log-in page's buttons, per process: read again only when an upstream is added, enabled or
# disabled anywhere (the generation moves after that commit; a restored backup moves it too), not
# on every display of the log-in page.
UPSTREAMS_GENERATION = Generation("upstreams")


def _load_buttons() -> tuple[tuple[str, str], ...]:
    return tuple((u.name, u.display_name) for u in all_upstreams(enabled_only=True))


_buttons = CachedLoader(UPSTREAMS_GENERATION, _load_buttons, check_every=0.0)


def login_buttons() -> tuple[tuple[str, str], ...]:
    """(name, display name) of every enabled upstream, by name; cached per generation."""
    return _buttons.get()


def _changed() -> None:
    _buttons.invalidate()


def granted_level(upstream: UpstreamInfo, upstream_acr: str | None, unmapped: str = "L1") -> str:
    """The level a log-in through ``upstream`` is worth: what its acr map says for the asserted
    ``acr`` (an acr missing from the map, or no acr at all: ``unmapped``, at most L2), and never
    more than the upstream asserted when it speaks in the same L1..L5 terms."""
    level = upstream.acr_map.get(upstream_acr or "") if upstream_acr else None
    if level is None:
        level = unmapped if unmapped in ("L1", "L2") else "L1"
    n = LEVELS.index(level) + 1
    if upstream_acr in LEVELS:
        n = min(n, LEVELS.index(upstream_acr) + 1)
    return LEVELS[n - 1]
