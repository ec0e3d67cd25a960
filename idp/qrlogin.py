"""Scan-to-log-in: a phone where the citizen is logged in confirms a desktop log-in.

The desktop asks for a one-time code and receives, besides the code (shown as a QR
code of ``ISSUER/qr/<code>``), a binding secret kept in an HttpOnly cookie. Both are
stored only as SHA-256 digests. A phone that opens the URL marks it *scanned* and the
citizen confirms there; only the browser holding the binding secret can then turn the
confirmation into a session, so a leaked or photographed QR code is useless elsewhere.

States: ``waiting`` → ``scanned`` → ``confirmed`` → ``consumed``; ``denied`` when the
phone declines; ``expired`` two minutes after creation (set lazily, when next seen).
Every transition is one conditional ``UPDATE ... WHERE state = ...`` whose row count
says whether this request won: of two confirmations of one code exactly one succeeds.

The desktop's new session records ``amr = ["mca"]`` (RFC 8176 "multiple-channel
authentication": the citizen authenticated on another channel, the phone) and the
phone session's ``acr``, never more: scanning cannot raise an assurance level, and
factors used on the phone (an OTP, a passkey) are not claimed for the desktop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import DateTime, ForeignKey, Integer, String, select, update
from sqlalchemy.orm import Mapped, mapped_column, relationship

from people.models import LoginSession, User
from tongban import audit, outbox
from tongban.clock import digest, token, utcnow
from tongban.extensions import db

LIFETIME_SECONDS = 120
# a confirmation just before expiry can still be picked up by the desktop's next poll
COMPLETE_GRACE_SECONDS = 30
AMR = "mca"
OPEN_STATES = ("waiting", "scanned")


class QrLogin(db.Model):
    """One scan-to-log-in attempt; the code and the desktop's binding secret only as digests."""

    __tablename__ = "qr_logins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    binding_hash: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(12), default="waiting")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    # the desktop that asked (shown on the phone before it confirms)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    scanned_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    consumed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # who confirmed, from which phone session, at which level
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=True)
    phone_sid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    acr: Mapped[str | None] = mapped_column(String(10), nullable=True)
    new_sid: Mapped[str | None] = mapped_column(String(64), nullable=True)

    user: Mapped[User | None] = relationship()

    def is_expired(self, now: datetime | None = None) -> bool:
        return (now or utcnow()) >= self.expires_at


@dataclass(frozen=True)
class Created:
    row: QrLogin
    code: str  # goes into the QR code
    binding: str  # goes into the desktop's HttpOnly cookie


class QrError(Exception):
    """A scan-to-log-in step that cannot proceed; ``reason`` is machine-readable."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _lifetime() -> timedelta:
    return timedelta(seconds=current_app.config.get("TONGBAN_QR_LIFETIME", LIFETIME_SECONDS))


def qr_url(code: str) -> str:
    return f"{current_app.config['TONGBAN_ISSUER']}/qr/{code}"


# ---------------------------------------------------------------- desktop


def create(*, ip: str, user_agent: str) -> Created:
    code, binding = token(24), token(32)
    now = utcnow()
    row = QrLogin(code_hash=digest(code), binding_hash=digest(binding), state="waiting", created_at=now,
                  expires_at=now + _lifetime(), ip=ip[:64], user_agent=user_agent[:300])
    db.session.add(row)
    db.session.flush()
    audit.record("qr.created", actor="anonymous", object=f"qr:{row.id}")
    return Created(row, code, binding)


def by_binding(binding: str | None) -> QrLogin | None:
    """The attempt this desktop browser started (its binding cookie), or None."""
    if not binding:
        return None
    row = db.session.execute(select(QrLogin).where(QrLogin.binding_hash == digest(binding))).scalar_one_or_none()
    return _expire_if_due(row) if row is not None else None


def status(row: QrLogin | None) -> str:
    return row.state if row is not None else "expired"


def complete(binding: str | None) -> QrLogin:
    """Claim a confirmed attempt for the desktop holding ``binding``; the caller starts the session."""
    row = by_binding(binding)
    if row is None:
        raise QrError("unknown")
    now = utcnow()
    if row.state != "confirmed":
        raise QrError(row.state)
    if row.confirmed_at is None or now > max(row.expires_at, row.confirmed_at) + timedelta(
            seconds=COMPLETE_GRACE_SECONDS):
        raise QrError("expired")
    won = db.session.execute(update(QrLogin).where(QrLogin.id == row.id, QrLogin.state == "confirmed")  # type: ignore[attr-defined]
                             .values(state="consumed", consumed_at=now)
                             .execution_options(synchronize_session=False)).rowcount
    if won != 1:
        raise QrError("consumed")
    db.session.refresh(row)
    phone = _live_phone_session(row.phone_sid)
    if phone is None or row.user is None or row.user.disabled:
        # the phone logged out (or the account was disabled) between confirming and now
        raise QrError("withdrawn")
    return row


def session_acr(row: QrLogin) -> str | None:
    """The desktop's level: the phone session's at confirmation, never the account's maximum."""
    return row.acr


def consumed(row: QrLogin, new_session: LoginSession) -> None:
    row.new_sid = new_session.sid
    audit.record("qr.consumed", actor=f"user:{row.user.sub}", object=f"qr:{row.id}",
                 detail={"session": new_session.sid, "phone_session": row.phone_sid, "acr": row.acr,
                         "amr": AMR})


# ---------------------------------------------------------------- phone


def by_code(code: str) -> QrLogin | None:
    if not code or len(code) > 64:
        return None
    row = db.session.execute(select(QrLogin).where(QrLogin.code_hash == digest(code))).scalar_one_or_none()
    return _expire_if_due(row) if row is not None else None


def scan(code: str, phone: LoginSession) -> QrLogin:
    """A logged-in phone opened the code: waiting → scanned (seeing it again keeps it scanned)."""
    row = by_code(code)
    if row is None:
        raise QrError("unknown")
    if row.state not in OPEN_STATES:
        raise QrError(row.state)
    if row.state == "waiting":
        now = utcnow()
        moved = db.session.execute(update(QrLogin).where(QrLogin.id == row.id, QrLogin.state == "waiting")  # type: ignore[attr-defined]
                                   .values(state="scanned", scanned_at=now)
                                   .execution_options(synchronize_session=False)).rowcount
        if moved:
            audit.record("qr.scanned", actor=f"user:{phone.user.sub}", object=f"qr:{row.id}",
                         detail={"phone_session": phone.sid})
        db.session.refresh(row)
    return row


def confirm(code: str, phone: LoginSession) -> QrLogin:
    """The citizen confirmed on the phone: scanned → confirmed, exactly once per code."""
    row = by_code(code)
    if row is None:
        raise QrError("unknown")
    if row.state != "scanned":
        raise QrError(row.state)
    now = utcnow()
    won = db.session.execute(  # type: ignore[attr-defined]
        update(QrLogin).where(QrLogin.id == row.id, QrLogin.state == "scanned", QrLogin.expires_at > now)
        .values(state="confirmed", confirmed_at=now, user_id=phone.user_id, phone_sid=phone.sid, acr=phone.acr)
        .execution_options(synchronize_session=False)).rowcount
    if won != 1:
        db.session.refresh(row)
        raise QrError(row.state if row.state != "scanned" else "expired")
    db.session.refresh(row)
    audit.record("qr.confirmed", actor=f"user:{phone.user.sub}", object=f"qr:{row.id}",
                 detail={"phone_session": phone.sid, "acr": phone.acr, "desktop_ip": row.ip})
    return row


def deny(code: str, phone: LoginSession) -> QrLogin:
    row = by_code(code)
    if row is None:
        raise QrError("unknown")
    won = db.session.execute(update(QrLogin).where(QrLogin.id == row.id, QrLogin.state.in_(OPEN_STATES))  # type: ignore[attr-defined]
                             .values(state="denied").execution_options(synchronize_session=False)).rowcount
    if won != 1:
        db.session.refresh(row)
        raise QrError(row.state)
    db.session.refresh(row)
    audit.record("qr.denied", actor=f"user:{phone.user.sub}", object=f"qr:{row.id}")
    return row


# ---------------------------------------------------------------- shared


def _expire_if_due(row: QrLogin) -> QrLogin:
    if row.state in OPEN_STATES and row.is_expired():
        moved = db.session.execute(update(QrLogin).where(QrLogin.id == row.id, QrLogin.state.in_(OPEN_STATES))  # type: ignore[attr-defined]
                                   .values(state="expired").execution_options(synchronize_session=False)).rowcount
        if moved:
            audit.record("qr.expired", actor="system", object=f"qr:{row.id}")
        db.session.refresh(row)
    return row


def _live_phone_session(sid: str | None) -> LoginSession | None:
    if not sid:
        return None
    sess = db.session.execute(select(LoginSession).where(LoginSession.sid == sid)).scalar_one_or_none()
    return sess if sess is not None and sess.ended_at is None else None


# ---------------------------------------------------------------- presentation helpers


def describe_user_agent(ua: str) -> tuple[str, str]:
    """(browser, operating system) in plain words, from a User-Agent string; "" when unknown."""
    ua = ua or ""
    browser = ""
    for needle, name in (("MicroMessenger", "WeChat"), ("Edg/", "Microsoft Edge"), ("OPR/", "Opera"),
                         ("Firefox/", "Firefox"), ("HeadlessChrome", "Chrome"), ("Chrome/", "Chrome"),
                         ("Chromium/", "Chromium"), ("Safari/", "Safari")):
        if needle in ua:
            browser = name
            break
    system = ""
    for needle, name in (("Windows", "Windows"), ("iPhone", "iOS"), ("iPad", "iPadOS"), ("Android", "Android"),
                         ("Mac OS X", "macOS"), ("HarmonyOS", "HarmonyOS"), ("CrOS", "ChromeOS"),
                         ("Linux", "Linux")):
        if needle in ua:
            system = name
            break
    return browser, system


def qr_svg(data: str) -> bytes:
    """The QR code as an SVG document (path-based: small, crisp at any size)."""
    from tongban.qr import qr_svg as make_svg

    return make_svg(data, border=2, box_size=10, background=True)


__all__ = ["AMR", "Created", "QrError", "QrLogin", "by_binding", "by_code", "complete", "confirm", "consumed",
           "create", "deny", "describe_user_agent", "qr_svg", "qr_url", "scan", "session_acr", "status"]


_purge_chore = outbox.purge_expired(QrLogin)
