"""The device authorization grant (RFC 8628) for self-service kiosks.

A kiosk (a registered system with the ``urn:ietf:params:oauth:grant-type:device_code``
grant; public kiosks use token endpoint auth method ``none``) asks
``/oauth/device_authorization`` for a device code and a short user code. The citizen
opens ``/device`` on a phone where they are logged in, enters (or scans) the user code,
sees which system of which department asks, and approves or denies. The kiosk polls the
token endpoint and receives tokens as in the code flow: an ID token under ``openid``,
a refresh token when it is registered for ``refresh_token``.

Device and user codes are stored only as SHA-256 digests; a device code is used once
(``UPDATE ... WHERE state = 'approved'``). Polling faster than the interval answers
``slow_down`` and adds five seconds to the interval (RFC 8628 §3.5). Poll bookkeeping
is committed in its own transaction: the token endpoint rolls back failed requests, and
a ``slow_down`` must still count.

The kiosk's tokens belong to the phone session that approved them (``sid``, ``acr``,
``auth_time``, ``amr``): ending that session ends the kiosk's refresh tokens too, and
the kiosk is noted among the session's systems for logout everywhere.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta

from authlib.oauth2.rfc6749.errors import AccessDeniedError, InvalidGrantError, UnauthorizedClientError
from authlib.oauth2.rfc8628 import (
    DEVICE_CODE_GRANT_TYPE,
    DeviceAuthorizationEndpoint,
    DeviceCodeGrant,
    DeviceCredentialMixin,
)
from authlib.oidc.core.grants.code import OpenIDToken
from flask import current_app
from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column, relationship

from people.models import LoginSession, User
from tongban import audit, outbox
from tongban.clock import digest, utcnow
from tongban.extensions import db

from . import clients as registry
from . import decisions, tokens
from .context import TokenContext, grant_context
from .resources import GrantExtension

# RFC 8628 §6.1: base-20 consonants (no vowels: no words; no 0/O, 1/I/L confusion), 8 characters
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
DEFAULT_LIFETIME = 600
DEFAULT_INTERVAL = 5
SLOW_DOWN_STEP = 5


class DeviceAuthorization(db.Model, DeviceCredentialMixin):
    """One device authorization request; codes only as digests."""

    __tablename__ = "device_authorizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    scope: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(12), default="pending")  # pending|approved|denied|consumed
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    poll_interval: Mapped[int] = mapped_column(Integer, default=DEFAULT_INTERVAL)  # seconds; grows on slow_down
    last_polled_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # the decision, and the session it was made in
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=True)
    sid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    auth_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    acr: Mapped[str | None] = mapped_column(String(10), nullable=True)
    amr: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    consumed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    user: Mapped[User | None] = relationship()

    # Authlib DeviceCredentialMixin
    def get_client_id(self):
        return self.client_id

    def get_scope(self):
        return self.scope

    def get_user_code(self):
        return self  # the user code itself is not kept; ``query_user_grant`` reads the row

    def is_expired(self):
        return utcnow() >= self.expires_at


class DeviceError(Exception):
    """A /device step that cannot proceed; ``reason`` is machine-readable."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------- user codes


def new_user_code() -> str:
    raw = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:]}"


def normalise_user_code(text: str | None) -> str | None:
    """What a person typed, as the canonical ``XXXX-XXXX``: case, spaces and dashes ignored."""
    raw = re.sub(r"[\s\-_.]", "", (text or "").upper())
    if len(raw) != USER_CODE_LENGTH or any(c not in USER_CODE_ALPHABET for c in raw):
        return None
    return f"{raw[:4]}-{raw[4:]}"


def _config(name: str, default: int) -> int:
    return int(current_app.config.get(name, default))


# ---------------------------------------------------------------- the endpoint (RFC 8628 §3.1-3.2)


class DeviceEndpoint(DeviceAuthorizationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none", "private_key_jwt"]

    @property
    def EXPIRES_IN(self):  # Authlib reads these as attributes
        return _config("TONGBAN_DEVICE_CODE_LIFETIME", DEFAULT_LIFETIME)

    @property
    def INTERVAL(self):
        return _config("TONGBAN_DEVICE_INTERVAL", DEFAULT_INTERVAL)

    def create_endpoint_response(self, request):
        client = self.authenticate_client(request)
        if not client.check_grant_type(DEVICE_CODE_GRANT_TYPE):
            raise UnauthorizedClientError("this system is not registered for the device authorization grant")
        return super().create_endpoint_response(request)

    def generate_user_code(self):
        return new_user_code()

    def get_verification_uri(self):
        return f"{current_app.config['TONGBAN_ISSUER']}/device"

    def save_device_credential(self, client_id, scope, data):
        client = registry.get_client(client_id)
        now = utcnow()
        row = DeviceAuthorization(
            device_code_hash=digest(data["device_code"]), user_code_hash=digest(data["user_code"]),
            client_id=client_id, scope=client.get_allowed_scope(scope) if client else "", state="pending",
            created_at=now, expires_at=now + timedelta(seconds=data["expires_in"]), poll_interval=data["interval"])
        db.session.add(row)
        db.session.flush()
        audit.record("device.requested", actor=f"client:{client_id}", object=f"device:{row.id}",
                     detail={"scope": row.scope})


# ---------------------------------------------------------------- the grant (RFC 8628 §3.4-3.5)


class DeviceGrant(DeviceCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none", "private_key_jwt"]

    def authenticate_token_endpoint_client(self):
        client = super().authenticate_token_endpoint_client()
        self.request.client = client
        return client

    def query_device_credential(self, device_code):
        row = db.session.execute(select(DeviceAuthorization).where(
            DeviceAuthorization.device_code_hash == digest(device_code))).scalar_one_or_none()
        # RFC 6749 §5.2: an unknown, used or another client's code is an invalid grant
        if row is None or row.state == "consumed":
            raise InvalidGrantError("unknown or already used device_code")
        if row.client_id != self.request.client.client_id:
            raise InvalidGrantError("the device_code was issued to another client")
        return row

    def query_user_grant(self, row: DeviceAuthorization):
        if row.state == "denied":
            return None, False
        if row.state != "approved":
            return None
        # claim it atomically: of two concurrent polls exactly one gets tokens
        won = db.session.execute(update(DeviceAuthorization).where(  # type: ignore[attr-defined]
            DeviceAuthorization.id == row.id, DeviceAuthorization.state == "approved"
        ).values(state="consumed", consumed_at=utcnow()).execution_options(synchronize_session=False)).rowcount
        if won != 1:
            raise InvalidGrantError("device_code already used")
        user = db.session.get(User, row.user_id)
        if user is None or user.disabled:
            raise AccessDeniedError()
        grant_context().token = TokenContext(auth_time=row.auth_time, acr=row.acr, sid=row.sid, amr=row.amr,
                                             family_id=tokens.new_family_id())
        return user, True

    def should_slow_down(self, row: DeviceAuthorization):
        return _note_poll(row)

    def create_token_response(self):
        response = super().create_token_response()
        row = self.request.credential
        audit.record("device.token_issued", actor=f"client:{row.client_id}", object=f"device:{row.id}",
                     detail={"user": self.request.user.sub, "scope": row.scope})
        return response


def _note_poll(row: DeviceAuthorization) -> bool:
    """Record this poll; True when it came sooner than the interval (the interval grows by 5 s).

    Its own transaction: the token endpoint rolls back the pending answer's transaction.
    """
    now = utcnow()
    with db.engine.begin() as conn:
        current = conn.execute(select(DeviceAuthorization.last_polled_at, DeviceAuthorization.poll_interval)
                               .where(DeviceAuthorization.id == row.id)).one()
        last, interval = current
        too_fast = last is not None and now - last < timedelta(seconds=interval)
        values = {"last_polled_at": now}
        if too_fast:
            values["poll_interval"] = interval + SLOW_DOWN_STEP
        polled = DeviceAuthorization.last_polled_at
        moved = conn.execute(update(DeviceAuthorization).where(
            DeviceAuthorization.id == row.id, polled.is_(None) if last is None else polled == last,
        ).values(**values)).rowcount
    # a concurrent poll of the same code updated it first: this one was too fast as well
    return too_fast or not moved


class DeviceOpenID(OpenIDToken):
    """ID tokens for the device grant: as in the code flow, with the approving session's
    ``auth_time``, ``acr``, ``amr`` and ``sid`` (there is no nonce in RFC 8628)."""

    def __init__(self, code_flow: OpenIDToken):
        super().__init__()
        self._flow = code_flow  # the code flow's OpenID extension (idp.server.OpenIDConnect)

    def _code_flow(self):
        return self._flow

    def get_client_algorithm(self, client):
        return self._code_flow().get_client_algorithm(client)

    def resolve_client_private_key(self, client):
        return self._code_flow().resolve_client_private_key(client)

    def get_encode_header(self, client):
        return self._code_flow().get_encode_header(client)

    def get_client_claims(self, client):
        return self._code_flow().get_client_claims(client)

    def generate_user_info(self, user, scope):
        return self._code_flow().generate_user_info(user, scope)

    def get_compatible_claims(self, request):
        claims = super().get_compatible_claims(request)
        row: DeviceAuthorization = request.credential
        claims["azp"] = row.client_id
        if row.auth_time:
            claims["auth_time"] = row.auth_time
        if row.acr:
            claims["acr"] = row.acr
        if row.amr:
            claims["amr"] = row.amr.split()
        if row.sid:
            claims["sid"] = row.sid
        return claims


def register(server, code_flow: OpenIDToken) -> None:
    """Called once from ``idp.server.init_server`` with the code flow's OpenID extension."""
    server.register_grant(DeviceGrant, [DeviceOpenID(code_flow), GrantExtension()])  # RFC 8707, RFC 9449 rules
    server.register_endpoint(DeviceEndpoint)


# ---------------------------------------------------------------- the /device page (services)


def pending_by_user_code(user_code: str | None) -> DeviceAuthorization:
    code = normalise_user_code(user_code)
    if code is None:
        raise DeviceError("malformed")
    row = db.session.execute(select(DeviceAuthorization).where(
        DeviceAuthorization.user_code_hash == digest(code))).scalar_one_or_none()
    if row is None:
        raise DeviceError("unknown")
    if row.state != "pending":
        raise DeviceError("used")
    if row.is_expired():
        raise DeviceError("expired")
    return row


def decide(user_code: str | None, sess: LoginSession, approve: bool) -> DeviceAuthorization:
    """The citizen's answer, recorded once (a second answer to the same code loses)."""
    row = pending_by_user_code(user_code)
    return decisions.record(DeviceAuthorization, row, sess, approve, kind="device", error=DeviceError,
                            values={"user_id": sess.user_id})


__all__ = ["DeviceAuthorization", "DeviceError", "DeviceGrant", "DeviceOpenID", "decide", "new_user_code",
           "normalise_user_code", "pending_by_user_code", "register"]


_purge_chore = outbox.purge_expired(DeviceAuthorization)
