"""The register of government systems (OAuth clients): registration, cache, usage.

Secrets are 256-bit random strings stored as SHA-256 digests: a slow password
hash on a high-entropy secret buys nothing and would cap the token endpoint.
Each worker caches the register and reloads it when any system changes.
"""

from __future__ import annotations

import atexit
import contextlib
import hmac
import json as _json
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from authlib.oauth2.rfc6749 import ClientMixin, list_to_scope, scope_to_list
from flask import Flask, current_app
from sqlalchemy import func, literal_column, select

from tongban import audit
from tongban.cache import CachedLoader, Generation
from tongban.clock import digest, token, utcnow
from tongban.extensions import after_commit as _after_commit
from tongban.extensions import db
from tongban.upsert import upsert

from . import client_auth, fapi
from .errors import (
    ClientExists,
    InvalidAlg,
    InvalidAuthMethod,
    InvalidClientMetadata,
    InvalidDeliveryMode,
    InvalidExchangeTarget,
    InvalidGrantType,
    InvalidRedirectUri,
    InvalidScope,
    UnknownClient,
)
from .models import Client, ClientUsage
from .scopes import SCOPES
from .uris import _is_loopback, check_uri  # noqa: F401 (part of this module's interface)

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials",
               "urn:ietf:params:oauth:grant-type:device_code",
               "urn:ietf:params:oauth:grant-type:token-exchange", "urn:openid:params:grant-type:ciba")
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none", "private_key_jwt")
PROFILES = ("", "fapi2")  # "": the default profile; "fapi2": FAPI 2.0 Security Profile (idp/fapi.py)
ID_TOKEN_ALGS = ("RS256", "ES256")
CLIENTS_GENERATION = Generation("clients")


# ---------------------------------------------------------------- the cached view


@dataclass(frozen=True)
class RegisteredClient(ClientMixin):
    """An immutable snapshot of a register entry, shared by all requests of a worker."""

    client_id: str
    secret_hash: str | None
    name: str
    department: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    backchannel_logout_uri: str | None
    grant_types: frozenset[str]
    scopes: tuple[str, ...]
    token_endpoint_auth_method: str
    id_token_signed_response_alg: str
    first_party: bool
    introspection_allowed: bool
    enabled: bool
    scope_set: frozenset[str] = field(default=frozenset())
    frontchannel_logout_uri: str | None = None
    exchange_targets: tuple[str, ...] = ()  # token exchange (idp.token_exchange)
    backchannel_token_delivery_mode: str | None = None  # CIBA (idp.ciba)
    # modern profile: DPoP required, pairwise subjects, CORS web origins, allowed resources
    require_dpop: bool = False
    subject_type: str = "public"
    sector: str | None = None
    web_origins: tuple[str, ...] = ()
    allowed_resources: tuple[str, ...] = ()
    # modern profile (docs/oidc-modern.md)
    jwks_json: str | None = None  # the registered JWKS (JSON text: the snapshot stays hashable)
    jwks_uri: str | None = None
    require_par: bool = False
    require_signed_request_object: bool = False
    profile: str = ""

    # Authlib ClientMixin
    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope):
        if not scope:
            return ""
        return list_to_scope([s for s in scope_to_list(scope) if s in self.scope_set])

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris  # exact string match (RFC 9700 §4.1)

    def check_client_secret(self, client_secret):
        if not self.secret_hash or not client_secret:
            return False
        return hmac.compare_digest(digest(client_secret), self.secret_hash)

    def check_endpoint_auth_method(self, method, endpoint):
        if self.profile == "fapi2" and method != "private_key_jwt":
            return False  # FAPI 2.0 §5.3.2.1 (idp/fapi.py)
        if endpoint == "token":
            return method == self.token_endpoint_auth_method
        # revocation / introspection: confidential clients authenticate as at the token endpoint
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type):
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type):
        return grant_type in self.grant_types

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"


def _snapshot(row: Client) -> RegisteredClient:
    return RegisteredClient(
        client_id=row.client_id, secret_hash=row.secret_hash, name=row.name, department=row.department,
        redirect_uris=tuple(row.redirect_uris or ()), post_logout_redirect_uris=tuple(
            row.post_logout_redirect_uris or ()),
        backchannel_logout_uri=row.backchannel_logout_uri, grant_types=frozenset(row.grant_types or ()),
        scopes=tuple(row.scopes or ()), token_endpoint_auth_method=row.token_endpoint_auth_method,
        id_token_signed_response_alg=row.id_token_signed_response_alg, first_party=row.first_party,
        introspection_allowed=row.introspection_allowed, enabled=row.enabled,
        scope_set=frozenset(row.scopes or ()), frontchannel_logout_uri=row.frontchannel_logout_uri,
        exchange_targets=tuple(row.exchange_targets or ()),
        backchannel_token_delivery_mode=row.backchannel_token_delivery_mode,
        require_dpop=bool(row.require_dpop), subject_type=row.subject_type or "public", sector=row.sector,
        web_origins=tuple(row.web_origins or ()), allowed_resources=tuple(row.allowed_resources or ()),
        jwks_json=_json.dumps(row.jwks, sort_keys=True) if row.jwks else None, jwks_uri=row.jwks_uri,
        require_par=bool(row.require_par), require_signed_request_object=bool(row.require_signed_request_object),
        profile=row.profile or "",
    )


def _load_all() -> dict[str, RegisteredClient]:
    return {r.client_id: _snapshot(r) for r in db.session.execute(select(Client)).scalars()}


_register = CachedLoader(CLIENTS_GENERATION, _load_all, check_every=0.0)


def get_client(client_id: str | None) -> RegisteredClient | None:
    """An enabled registered system (cached; a change anywhere invalidates every worker)."""
    if not client_id:
        return None
    c = _register.get().get(client_id)
    return c if c is not None and c.enabled else None


def loaded_register() -> dict[str, RegisteredClient]:
    """The whole register (disabled systems included), by client_id, loaded if need be (in an
    application context, as ``get_client``). Never changed in place: a change anywhere makes a
    new one."""
    return _register.get()


def current_register(app: Flask) -> dict[str, RegisteredClient] | None:
    """The whole register (disabled systems included) when it is held and current, without an
    application context; None when ``get_client`` would have to load it (``CachedLoader.current``)."""
    return _register.current(app)


def is_enabled(client_id: str | None) -> bool:
    return get_client(client_id) is not None


def _changed() -> None:
    _register.invalidate()


# ---------------------------------------------------------------- registration


_REGISTRATION_HOOKS: list = []


def on_registration(hook) -> None:
    """``hook(row, settings)`` fills a new client's row from the extra registration settings
    (``create_client(**settings)``); registered at import by the modules that own them."""
    if hook not in _REGISTRATION_HOOKS:
        _REGISTRATION_HOOKS.append(hook)


TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # RFC 8693 (idp.token_exchange)
CIBA = "urn:openid:params:grant-type:ciba"  # OpenID CIBA (idp.ciba)
CIBA_DELIVERY_MODES = ("poll",)


def _exchange_rules(grant_types, auth_method) -> None:
    if TOKEN_EXCHANGE in grant_types and auth_method == "none":
        raise InvalidGrantType("a public client cannot use token exchange")


def _ciba_rules(grant_types, auth_method) -> None:
    if CIBA in grant_types and auth_method == "none":
        raise InvalidGrantType("a public client cannot use CIBA")


def check_exchange_targets(targets, grant_types, own_client_id: str | None = None) -> list[str]:
    """The exchange allow-list, checked: each entry is the client_id of a registered system or
    an absolute https URI (a resource); only for systems registered for the grant."""
    out: list[str] = []
    for raw in targets or ():
        target = (raw or "").strip()
        if not target:
            continue
        if "://" in target:
            check_uri(target, "exchange target")
        else:
            if target == own_client_id:
                raise InvalidGrantType("a system cannot be its own exchange target", "invalid_exchange_target")
            if db.session.execute(select(Client.id).where(Client.client_id == target)).first() is None:
                raise InvalidExchangeTarget(f"exchange target {target!r} is neither a registered client_id nor an "
                                      "absolute URI")
        out.append(target)
    if out and TOKEN_EXCHANGE not in grant_types:
        raise InvalidDeliveryMode(f"exchange targets need the grant type {TOKEN_EXCHANGE}")
    return list(dict.fromkeys(out))


def ciba_delivery_mode(mode: str | None, grant_types) -> str | None:
    """The client's ``backchannel_token_delivery_mode``: poll (the default) for CIBA clients."""
    if CIBA not in grant_types:
        if mode:
            raise InvalidGrantType(f"a token delivery mode needs the grant type {CIBA}")
        return None
    mode = mode or "poll"
    if mode not in CIBA_DELIVERY_MODES:
        raise InvalidDeliveryMode(f"backchannel token delivery mode {mode!r} is not supported (only poll)")
    return mode


def _validate(grant_types, scopes, auth_method, redirect_uris, id_token_alg) -> None:
    for g in grant_types:
        if g not in GRANT_TYPES:
            raise InvalidGrantType(f"unknown grant type {g!r} (one of {', '.join(GRANT_TYPES)})")
    for s in scopes:
        if s not in SCOPES:
            raise InvalidScope(f"unknown scope {s!r} (one of {', '.join(SCOPES)})")
    if auth_method not in AUTH_METHODS:
        raise InvalidAuthMethod(f"unknown token endpoint auth method {auth_method!r}")
    if id_token_alg not in ID_TOKEN_ALGS:
        raise InvalidAlg(f"unsupported ID token algorithm {id_token_alg!r}")
    if "authorization_code" in grant_types and not redirect_uris:
        raise InvalidRedirectUri("the authorization_code grant needs at least one redirect URI")
    if auth_method == "none" and "client_credentials" in grant_types:
        raise InvalidGrantType("a public client cannot use client_credentials")
    _exchange_rules(grant_types, auth_method)
    _ciba_rules(grant_types, auth_method)


def create_client(*, name: str, department: str, redirect_uris: list[str] | tuple = (),
                  grant_types: list[str] | tuple = ("authorization_code", "refresh_token"),
                  scopes: list[str] | tuple = ("openid", "profile"), post_logout_redirect_uris=(),
                  backchannel_logout_uri: str | None = None, first_party: bool = False,
                  frontchannel_logout_uri: str | None = None,
                  token_endpoint_auth_method: str = "client_secret_basic",  # noqa: S107
                  id_token_signed_response_alg: str = "RS256",  # noqa: S107
                  introspection_allowed: bool = False,
                  function: str = "", scope_of_use: str = "", approver: str = "",
                  approval_date: date | None = None, funding_source: str = "", contact: str = "",
                  client_id: str | None = None, actor: str = "admin",
                  exchange_targets: list[str] | tuple = (),
                  backchannel_token_delivery_mode: str | None = None, jwks: dict | None = None,
                  jwks_uri: str | None = None, require_par: bool = False,
                  require_signed_request_object: bool = False, profile: str = "",
                  **modern) -> tuple[Client, str | None]:
    """Register a system; returns the row and its secret (shown once, None for public clients
    and private_key_jwt clients).

    ``modern``: require_dpop, subject_type, sector_identifier_uri (its listed URIs fetched
    beforehand: ``sector_uris``), web_origins, allowed_resources (idp/modern_clients.py)."""
    name, department = (name or "").strip(), (department or "").strip()
    if not name or not department:
        raise InvalidClientMetadata("a system needs a name and a department")
    redirect_uris = [check_uri(u, "redirect URI") for u in redirect_uris]
    post_logout = [check_uri(u, "post-logout redirect URI") for u in post_logout_redirect_uris]
    if backchannel_logout_uri:
        backchannel_logout_uri = check_uri(backchannel_logout_uri, "back-channel logout URI")
    if frontchannel_logout_uri:
        frontchannel_logout_uri = check_uri(frontchannel_logout_uri, "front-channel logout URI")
    grant_types = list(dict.fromkeys(grant_types))
    scopes = list(dict.fromkeys(scopes))
    _validate(grant_types, scopes, token_endpoint_auth_method, redirect_uris, id_token_signed_response_alg)
    exchange_targets = check_exchange_targets(exchange_targets, grant_types, own_client_id=client_id)
    backchannel_token_delivery_mode = ciba_delivery_mode(backchannel_token_delivery_mode, grant_types)
    jwks, jwks_uri = client_auth.check_keys(jwks, jwks_uri, token_endpoint_auth_method,
                                            require_signed_request_object)
    require_par = fapi.check_registration(profile, token_endpoint_auth_method, grant_types, require_par)
    if client_id and db.session.execute(select(Client.id).where(Client.client_id == client_id)).first():
        raise ClientExists(f"client_id {client_id!r} is taken")
    secret = None if token_endpoint_auth_method in ("none", "private_key_jwt") else token(32)
    now = utcnow()
    row = Client(
        client_id=client_id or ("tb_" + token(12)), secret_hash=digest(secret) if secret else None,
        secret_rotated_at=now if secret else None, name=name, department=department, function=function,
        scope_of_use=scope_of_use, approver=approver, approval_date=approval_date,
        funding_source=funding_source, contact=contact, redirect_uris=redirect_uris,
        post_logout_redirect_uris=post_logout, backchannel_logout_uri=backchannel_logout_uri,
        frontchannel_logout_uri=frontchannel_logout_uri or None,
        grant_types=grant_types, scopes=scopes, token_endpoint_auth_method=token_endpoint_auth_method,
        id_token_signed_response_alg=id_token_signed_response_alg, first_party=first_party,
        introspection_allowed=introspection_allowed, enabled=True, created_at=now, updated_at=now,
        exchange_targets=exchange_targets, backchannel_token_delivery_mode=backchannel_token_delivery_mode,
        jwks=jwks, jwks_uri=jwks_uri, require_par=require_par,
        require_signed_request_object=require_signed_request_object, profile=profile or "",
    )
    for hook in _REGISTRATION_HOOKS:  # the modern profile's settings (idp.modern_clients)
        hook(row, modern)
    db.session.add(row)
    db.session.flush()
    audit.record("client.created", actor=actor, object=f"client:{row.client_id}",
                 detail={"name": name, "department": department, "scopes": scopes,
                         "grant_types": grant_types, "auth_method": token_endpoint_auth_method,
                         "profile": profile or "", "require_par": require_par,
                         **({"exchange_targets": exchange_targets} if exchange_targets else {})})
    _after_commit(_changed)
    return row, secret


def get_row(client_id: str) -> Client:
    row = db.session.execute(select(Client).where(Client.client_id == client_id)).scalar_one_or_none()
    if row is None:
        raise UnknownClient(f"no registered system {client_id!r}")
    return row


UPDATABLE = ("name", "department", "function", "scope_of_use", "approver", "approval_date",
             "funding_source", "contact", "redirect_uris", "post_logout_redirect_uris",
             "backchannel_logout_uri", "frontchannel_logout_uri", "grant_types", "scopes", "first_party",
             "introspection_allowed",
             "id_token_signed_response_alg", "token_endpoint_auth_method",
             "exchange_targets", "backchannel_token_delivery_mode")


def update_client(client_id: str, actor: str = "admin", **changes) -> Client:
    row = get_row(client_id)
    unknown = set(changes) - set(UPDATABLE)
    if unknown:
        raise InvalidClientMetadata(f"cannot change {', '.join(sorted(unknown))}")
    if "redirect_uris" in changes:
        changes["redirect_uris"] = [check_uri(u, "redirect URI") for u in changes["redirect_uris"]]
    if "post_logout_redirect_uris" in changes:
        changes["post_logout_redirect_uris"] = [check_uri(u, "post-logout redirect URI")
                                                for u in changes["post_logout_redirect_uris"]]
    if changes.get("backchannel_logout_uri"):
        changes["backchannel_logout_uri"] = check_uri(changes["backchannel_logout_uri"],
                                                      "back-channel logout URI")
    if changes.get("frontchannel_logout_uri"):
        changes["frontchannel_logout_uri"] = check_uri(changes["frontchannel_logout_uri"],
                                                       "front-channel logout URI")
    merged = {k: changes.get(k, getattr(row, k)) for k in UPDATABLE}
    _validate(merged["grant_types"], merged["scopes"], merged["token_endpoint_auth_method"],
              merged["redirect_uris"], merged["id_token_signed_response_alg"])
    if "exchange_targets" in changes or "grant_types" in changes:
        changes["exchange_targets"] = check_exchange_targets(
            changes.get("exchange_targets", row.exchange_targets or []), merged["grant_types"], own_client_id=client_id)
    if "backchannel_token_delivery_mode" in changes or "grant_types" in changes:
        changes["backchannel_token_delivery_mode"] = ciba_delivery_mode(
            changes.get("backchannel_token_delivery_mode", row.backchannel_token_delivery_mode),
            merged["grant_types"])
    client_auth.check_keys(row.jwks, row.jwks_uri, merged["token_endpoint_auth_method"],
                           row.require_signed_request_object)
    fapi.check_registration(row.profile, merged["token_endpoint_auth_method"], merged["grant_types"],
                            row.require_par)
    for k, v in changes.items():
        setattr(row, k, v)
    row.updated_at = utcnow()
    audit.record("client.updated", actor=actor, object=f"client:{client_id}",
                 detail={"changed": sorted(changes)})
    _after_commit(_changed)
    return row


def rotate_secret(client_id: str, actor: str = "admin") -> str:
    row = get_row(client_id)
    if row.token_endpoint_auth_method == "none":
        raise InvalidClientMetadata("a public client has no secret")
    if row.token_endpoint_auth_method == "private_key_jwt":
        raise InvalidClientMetadata("a private_key_jwt client has no secret")
    secret = token(32)
    row.secret_hash = digest(secret)
    row.secret_rotated_at = row.updated_at = utcnow()
    audit.record("client.secret_rotated", actor=actor, object=f"client:{client_id}")
    _after_commit(_changed)
    return secret


def set_enabled(client_id: str, enabled: bool, actor: str = "admin") -> Client:
    """Disabling takes effect at once: its tokens stop working on every endpoint."""
    row = get_row(client_id)
    row.enabled = enabled
    row.updated_at = utcnow()
    audit.record("client.enabled" if enabled else "client.disabled", actor=actor,
                 object=f"client:{client_id}")
    _after_commit(_changed)
    return row


def list_rows() -> list[Client]:
    return list(db.session.execute(select(Client).order_by(Client.department, Client.name)).scalars())


# ---------------------------------------------------------------- usage


class UsageCounter:
    """Per-worker counters of log-ins and tokens per system per day, written in batches.

    One database round trip per token would cost the token endpoint most of its
    throughput; counts are added in memory and upserted every few seconds.
    """

    def __init__(self):
        self._lock = threading.Lock()
        # held from taking the counts to their commit: a flush that finds nothing to write
        # returns only after another thread's write of earlier counts has committed, so a count
        # added before a request's end is in the database when that request's flush returns
        self._flush_lock = threading.Lock()
        self._counts: dict[tuple[str, date], list] = {}
        self._last_flush = time.monotonic()
        # the thread inside flush(): the write's own application context ends by running the
        # after-session hooks, this counter's maybe_flush among them; in that thread it must
        # return at once (the flush lock is not re-entrant: it waited for itself for ever)
        self._flushing = threading.local()

    def add(self, client_id: str, kind: str) -> None:
        now = utcnow()
        key = (client_id, now.date())
        with self._lock:
            c = self._counts.setdefault(key, [0, 0, now])
            c[0 if kind == "login" else 1] += 1
            c[2] = now

    def maybe_flush(self, app: Flask) -> None:
        if getattr(self._flushing, "active", False):
            return  # the end of this thread's own write (see __init__): the next request flushes
        if self._counts and time.monotonic() - self._last_flush >= app.config["TONGBAN_USAGE_FLUSH_SECONDS"]:
            self.flush(app)

    def flush(self, app: Flask | None = None) -> None:
        app = app or current_app._get_current_object()  # type: ignore[attr-defined]
        if getattr(self._flushing, "active", False):
            return  # called again from this thread's own write: its counts go with the next flush
        with self._flush_lock:
            self._flushing.active = True
            try:
                with self._lock:
                    counts, self._counts = self._counts, {}
                    self._last_flush = time.monotonic()
                if not counts:
                    return
                try:
                    self._write(app, counts)
                except Exception:
                    self._put_back(counts)  # a busy database loses no counts: the next flush retries
                    raise
            finally:
                self._flushing.active = False

    def _write(self, app: Flask, counts: dict[tuple[str, date], list]) -> None:
        with app.app_context(), db.engine.begin() as conn:
            for (client_id, day), (logins, tokens, last) in sorted(counts.items()):
                conn.execute(upsert(
                    conn, ClientUsage,
                    dict(client_id=client_id, day=day, logins=logins, tokens=tokens, last_used=last),
                    ["client_id", "day"],
                    _add_usage(logins, tokens)))

    def _put_back(self, counts: dict[tuple[str, date], list]) -> None:
        with self._lock:
            for key, (logins, tokens, last) in counts.items():
                c = self._counts.setdefault(key, [0, 0, last])
                c[0] += logins
                c[1] += tokens
                c[2] = max(c[2], last)


def _add_usage(logins: int, tokens: int):
    """The upsert's update: add the counts to today's row, keep the latest use."""

    def update(excluded) -> dict:
        return {"logins": literal_column("client_usage.logins") + logins,
                "tokens": literal_column("client_usage.tokens") + tokens,
                "last_used": func.coalesce(excluded.last_used, literal_column("client_usage.last_used"))}

    return update


usage = UsageCounter()


def record_usage(client_id: str, kind: str) -> None:
    usage.add(client_id, kind)


def flush_usage_if_due(app: Flask) -> None:
    """The end of every request: the counts written when ``TONGBAN_USAGE_FLUSH_SECONDS`` passed.
    Runs after the request's session is closed (an ``after_session`` hook), or at the end of a
    lean answer given without an application context (``idp.fast``), which holds no session."""
    try:
        usage.maybe_flush(app)
    except Exception:  # usage counting must never fail a request
        app.logger.exception("usage flush failed")


def init_usage(app: Flask) -> None:
    from tongban.extensions import after_session

    def _flush():
        # after the request's session is closed: on SQLite its write lock (if any) is released,
        # so this short upsert never waits for the request that triggered it
        flush_usage_if_due(app)

    after_session(app, _flush)

    def _final():
        with contextlib.suppress(Exception):  # the interpreter is shutting down
            usage.flush(app)

    atexit.register(_final)


@dataclass
class ReportRow:
    client_id: str
    name: str
    department: str
    function: str
    approver: str
    approval_date: str | None
    funding_source: str
    contact: str
    enabled: bool
    created_at: str
    last_used: str | None
    logins_30d: int
    tokens_30d: int
    dormant: bool


def report(dormant_days: int = 90) -> list[ReportRow]:
    from tongban.extensions import session_holds_sqlite_write

    if not session_holds_sqlite_write():  # (else this process's latest counts show a few seconds later)
        usage.flush()
    now = utcnow()
    since = (now - timedelta(days=30)).date()
    cutoff = now - timedelta(days=dormant_days)
    last = {client_id: used for client_id, used in db.session.execute(
        select(ClientUsage.client_id, func.max(ClientUsage.last_used)).group_by(ClientUsage.client_id))}
    recent = {cid: (lg or 0, tk or 0) for cid, lg, tk in db.session.execute(
        select(ClientUsage.client_id, func.sum(ClientUsage.logins), func.sum(ClientUsage.tokens))
        .where(ClientUsage.day >= since).group_by(ClientUsage.client_id)).all()}
    out = []
    for row in list_rows():
        last_used: datetime | None = last.get(row.client_id)
        dormant = (last_used or row.created_at) < cutoff
        lg, tk = recent.get(row.client_id, (0, 0))
        out.append(ReportRow(
            client_id=row.client_id, name=row.name, department=row.department, function=row.function,
            approver=row.approver, approval_date=row.approval_date.isoformat() if row.approval_date else None,
            funding_source=row.funding_source, contact=row.contact, enabled=row.enabled,
            created_at=row.created_at.isoformat(timespec="seconds") + "Z",
            last_used=last_used.isoformat(timespec="seconds") + "Z" if last_used else None,
            logins_30d=int(lg), tokens_30d=int(tk), dormant=dormant))
    return out
