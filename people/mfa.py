"""Second factors: TOTP (with recovery codes), WebAuthn passkeys and SMS one-time codes.

Services flush; the request commits once. TOTP secrets are stored encrypted under
the instance KEK (they must be read back to check a code); recovery codes and SMS
codes only as digests. SMS goes out through a pluggable :class:`SmsSender`; the
shipped one queues it, sealed, in the ``sms_outbox`` table for a gateway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit

import pyotp
from flask import current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from keys.crypto import seal, unseal
from tongban import audit, ratelimit
from tongban import outbox as tb_outbox
from tongban.clock import digest, token, utcnow
from tongban.errors import TongbanError
from tongban.extensions import after_commit, db

from .errors import NoPendingTotp, NoPhone, NotSealedMessage, TotpExists
from .models import User

# ---------------------------------------------------------------- models


class TotpFactor(db.Model):
    """An authenticator app (RFC 6238); usable once confirmed with a first code."""

    __tablename__ = "mfa_totp"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    secret: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM(KEK) of the base32 secret
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # replay guard
    created_at: Mapped[datetime] = mapped_column(DateTime)


class RecoveryCode(db.Model):
    """Single-use codes for when the authenticator is lost; stored as digests."""

    __tablename__ = "mfa_recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Passkey(db.Model):
    """A WebAuthn credential (passkey or security key)."""

    __tablename__ = "mfa_passkeys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    credential_id: Mapped[str] = mapped_column(String(700), unique=True)  # base64url
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # COSE_Key
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    name: Mapped[str] = mapped_column(String(100), default="")
    transports: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class SmsCode(db.Model):
    """A one-time code sent by SMS: expiring, limited attempts, stored as an HMAC."""

    __tablename__ = "sms_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    purpose: Mapped[str] = mapped_column(String(20))  # login | phone
    salt: Mapped[str] = mapped_column(String(32))
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class SmsOutbox(db.Model):
    """Text messages written by the shipped sender (a gateway worker would drain it)."""

    __tablename__ = "sms_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


# ---------------------------------------------------------------- errors


class SecondFactorError(TongbanError):
    """A second factor was refused; ``code`` says why (bad_code, replayed, expired, throttled...)."""


DEFAULTS = {
    "TONGBAN_TOTP_ISSUER": "Tongban",
    "TONGBAN_TOTP_DRIFT_STEPS": 1,  # accept one 30-second step either side
    "TONGBAN_MFA_ATTEMPTS": 10,  # second-factor tries per account per window
    "TONGBAN_MFA_WINDOW": 300,
    "TONGBAN_SMS_CODE_MINUTES": 5,
    "TONGBAN_SMS_CODE_ATTEMPTS": 5,
    "TONGBAN_SMS_RATE_PER_PHONE": 5,  # messages per phone per window
    "TONGBAN_SMS_RATE_WINDOW": 3600,
    "TONGBAN_LICENCE_READ_ACR": "L2",
}

RECOVERY_CODES = 10
_RC_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"  # no 0/o, 1/l/i


def _throttle(user: User) -> None:
    cfg = current_app.config
    hit = ratelimit.hit(f"mfa:{user.id}", cfg["TONGBAN_MFA_ATTEMPTS"], cfg["TONGBAN_MFA_WINDOW"])
    if not hit.allowed:
        audit.record("mfa.throttled", actor=f"user:{user.sub}", outcome="failure")
        raise SecondFactorError(str(_l("Too many attempts. Try again in %(s)d seconds.", s=hit.retry_after)),
                                "throttled")


def _refused(user: User, method: str, reason: str) -> SecondFactorError:
    audit.record("mfa.failure", actor=f"user:{user.sub}", outcome="failure",
                 detail={"method": method, "reason": reason})
    messages = {"replayed": _l("This code was already used. Wait for the next one."),
                "expired": _l("The code has expired. Ask for a new one."),
                "too_many": _l("Too many wrong codes. Ask for a new one."),
                "weaker_factor": _l("Use your authenticator app or passkey: a text message cannot replace them.")}
    return SecondFactorError(str(messages.get(reason, _l("The code is not correct."))), reason)


# ---------------------------------------------------------------- TOTP


def totp_factor(user: User) -> TotpFactor | None:
    return db.session.execute(select(TotpFactor).where(TotpFactor.user_id == user.id)).scalar_one_or_none()


def _label(user_id: int) -> str:
    return f"totp:{user_id}"


def _totp(row: TotpFactor) -> pyotp.TOTP:
    return pyotp.TOTP(unseal(row.secret, _label(row.user_id)).decode())


def begin_totp(user: User) -> TotpFactor:
    """A new unconfirmed secret (replacing an unconfirmed one); a confirmed one must be removed first."""
    row = totp_factor(user)
    if row is not None and row.confirmed_at is not None:
        raise TotpExists(str(_l("An authenticator app is already set up.")))
    secret = pyotp.random_base32(32)
    if row is None:
        row = TotpFactor(user_id=user.id, created_at=utcnow())
        db.session.add(row)
    row.secret = seal(secret.encode(), _label(user.id))
    row.last_step = None
    row.created_at = utcnow()
    db.session.flush()
    return row


def provisioning_uri(user: User, row: TotpFactor) -> str:
    return _totp(row).provisioning_uri(name=user.phone or user.sub,
                                        issuer_name=current_app.config["TONGBAN_TOTP_ISSUER"])


def totp_secret(row: TotpFactor) -> str:
    return unseal(row.secret, _label(row.user_id)).decode()


def _check_totp(user: User, row: TotpFactor, code: str, now: float | None = None) -> None:
    """Accept a code within the drift window whose step is newer than the last one used."""
    code = "".join((code or "").split())
    if not (code.isdigit() and len(code) == 6):
        raise _refused(user, "otp", "bad_code")
    now = time.time() if now is None else now
    otp = _totp(row)
    drift = current_app.config["TONGBAN_TOTP_DRIFT_STEPS"]
    current = int(now // otp.interval)
    for step in range(current - drift, current + drift + 1):
        if hmac.compare_digest(otp.generate_otp(step), code):
            # claim the step atomically: of two requests with one code, one wins
            claimed = db.session.execute(  # type: ignore[attr-defined]
                update(TotpFactor).where(TotpFactor.id == row.id,
                                         or_(TotpFactor.last_step.is_(None), TotpFactor.last_step < step))
                .values(last_step=step).execution_options(synchronize_session=False)).rowcount
            if not claimed:
                raise _refused(user, "otp", "replayed")
            row.last_step = step
            return
    raise _refused(user, "otp", "bad_code")


def confirm_totp(user: User, code: str) -> list[str]:
    """Confirm enrolment with a first code; returns fresh recovery codes if the user had none."""
    row = totp_factor(user)
    if row is None or row.confirmed_at is not None:
        raise NoPendingTotp(str(_l("Start setting up the authenticator app first.")))
    _throttle(user)
    _check_totp(user, row, code)
    row.confirmed_at = utcnow()
    audit.record("mfa.totp_enrolled", actor=f"user:{user.sub}", object=f"user:{user.sub}")
    return [] if _unused_recovery_count(user) else regenerate_recovery_codes(user)


def remove_totp(user: User) -> bool:
    row = totp_factor(user)
    if row is None:
        return False
    db.session.delete(row)
    if not passkeys(user):
        db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    audit.record("mfa.totp_removed", actor=f"user:{user.sub}", object=f"user:{user.sub}")
    return True


def verify_totp(user: User, code: str) -> None:
    row = totp_factor(user)
    if row is None or row.confirmed_at is None:
        raise _refused(user, "otp", "not_enrolled")
    _throttle(user)
    _check_totp(user, row, code)
    audit.record("mfa.success", actor=f"user:{user.sub}", detail={"method": "otp"})


# ---------------------------------------------------------------- recovery codes


def _normalise_recovery(code: str) -> str:
    return "".join(ch for ch in (code or "").lower() if ch.isalnum())


def _recovery_digest(user: User, code: str) -> str:
    return digest(f"{user.sub}:{_normalise_recovery(code)}")


def regenerate_recovery_codes(user: User) -> list[str]:
    """Ten new codes (the old ones stop working); shown once, stored as digests."""
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    now = utcnow()
    codes = []
    for _i in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(_RC_ALPHABET) for _j in range(10))
        code = f"{raw[:5]}-{raw[5:]}"
        codes.append(code)
        db.session.add(RecoveryCode(user_id=user.id, code_hash=_recovery_digest(user, code), created_at=now))
    db.session.flush()
    audit.record("mfa.recovery_codes_generated", actor=f"user:{user.sub}", object=f"user:{user.sub}")
    return codes


def _unused_recovery_count(user: User) -> int:
    return db.session.execute(select(func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))).scalar_one()


def use_recovery_code(user: User, code: str) -> None:
    _throttle(user)
    used = db.session.execute(  # type: ignore[attr-defined]
        update(RecoveryCode).where(RecoveryCode.user_id == user.id,
                                   RecoveryCode.code_hash == _recovery_digest(user, code),
                                   RecoveryCode.used_at.is_(None))
        .values(used_at=utcnow()).execution_options(synchronize_session=False)).rowcount
    if not used:
        raise _refused(user, "recovery", "bad_code")
    audit.record("mfa.success", actor=f"user:{user.sub}", detail={"method": "recovery_code",
                                                                  "left": _unused_recovery_count(user)})


# ---------------------------------------------------------------- passkeys (WebAuthn)


def passkeys(user: User) -> list[Passkey]:
    return list(db.session.execute(select(Passkey).where(Passkey.user_id == user.id)
                                   .order_by(Passkey.created_at)).scalars())


def rp() -> tuple[str, str]:
    """(rp_id, origin): the issuer's host and the issuer's origin."""
    parts = urlsplit(current_app.config["TONGBAN_ISSUER"])
    return parts.hostname or "localhost", f"{parts.scheme}://{parts.netloc}"


def _b64(data: bytes) -> str:
    from webauthn.helpers import bytes_to_base64url

    return bytes_to_base64url(data)


def passkey_registration_options(user: User) -> tuple[str, str]:
    """(options JSON for navigator.credentials.create, challenge to keep in the session)."""
    from webauthn import generate_registration_options, options_to_json
    from webauthn.helpers import base64url_to_bytes
    from webauthn.helpers.structs import (
        AuthenticatorSelectionCriteria,
        PublicKeyCredentialDescriptor,
        ResidentKeyRequirement,
        UserVerificationRequirement,
    )

    rp_id, _origin = rp()
    options = generate_registration_options(
        rp_id=rp_id, rp_name=str(_l("Tongban")), user_name=user.phone or user.sub, user_id=user.sub.encode(),
        user_display_name=user.name,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(p.credential_id))
                             for p in passkeys(user)])
    return options_to_json(options), _b64(options.challenge)


def register_passkey(user: User, credential: dict | str, challenge: str, name: str = "") -> Passkey:
    from webauthn import verify_registration_response
    from webauthn.helpers import base64url_to_bytes
    from webauthn.helpers.exceptions import WebAuthnException

    rp_id, origin = rp()
    try:
        verified = verify_registration_response(credential=credential, expected_challenge=base64url_to_bytes(
            challenge), expected_rp_id=rp_id, expected_origin=origin)
    except (WebAuthnException, ValueError, KeyError, TypeError) as e:
        audit.record("mfa.passkey_rejected", actor=f"user:{user.sub}", outcome="failure",
                     detail={"reason": str(e)[:200]})
        raise SecondFactorError(str(_l("The passkey could not be registered.")), "bad_passkey") from None
    cred_id = _b64(verified.credential_id)
    if db.session.execute(select(Passkey.id).where(Passkey.credential_id == cred_id)).first():
        raise SecondFactorError(str(_l("This passkey is already registered.")), "passkey_exists")
    transports = ""
    if isinstance(credential, dict):
        transports = " ".join((credential.get("response") or {}).get("transports") or [])[:200]
    row = Passkey(user_id=user.id, credential_id=cred_id, public_key=verified.credential_public_key,
                  sign_count=verified.sign_count, name=(name or "").strip()[:100] or str(_l("Passkey")),
                  transports=transports, created_at=utcnow())
    db.session.add(row)
    db.session.flush()
    audit.record("mfa.passkey_registered", actor=f"user:{user.sub}", object=f"passkey:{row.id}")
    return row


def passkey_authentication_options(user: User) -> tuple[str, str]:
    from webauthn import generate_authentication_options, options_to_json
    from webauthn.helpers import base64url_to_bytes
    from webauthn.helpers.structs import PublicKeyCredentialDescriptor, UserVerificationRequirement

    rp_id, _origin = rp()
    options = generate_authentication_options(
        rp_id=rp_id, user_verification=UserVerificationRequirement.PREFERRED,
        allow_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(p.credential_id))
                           for p in passkeys(user)])
    return options_to_json(options), _b64(options.challenge)


def verify_passkey(user: User, credential: dict | str, challenge: str) -> list[str]:
    """Check an assertion; returns its RFC 8176 amr values ("hwk"/"swk", "user" when verified)."""
    from webauthn import verify_authentication_response
    from webauthn.helpers import base64url_to_bytes
    from webauthn.helpers.exceptions import WebAuthnException

    _throttle(user)
    data = json.loads(credential) if isinstance(credential, str) else credential
    cred_id = str((data or {}).get("id") or "")
    row = db.session.execute(select(Passkey).where(Passkey.credential_id == cred_id,
                                                   Passkey.user_id == user.id)).scalar_one_or_none()
    if row is None:
        raise _refused(user, "passkey", "unknown_credential")
    rp_id, origin = rp()
    try:
        verified = verify_authentication_response(
            credential=data, expected_challenge=base64url_to_bytes(challenge), expected_rp_id=rp_id,
            expected_origin=origin, credential_public_key=row.public_key,
            credential_current_sign_count=row.sign_count)
    except (WebAuthnException, ValueError, KeyError, TypeError) as e:
        audit.record("mfa.failure", actor=f"user:{user.sub}", outcome="failure",
                     detail={"method": "passkey", "reason": str(e)[:200]})
        raise SecondFactorError(str(_l("The passkey could not be verified.")), "bad_passkey") from None
    # a counter that does not grow (when it is used at all) means a cloned authenticator
    claimed = db.session.execute(  # type: ignore[attr-defined]
        update(Passkey).where(Passkey.id == row.id,
                              or_(Passkey.sign_count < verified.new_sign_count,
                                  Passkey.sign_count == 0))
        .values(sign_count=verified.new_sign_count, last_used_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount
    if not claimed:
        raise _refused(user, "passkey", "sign_count")
    audit.record("mfa.success", actor=f"user:{user.sub}", detail={"method": "passkey", "passkey": row.id})
    # with attestation "none" we cannot know the key is hardware-bound: claim only "swk"
    return ["swk", "user"] if verified.user_verified else ["swk"]


def remove_passkey(user: User, passkey_id: int) -> bool:
    row = db.session.get(Passkey, passkey_id)
    if row is None or row.user_id != user.id:
        return False
    db.session.delete(row)
    db.session.flush()
    if totp_factor(user) is None and not passkeys(user):
        db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    audit.record("mfa.passkey_removed", actor=f"user:{user.sub}", object=f"passkey:{passkey_id}")
    return True


# ---------------------------------------------------------------- SMS


class SmsSender(Protocol):
    def send(self, phone: str, text: str) -> None: ...


_OUTBOX_LABEL = "sms-outbox"
_SEALED = "sealed:"


class OutboxSmsSender:
    """The shipped sender: the message waits in ``sms_outbox``, sealed under the instance KEK
    (nobody reading the table or the admin console sees a code), until a gateway
    (``app.extensions["tongban.sms_gateway"]``, anything with ``send(phone, text)``) takes it;
    a delivered message is deleted, an undelivered one once its code has expired."""

    def send(self, phone: str, text: str) -> None:
        body = _SEALED + base64.b64encode(seal(text.encode(), _OUTBOX_LABEL)).decode()
        db.session.add(SmsOutbox(phone=phone, body=body, created_at=utcnow()))
        if sms_gateway() is not None:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            after_commit(lambda: _deliver_after_commit(app))


def sms_sender() -> SmsSender:
    return current_app.extensions.get("tongban.sms_sender") or OutboxSmsSender()


def sms_gateway() -> SmsSender | None:
    """Where queued text messages go: an installed gateway, or ``TONGBAN_SMS_GATEWAY = "log"``
    (the server log: development only), or None (they wait, and expire)."""
    gw = current_app.extensions.get("tongban.sms_gateway")
    if gw is None and current_app.config.get("TONGBAN_SMS_GATEWAY") == "log":
        gw = LogSmsGateway()
    return gw


class LogSmsGateway:
    """Development: the message goes to the server log (``make run``'s terminal)."""

    def send(self, phone: str, text: str) -> None:
        current_app.logger.warning("SMS to %s: %s", phone, text)


def outbox_text(body: str) -> str:
    """The readable text of a queued message (for the gateway only)."""
    if not body.startswith(_SEALED):
        raise NotSealedMessage("not a sealed outbox message")
    return unseal(base64.b64decode(body[len(_SEALED):]), _OUTBOX_LABEL).decode()


def _deliver_after_commit(app) -> None:
    try:
        deliver_sms()
    except Exception:  # the chore retries; the request that queued it has committed already
        app.logger.exception("SMS delivery failed")


def deliver_sms(limit: int = 50) -> int:
    """Hand queued messages to the gateway; each is claimed first (one worker sends it), sent
    with no transaction open, then deleted. Returns how many were delivered."""
    gateway = sms_gateway()
    if gateway is None:
        return 0
    now = utcnow()
    stale = now - timedelta(minutes=1)
    delivered = 0
    with db.engine.begin() as conn:
        ids = list(conn.execute(select(SmsOutbox.id).where(
            or_(SmsOutbox.sent_at.is_(None), SmsOutbox.sent_at < stale)).order_by(SmsOutbox.id)
            .limit(limit)).scalars())
    for row_id in ids:
        with db.engine.begin() as conn:
            row = conn.execute(update(SmsOutbox).where(
                SmsOutbox.id == row_id, or_(SmsOutbox.sent_at.is_(None), SmsOutbox.sent_at < stale))
                .values(sent_at=now).returning(SmsOutbox.phone, SmsOutbox.body)).first()
        if row is None:
            continue  # another worker took it
        try:
            gateway.send(row[0], outbox_text(row[1]))
        except Exception:
            with db.engine.begin() as conn:
                conn.execute(update(SmsOutbox).where(SmsOutbox.id == row_id).values(sent_at=None))
            raise
        with db.engine.begin() as conn:
            conn.execute(delete(SmsOutbox).where(SmsOutbox.id == row_id))
        delivered += 1
    return delivered


@tb_outbox.chore(every=30)
def sms_outbox_chore() -> int:
    """Deliver what waits (when a gateway is set up); delete messages whose code has expired."""
    try:
        deliver_sms()
    finally:
        cut = utcnow() - timedelta(minutes=current_app.config["TONGBAN_SMS_CODE_MINUTES"])
        with db.engine.begin() as conn:
            purged = conn.execute(delete(SmsOutbox).where(SmsOutbox.created_at < cut)).rowcount
    return purged or 0


def _sms_digest(salt: str, code: str) -> str:
    key = current_app.config["SECRET_KEY"]
    key = key.encode() if isinstance(key, str) else key
    return hmac.new(key, f"{salt}:{code}".encode(), hashlib.sha256).hexdigest()


def send_sms_code(user: User, purpose: str) -> SmsCode:
    """Send a six-digit code to the account's phone (rate-limited per phone)."""
    if not user.phone:
        raise NoPhone(str(_l("There is no mobile phone number on this account.")))
    if purpose == "login" and has_second_factor(user):
        raise _refused(user, "sms", "weaker_factor")
    cfg = current_app.config
    hit = ratelimit.hit(f"sms:{user.phone}", cfg["TONGBAN_SMS_RATE_PER_PHONE"], cfg["TONGBAN_SMS_RATE_WINDOW"])
    if not hit.allowed:
        audit.record("sms.throttled", actor=f"user:{user.sub}", outcome="failure")
        raise SecondFactorError(str(_l("Too many text messages to this phone. Try again in %(m)d minutes.",
                                       m=max(1, hit.retry_after // 60))), "throttled")
    now = utcnow()
    # a new code replaces any earlier one for the same purpose
    db.session.execute(update(SmsCode).where(SmsCode.user_id == user.id, SmsCode.purpose == purpose,
                                             SmsCode.used_at.is_(None)).values(used_at=now))
    code = f"{secrets.randbelow(10**6):06d}"
    salt = token(12)
    minutes = cfg["TONGBAN_SMS_CODE_MINUTES"]
    row = SmsCode(user_id=user.id, phone=user.phone, purpose=purpose, salt=salt,
                  code_hash=_sms_digest(salt, code), attempts=0, created_at=now,
                  expires_at=now + timedelta(minutes=minutes))
    db.session.add(row)
    sms_sender().send(user.phone, _("Your Tongban verification code is %(code)s. It is valid for %(m)d "
                                    "minutes. Do not share it with anyone.", code=code, m=minutes))
    db.session.flush()
    audit.record("sms.code_sent", actor=f"user:{user.sub}", detail={"purpose": purpose})
    return row


def verify_sms_code(user: User, purpose: str, code: str) -> None:
    """Check the latest code; each wrong try counts, and the code dies after the limit.

    As a second factor ("login"), SMS never stands in for a stronger factor the account has
    (an authenticator app or a passkey): a swapped SIM must not get past them."""
    if purpose == "login" and has_second_factor(user):
        raise _refused(user, "sms", "weaker_factor")
    row = db.session.execute(select(SmsCode).where(
        SmsCode.user_id == user.id, SmsCode.purpose == purpose, SmsCode.used_at.is_(None))
        .order_by(SmsCode.id.desc()).limit(1)).scalar_one_or_none()
    if row is None or row.phone != user.phone:
        raise _refused(user, "sms", "expired")
    if row.expires_at <= utcnow():
        raise _refused(user, "sms", "expired")
    limit = current_app.config["TONGBAN_SMS_CODE_ATTEMPTS"]
    # take one attempt atomically before comparing, so parallel guesses cannot exceed the limit
    took = db.session.execute(update(SmsCode).where(SmsCode.id == row.id, SmsCode.attempts < limit,  # type: ignore[attr-defined]
                                                    SmsCode.used_at.is_(None))
                              .values(attempts=SmsCode.attempts + 1)
                              .execution_options(synchronize_session=False)).rowcount
    if not took:
        raise _refused(user, "sms", "too_many")
    code = "".join((code or "").split())
    if not hmac.compare_digest(row.code_hash, _sms_digest(row.salt, code)):
        raise _refused(user, "sms", "bad_code")
    used = db.session.execute(update(SmsCode).where(SmsCode.id == row.id, SmsCode.used_at.is_(None))  # type: ignore[attr-defined]
                              .values(used_at=utcnow()).execution_options(synchronize_session=False)).rowcount
    if not used:
        raise _refused(user, "sms", "replayed")
    audit.record("mfa.success", actor=f"user:{user.sub}", detail={"method": "sms", "purpose": purpose})


def confirm_phone(user: User) -> None:
    """A verified phone raises an L1 account to L2 (STANDARDS.md)."""
    if user.assurance_level < 2:
        user.assurance_level = 2
        audit.record("account.phone_verified", actor=f"user:{user.sub}", object=f"user:{user.sub}")


def outbox(limit: int = 200) -> list[SmsOutbox]:
    return list(db.session.execute(select(SmsOutbox).order_by(SmsOutbox.id.desc()).limit(limit)).scalars())


# ---------------------------------------------------------------- overview


@dataclass
class Overview:
    totp: bool
    totp_pending: bool
    passkeys: list[Passkey]
    recovery_left: int
    phone: str | None

    @property
    def any(self) -> bool:
        return self.totp or bool(self.passkeys)


def overview(user: User) -> Overview:
    row = totp_factor(user)
    return Overview(totp=row is not None and row.confirmed_at is not None,
                    totp_pending=row is not None and row.confirmed_at is None,
                    passkeys=passkeys(user), recovery_left=_unused_recovery_count(user), phone=user.phone)


def _second_factor_statement():
    user_id = bindparam("b_user_id", type_=Integer())
    totp = select(TotpFactor.id).where(TotpFactor.user_id == user_id, TotpFactor.confirmed_at.is_not(None))
    passkey = select(Passkey.id).where(Passkey.user_id == user_id)
    return select(or_(totp.exists(), passkey.exists()))  # one query


_HAS_SECOND_FACTOR = _second_factor_statement()  # built once: asked at every password log-in


def has_second_factor(user: User) -> bool:
    """Whether log-in must ask for a second factor after the password (TOTP or a passkey)."""
    return bool(db.session.execute(_HAS_SECOND_FACTOR, {"b_user_id": user.id}).scalar())


__all__ = ["DEFAULTS", "OutboxSmsSender", "SecondFactorError", "SmsSender", "has_second_factor", "overview"]
