"""ID-number recovery: a clerk, in person, moves an ID number from a squatting account to its owner.

Someone who registered with another person's name and ID number blocks that person from
registering (the ID number is unique). At a service counter a clerk checks the person's
identity card, and ``recover`` then, in one transaction:

* closes the squatting account: its ID number is replaced by a tombstone (it can never be
  typed to log in), it loses its verified level, its phone number is released, it is
  disabled, every log-in session ends (back-channel logout) and every refresh token
  (``offline_access`` ones too) is revoked;
* ends all of its enterprise roles (legal representation as by an undone claim, with the
  administrators and agents that flowed from it; administrator posts; agent authorisations);
* creates the owner's account with the ID number, the name the population register confirms
  (level L3, checked in person), the owner's phone and a password the owner typed.

The password is hashed before anything is written, so no write lock is held while hashing.
Audited as ``identity.recovered`` with the clerk, the reason and both subjects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask_babel import lazy_gettext as _l
from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tongban import audit
from tongban.clock import token, utcnow
from tongban.errors import ValidationError
from tongban.extensions import db
from tongban.identifiers import parse_id_number
from tongban.masking import mask_number

from . import enterprise, sessions
from .accounts import identity_verifier, normalise_phone
from .enterprise import SMS_KIND
from .errors import IdNumberMovedMeanwhile, PhoneTaken, RecoveredBefore, UnknownUser
from .models import User
from .passwords import check_policy, new_password_hash
from .signals import revoke_credentials


class RecoveryRefused(ValidationError):
    """The recovery cannot go ahead (see ``code``)."""


@dataclass
class Recovered:
    owner: User
    squatter: User
    sessions_ended: int
    roles_ended: int


def _tombstone() -> str:
    # 18 characters, lower-case: a log-in name is upper-cased, so it never matches
    return "~" + token(16).lower().replace("-", "x").replace("_", "y")[:17]


class IdRecovery(db.Model):
    """One ID-number recovery: the number moved from ``previous_user_id`` (closed) to ``owner_id``."""

    __tablename__ = "id_recoveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    id_number_masked: Mapped[str] = mapped_column(String(18))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    previous_user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    by: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime)

    owner: Mapped[User] = relationship(foreign_keys=[owner_id])
    previous_user: Mapped[User] = relationship(foreign_keys=[previous_user_id])


def recent(limit: int = 30) -> list[IdRecovery]:
    return list(db.session.execute(select(IdRecovery).order_by(IdRecovery.id.desc()).limit(limit)).scalars())


def _was_recovered(user: User) -> bool:
    return db.session.execute(select(IdRecovery.id).where(IdRecovery.owner_id == user.id).limit(1)).first() is not None


def squatter_of(id_number: str) -> User | None:
    ident = parse_id_number(id_number)
    return db.session.execute(select(User).where(User.id_number == ident.value)).scalar_one_or_none()


def recover(id_number: str, *, name: str, password: str, phone: str | None, reason: str, by: str) -> Recovered:
    """Move ``id_number`` to its owner (present at the counter); ``by`` is the clerk (``user:<sub>``)."""
    ident = parse_id_number(id_number)
    reason = (reason or "").strip()
    name = (name or "").strip()
    if not reason:
        raise RecoveryRefused(str(_l("Give the reason (what was checked in person).")), "reason_required")
    if not name or len(name) > 100:
        raise RecoveryRefused(str(_l("Name is required (at most 100 characters).")), "invalid_name")
    if not identity_verifier().verify(ident.value, name):
        audit.record("identity.recovered", actor=by, object=f"id:{mask_number(ident.value)}", outcome="failure",
                     detail={"reason": "register_mismatch"})
        raise RecoveryRefused(str(_l("The population register does not confirm this name and ID number.")),
                              "register_mismatch")
    phone = normalise_phone(phone)
    check_policy(password, id_number=ident.value, phone=phone or "")
    squatter = squatter_of(ident.value)
    if squatter is None:
        raise UnknownUser(str(_l("No account holds this ID number: the person can register.")))
    if _was_recovered(squatter):
        # the holder got it at a counter after an identity check: never moved back by another clerk
        raise RecoveredBefore(str(_l("This account received the ID number at a counter after an identity check; it "
                              "cannot be moved again here. Refer the case to the operating authority.")))
    if phone and db.session.execute(select(User.id).where(User.phone == phone, User.id != squatter.id)).first():
        raise PhoneTaken(str(_l("This phone number is already used by another account.")))
    password_hash = new_password_hash(password)  # before the first write: no lock held while hashing

    squatter = db.session.get(User, squatter.id, populate_existing=True)
    if squatter is None or squatter.id_number != ident.value:  # moved in between
        raise IdNumberMovedMeanwhile(str(_l("This ID number changed hands meanwhile; start again.")))
    old_phone = squatter.phone
    roles = enterprise.strip_all(squatter, by=by, reason="id_number_recovered")
    ended = sessions.end_all_for_user(squatter, "id_number_recovered", by)
    revoke_credentials(squatter, keep_sid=None, reason="id_number_recovered", actor=by)  # offline ones too
    squatter.id_number = _tombstone()
    squatter.assurance_level = 1
    squatter.verified_at = None
    squatter.phone = None
    squatter.disabled = True
    db.session.flush()  # the ID number (and phone) are free before the owner's row takes them

    now = utcnow()
    owner = User(sub=token(15), id_number=ident.value, name=name, phone=phone, password_hash=password_hash,
                 assurance_level=3, verified_at=now, created_at=now, password_changed_at=now, failed_logins=0)
    db.session.add(owner)
    db.session.flush()
    db.session.add(IdRecovery(id_number_masked=mask_number(ident.value), owner_id=owner.id,
                              previous_user_id=squatter.id, by=by, reason=reason[:1000], at=now))
    audit.record("account.created", actor=by, object=f"user:{owner.sub}",
                 detail={"id_number": mask_number(ident.value), "in_person": True})
    audit.record("identity.recovered", actor=by, object=f"user:{owner.sub}",
                 detail={"id_number": mask_number(ident.value), "from": f"user:{squatter.sub}",
                         "reason": reason[:500], "sessions_ended": ended, "roles_ended": roles,
                         "released_phone": mask_number(old_phone) if old_phone else None})
    if old_phone:
        _tell_displaced(old_phone, ident.value)
    return Recovered(owner, squatter, ended, roles)


def _tell_displaced(phone: str, id_number: str) -> None:
    """The closed account's phone is told (after the commit, through the outbox): a recovery done
    wrongly, or by a dishonest clerk, does not go unnoticed."""
    from flask_babel import gettext

    from tongban import outbox

    text = gettext("Tongban: the account registered with ID number %(id)s was closed at a government service "
                   "counter and the ID number returned to its owner after an identity check. If this is wrong, "
                   "go to a service counter with your identity card.", id=mask_number(id_number))
    outbox.enqueue(SMS_KIND, f"sms:{mask_number(phone)}", {"phone": phone, "text": text},
                   subject="identity recovered: account closed")
