"""Phone checks before an account exists (registration) and the forgotten-password reset.

Registration: a six-digit code goes by SMS to the phone being registered; the account is
only created with that code, and starts at level L2 (phone verified). A phone that already
has an account gets a message saying so instead of a code, so the page never tells anyone
but the phone's holder whether the number is registered.

Forgotten password: the code goes to the account's verified phone (level L2 and up, the
``phone_number_verified`` claim); the reset ends every session and every refresh token of
the account and lifts its lockout. Whether an account exists, has a phone, or received a
message is never shown: every request gets the same answer.

Services flush; the request commits once. Codes are stored only as keyed digests.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import DateTime, Integer, String, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from tongban import audit, ratelimit
from tongban.clock import token, utcnow
from tongban.errors import TongbanError
from tongban.extensions import db
from tongban.i18n import localised
from tongban.masking import mask_number

from . import accounts
from .errors import NoPhone
from .mfa import SecondFactorError, _sms_digest, send_sms_code, sms_sender, verify_sms_code
from .models import LoginThrottle, User
from .passwords import check_policy, new_password_hash


class PhoneCheck(db.Model):
    """A code sent to a phone that has no account yet (registration)."""

    __tablename__ = "phone_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    salt: Mapped[str] = mapped_column(String(32))
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class CodeRefused(TongbanError):
    """The SMS code is wrong, expired, used up or was never sent (one message for all)."""


class Throttled(TongbanError):
    """Too many requests; ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, "throttled")
        self.retry_after = retry_after


def _refused() -> CodeRefused:
    return CodeRefused(localised(_l("The verification code is wrong or has expired. Ask for a new one.")),
                       "bad_code")


def throttle(key: str, limit: int, window: int) -> None:
    hit = ratelimit.hit(key, limit, window)
    if not hit.allowed:
        raise Throttled(localised(_l("Too many requests. Try again in %(m)d minutes.",
                                     m=max(1, -(-hit.retry_after // 60)))), hit.retry_after)


def _digest(salt: str, code: str) -> str:
    return _sms_digest(salt, code)


# ---------------------------------------------------------------- registration


def send_registration_code(phone: str) -> None:
    """Send a code to ``phone`` (normalised first; ValidationError if it is not a mobile number).
    A registered phone gets a notice instead: the caller answers the same either way."""

    phone = accounts.normalise_phone(phone)
    if not phone:
        raise NoPhone(localised(_l("Enter your mobile phone number.")))
    cfg = current_app.config
    throttle(f"sms:{phone}", cfg["TONGBAN_SMS_RATE_PER_PHONE"], cfg["TONGBAN_SMS_RATE_WINDOW"])
    now = utcnow()
    if db.session.execute(select(User.id).where(User.phone == phone)).first():
        sms_sender().send(phone, _("This mobile number already has a Tongban account. If you forgot the "
                                   "password, use \"Forgot password\" on the log-in page."))
        audit.record("account.register_code", actor="anonymous", outcome="failure",
                     detail={"phone": mask_number(phone), "reason": "phone_taken"})
        return
    db.session.execute(update(PhoneCheck).where(PhoneCheck.phone == phone, PhoneCheck.used_at.is_(None))
                       .values(used_at=now))
    code = f"{secrets.randbelow(10**6):06d}"
    salt = token(12)
    minutes = cfg["TONGBAN_SMS_CODE_MINUTES"]
    db.session.add(PhoneCheck(phone=phone, salt=salt, code_hash=_digest(salt, code), attempts=0,
                              created_at=now, expires_at=now + timedelta(minutes=minutes)))
    sms_sender().send(phone, _("Your Tongban registration code is %(code)s. It is valid for %(m)d minutes. "
                               "Do not share it with anyone.", code=code, m=minutes))
    db.session.flush()
    audit.record("account.register_code", actor="anonymous", detail={"phone": mask_number(phone)})


def check_registration_code(phone: str, code: str) -> int:
    """Count one try against the latest code for ``phone`` (in its own transaction: a wrong
    try counts even though the request rolls back) and compare. Returns the check's id, to be
    spent with :func:`spend_registration_code` in the request that creates the account."""
    phone = accounts.normalise_phone(phone) or ""
    now = utcnow()
    limit = current_app.config["TONGBAN_SMS_CODE_ATTEMPTS"]
    with db.engine.begin() as conn:
        row = conn.execute(select(PhoneCheck.id, PhoneCheck.salt, PhoneCheck.code_hash, PhoneCheck.expires_at)
                           .where(PhoneCheck.phone == phone, PhoneCheck.used_at.is_(None))
                           .order_by(PhoneCheck.id.desc()).limit(1)).first()
        if row is None or row.expires_at <= now:
            raise _refused()
        took = conn.execute(update(PhoneCheck).where(PhoneCheck.id == row.id, PhoneCheck.attempts < limit,
                                                     PhoneCheck.used_at.is_(None))
                            .values(attempts=PhoneCheck.attempts + 1)).rowcount
    code = "".join((code or "").split())
    if not took or not hmac.compare_digest(row.code_hash, _digest(row.salt, code)):
        audit.record("account.register_code_refused", actor="anonymous", outcome="failure",
                     detail={"phone": mask_number(phone)})
        raise _refused()
    return row.id


def spend_registration_code(check_id: int) -> None:
    """Mark the code used, in the request's transaction (with the account it created): two
    requests racing with the same code create one account."""
    used = db.session.execute(update(PhoneCheck).where(PhoneCheck.id == check_id, PhoneCheck.used_at.is_(None))  # type: ignore[attr-defined]
                              .values(used_at=utcnow()).execution_options(synchronize_session=False)).rowcount
    if not used:
        raise _refused()


def purge_phone_checks() -> int:
    """The worker's chore: registration phone checks a day past expiry are deleted."""
    cut = utcnow() - timedelta(days=1)
    n = db.session.execute(delete(PhoneCheck).where(PhoneCheck.expires_at < cut)).rowcount or 0  # type: ignore[attr-defined]
    db.session.commit()
    return n


# ---------------------------------------------------------------- forgotten password


def _reset_account(login: str) -> User | None:
    """The account a reset may reach: found, enabled, with a verified phone."""
    user = accounts.find_user_by_login(login or "")
    if user is None or user.disabled or not user.phone or user.assurance_level < 2:
        return None
    return user


def start_reset(login: str) -> None:
    """Send a reset code to the account's verified phone, if there is one. Says nothing either
    way (no error for an unknown account, a missing phone or a throttled phone)."""

    user = _reset_account(login)
    if user is None:
        audit.record("account.reset_requested", actor=mask_number((login or "").strip()[:20]),
                     outcome="failure", detail={"reason": "no_reachable_account"})
        return
    try:
        send_sms_code(user, "reset")
    except SecondFactorError as e:
        audit.record("account.reset_requested", actor=f"user:{user.sub}", outcome="failure",
                     detail={"reason": e.code})
        return
    audit.record("account.reset_requested", actor=f"user:{user.sub}", object=f"user:{user.sub}")


@dataclass
class PreparedPassword:
    hash: str
    plain: str


def prepare_password(login: str, new_password: str) -> PreparedPassword:
    """Check the policy and hash the new password before anything is written (no write lock
    is held across Argon2). Checked here against what was typed only (the answer must not
    depend on whether the account exists); against the account once the code is right."""
    login = (login or "").strip().upper()
    check_policy(new_password, id_number=login if len(login) == 18 else "",
                 phone=login if login.isdigit() else "")
    return PreparedPassword(new_password_hash(new_password), new_password)


def complete_reset(login: str, code: str, prepared: PreparedPassword) -> User:
    """Check the SMS code and set the new password. Every session and refresh token of the
    account ends, and its lockout is lifted. CodeRefused for anything wrong."""

    user = _reset_account(login)
    if user is None:
        raise _refused()
    try:
        verify_sms_code(user, "reset", code)
    except SecondFactorError:
        raise _refused() from None
    check_policy(prepared.plain, id_number=user.id_number, phone=user.phone or "")
    user.password_hash = prepared.hash
    user.password_changed_at = utcnow()
    user.failed_logins = 0
    user.locked_until = None
    db.session.execute(delete(LoginThrottle).where(LoginThrottle.user_id == user.id))
    audit.record("account.password_reset", actor=f"user:{user.sub}", object=f"user:{user.sub}",
                 detail={"method": "sms"})
    accounts.password_replaced(user, keep_sid=None, actor=f"user:{user.sub}")
    db.session.flush()
    return user


__all__ = ["CodeRefused", "PhoneCheck", "Throttled", "check_registration_code", "complete_reset",
           "prepare_password", "send_registration_code", "spend_registration_code", "start_reset"]
