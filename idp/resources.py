"""Resource indicators (RFC 8707): which API an access token is for.

The ``resource`` parameter (absolute URI, no fragment; repeatable) at the authorization and
token endpoints names the APIs the token is for; the access token's ``aud`` is then the list of
them (instead of the default, the client's own ``client_id``). A resource must be registered:

- built in: the licence API ``{issuer}/api/v1/licences``, the seal API ``{issuer}/api/v1/seals``
  and userinfo ``{issuer}/oauth/userinfo``;
- department APIs, in the ``resources`` table (``flask resources add/list/disable``); one
  registered with a scope may be asked for only by clients registered for that scope.

A client registered with resources (``clients create --resource``) may ask only for those.
Unknown, disabled or not allowed resources are refused with ``invalid_target``.

The built-in resource servers accept a token whose ``aud`` names them, or a token without
resource indicators (``aud`` is just the client_id: what every client got before, so existing
clients keep working). A token for the licence API is refused at the seal API and vice versa.

This module also holds the grant extension that applies the rules of this module and of DPoP
(``dpop.check_grant``) to every token request, and ``extend_access_claims``, the one hook the
access-token generator calls (``aud``, ``cnf``, pairwise ``sub``).
"""

from __future__ import annotations

import base64
from datetime import datetime
from urllib.parse import urlsplit

from authlib.oauth2 import OAuth2Error
from flask import current_app
from flask import request as flask_request
from sqlalchemy import Boolean, DateTime, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from tongban import audit
from tongban.cache import CachedLoader, Generation
from tongban.clock import utcnow
from tongban.errors import NotFound, ValidationError
from tongban.extensions import after_commit, db

from . import clients as registry
from . import dpop, pairwise
from .context import GrantContext, grant_context
from .errors import shown

RESOURCES_GENERATION = Generation("resources")


class Resource(db.Model):
    """A department API tokens may be asked for (RFC 8707)."""

    __tablename__ = "resources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uri: Mapped[str] = mapped_column(String(500), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    department: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str | None] = mapped_column(String(100), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class InvalidTargetError(OAuth2Error):
    """RFC 8707 §2: the resource is invalid, unknown or not for this client."""

    error = "invalid_target"
    status_code = 400


# ---------------------------------------------------------------- the register


def builtin() -> dict[str, str]:
    iss = current_app.config["TONGBAN_ISSUER"]
    return {f"{iss}/api/v1/licences": "licence", f"{iss}/api/v1/seals": "seal", f"{iss}/oauth/userinfo": "userinfo"}


def _load() -> dict[str, tuple[str | None, bool]]:
    return {r.uri: (r.scope, r.enabled) for r in db.session.execute(select(Resource)).scalars()}


_register = CachedLoader(RESOURCES_GENERATION, _load, check_every=0.0)


def check_uri(uri: str) -> str:
    uri = (uri or "").strip()
    parts = urlsplit(uri)
    if not parts.scheme or not parts.netloc or parts.fragment or "#" in uri or parts.username or parts.password:
        raise ValidationError(f"a resource must be an absolute URI without fragment: {uri!r}", "invalid_target")
    if parts.scheme not in ("https", "http"):
        raise ValidationError(f"a resource must be an http(s) URI: {uri!r}", "invalid_target")
    return uri


def add(uri: str, name: str, department: str, scope: str | None = None, actor: str = "admin") -> Resource:
    check_http_uri = registry.check_uri

    uri = check_http_uri(check_uri(uri), "resource")
    name, department = (name or "").strip(), (department or "").strip()
    if not name or not department:
        raise ValidationError("a resource needs a name and a department", "invalid_resource")
    if uri in builtin() or db.session.execute(select(Resource.id).where(Resource.uri == uri)).first():
        raise ValidationError(f"the resource {uri!r} is registered already", "resource_exists")
    row = Resource(uri=uri, name=name, department=department, scope=(scope or "").strip() or None, enabled=True,
                   created_at=utcnow())
    db.session.add(row)
    db.session.flush()
    audit.record("resource.created", actor=actor, object=f"resource:{uri}",
                 detail={"name": name, "department": department, "scope": row.scope})
    after_commit(_register.invalidate)
    return row


def disable(uri: str, actor: str = "admin") -> Resource:
    row = db.session.execute(select(Resource).where(Resource.uri == uri)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no registered resource {uri!r}", "unknown_resource")
    row.enabled = False
    audit.record("resource.disabled", actor=actor, object=f"resource:{uri}")
    after_commit(_register.invalidate)
    return row


def list_all() -> list[dict]:
    out = [{"uri": uri, "name": kind, "department": "", "scope": None, "enabled": True, "builtin": True}
           for uri, kind in builtin().items()]
    for r in db.session.execute(select(Resource).order_by(Resource.uri)).scalars():
        out.append({"uri": r.uri, "name": r.name, "department": r.department, "scope": r.scope,
                    "enabled": r.enabled, "builtin": False})
    return out


def known(uri: str) -> bool:
    """A registered and enabled resource (built in, or in the table)."""
    if uri in builtin():
        return True
    entry = _register.get().get(uri)
    return entry is not None and entry[1]


def check_client_resources(uris) -> list[str]:
    """A client's allowed resources, each registered (for ``clients create --resource``)."""
    out = []
    for uri in uris:
        uri = check_uri(uri)
        if not known(uri):
            raise ValidationError(f"unknown resource {uri!r} (register it with `resources add`)", "invalid_target")
        out.append(uri)
    return list(dict.fromkeys(out))


def check_requested(client, uris, redirect_uri: str | None = None) -> list[str]:
    """The resources of a request, each valid, registered and allowed for ``client``."""
    out = []
    for uri in uris:
        try:
            check_uri(uri)
        except ValidationError as e:
            raise InvalidTargetError(e.message, redirect_uri=redirect_uri) from None
        if not known(uri):
            _refused(client, uri, "unknown")
            raise InvalidTargetError(f"unknown resource '{shown(uri, 200)}'", redirect_uri=redirect_uri)
        allowed = tuple(getattr(client, "allowed_resources", ()) or ())
        entry = _register.get().get(uri)
        scope = entry[0] if entry else None
        if (allowed and uri not in allowed) or (scope and scope not in client.scope_set):
            _refused(client, uri, "not_allowed")
            raise InvalidTargetError(f"this client may not ask for the resource '{shown(uri, 200)}'",
                                     redirect_uri=redirect_uri)
        out.append(uri)
    return list(dict.fromkeys(out))


def _refused(client, uri: str, why: str) -> None:
    audit.record_later("resource.refused", actor=f"client:{client.client_id}", object=f"resource:{uri[:200]}",
                       outcome="failure", detail={"reason": why})


# ---------------------------------------------------------------- the grants


_JKT_LEN = 43  # base64url of a SHA-256 thumbprint


def _valid_jkt(value: str) -> bool:
    if len(value) != _JKT_LEN:
        return False
    try:
        return len(base64.urlsafe_b64decode(value + "=")) == 32
    except ValueError:
        return False


class GrantExtension:
    """Registered with every grant (server.init_server): resource indicators and DPoP binding."""

    def __call__(self, grant):
        grant.register_hook("after_validate_consent_request", self.check_authorization_request)
        grant.register_hook("before_create_token_response", self.check_token_request)

    @staticmethod
    def check_authorization_request(grant, redirect_uri):
        from authlib.oauth2.rfc6749.errors import InvalidRequestError

        data = grant.request.payload.data
        state = data.get("state")
        try:
            check_requested(grant.request.client, data.getlist("resource"), redirect_uri)
        except InvalidTargetError as e:
            e.state = state
            raise
        jkt = data.get("dpop_jkt")
        if jkt is not None and not _valid_jkt(jkt):
            raise InvalidRequestError("dpop_jkt must be a base64url SHA-256 JWK thumbprint", redirect_uri=redirect_uri,
                                      state=state)

    @staticmethod
    def check_token_request(grant, _result=None):
        client = grant.request.client
        code = getattr(grant.request, "authorization_code", None)
        refresh = getattr(grant.request, "refresh_token", None)
        dpop.check_grant(client, code=code, refresh_row=refresh)
        requested = check_requested(client, grant.request.form.getlist("resource"))
        origin = (getattr(code, "resources", None) or getattr(refresh, "resources", None)) or None
        if origin is not None:
            narrower = [u for u in requested if u not in origin]
            if narrower:
                _refused(client, narrower[0], "not_granted")
                raise InvalidTargetError(f"the resource '{shown(narrower[0], 200)}' was not part of the grant")
            # a resource disabled or no longer allowed since the grant is not issued for
            audience = check_requested(client, requested or origin)
        else:
            audience = requested
            origin = requested or None
        grant_context().token_audience = audience or None
        grant_context().grant_resources = origin


def annotate_code(row, data) -> None:
    """The resources and DPoP key of an authorization request, on its code."""
    uris = data.getlist("resource")
    row.resources = list(dict.fromkeys(uris)) or None
    row.dpop_jkt = data.get("dpop_jkt") or None


def annotate_refresh(row, client) -> None:
    row.resources = grant_context().grant_resources or None
    row.dpop_jkt = dpop.refresh_binding(client)


def extend_access_claims(claims: dict, client, user, gctx: GrantContext | None = None) -> None:
    """What the access token carries beyond RFC 9068's defaults: ``aud`` (resource indicators),
    ``cnf.jkt`` (DPoP) and, for pairwise clients, the pairwise ``sub``. ``gctx``: this
    request's ``grant_context()``, when the caller holds it already."""
    if gctx is None:
        gctx = grant_context()
    gctx.token_client_id = client.client_id
    audience = gctx.token_audience
    if audience:
        claims["aud"] = list(audience)
    claims.update(dpop.access_token_claims(gctx))
    claims.update(pairwise.access_token_claims(client, user))


# ---------------------------------------------------------------- the resource servers


def own_identifier() -> str | None:
    """Which built-in resource the current request is at (None: not a protected API)."""
    iss = current_app.config["TONGBAN_ISSUER"]
    path = flask_request.path
    if path == "/oauth/userinfo":
        return f"{iss}/oauth/userinfo"
    if path.startswith("/api/v1/seals"):
        return f"{iss}/api/v1/seals"
    if path.startswith("/api/v1/licence"):
        return f"{iss}/api/v1/licences"
    return None


def audience_ok(claims: dict) -> bool:
    """A default token (``aud`` the client_id only) or one whose ``aud`` names this resource."""
    aud = claims.get("aud")
    if aud == claims.get("client_id") or aud == [claims.get("client_id")]:
        return True
    own = own_identifier()
    audiences = aud if isinstance(aud, list) else [aud]
    return own is not None and own in audiences


__all__ = ["GrantExtension", "InvalidTargetError", "Resource", "audience_ok", "extend_access_claims"]
