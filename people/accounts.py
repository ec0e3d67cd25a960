"""Account operations: citizens, organisations, staff roles, log-in with lockout.

Services flush; the request or CLI command commits once.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import (
    DateTime,
    Integer,
    String,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from tongban import audit, ratelimit
from tongban.clock import token, utcnow
from tongban.errors import ValidationError
from tongban.extensions import db, get_by_pk, mark_written, release_connection
from tongban.i18n import localised
from tongban.identifiers import parse_id_number, validate_uscc
from tongban.masking import mask_number
from tongban.upsert import execute_prebuilt, upsert

from . import sessions
from .errors import (
    AccountExists,
    BadPassword,
    InvalidName,
    InvalidPhone,
    InvalidRole,
    NoAccount,
    OrgExists,
    PhoneTaken,
    UnknownOrg,
    UnknownUser,
)
from .models import LoginEvent, LoginThrottle, Organisation, PopulationRecord, StaffRole, User
from .passwords import (
    check_account_password,
    check_policy,
    hash_password,
    needs_rehash,
    new_password_hash,
    verify_password,
)
from .signals import revoke_credentials

ROLES = ("clerk", "seal-admin", "auditor", "admin")
PHONE_RE = re.compile(r"^1[3-9]\d{9}$")


def normalise_phone(phone: str | None) -> str | None:
    phone = (phone or "").strip().replace(" ", "").replace("-", "")
    if phone.startswith("+86"):
        phone = phone[3:]
    if not phone:
        return None
    if not PHONE_RE.match(phone):
        raise InvalidPhone(localised(_l("Phone number must be an 11-digit mainland mobile number.")))
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
        raise InvalidName(localised(_l("Name is required (at most 100 characters).")))
    phone = normalise_phone(phone)
    if check_password_policy:
        check_policy(password, id_number=ident.value, phone=phone or "")
    password_hash = new_password_hash(password)  # before the session writes anything (no lock held)
    if db.session.execute(select(User.id).where(User.id_number == ident.value)).first():
        raise AccountExists(localised(_l("An account with this ID number already exists. If you did not create it, "
                                          "bring your identity card to a government service counter: a clerk "
                                          "can give the ID number back to you.")))
    if phone and db.session.execute(select(User.id).where(User.phone == phone)).first():
        raise PhoneTaken(localised(_l("This phone number is already used by another account.")))
    now = utcnow()
    user = User(sub=token(15), id_number=ident.value, name=name, phone=phone,
                password_hash=password_hash, assurance_level=1, created_at=now,
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
    reason: str = ""  # "", "bad_credentials", "locked", "disabled", "busy" (tries in flight: retry)


def _login_by(login: str) -> tuple[str, str] | None:
    """The column and value that find the account a log-in name means (ID number or phone), or None."""
    login = (login or "").strip().upper()
    if not login:
        return None
    if len(login) == 18:
        return "id_number", login
    try:
        phone = normalise_phone(login)
    except ValidationError:
        return None
    return "phone", phone


def _login_clause(login: str):
    """The WHERE clause that finds the account a log-in name means (ID number or phone), or None."""
    by = _login_by(login)
    if by is None:
        return None
    return getattr(User, by[0]) == by[1]


def login_source(ip: str) -> str:
    """The address a lock is kept for: an IPv4 address, or the /64 an IPv6 host can roam in."""
    return ratelimit.client_key(ip)


@dataclass
class _Slot:
    user_id: int
    outcome: str  # reserved | disabled | locked | busy
    locked_until: datetime | None = None
    password_hash: str = ""  # read with the reservation: the check needs no other connection
    account_failures: bool = True  # the account had failures or a lock when reserved (to clear)


# how long a reserved try may stay unanswered before its slot counts as free again
_PENDING_STALE = timedelta(seconds=30)
# how long a try waits for a slot that concurrent tries of the same pair hold
_SLOT_WAIT = 30.0  # = _PENDING_STALE: after that a slot counts as free anyway


def _pair_lock_minutes(locks: int) -> int:
    """Progressive: 1, 2, 4, 8 ... minutes for the pair's 1st, 2nd, 3rd ... lock, capped."""
    cap = current_app.config["TONGBAN_LOCKOUT_MINUTES"]
    return max(1, min(cap, 2 ** min(max(locks - 1, 0), 16)))


def _familiar(conn, user_id: int, ip: str, now: datetime) -> bool:
    """Whether the account logged in successfully from this source recently: the same
    ``login_source`` (the /64 for IPv6, where a device's temporary address keeps changing),
    matching how the per-address locks are kept."""
    if not ip:
        return False
    days = current_app.config["TONGBAN_LOCKOUT_FAMILIAR_DAYS"]
    source = login_source(ip)
    recent = conn.execute(select(LoginEvent.ip).where(
        LoginEvent.user_id == user_id, LoginEvent.outcome == "success",
        LoginEvent.at > now - timedelta(days=days)).group_by(LoginEvent.ip).limit(_FAMILIAR_SCAN)).scalars()
    return any(seen and login_source(seen) == source for seen in recent)


# distinct addresses of recent successful log-ins looked at (an account has few)
_FAMILIAR_SCAN = 500


# The reservation's and the release's statements, built once per (dialect, log-in column):
# the values are bound parameters, so a log-in neither rebuilds them nor recomputes their
# compilation cache key (SQLAlchemy memoises it on the statement object).
_NOW = bindparam("b_now", type_=DateTime())
_statements: dict[tuple[str, str], tuple] = {}


def _login_statements(dialect: str, column: str) -> tuple:
    """(find the account by ``column``, take a slot of the (account, source) pair, read the
    pair's lock) for ``dialect``."""
    key = (dialect, column)
    found = _statements.get(key)
    if found is not None:
        return found
    t = LoginThrottle
    now = _NOW
    lock_over = or_(t.locked_until.is_(None), t.locked_until <= now)
    failures = case((and_(t.locked_until.is_not(None), t.locked_until <= now), 0), else_=t.failures)
    pending = case((or_(t.pending_at.is_(None), t.pending_at < bindparam("stale_before", type_=DateTime())), 0),
                   else_=t.pending)
    account = select(User.id, User.disabled, User.locked_until, User.password_hash, User.failed_logins).where(
        getattr(User, column) == bindparam("login", type_=String()))
    # one statement: a new pair's row is created with this try's slot taken; an existing
    # pair's row takes a slot only while confirmed failures + tries in flight < threshold
    take = upsert(
        _Dialect(dialect), t,
        dict(user_id=bindparam("b_user_id", type_=Integer()), source=bindparam("b_source", type_=String()),
             failures=0, pending=1, pending_at=now, locks=0),
        ["user_id", "source"], {"failures": failures, "locked_until": None, "pending": pending + 1,
                                "pending_at": now},
        where=and_(lock_over, failures + pending < bindparam("threshold", type_=Integer()))).returning(t.failures)
    pair_lock = select(t.locked_until).where(t.user_id == bindparam("b_user_id", type_=Integer()),
                                             t.source == bindparam("b_source", type_=String()))
    found = _statements[key] = (account, take, pair_lock)
    return found


class _Dialect:
    """What ``upsert`` asks of a bind: its dialect's name."""

    def __init__(self, name: str):
        self.dialect = self
        self.name = name


_RELEASE_PAIR = update(LoginThrottle).where(
    LoginThrottle.user_id == bindparam("b_user_id", type_=Integer()),
    LoginThrottle.source == bindparam("b_source", type_=String())).values(
    pending=case((LoginThrottle.pending > 0, LoginThrottle.pending - 1), else_=0), failures=0, locked_until=None,
    locks=0)


def _release_account_statement():
    # the password lockout's counters: nothing a lean answer shows or depends on (see _LOCK_ONLY)
    return (update(User).where(User.id == bindparam("b_user_id", type_=Integer()),
                               or_(User.failed_logins != 0, User.locked_until.is_not(None)))
            .values(failed_logins=0, locked_until=None).execution_options(**_LOCK_ONLY))


@dataclass(frozen=True)
class RateLimit:
    """A per-address limit (``ratelimit.hit_client``) counted in the reservation's transaction."""

    name: str
    limit: int
    window: int


@dataclass
class Attempt:
    """A log-in try reserved before its password is checked (``reserve``)."""

    login: str
    source: str
    slot: _Slot | None  # None: no such account (or no valid log-in name)
    throttled: ratelimit.Hit | None = None  # refused by the rate limit: nothing else was done


def _reserve_attempt(login: str, source: str, ip: str, now: datetime, rate: RateLimit | None = None
                     ) -> tuple[ratelimit.Hit | None, _Slot | None]:
    """Count the try against ``rate`` (if given), then find the account and atomically take one
    try slot of its (account, address) pair; returns (the hit, the slot). A refused hit ends
    it there: the account is neither looked up nor counted.

    One UPDATE ... RETURNING, so parallel tries each take their own slot and no more than
    the threshold are checked before the pair's lock holds: confirmed failures plus tries in
    flight never exceed it. A slot only becomes a failure once the password was checked and
    wrong; a right password gives its slot back. It runs in its own short transaction
    (the try counts even if the request later fails) on one connection, before the
    request's session touches the database: a log-in never holds two pooled connections
    at once and, on SQLite, never waits for a write lock its own session holds. The rate
    limit's count shares that transaction (one commit where there were two): both must count
    whatever happens to the request, and both happen before the password check.
    """
    by = _login_by(login)
    if by is None and rate is None:
        return None, None
    threshold = current_app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    with db.engine.begin() as conn:
        hit = None
        if rate is not None:
            hit = ratelimit.hit_client(rate.name, ip, rate.limit, rate.window, conn=conn)
            if not hit.allowed:
                return hit, None
        if by is None:
            return hit, None
        column, value = by
        find, take, pair_lock = _login_statements(conn.dialect.name, column)
        found = conn.execute(find, {"login": value}).first()
        if found is None:
            return hit, None
        user_id, disabled, account_locked, password_hash, account_failed = found
        if disabled:
            return hit, _Slot(user_id, "disabled")
        if account_locked is not None and account_locked > now and not _familiar(conn, user_id, ip, now):
            return hit, _Slot(user_id, "locked", account_locked)
        took = execute_prebuilt(conn, take, {"b_user_id": user_id, "b_source": source, "b_now": now,
                                             "stale_before": now - _PENDING_STALE,
                                             "threshold": threshold}).first()
        if took is not None and threshold > 0:
            return hit, _Slot(user_id, "reserved", password_hash=password_hash,
                              account_failures=bool(account_failed) or account_locked is not None)
        until = conn.execute(pair_lock, {"b_user_id": user_id, "b_source": source}).scalar()
        if until is not None and until > now:
            return hit, _Slot(user_id, "locked", until)
        return hit, _Slot(user_id, "busy")


def _take_slot(login: str, source: str, ip: str, rate: RateLimit | None = None
               ) -> tuple[ratelimit.Hit | None, _Slot | None]:
    """Count the try against ``rate`` and reserve a slot; while tries of the same pair in flight
    hold them all, wait (no transaction held) until they are answered: right passwords give
    theirs back. The try is counted once, however long it waits."""
    deadline = time.monotonic() + _SLOT_WAIT
    pause = 0.01
    hit, slot = _reserve_attempt(login, source, ip, utcnow(), rate)
    while True:
        if slot is None or slot.outcome != "busy" or time.monotonic() >= deadline:
            return hit, slot
        time.sleep(pause + random.random() * pause)
        pause = min(pause * 2, 0.2)
        _, slot = _reserve_attempt(login, source, ip, utcnow())


# the password lockout's counters: nothing a lean answer shows or depends on (tongban.hotcache);
# without this, every wrong password would empty every process's hot cache
_LOCK_ONLY = {"tongban_hotcache": "neutral"}
_RELEASE_ACCOUNT = _release_account_statement()


def _release_success(conn, user_id: int, source: str, account_failures: bool = True) -> None:
    """A right password: its slot back, the pair's and the account's failures forgotten (the
    account row is only written when it had failures or a lock when the try was reserved), in
    ``conn``'s transaction: the request's, which records the success (log-in event, audit) and
    commits it all at once. Should that transaction roll back, nothing of the success is kept:
    the failures still count, and the slot is free again once ``_PENDING_STALE`` has passed
    (the reservation counts a slot that old as free), as for a worker that died mid-check."""
    conn.execute(_RELEASE_PAIR, {"b_user_id": user_id, "b_source": source})
    if account_failures:
        conn.execute(_RELEASE_ACCOUNT, {"b_user_id": user_id})


@dataclass
class _Failure:
    count: int  # the pair's confirmed failures
    locked_until: datetime | None  # the pair's new lock, when this failure set one
    account_locked_until: datetime | None  # the account-wide lock, when this failure set one
    account_count: int


def _record_failure(user_id: int, source: str, now: datetime) -> _Failure:
    """A wrong password: its slot becomes a confirmed failure; the threshold-th locks the pair."""
    cfg = current_app.config
    threshold = cfg["TONGBAN_LOCKOUT_THRESHOLD"]
    account_threshold = cfg["TONGBAN_LOCKOUT_ACCOUNT_THRESHOLD"]
    t = LoginThrottle
    with db.engine.begin() as conn:
        count, locks = conn.execute(update(t).where(t.user_id == user_id, t.source == source).values(
            pending=case((t.pending > 0, t.pending - 1), else_=0), failures=t.failures + 1)
            .returning(t.failures, t.locks)).one()
        pair_until = None
        if count >= threshold:
            pair_until = now + timedelta(minutes=_pair_lock_minutes(locks + 1))
            conn.execute(update(t).where(t.user_id == user_id, t.source == source)
                         .values(locked_until=pair_until, locks=t.locks + 1))
        # the account-wide count: many addresses guessing together lock it for unfamiliar ones
        expired = and_(User.locked_until.is_not(None), User.locked_until <= now)
        new_count = case((expired, 1), else_=User.failed_logins + 1)
        acct_count, acct_until = conn.execute(update(User).where(User.id == user_id).values(
            failed_logins=new_count, locked_until=case((expired, None), else_=User.locked_until))
            .returning(User.failed_logins, User.locked_until).execution_options(**_LOCK_ONLY)).one()
        set_account = None
        if acct_count >= account_threshold and acct_until is None:
            set_account = now + timedelta(minutes=cfg["TONGBAN_LOCKOUT_MINUTES"])
            conn.execute(update(User).where(User.id == user_id, User.locked_until.is_(None))
                         .values(locked_until=set_account).execution_options(**_LOCK_ONLY))
    return _Failure(count, pair_until, set_account, acct_count)


def reserve(login: str, *, ip: str = "", rate: RateLimit | None = None) -> Attempt:
    """The first half of a log-in, before the password is checked: count the try against the
    per-address ``rate`` limit and reserve a try slot of the (account, address) pair, in one
    short transaction of its own (committed whatever the request does next). When ``throttled``
    is set the limit refused the try and nothing else was done; else pass the attempt to
    ``authenticate``."""
    source = login_source(ip)
    release_connection()  # what the request read so far: no connection held across Argon2
    hit, slot = _take_slot(login, source, ip, rate)
    return Attempt(login, source, slot, hit if hit is not None and not hit.allowed else None)


def authenticate(login: str, password: str, *, ip: str = "", user_agent: str = "",
                 attempt: Attempt | None = None) -> LoginResult:
    """Check a log-in (``attempt``: its reservation by ``reserve``, else reserved here). The
    request's session is not used until the try is settled: reserving the slot and the Argon2
    check each hold at most one pooled connection, never two, and no transaction is open during
    the check. A right password's slot is given back in the request's transaction (the caller
    commits it); a wrong one is counted in a transaction of its own (it counts whatever happens
    to the request)."""
    if attempt is None:
        attempt = reserve(login, ip=ip)
    elif attempt.throttled is not None or attempt.login != login:
        raise ValueError("authenticate: the attempt was refused, or reserved for another log-in name")
    source, slot = attempt.source, attempt.slot
    release_connection()  # (reserve did; unless the caller read since) none held across Argon2
    if slot is None:
        verify_password(None, password)  # same cost as a real check
        audit.record("login.failure", actor=mask_number((login or "").strip()[:20]), object="",
                     outcome="failure", detail={"reason": "unknown_account"})
        return LoginResult(None, False, reason="bad_credentials")
    right, new_hash, failure = False, None, None
    if slot.outcome == "reserved":
        try:
            right = verify_password(slot.password_hash, password)
            new_hash = hash_password(password) if right and needs_rehash(slot.password_hash) else None
        except BaseException:
            _give_back(slot.user_id, source)
            raise
        if right:
            session = db.session()
            _release_success(session.connection(), slot.user_id, source, slot.account_failures)
            mark_written(session)
        else:
            failure = _record_failure(slot.user_id, source, utcnow())
    user = get_by_pk(User, slot.user_id, populate_existing=True)
    if user is None:  # deleted in between
        return LoginResult(None, False, reason="bad_credentials")
    if slot.outcome == "disabled" or (right and user.disabled):  # (or disabled during the check)
        audit.record("login.failure", actor=f"user:{user.sub}", outcome="failure",
                     detail={"reason": "disabled"})
        return LoginResult(user, False, reason="disabled")
    if slot.outcome == "busy":
        audit.record("login.throttled", actor=f"user:{user.sub}", outcome="failure",
                     detail={"reason": "tries_in_flight"})
        return LoginResult(user, False, reason="busy")
    if slot.outcome == "locked":
        until = slot.locked_until
        _event(user, "locked", ip, user_agent)
        audit.record("login.refused_locked", actor=f"user:{user.sub}", outcome="failure",
                     detail={"locked_until": until.isoformat(timespec="seconds") if until else None})
        return LoginResult(user, False, locked_until=until, reason="locked")
    if right:
        if new_hash and user.password_hash == slot.password_hash:
            user.password_hash = new_hash
        _event(user, "success", ip, user_agent)
        audit.record("login.success", actor=f"user:{user.sub}", object=f"user:{user.sub}",
                     detail={"rehashed": True} if new_hash else None)
        return LoginResult(user, True)
    if failure is None:  # not reserved, and none of the outcomes above: cannot happen
        raise RuntimeError(f"unexpected log-in slot outcome {slot.outcome!r}")
    _event(user, "bad_password", ip, user_agent)
    audit.record("login.failure", actor=f"user:{user.sub}", outcome="failure",
                 detail={"reason": "bad_password", "consecutive": failure.count})
    if failure.account_locked_until is not None:
        audit.record("account.locked", actor="system", object=f"user:{user.sub}",
                     detail={"until": failure.account_locked_until.isoformat(timespec="seconds"),
                             "failures": failure.account_count, "scope": "account"})
    if failure.locked_until is not None:
        audit.record("account.locked", actor="system", object=f"user:{user.sub}",
                     detail={"until": failure.locked_until.isoformat(timespec="seconds"),
                             "failures": failure.count, "scope": "address", "source": source})
        return LoginResult(user, False, locked_until=failure.locked_until, reason="locked")
    return LoginResult(user, False, reason="bad_credentials")


def _give_back(user_id: int, source: str) -> None:
    """A check that never finished (an error): its slot is free again."""
    t = LoginThrottle
    with db.engine.begin() as conn:
        conn.execute(update(t).where(t.user_id == user_id, t.source == source)
                     .values(pending=case((t.pending > 0, t.pending - 1), else_=0)))


def lock_status(user: User) -> datetime | None:
    """Until when the account is locked anywhere (account-wide or for one address), or None."""
    now = utcnow()
    latest = user.locked_until if user.locked_until and user.locked_until > now else None
    pair = db.session.execute(select(func.max(LoginThrottle.locked_until)).where(
        LoginThrottle.user_id == user.id, LoginThrottle.locked_until > now)).scalar()
    if pair is not None and (latest is None or pair > latest):
        latest = pair
    return latest


# one prebuilt INSERT on the request session's connection, in its transaction: every log-in
# writes one, and nothing reads it back as an object (no unit-of-work bookkeeping for it)
_INSERT_EVENT = insert(LoginEvent).values(
    user_id=bindparam("b_user_id", type_=Integer()), at=bindparam("b_at", type_=DateTime()),
    ip=bindparam("b_ip", type_=String()), user_agent=bindparam("b_user_agent", type_=String()),
    outcome=bindparam("b_outcome", type_=String()))


def _event(user: User, outcome: str, ip: str, user_agent: str) -> None:
    session = db.session()
    session.connection().execute(_INSERT_EVENT, {"b_user_id": user.id, "b_at": utcnow(), "b_ip": ip[:64],
                                                 "b_user_agent": user_agent[:300], "b_outcome": outcome})
    mark_written(session)


def recent_logins(user: User, limit: int = 20) -> list[LoginEvent]:
    return list(db.session.execute(
        select(LoginEvent).where(LoginEvent.user_id == user.id).order_by(LoginEvent.at.desc()).limit(limit)
    ).scalars())


def change_password(user: User, current: str, new: str, *, keep_sid: str | None = None) -> int:
    """Replace the password (the caller holds no write transaction: both Argon2 runs happen
    before anything is written). Every other session of the account ends; returns how many."""
    if not check_account_password(user, current):
        audit.record("account.password_change", actor=f"user:{user.sub}", outcome="failure",
                     detail={"reason": "bad_current_password"})
        raise BadPassword(localised(_l("The current password is wrong.")))
    check_policy(new, id_number=user.id_number, phone=user.phone or "")
    new_hash = new_password_hash(new)
    user.password_hash = new_hash
    user.password_changed_at = utcnow()
    audit.record("account.password_change", actor=f"user:{user.sub}", object=f"user:{user.sub}")
    return password_replaced(user, keep_sid=keep_sid, actor=f"user:{user.sub}")


def password_replaced(user: User, *, keep_sid: str | None, actor: str) -> int:
    """After a password change or reset: whoever knew the old one is out. Every session but
    ``keep_sid`` ends (back-channel logout, its access tokens denied), and every refresh
    token of the account, offline ones too, is revoked with its live access token."""
    ended = 0
    for s in sessions.active_sessions(user):
        if s.sid != keep_sid:
            ended += sessions.end(s, "password_changed", actor)
    families = revoke_credentials(user, keep_sid=keep_sid, reason="password_changed", actor=actor)
    audit.record("account.credentials_reset", actor=actor, object=f"user:{user.sub}",
                 detail={"sessions_ended": ended, "refresh_families_revoked": families})
    return ended


def unlock(user: User, actor: str) -> None:
    user.failed_logins = 0
    user.locked_until = None
    db.session.execute(delete(LoginThrottle).where(LoginThrottle.user_id == user.id))
    audit.record("admin.account_unlocked", actor=actor, object=f"user:{user.sub}")


# ---------------------------------------------------------------- organisations and staff


def get_org(uscc: str) -> Organisation:
    uscc = validate_uscc(uscc)
    org = db.session.execute(select(Organisation).where(Organisation.uscc == uscc)).scalar_one_or_none()
    if org is None:
        raise UnknownOrg(f"no organisation with USCC {uscc}")
    return org


def create_org(uscc: str, name: str, legal_rep_id_number: str | None = None, *, actor: str = "admin"
               ) -> Organisation:
    uscc = validate_uscc(uscc)
    name = (name or "").strip()
    if not name:
        raise InvalidName("organisation name is required")
    rep = None
    if legal_rep_id_number:
        ident = parse_id_number(legal_rep_id_number)
        rep = db.session.execute(select(User).where(User.id_number == ident.value)).scalar_one_or_none()
        if rep is None:
            raise UnknownUser("the legal representative must be an existing citizen account")
    if db.session.execute(select(Organisation.id).where(Organisation.uscc == uscc)).first():
        raise OrgExists(f"an organisation with USCC {uscc} already exists")
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
        raise InvalidRole(f"unknown role {role!r} (one of {', '.join(ROLES)})")
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


def create_staff(id_number: str, name: str | None, password: str | None, org_uscc: str, role: str,
                 phone: str | None = None, *, actor: str = "admin") -> User:
    """Give an account a role in an organisation; an existing account keeps its password (none is
    needed), a new one needs a name and a password."""
    if role not in ROLES:
        raise InvalidRole(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    org = get_org(org_uscc)
    ident = parse_id_number(id_number)
    user = db.session.execute(select(User).where(User.id_number == ident.value)).scalar_one_or_none()
    if user is None:
        if not name or not password:
            raise NoAccount("no account has this ID number: give --name and --password-stdin to open one")
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
