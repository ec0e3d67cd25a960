"""Account operations: citizens, organisations, staff roles, log-in with lockout.

Services flush; the request or CLI command commits once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, case, or_, select, update

from tongban import audit
from tongban.clock import token, utcnow
from tongban.errors import Conflict, NotFound, ValidationError
from tongban.extensions import db
from tongban.i18n import localised
from tongban.identifiers import parse_id_number, validate_uscc
from tongban.masking import mask_number

from .models import LoginEvent, Organisation, PopulationRecord, StaffRole, User
from .passwords import check_policy, hash_password, needs_rehash, verify_password

ROLES = ("clerk", "seal-admin", "auditor", "admin")
PHONE_RE = re.compile(r"^1[3-9]\d{9}$")


def normalise_phone(phone: str | None) -> str | None:
    phone = (phone or "").strip().replace(" ", "").replace("-", "")
    if phone.startswith("+86"):
        phone = phone[3:]
    if not phone:
        return None
    if not PHONE_RE.match(phone):
        raise ValidationError(localised(_l("Phone number must be an 11-digit mainland mobile number.")),
                              "invalid_phone")
    return phone


def find_user_by_login(login: str) -> User | None:
    """The log-in field accepts an ID number or a phone number."""
    clause = _login_clause(login)
    if clause is None:
        return None
    return db.session.execute(select(User).where(clause)).scalar_one_or_none()


def get_user_by_sub(sub: str) -> User | None:
    return db.session.execute(select(User).where(User.sub == sub)).scalar_one_or_none()


def create_user(id_number: str, name: str, password: str, phone: str | None = None,
                *, actor: str = "self", check_password_policy: bool = True) -> User:
    ident = parse_id_number(id_number)
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationError(localised(_l("Name is required (at most 100 characters).")), "invalid_name")
    phone = normalise_phone(phone)
    if check_password_policy:
        check_policy(password, id_number=ident.value, phone=phone or "")
    if db.session.execute(select(User.id).where(User.id_number == ident.value)).first():
        raise Conflict(localised(_l("An account with this ID number already exists. If you did not create it, "
                                          "bring your identity card to a government service counter: a clerk "
                                          "can give the ID number back to you.")), "account_exists")
    if phone and db.session.execute(select(User.id).where(User.phone == phone)).first():
        raise Conflict(localised(_l("This phone number is already used by another account.")), "phone_taken")
    now = utcnow()
    user = User(sub=token(15), id_number=ident.value, name=name, phone=phone,
                password_hash=hash_password(password), assurance_level=1, created_at=now,
                password_changed_at=now, failed_logins=0)
    db.session.add(user)
    db.session.flush()
    audit.record("account.created", actor=actor, object=f"user:{user.sub}",
                 detail={"id_number": mask_number(ident.value)})
    return user


# ---------------------------------------------------------------- identity verification


class IdentityVerifier:
    """Confirms that a name and an ID number belong together (population register).

    The shipped implementation reads the local ``population_register`` table that
    ``demo seed`` fills; a real deployment calls the national service instead.
    """

    def verify(self, id_number: str, name: str) -> bool:
        rec = db.session.get(PopulationRecord, id_number)
        return rec is not None and rec.name == name


def identity_verifier() -> IdentityVerifier:
    return current_app.extensions.get("tongban.identity_verifier") or IdentityVerifier()


def verify_identity(user: User) -> bool:
    """Raise the account to L3 when the register confirms name + ID number."""
    ok = identity_verifier().verify(user.id_number, user.name)
    audit.record("account.identity_verified", actor=f"user:{user.sub}", object=f"user:{user.sub}",
                 outcome="success" if ok else "failure")
    if ok and user.assurance_level < 3:
        user.assurance_level = 3
        user.verified_at = utcnow()
    return ok


# ---------------------------------------------------------------- log-in with lockout


@dataclass
class LoginResult:
    user: User | None
    ok: bool
    locked_until: datetime | None = None
    reason: str = ""  # "", "bad_credentials", "locked", "disabled"


def _login_clause(login: str):
    """The WHERE clause that finds the account a log-in name means (ID number or phone), or None."""
    login = (login or "").strip().upper()
    if not login:
        return None
    if len(login) == 18:
        return User.id_number == login
    try:
        phone = normalise_phone(login)
    except ValidationError:
        return None
    return User.phone == phone


@dataclass
class _Slot:
    user_id: int
    disabled: bool
    reserved: bool  # False when the account is locked (nothing counted)
    count: int
    locked_until: datetime | None


def _reserve_attempt(login: str, now: datetime) -> _Slot | None:
    """Find the account and atomically take one try: counts it, locks at the threshold.

    One UPDATE ... RETURNING, so parallel guesses each take their own slot and no
    more than the threshold are ever checked before the lock holds. It runs in its
    own short transaction (the try counts even if the request later fails) on one
    connection, before the request's session touches the database: a log-in never
    holds two pooled connections at once (no pool exhaustion under a guessing storm)
    and, on SQLite, never waits for a write lock its own session holds.
    """
    clause = _login_clause(login)
    if clause is None:
        return None
    cfg = current_app.config
    threshold = cfg["TONGBAN_LOCKOUT_THRESHOLD"]
    lock_until = now + timedelta(minutes=cfg["TONGBAN_LOCKOUT_MINUTES"])
    expired = and_(User.locked_until.is_not(None), User.locked_until <= now)
    new_count = case((expired, 1), else_=User.failed_logins + 1)
    with db.engine.begin() as conn:
        found = conn.execute(select(User.id, User.disabled).where(clause)).first()
        if found is None:
            return None
        user_id, disabled = found
        if disabled:
            return _Slot(user_id, True, False, 0, None)
        row = conn.execute(
            update(User)
            .where(User.id == user_id,
                   or_(expired, and_(User.locked_until.is_(None), User.failed_logins < threshold)))
            .values(failed_logins=new_count,
                    locked_until=case((new_count >= threshold, lock_until), else_=None))
            .returning(User.failed_logins, User.locked_until)
        ).first()
        if row is not None:
            return _Slot(user_id, False, True, row[0], row[1])
        until = conn.execute(select(User.locked_until).where(User.id == user_id)).scalar()
        return _Slot(user_id, False, False, 0, until)


def authenticate(login: str, password: str, *, ip: str = "", user_agent: str = "") -> LoginResult:
    now = utcnow()
    slot = _reserve_attempt(login, now)
    if slot is None:
        verify_password(None, password)  # same cost as a real check
        audit.record("login.failure", actor=mask_number((login or "").strip()[:20]), object="",
                     outcome="failure", detail={"reason": "unknown_account"})
        return LoginResult(None, False, reason="bad_credentials")
    user = db.session.get(User, slot.user_id, populate_existing=True)
    if user is None:  # deleted in between
        return LoginResult(None, False, reason="bad_credentials")
    if slot.disabled:
        audit.record("login.failure", actor=f"user:{user.sub}", outcome="failure",
                     detail={"reason": "disabled"})
        return LoginResult(user, False, reason="disabled")
    if not slot.reserved:
        until = slot.locked_until
        _event(user, "locked", ip, user_agent)
        audit.record("login.refused_locked", actor=f"user:{user.sub}", outcome="failure",
                     detail={"locked_until": until.isoformat(timespec="seconds") if until else None})
        return LoginResult(user, False, locked_until=until, reason="locked")
    count, locked_until = slot.count, slot.locked_until
    if verify_password(user.password_hash, password):
        db.session.execute(update(User).where(User.id == user.id)
                           .values(failed_logins=0, locked_until=None)
                           .execution_options(synchronize_session=False))
        db.session.refresh(user)
        if needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        _event(user, "success", ip, user_agent)
        audit.record("login.success", actor=f"user:{user.sub}", object=f"user:{user.sub}")
        return LoginResult(user, True)
    _event(user, "bad_password", ip, user_agent)
    audit.record("login.failure", actor=f"user:{user.sub}", outcome="failure",
                 detail={"reason": "bad_password", "consecutive": count})
    if locked_until is not None:
        audit.record("account.locked", actor="system", object=f"user:{user.sub}",
                     detail={"until": locked_until.isoformat(timespec="seconds"), "failures": count})
        return LoginResult(user, False, locked_until=locked_until, reason="locked")
    return LoginResult(user, False, reason="bad_credentials")


def _event(user: User, outcome: str, ip: str, user_agent: str) -> None:
    db.session.add(LoginEvent(user_id=user.id, at=utcnow(), ip=ip[:64], user_agent=user_agent[:300],
                              outcome=outcome))


def recent_logins(user: User, limit: int = 20) -> list[LoginEvent]:
    return list(db.session.execute(
        select(LoginEvent).where(LoginEvent.user_id == user.id).order_by(LoginEvent.at.desc()).limit(limit)
    ).scalars())


def change_password(user: User, current: str, new: str) -> None:
    if not verify_password(user.password_hash, current):
        audit.record("account.password_change", actor=f"user:{user.sub}", outcome="failure",
                     detail={"reason": "bad_current_password"})
        raise ValidationError(localised(_l("The current password is wrong.")), "bad_password")
    check_policy(new, id_number=user.id_number, phone=user.phone or "")
    user.password_hash = hash_password(new)
    user.password_changed_at = utcnow()
    audit.record("account.password_change", actor=f"user:{user.sub}", object=f"user:{user.sub}")


def unlock(user: User, actor: str) -> None:
    user.failed_logins = 0
    user.locked_until = None
    audit.record("admin.account_unlocked", actor=actor, object=f"user:{user.sub}")


# ---------------------------------------------------------------- organisations and staff


def get_org(uscc: str) -> Organisation:
    uscc = validate_uscc(uscc)
    org = db.session.execute(select(Organisation).where(Organisation.uscc == uscc)).scalar_one_or_none()
    if org is None:
        raise NotFound(f"no organisation with USCC {uscc}", "unknown_org")
    return org


def create_org(uscc: str, name: str, legal_rep_id_number: str | None = None, *, actor: str = "admin"
               ) -> Organisation:
    uscc = validate_uscc(uscc)
    name = (name or "").strip()
    if not name:
        raise ValidationError("organisation name is required", "invalid_name")
    rep = None
    if legal_rep_id_number:
        ident = parse_id_number(legal_rep_id_number)
        rep = db.session.execute(select(User).where(User.id_number == ident.value)).scalar_one_or_none()
        if rep is None:
            raise NotFound("the legal representative must be an existing citizen account", "unknown_user")
    if db.session.execute(select(Organisation.id).where(Organisation.uscc == uscc)).first():
        raise Conflict(f"an organisation with USCC {uscc} already exists", "org_exists")
    org = Organisation(uscc=uscc, name=name, legal_rep_id=rep.id if rep else None, created_at=utcnow())
    db.session.add(org)
    db.session.flush()
    audit.record("org.created", actor=actor, object=f"org:{uscc}", detail={"name": name})
    return org


def ensure_org(uscc: str, name: str) -> Organisation:
    uscc = validate_uscc(uscc)
    org = db.session.execute(select(Organisation).where(Organisation.uscc == uscc)).scalar_one_or_none()
    return org or create_org(uscc, name, actor="system")


def add_role(user: User, org: Organisation, role: str, *, actor: str = "admin") -> StaffRole:
    if role not in ROLES:
        raise ValidationError(f"unknown role {role!r} (one of {', '.join(ROLES)})", "invalid_role")
    existing = db.session.execute(select(StaffRole).where(
        StaffRole.user_id == user.id, StaffRole.org_id == org.id, StaffRole.role == role)
    ).scalar_one_or_none()
    if existing:
        return existing
    sr = StaffRole(user_id=user.id, org_id=org.id, role=role, created_at=utcnow())
    db.session.add(sr)
    db.session.flush()
    audit.record("admin.role_granted", actor=actor, object=f"user:{user.sub}",
                 detail={"org": org.uscc, "role": role})
    return sr


def create_staff(id_number: str, name: str, password: str, org_uscc: str, role: str,
                 phone: str | None = None, *, actor: str = "admin") -> User:
    if role not in ROLES:
        raise ValidationError(f"unknown role {role!r} (one of {', '.join(ROLES)})", "invalid_role")
    org = get_org(org_uscc)
    ident = parse_id_number(id_number)
    user = db.session.execute(select(User).where(User.id_number == ident.value)).scalar_one_or_none()
    if user is None:
        user = create_user(ident.value, name, password, phone, actor=actor)
    add_role(user, org, role, actor=actor)
    return user


def is_authority_staff(user: User | None, roles) -> bool:
    """Whether ``user`` holds one of ``roles`` in the operating authority (TONGBAN_AUTHORITY_USCC)."""
    if user is None:
        return False
    authority = (current_app.config["TONGBAN_AUTHORITY_USCC"] or "").strip().upper()
    return db.session.execute(
        select(StaffRole.id).join(Organisation, Organisation.id == StaffRole.org_id)
        .where(StaffRole.user_id == user.id, StaffRole.role.in_(tuple(roles)), Organisation.uscc == authority)
        .limit(1)
    ).first() is not None
