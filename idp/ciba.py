"""OpenID Connect Client-Initiated Backchannel Authentication (CIBA Core 1.0), poll mode.

A window clerk's system (a confidential client registered with the grant
``urn:openid:params:grant-type:ciba`` and ``backchannel_token_delivery_mode`` poll)
asks ``/oauth/bc-authorize`` to authenticate the citizen in front of the window,
naming them by ID number (``login_hint``) and showing them a ``binding_message``
(e.g. the number on the clerk's screen). The citizen's phone, where they are logged in
to Tongban, shows the request on ``/ciba`` (linked from the account page) with the
system's register name and department and the binding message; the citizen approves
or denies there. The clerk's system polls the token endpoint with
``grant_type=urn:openid:params:grant-type:ciba`` and the ``auth_req_id``.

``auth_req_id`` is stored only as its SHA-256 digest and exchanged once (``UPDATE ...
WHERE state = 'approved'``). Polls sooner than the interval answer ``slow_down`` and add
five seconds (as for the device grant). No session is created on the clerk's machine:
the tokens belong to the phone session that approved (``sid``, ``auth_time``, ``acr``,
``amr`` are that session's), so ending it ends them, like the device grant's.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    AccessDeniedError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6749.hooks import hooked
from authlib.oauth2.rfc8628 import AuthorizationPendingError, ExpiredTokenError, SlowDownError
from flask import current_app
from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, Text, func, select, update
from sqlalchemy.orm import Mapped, mapped_column, relationship

from people.assurance import LEVELS, level_of
from people.models import LoginSession, User
from people.sessions import is_live
from tongban import audit, outbox, ratelimit
from tongban.clock import digest, token, utcnow
from tongban.errors import ValidationError
from tongban.extensions import db

from . import clients as registry
from . import decisions, tokens
from .context import TokenContext, grant_context
from .device import DeviceOpenID
from .resources import GrantExtension

GRANT_TYPE = registry.CIBA
DELIVERY_MODES = registry.CIBA_DELIVERY_MODES
SLOW_DOWN_STEP = 5
_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}  # controls, bidi overrides, unassigned


class CibaRequest(db.Model):
    """One backchannel authentication request; ``auth_req_id`` only as a digest."""

    __tablename__ = "ciba_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    auth_req_id_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(Text, default="")
    acr_values: Mapped[str | None] = mapped_column(String(100), nullable=True)
    binding_message: Mapped[str | None] = mapped_column(String(200), nullable=True)
    state: Mapped[str] = mapped_column(String(12), default="pending")  # pending|approved|denied|consumed
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    poll_interval: Mapped[int] = mapped_column(Integer)
    last_polled_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # the decision, and the session it was made in
    sid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    auth_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    acr: Mapped[str | None] = mapped_column(String(10), nullable=True)
    amr: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    consumed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    user: Mapped[User] = relationship()

    def is_expired(self, now: datetime | None = None) -> bool:
        return (now or utcnow()) >= self.expires_at


class CibaError(Exception):
    """A /ciba step that cannot proceed; ``reason`` is machine-readable."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _cfg(name: str) -> int:
    return int(current_app.config[name])


# ---------------------------------------------------------------- the register


# ---------------------------------------------------------------- /oauth/bc-authorize


class UnknownUserIdError(OAuth2Error):
    error = "unknown_user_id"


class InvalidBindingMessageError(OAuth2Error):
    error = "invalid_binding_message"


class TooManyRequestsError(OAuth2Error):
    error = "slow_down"
    status_code = 429


class AccessDenied403(AccessDeniedError):
    status_code = 403  # CIBA Core §13


def check_binding_message(message: str | None) -> str | None:
    if message is None or message == "":
        return None
    limit = _cfg("TONGBAN_CIBA_BINDING_MESSAGE_MAX")
    if len(message) > limit:
        raise InvalidBindingMessageError(f"binding_message: at most {limit} characters")
    if message != message.strip() or any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in message):
        raise InvalidBindingMessageError("binding_message contains control or formatting characters")
    return message


def _find_user(login_hint: str) -> User | None:
    from tongban.identifiers import parse_id_number

    try:
        ident = parse_id_number(login_hint).value
    except ValidationError:
        return None
    user = db.session.execute(select(User).where(User.id_number == ident)).scalar_one_or_none()
    return None if user is None or user.disabled else user


class BackchannelAuthenticationEndpoint:
    """CIBA Core §7: the authentication request; §7.3 the acknowledgement."""

    ENDPOINT_NAME = "backchannel_authentication"
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def __init__(self, server):
        self.server = server

    def create_endpoint_request(self, request):
        return self.server.create_oauth2_request(request)

    def __call__(self, request):
        client = self.server.authenticate_client(request, self.CLIENT_AUTH_METHODS, self.ENDPOINT_NAME)
        request.client = client
        try:
            return self._respond(request, client)
        except OAuth2Error as error:
            audit.record_later("ciba.refused", actor=f"client:{client.client_id}", outcome="failure",
                               detail={"error": error.error, "reason": error.description or ""})
            raise

    def _respond(self, request, client):
        if not client.check_grant_type(GRANT_TYPE) or client.backchannel_token_delivery_mode != "poll":
            raise UnauthorizedClientError("this system is not registered for CIBA (poll mode)")
        data = request.payload.data
        for unsupported in ("request", "client_notification_token", "user_code", "id_token_hint",
                            "login_hint_token"):
            if unsupported in data:
                raise InvalidRequestError(f"{unsupported} is not supported; name the person with login_hint "
                                          "(the ID number)")
        scopes = (data.get("scope") or "").split()
        if "openid" not in scopes:
            raise InvalidScopeError("scope must include openid")
        unknown = [s for s in scopes if s not in client.scope_set]
        if unknown:
            raise InvalidScopeError(f"not registered for this system: {' '.join(unknown)}")
        acr_values = (data.get("acr_values") or "").split()
        if any(v not in LEVELS for v in acr_values) or len(acr_values) > len(LEVELS):
            raise InvalidRequestError("acr_values: space-separated levels L1 ... L5")
        message = check_binding_message(data.get("binding_message"))
        lifetime = _cfg("TONGBAN_CIBA_LIFETIME")
        raw_expiry = data.get("requested_expiry")
        if raw_expiry not in (None, ""):
            if not raw_expiry.isascii() or not raw_expiry.isdigit() or not 0 < int(raw_expiry) <= _cfg(
                    "TONGBAN_CIBA_MAX_LIFETIME"):
                raise InvalidRequestError(f"requested_expiry: whole seconds, 1 ... {_cfg('TONGBAN_CIBA_MAX_LIFETIME')}")
            lifetime = int(raw_expiry)
        hint = data.get("login_hint")
        if not hint:
            raise InvalidRequestError("login_hint (the person's ID number) is required")
        hit = ratelimit.hit(f"ciba:{client.client_id}", _cfg("TONGBAN_CIBA_RATE_PER_CLIENT"),
                            _cfg("TONGBAN_CIBA_RATE_WINDOW"))
        if not hit.allowed:
            raise TooManyRequestsError(f"too many requests; try again in {hit.retry_after} seconds")
        user = _find_user(hint)
        if user is None:
            raise UnknownUserIdError("no active account has this ID number")
        now = utcnow()
        waiting = db.session.execute(select(func.count(CibaRequest.id)).where(
            CibaRequest.user_id == user.id, CibaRequest.state == "pending", CibaRequest.expires_at > now)).scalar()
        if waiting >= _cfg("TONGBAN_CIBA_PENDING_PER_USER"):
            raise AccessDenied403("this person has too many requests waiting for an answer")
        auth_req_id = token(32)
        interval = _cfg("TONGBAN_CIBA_INTERVAL")
        row = CibaRequest(auth_req_id_hash=digest(auth_req_id), client_id=client.client_id, user_id=user.id,
                          scope=" ".join(dict.fromkeys(scopes)), acr_values=" ".join(acr_values) or None,
                          binding_message=message, state="pending", created_at=now,
                          expires_at=now + timedelta(seconds=lifetime), poll_interval=interval)
        db.session.add(row)
        db.session.flush()
        audit.record("ciba.requested", actor=f"client:{client.client_id}", object=f"ciba:{row.id}",
                     detail={"user": user.sub, "scope": row.scope, "binding_message": message or "",
                             "acr_values": row.acr_values or ""})
        return 200, {"auth_req_id": auth_req_id, "expires_in": lifetime, "interval": interval}, [
            ("Content-Type", "application/json"), ("Cache-Control", "no-store"), ("Pragma", "no-cache")]


# ---------------------------------------------------------------- the grant (CIBA Core §10-11)


class CibaGrant(grants.BaseGrant, grants.TokenEndpointMixin):
    GRANT_TYPE = GRANT_TYPE
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def validate_token_request(self):
        client = self.authenticate_token_endpoint_client()
        self.request.client = client
        if not client.check_grant_type(GRANT_TYPE):
            raise UnauthorizedClientError("this system is not registered for CIBA")
        auth_req_id = self.request.payload.data.get("auth_req_id")
        if not auth_req_id:
            raise InvalidRequestError("auth_req_id is required")
        row = db.session.execute(select(CibaRequest).where(
            CibaRequest.auth_req_id_hash == digest(auth_req_id))).scalar_one_or_none()
        if row is None or row.state == "consumed" or row.client_id != client.client_id:
            raise InvalidGrantError("unknown or already used auth_req_id")
        if row.state == "denied":
            raise AccessDeniedError("the person denied the request")
        if row.is_expired():
            raise ExpiredTokenError("the request expired; start a new one")
        if row.state == "pending":
            if _note_poll(row):
                raise SlowDownError(f"poll at most every {row.poll_interval + SLOW_DOWN_STEP} seconds")
            raise AuthorizationPendingError("the person has not answered yet")
        # approved: claim it atomically, of two concurrent polls exactly one gets tokens
        won = db.session.execute(update(CibaRequest).where(
            CibaRequest.id == row.id, CibaRequest.state == "approved"
        ).values(state="consumed", consumed_at=utcnow()).execution_options(synchronize_session=False)).rowcount
        if won != 1:
            raise InvalidGrantError("unknown or already used auth_req_id")
        user = db.session.get(User, row.user_id)
        if user is None or user.disabled:
            raise AccessDeniedError("the account is not active")

        if row.sid and not is_live(row.sid):  # the citizen logged out (or the session ended) meanwhile
            raise AccessDeniedError("the session that approved has ended")
        grant_context().token = TokenContext(auth_time=row.auth_time, acr=row.acr, sid=row.sid, amr=row.amr,
                                             family_id=tokens.new_family_id())
        self.request.user = user
        self.request.credential = row

    @hooked
    def create_token_response(self):
        client, row = self.request.client, self.request.credential
        token = self.generate_token(user=self.request.user, scope=row.scope,
                                    include_refresh_token=client.check_grant_type("refresh_token"))
        self.save_token(token)
        audit.record("ciba.token_issued", actor=f"client:{row.client_id}", object=f"ciba:{row.id}",
                     detail={"user": self.request.user.sub, "scope": row.scope})
        return 200, token, self.TOKEN_RESPONSE_HEADER


def _note_poll(row: CibaRequest) -> bool:
    """Record this poll; True when it came sooner than the interval (which then grows by 5 s).
    Its own transaction: the token endpoint rolls back the pending answer's."""
    now = utcnow()
    with db.engine.begin() as conn:
        last, interval = conn.execute(select(CibaRequest.last_polled_at, CibaRequest.poll_interval)
                                      .where(CibaRequest.id == row.id)).one()
        too_fast = last is not None and now - last < timedelta(seconds=interval)
        values = {"last_polled_at": now}
        if too_fast:
            values["poll_interval"] = interval + SLOW_DOWN_STEP
        polled = CibaRequest.last_polled_at
        moved = conn.execute(update(CibaRequest).where(
            CibaRequest.id == row.id, polled.is_(None) if last is None else polled == last,
        ).values(**values)).rowcount
    row.poll_interval = values.get("poll_interval", interval)
    return too_fast or not moved


class CibaOpenID(DeviceOpenID):
    """ID tokens as for the device grant: the approving phone session's ``sid``,
    ``auth_time``, ``acr``, ``amr`` (``request.credential`` is the CibaRequest row)."""


def register(server, code_flow) -> None:
    """Called once from ``idp.server.init_server`` with the code flow's OpenID extension."""
    server.register_grant(CibaGrant, [CibaOpenID(code_flow), GrantExtension()])  # RFC 8707, RFC 9449 rules
    server.register_endpoint(BackchannelAuthenticationEndpoint)


# ---------------------------------------------------------------- the citizen's side (/ciba)


def pending_for(user_id: int) -> list[CibaRequest]:
    return list(db.session.execute(select(CibaRequest).where(
        CibaRequest.user_id == user_id, CibaRequest.state == "pending", CibaRequest.expires_at > utcnow())
        .order_by(CibaRequest.created_at)).scalars())


def count_pending(user_id: int) -> int:
    return db.session.execute(select(func.count(CibaRequest.id)).where(
        CibaRequest.user_id == user_id, CibaRequest.state == "pending",
        CibaRequest.expires_at > utcnow())).scalar() or 0


def required_level(row: CibaRequest) -> int:
    """The lowest level among ``acr_values`` (any of them satisfies the request), 0 if none."""

    levels = [level_of(v) for v in (row.acr_values or "").split()]
    return min(levels) if levels else 0


def is_fresh(sess: LoginSession) -> bool:
    return utcnow() - sess.auth_time <= timedelta(minutes=_cfg("TONGBAN_CIBA_FRESH_MINUTES"))


def decide(request_id: int, sess: LoginSession, approve: bool) -> CibaRequest:
    """The citizen's answer, recorded once; only the account the request names may answer."""

    row = db.session.get(CibaRequest, request_id)
    if row is None:
        raise CibaError("unknown")
    if row.user_id != sess.user_id:
        audit.record_later("ciba.wrong_account", actor=f"user:{sess.user.sub}", object=f"ciba:{row.id}",
                           outcome="failure")
        raise CibaError("unknown")  # the same answer as for a request that does not exist
    if row.state != "pending":
        raise CibaError("used")
    now = utcnow()
    if row.is_expired(now):
        raise CibaError("expired")
    if approve and level_of(sess.acr) < required_level(row):
        raise CibaError("level")
    return decisions.record(CibaRequest, row, sess, approve, kind="ciba", error=CibaError,
                            where=(CibaRequest.user_id == sess.user_id,), detail={"acr": sess.acr})


_purge_chore = outbox.purge_expired(CibaRequest)

__all__ = ["GRANT_TYPE", "CibaError", "CibaGrant", "CibaRequest", "decide", "pending_for", "register"]
