"""Enterprise (legal person) accounts: claiming, administrators, agents (办事人), acting for one.

An enterprise is an ``Organisation`` (USCC). Its legal representative (法定代表人,
``Organisation.legal_rep_id``) claims it, confirmed by a ``LegalPersonRegister``;
they appoint up to ``MAX_ADMINS`` administrators; the legal representative and the
administrators authorise agents for chosen systems and a chosen period.

These are NOT the government staff roles of ``StaffRole`` (clerk, seal-admin, ...):
enterprise roles live in their own tables.

Acting for an enterprise is chosen per log-in session and system: one
``EnterpriseActing`` row per (``sid``, ``client_id``). Tokens carry ``sid`` and the
client, so the ID token, userinfo, refresh and introspection all find the choice
and check it is still valid (check-on-use). Withdrawing or expiring an authority
ends every session acting on it (``sessions.end``: refresh tokens revoked, access
tokens denied, back-channel logout).

Services flush; the request or CLI command commits once (except where noted).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.orm.attributes import set_committed_value

from tongban import audit
from tongban.clock import digest, to_epoch, utcnow
from tongban.errors import Forbidden
from tongban.extensions import db, get_by_pk, read_connection
from tongban.identifiers import parse_id_number, validate_uscc
from tongban.masking import mask_name, mask_number

from . import assurance, sessions
from .accounts import normalise_phone
from .errors import (
    AlreadyAdmin,
    ClaimUndone,
    InvalidPeriod,
    IsLegalRep,
    NoAuthority,
    NoSystems,
    NotLegalRep,
    NotPermitted,
    NotVerified,
    ReasonRequired,
    TooManyAdmins,
    UnknownAdmin,
    UnknownAuthorisation,
    UnknownClaim,
    UnknownClient,
    UnknownOrg,
    UnknownUser,
)
from .mfa import sms_sender
from .models import LoginSession, Organisation, User
from .signals import known_systems

MAX_ADMINS = 5
ROLE_LEGAL_REP, ROLE_ADMIN, ROLE_AGENT = "legal_rep", "admin", "agent"
SCOPE = "enterprise"
CLAIMS = ("org_uscc", "org_name", "org_role", "org_authorised_until")


# ---------------------------------------------------------------- models


class LegalPersonRecord(db.Model):
    """The local stand-in for the market-regulation register the LegalPersonRegister checks."""

    __tablename__ = "legal_person_register"

    uscc: Mapped[str] = mapped_column(String(18), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    legal_rep_id_number: Mapped[str] = mapped_column(String(18))
    legal_rep_name: Mapped[str] = mapped_column(String(100))
    # the enterprise's contact mobile in the register: told by SMS whenever someone claims it
    contact_phone: Mapped[str | None] = mapped_column(String(20), nullable=True)


class EnterpriseAdmin(db.Model):
    """An administrator the legal representative appointed (at most ``MAX_ADMINS``)."""

    __tablename__ = "enterprise_admins"
    __table_args__ = (UniqueConstraint("org_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    appointed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"),
                                                        nullable=True)
    appointed_at: Mapped[datetime] = mapped_column(DateTime)

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    org: Mapped[Organisation] = relationship()


class AgentAuthorisation(db.Model):
    """An agent (办事人) may act for the enterprise at ``client_ids`` from ``valid_from`` until ``valid_until``."""

    __tablename__ = "enterprise_agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    client_ids: Mapped[list] = mapped_column(JSON, default=list)
    valid_from: Mapped[datetime] = mapped_column(DateTime)
    valid_until: Mapped[datetime] = mapped_column(DateTime, index=True)
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    granted_at: Mapped[datetime] = mapped_column(DateTime)
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    withdrawn_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"),
                                                        nullable=True)
    # when the sessions acting on it were ended (withdrawal or expiry): done once
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    org: Mapped[Organisation] = relationship()

    def is_active(self, now: datetime, client_id: str | None = None) -> bool:
        if self.withdrawn_at is not None or not (self.valid_from <= now < self.valid_until):
            return False
        return client_id is None or client_id in (self.client_ids or [])

    def state(self, now: datetime) -> str:
        if self.withdrawn_at is not None:
            return "withdrawn"
        if now >= self.valid_until:
            return "expired"
        return "active" if now >= self.valid_from else "pending"


class EnterpriseClaim(db.Model):
    """One successful claim: who became legal representative, how their session was proven,
    whether the register's contact phone was told, and its dispute and undoing by a clerk."""

    __tablename__ = "enterprise_claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    previous_rep_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"),
                                                        nullable=True)
    sid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    acr: Mapped[str] = mapped_column(String(10))
    amr: Mapped[str] = mapped_column(String(100))
    claimed_at: Mapped[datetime] = mapped_column(DateTime)
    notified_phone: Mapped[str | None] = mapped_column(String(20), nullable=True)  # masked
    # the one-time code in the notification SMS that lets the enterprise dispute the claim
    dispute_code_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(12), default="active", index=True)  # active|disputed|undone
    disputed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    disputed_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    dispute_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    undone_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    undone_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    undo_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    org: Mapped[Organisation] = relationship()


class EnterpriseActing(db.Model):
    """Who a log-in session acts as at one system: the person (``org_id`` NULL) or an enterprise."""

    __tablename__ = "enterprise_acting"

    sid: Mapped[str] = mapped_column(String(64), ForeignKey("login_sessions.sid", ondelete="CASCADE"),
                                     primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"),
                                               nullable=True, index=True)
    role: Mapped[str | None] = mapped_column(String(20), nullable=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("enterprise_agents.id", ondelete="CASCADE"),
                                                 nullable=True, index=True)
    chosen_at: Mapped[datetime] = mapped_column(DateTime)

    org: Mapped[Organisation | None] = relationship()
    agent: Mapped[AgentAuthorisation | None] = relationship()


# ---------------------------------------------------------------- the register


class LegalPersonRegister:
    """Confirms that a citizen (ID number + name) is the legal representative of a USCC.

    The shipped implementation reads the local ``legal_person_register`` table that
    ``demo seed`` fills; a deployment plugs in the market-regulation service by
    setting ``app.extensions["tongban.legal_person_register"]``.
    """

    def confirm(self, uscc: str, id_number: str, name: str) -> str | None:
        """The enterprise's registered name when confirmed, else None."""
        rec = db.session.get(LegalPersonRecord, uscc)
        if rec is None or rec.legal_rep_id_number != id_number or rec.legal_rep_name != name:
            return None
        return rec.name


def legal_person_register() -> LegalPersonRegister:
    return current_app.extensions.get("tongban.legal_person_register") or LegalPersonRegister()


def add_register_record(uscc: str, name: str, legal_rep_id_number: str, legal_rep_name: str,
                        contact_phone: str | None = None) -> None:
    """Put (or update) an entry of the local register (demo seed, tests)."""

    uscc = validate_uscc(uscc)
    rep = parse_id_number(legal_rep_id_number).value
    phone = normalise_phone(contact_phone)
    rec = db.session.get(LegalPersonRecord, uscc)
    if rec is None:
        db.session.add(LegalPersonRecord(uscc=uscc, name=name, legal_rep_id_number=rep, legal_rep_name=legal_rep_name,
                                         contact_phone=phone))
    else:
        rec.name, rec.legal_rep_id_number, rec.legal_rep_name = name, rep, legal_rep_name
        if phone is not None:
            rec.contact_phone = phone
    db.session.flush()


# ---------------------------------------------------------------- claiming and roles


def _actor(user: User) -> str:
    return f"user:{user.sub}"


class ProofingRequired(Forbidden):
    """The session is not proven enough to claim an enterprise (or to move an identity)."""

    code = "proofing_required"


@dataclass(frozen=True)
class Proofing:
    """What a session still lacks for ``level``: an identity check (account level) and/or a
    second factor used in this very session."""

    level: str
    identity: bool
    factor: bool

    @property
    def ok(self) -> bool:
        return not (self.identity or self.factor)


def proofing(sess: LoginSession | None, config_key: str = "TONGBAN_ENTERPRISE_CLAIM_ACR") -> Proofing:
    """Whether ``sess`` meets ``app.config[config_key]`` (default L3) with a second factor in it.

    The account level (``assurance_level``) must reach the level, and the session must have
    used a possession factor (``otp``, ``sms``, ``swk``/``hwk``) besides the password: a
    password alone, or a scan-to-log-in session (``mca``), never claims power. Levels above
    L3 are not reachable online (``assurance.ONLINE_MAX``): set that high, nobody claims online.
    """

    needed = assurance.level_of(current_app.config.get(config_key)) or 3  # unreadable: fail safe at L3
    wanted = assurance.LEVELS[needed - 1]
    if sess is None or sess.ended_at is not None:
        return Proofing(wanted, True, True)
    assurance.refresh(sess)
    amr = set((sess.amr or "").split())
    has_factor = bool(amr & assurance.KNOWLEDGE) and bool(amr & assurance.POSSESSION)
    account_ok = sess.user.assurance_level >= needed and needed <= assurance.ONLINE_MAX
    return Proofing(wanted, identity=not account_ok, factor=not has_factor)


def _dispute_code() -> str:
    alphabet = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L
    return "".join(secrets.choice(alphabet) for _ in range(10))


def _normalise_code(code: str) -> str:
    return "".join((code or "").split()).replace("-", "").upper()


def claim(user: User, uscc: str, sess: LoginSession | None) -> Organisation:
    """Become the legal representative of ``uscc`` once the register confirms it.

    ``sess`` is the claimant's log-in session: it must be proven (``proofing``) — an account
    that merely typed someone's name and ID number at registration never gets here. The
    register's contact phone is told by SMS, with a code to dispute the claim.
    """
    uscc = validate_uscc(uscc)
    if sess is not None and sess.user_id != user.id:
        sess = None
    proof = proofing(sess)
    if not proof.ok:
        audit.record("enterprise.claim", actor=_actor(user), object=f"org:{uscc}", outcome="failure",
                     detail={"reason": "proofing_required", "acr": sess.acr if sess else None,
                             "amr": sess.amr if sess else None, "needed": proof.level})
        raise ProofingRequired(str(_l("To claim an enterprise your identity must be verified (%(level)s) and you "
                                      "must have used a second factor in this session.", level=proof.level)))
    register = legal_person_register()
    name = register.confirm(uscc, user.id_number, user.name)
    if name is None:
        audit.record("enterprise.claim", actor=_actor(user), object=f"org:{uscc}", outcome="failure",
                     detail={"reason": "not_confirmed"})
        raise NotLegalRep(str(_l("The register does not list you as the legal representative of this "
                               "enterprise.")))
    org = db.session.execute(select(Organisation).where(Organisation.uscc == uscc)).scalar_one_or_none()
    previous = None
    if org is None:
        org = Organisation(uscc=uscc, name=name, legal_rep_id=user.id, created_at=utcnow())
        db.session.add(org)
        db.session.flush()
        audit.record("org.created", actor=_actor(user), object=f"org:{uscc}", detail={"name": name})
    elif org.legal_rep_id != user.id:
        previous = org.legal_rep_id
        org.legal_rep_id = user.id
        org.name = name
        if previous is not None:
            end_acting(org.id, previous, reason="legal_rep_changed", actor=_actor(user), role=ROLE_LEGAL_REP)
    else:
        audit.record("enterprise.claim", actor=_actor(user), object=f"org:{uscc}", detail={"already": True})
        return org
    # the legal representative needs no administrator role besides
    db.session.execute(delete(EnterpriseAdmin).where(EnterpriseAdmin.org_id == org.id,
                                                     EnterpriseAdmin.user_id == user.id))
    code = _dispute_code()
    row = EnterpriseClaim(org_id=org.id, user_id=user.id, previous_rep_id=previous, sid=sess.sid, acr=sess.acr,
                          amr=sess.amr or "", claimed_at=utcnow(), dispute_code_hash=digest(code), state="active")
    db.session.add(row)
    db.session.flush()
    phone = contact_phone(uscc)
    if phone:
        _notify_claim(phone, org, user, code)
        row.notified_phone = mask_number(phone)
    audit.record("enterprise.claim", actor=_actor(user), object=f"org:{uscc}",
                 detail={"claim": row.id, "acr": sess.acr, "amr": sess.amr,
                         "notified": mask_number(phone) if phone else None})
    return org


def contact_phone(uscc: str) -> str | None:
    """The register's contact mobile of ``uscc`` (a plugged-in register may offer ``contact_phone``)."""
    register = legal_person_register()
    lookup = getattr(register, "contact_phone", None)
    if lookup is not None and not isinstance(register, LegalPersonRegister):
        return lookup(uscc)
    rec = db.session.get(LegalPersonRecord, uscc)
    return rec.contact_phone if rec is not None else None


SMS_KIND = "sms"


def _notify_claim(phone: str, org: Organisation, user: User, code: str) -> None:
    """Queue the SMS in the outbox: it goes out after the claim commits, through the SMS sender
    (``app.extensions["tongban.sms_sender"]``), with retries, and no lock is held meanwhile."""
    from flask_babel import gettext

    from tongban import outbox

    url = current_app.config["TONGBAN_ISSUER"].rstrip("/") + "/enterprise/dispute"
    text = gettext("Tongban: %(person)s has claimed %(org)s as its legal representative. If this was not "
                   "authorised, dispute it at %(url)s with code %(code)s, or at a government service counter.",
                   person=mask_name(user.name), org=org.name, url=url, code=code)
    outbox.enqueue(SMS_KIND, f"sms:{mask_number(phone)}", {"phone": phone, "text": text},
                   subject=f"org:{org.uscc} claim notice")
    audit.record("enterprise.claim_notified", actor="system", object=f"org:{org.uscc}",
                 detail={"phone": mask_number(phone)})


def _deliver_sms(item) -> None:
    data = item.data
    sms_sender().send(data["phone"], data["text"])


def _register_sms_handler() -> None:
    from tongban import outbox

    outbox.handler(SMS_KIND)(_deliver_sms)


_register_sms_handler()


def claims(org: Organisation | None = None, states: tuple[str, ...] | None = None,
           limit: int = 100) -> list[EnterpriseClaim]:
    q = select(EnterpriseClaim).order_by(EnterpriseClaim.id.desc()).limit(limit)
    if org is not None:
        q = q.where(EnterpriseClaim.org_id == org.id)
    if states:
        q = q.where(EnterpriseClaim.state.in_(states))
    return list(db.session.execute(q).scalars())


def get_claim(claim_id: int) -> EnterpriseClaim:
    row = db.session.get(EnterpriseClaim, claim_id)
    if row is None:
        raise UnknownClaim(str(_l("No such claim.")))
    return row


class DisputeRefused(Forbidden):
    code = "dispute_refused"


def dispute_with_code(uscc: str, code: str, note: str = "", *, source: str = "") -> EnterpriseClaim:
    """The enterprise (whoever holds the register's contact phone) disputes a claim with the SMS code.

    Throttled per ``source`` (the caller's address; an IPv6 /64, and its /48, count as one):
    ``TONGBAN_CLAIM_DISPUTE_RATE_PER_IP`` tries per hour. The per-enterprise limit
    (``TONGBAN_CLAIM_DISPUTE_RATE`` wrong codes per hour) refuses further wrong codes only:
    a right code always goes through, so nobody can use up an enterprise's tries and block
    its dispute (the 10-character code, 31**10 values, needs no per-enterprise guard against
    guessing). A wrong code changes nothing. The claim stays in force until a clerk checks
    in person and undoes it.
    """
    from tongban import ratelimit

    uscc = validate_uscc(uscc)
    cfg = current_app.config
    if not ratelimit.hit_client("claim-dispute-ip", source, cfg["TONGBAN_CLAIM_DISPUTE_RATE_PER_IP"], 3600).allowed:
        audit.record("enterprise.claim_disputed", actor="anonymous", object=f"org:{uscc}", outcome="failure",
                     detail={"reason": "throttled"})
        raise DisputeRefused(str(_l("Too many tries. Try again later or go to a government service counter.")),
                             "throttled", 429)
    org = db.session.execute(select(Organisation).where(Organisation.uscc == uscc)).scalar_one_or_none()
    wanted = digest(_normalise_code(code))
    row = None
    if org is not None:
        row = db.session.execute(select(EnterpriseClaim).where(
            EnterpriseClaim.org_id == org.id, EnterpriseClaim.dispute_code_hash == wanted,
            EnterpriseClaim.state.in_(("active", "disputed")))).scalar_one_or_none()
    if row is None:
        if not ratelimit.hit(f"claim-dispute:{uscc}", cfg["TONGBAN_CLAIM_DISPUTE_RATE"], 3600).allowed:
            raise DisputeRefused(str(_l("Too many tries. Try again later or go to a government service "
                                        "counter.")), "throttled", 429)  # no audit row per flood try
        audit.record("enterprise.claim_disputed", actor="anonymous", object=f"org:{uscc}", outcome="failure",
                     detail={"reason": "bad_code"})
        raise DisputeRefused(str(_l("This code does not match a claim of this enterprise.")), "bad_code")
    return _mark_disputed(row, "sms_code", note)


def dispute(claim_id: int, *, by: str, note: str) -> EnterpriseClaim:
    """A clerk (``by``: ``user:<sub>``, or ``admin`` from the CLI) records a dispute brought to the
    counter by anyone."""
    row = get_claim(claim_id)
    if row.state == "undone":
        raise ClaimUndone(str(_l("This claim was undone already.")))
    return _mark_disputed(row, by, note)


def _mark_disputed(row: EnterpriseClaim, by: str, note: str) -> EnterpriseClaim:
    note = (note or "").strip()[:1000]
    if row.state == "active":
        row.state = "disputed"
        row.disputed_at = utcnow()
        row.disputed_by = by
    if note:
        row.dispute_note = ((row.dispute_note + "\n") if row.dispute_note else "") + note
    db.session.flush()
    audit.record("enterprise.claim_disputed", actor=by, object=f"org:{row.org.uscc}",
                 detail={"claim": row.id, "claimant": f"user:{row.user.sub}"})
    return row


@dataclass
class Undone:
    claim: EnterpriseClaim
    admins_removed: int
    agents_withdrawn: int
    sessions_ended: int


def undo_claim(claim_id: int, *, by: str, reason: str) -> Undone:
    """A clerk, after checking in person, undoes a claim: the claimant stops being legal
    representative, the administrators they appointed and the agents they (or those
    administrators) authorised are withdrawn, and every session acting on that ends."""
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired(str(_l("Give the reason (what was checked in person).")))
    row = get_claim(claim_id)
    if row.state == "undone":
        raise ClaimUndone(str(_l("This claim was undone already.")))
    row.state, row.undone_at, row.undone_by, row.undo_reason = "undone", utcnow(), by, reason[:1000]
    admins_removed, agents_withdrawn, ended = _strip(row.org, row.user, by, "enterprise_claim_undone")
    audit.record("enterprise.claim_undone", actor=by, object=f"org:{row.org.uscc}",
                 detail={"claim": row.id, "claimant": f"user:{row.user.sub}", "reason": reason[:500],
                         "admins_removed": admins_removed, "agents_withdrawn": agents_withdrawn,
                         "sessions_ended": ended})
    return Undone(row, admins_removed, agents_withdrawn, ended)


def _strip(org: Organisation, user: User, by: str, reason: str) -> tuple[int, int, int]:
    """Take ``user``'s legal representation of ``org`` and everything that flowed from it."""
    now = utcnow()
    ended = 0
    if org.legal_rep_id == user.id:
        org.legal_rep_id = None
    appointed = db.session.execute(select(EnterpriseAdmin).where(
        EnterpriseAdmin.org_id == org.id, EnterpriseAdmin.appointed_by_id == user.id)).scalars().all()
    granters = {user.id} | {a.user_id for a in appointed}
    for a in appointed:
        admin_user_id, sub = a.user_id, a.user.sub
        db.session.delete(a)
        db.session.flush()
        audit.record("enterprise.admin_removed", actor=by, object=f"org:{org.uscc}",
                     detail={"admin": f"user:{sub}", "reason": reason})
        ended += end_acting(org.id, admin_user_id, reason=reason, actor=by, role=ROLE_ADMIN)
    grants = db.session.execute(select(AgentAuthorisation).where(
        AgentAuthorisation.org_id == org.id, AgentAuthorisation.granted_by_id.in_(granters),
        AgentAuthorisation.withdrawn_at.is_(None))).scalars().all()
    for g in grants:
        g.withdrawn_at = now
        audit.record("enterprise.agent_withdrawn", actor=by, object=f"org:{org.uscc}",
                     detail={"agent": f"user:{g.user.sub}", "authorisation": g.id, "reason": reason})
        ended += _end_authorisation(g, "enterprise_authority_withdrawn", by)
    ended += end_acting(org.id, user.id, reason=reason, actor=by)
    db.session.flush()
    return len(appointed), len(grants), ended


def strip_all(user: User, *, by: str, reason: str) -> int:
    """Every enterprise role of ``user`` ends (ID-number recovery): legal representation (as by an
    undone claim), administrator posts and agent authorisations. Returns how many roles ended."""
    n = 0
    now = utcnow()
    for org in db.session.execute(select(Organisation).where(Organisation.legal_rep_id == user.id)).scalars().all():
        _strip(org, user, by, reason)
        n += 1
    for row in db.session.execute(select(EnterpriseClaim).where(
            EnterpriseClaim.user_id == user.id, EnterpriseClaim.state != "undone")).scalars().all():
        row.state, row.undone_at, row.undone_by, row.undo_reason = "undone", now, by, reason
    for a in db.session.execute(select(EnterpriseAdmin).where(EnterpriseAdmin.user_id == user.id)).scalars().all():
        org_id, uscc = a.org_id, a.org.uscc
        db.session.delete(a)
        db.session.flush()
        audit.record("enterprise.admin_removed", actor=by, object=f"org:{uscc}",
                     detail={"admin": f"user:{user.sub}", "reason": reason})
        end_acting(org_id, user.id, reason=reason, actor=by, role=ROLE_ADMIN)
        n += 1
    for g in db.session.execute(select(AgentAuthorisation).where(
            AgentAuthorisation.user_id == user.id, AgentAuthorisation.withdrawn_at.is_(None))).scalars().all():
        g.withdrawn_at = now
        audit.record("enterprise.agent_withdrawn", actor=by, object=f"org:{g.org.uscc}",
                     detail={"agent": f"user:{user.sub}", "authorisation": g.id, "reason": reason})
        _end_authorisation(g, "enterprise_authority_withdrawn", by)
        n += 1
    db.session.flush()
    return n


def get_enterprise(uscc: str) -> Organisation:
    uscc = validate_uscc(uscc)
    org = db.session.execute(select(Organisation).where(Organisation.uscc == uscc)).scalar_one_or_none()
    if org is None:
        raise UnknownOrg(str(_l("No such enterprise.")))
    return org


def role_in(user: User, org: Organisation) -> str | None:
    """``legal_rep`` or ``admin`` (who may manage the enterprise), else None."""
    if org.legal_rep_id == user.id:
        return ROLE_LEGAL_REP
    if db.session.execute(select(EnterpriseAdmin.id).where(
            EnterpriseAdmin.org_id == org.id, EnterpriseAdmin.user_id == user.id)).first():
        return ROLE_ADMIN
    return None


def _require(user: User, org: Organisation, *roles: str) -> str:
    role = role_in(user, org)
    if role not in roles:
        raise NotPermitted(str(_l("You may not do this for this enterprise.")))
    return role


def _citizen(id_number: str) -> User:
    ident = parse_id_number(id_number)
    u = db.session.execute(select(User).where(User.id_number == ident.value)).scalar_one_or_none()
    if u is None or u.disabled:
        raise UnknownUser(str(_l("There is no account with this ID number.")))
    return u


def admins(org: Organisation) -> list[EnterpriseAdmin]:
    return list(db.session.execute(select(EnterpriseAdmin).where(EnterpriseAdmin.org_id == org.id)
                                   .order_by(EnterpriseAdmin.appointed_at, EnterpriseAdmin.id)).scalars())


def _require_proven(actor: User, sess: LoginSession | None, org: Organisation, action: str) -> None:
    """Giving power (an administrator, an agent) needs the same proven session as claiming: a
    phished password alone must not hand the enterprise to someone else."""
    if sess is not None and sess.user_id != actor.id:
        sess = None
    proof = proofing(sess)
    if not proof.ok:
        audit.record(action, actor=_actor(actor), object=f"org:{org.uscc}", outcome="failure",
                     detail={"reason": "proofing_required"})
        raise ProofingRequired(str(_l("To give others power over the enterprise, use a second factor in this "
                                      "session first.")))


def appoint_admin(actor: User, org: Organisation, id_number: str, sess: LoginSession | None) -> EnterpriseAdmin:
    """``sess``: the actor's log-in session, which must be proven (``proofing``)."""
    _require(actor, org, ROLE_LEGAL_REP)
    _require_proven(actor, sess, org, "enterprise.admin_appointed")
    target = _citizen(id_number)
    if target.assurance_level < 3:
        raise NotVerified(str(_l("An administrator's identity must be verified (L3) first: ask them to confirm "
                               "their name and ID number under My account.")))
    if target.id == org.legal_rep_id:
        raise IsLegalRep(str(_l("The legal representative manages the enterprise already.")))
    if db.session.execute(select(EnterpriseAdmin.id).where(
            EnterpriseAdmin.org_id == org.id, EnterpriseAdmin.user_id == target.id)).first():
        raise AlreadyAdmin(str(_l("This person is an administrator already.")))
    count = db.session.execute(select(func.count()).select_from(EnterpriseAdmin)
                               .where(EnterpriseAdmin.org_id == org.id)).scalar_one()
    if count >= MAX_ADMINS:
        raise TooManyAdmins(str(_l("An enterprise has at most %(n)d administrators.", n=MAX_ADMINS)))
    row = EnterpriseAdmin(org_id=org.id, user_id=target.id, appointed_by_id=actor.id, appointed_at=utcnow())
    db.session.add(row)
    db.session.flush()
    audit.record("enterprise.admin_appointed", actor=_actor(actor), object=f"org:{org.uscc}",
                 detail={"admin": f"user:{target.sub}"})
    return row


def remove_admin(actor: User, org: Organisation, admin_id: int) -> None:
    _require(actor, org, ROLE_LEGAL_REP)
    row = db.session.get(EnterpriseAdmin, admin_id)
    if row is None or row.org_id != org.id:
        raise UnknownAdmin(str(_l("No such administrator.")))
    user_id, sub = row.user_id, row.user.sub
    db.session.delete(row)
    db.session.flush()
    audit.record("enterprise.admin_removed", actor=_actor(actor), object=f"org:{org.uscc}",
                 detail={"admin": f"user:{sub}"})
    end_acting(org.id, user_id, reason="enterprise_admin_removed", actor=_actor(actor), role=ROLE_ADMIN)


def agents(org: Organisation) -> list[AgentAuthorisation]:
    return list(db.session.execute(select(AgentAuthorisation).where(AgentAuthorisation.org_id == org.id)
                                   .order_by(AgentAuthorisation.granted_at.desc(), AgentAuthorisation.id.desc())
                                   ).scalars())


def authorise_agent(actor: User, org: Organisation, id_number: str, client_ids: list[str],
                    valid_from: datetime, valid_until: datetime, sess: LoginSession | None) -> AgentAuthorisation:
    """Authorise an agent for ``client_ids`` during [valid_from, valid_until) (naive UTC); ``sess``
    is the actor's log-in session, which must be proven (``proofing``)."""
    _require(actor, org, ROLE_LEGAL_REP, ROLE_ADMIN)
    _require_proven(actor, sess, org, "enterprise.agent_authorised")
    target = _citizen(id_number)
    client_ids = list(dict.fromkeys(c for c in client_ids if c))
    if not client_ids:
        raise NoSystems(str(_l("Choose at least one system.")))
    known = known_systems(client_ids)  # the register of systems answers (idp.hooks)
    if known != set(client_ids):
        raise UnknownClient(str(_l("Unknown system.")))
    if valid_until <= valid_from or valid_until <= utcnow():
        raise InvalidPeriod(str(_l("The period must end after it starts, and in the future.")))
    row = AgentAuthorisation(org_id=org.id, user_id=target.id, client_ids=client_ids, valid_from=valid_from,
                             valid_until=valid_until, granted_by_id=actor.id, granted_at=utcnow())
    db.session.add(row)
    db.session.flush()
    audit.record("enterprise.agent_authorised", actor=_actor(actor), object=f"org:{org.uscc}",
                 detail={"agent": f"user:{target.sub}", "authorisation": row.id, "systems": client_ids,
                         "from": valid_from.isoformat(timespec="seconds"),
                         "until": valid_until.isoformat(timespec="seconds")})
    return row


def withdraw_agent(actor: User, org: Organisation, authorisation_id: int) -> int:
    """Withdraw an authorisation now; returns how many sessions were ended."""
    _require(actor, org, ROLE_LEGAL_REP, ROLE_ADMIN)
    row = db.session.get(AgentAuthorisation, authorisation_id)
    if row is None or row.org_id != org.id:
        raise UnknownAuthorisation(str(_l("No such authorisation.")))
    if row.withdrawn_at is None:
        row.withdrawn_at = utcnow()
        row.withdrawn_by_id = actor.id
        audit.record("enterprise.agent_withdrawn", actor=_actor(actor), object=f"org:{org.uscc}",
                     detail={"agent": f"user:{row.user.sub}", "authorisation": row.id})
    return _end_authorisation(row, "enterprise_authority_withdrawn", _actor(actor))


def _end_authorisation(row: AgentAuthorisation, reason: str, actor: str) -> int:
    row.ended_at = row.ended_at or utcnow()
    return end_acting(row.org_id, row.user_id, reason=reason, actor=actor, agent_id=row.id)


def claim_end(row: AgentAuthorisation, now: datetime) -> bool:
    """Mark ``row`` ended unless it already is (a conditional ``UPDATE``): of several servers
    sweeping at once, exactly one ends each authorisation — one audit entry, one logout."""
    claimed = db.session.execute(update(AgentAuthorisation).where(  # type: ignore[attr-defined]
        AgentAuthorisation.id == row.id, AgentAuthorisation.ended_at.is_(None)).values(ended_at=now)
        .execution_options(synchronize_session=False)).rowcount
    if not claimed:
        db.session.refresh(row)
        return False
    set_committed_value(row, "ended_at", now)
    return True


def expire_due(now: datetime | None = None) -> int:
    """End the sessions of authorisations that expired (``flask enterprises expire``)."""
    now = now or utcnow()
    rows = db.session.execute(select(AgentAuthorisation).where(
        AgentAuthorisation.ended_at.is_(None),
        or_(AgentAuthorisation.valid_until <= now, AgentAuthorisation.withdrawn_at.is_not(None)))).scalars().all()
    ended = 0
    for row in rows:
        if not claim_end(row, now):  # another server's sweep ended it meanwhile
            continue
        if row.withdrawn_at is None:
            audit.record("enterprise.agent_expired", actor="system", object=f"org:{row.org.uscc}",
                         detail={"agent": f"user:{row.user.sub}", "authorisation": row.id})
        _end_authorisation(row, "enterprise_authority_expired", "system")
        ended += 1
    return ended


def end_acting(org_id: int, user_id: int, *, reason: str, actor: str, role: str | None = None,
               agent_id: int | None = None) -> int:
    """End every live session of ``user_id`` that acts for ``org_id`` (in ``role``/on ``agent_id``)."""

    q = (select(LoginSession).join(EnterpriseActing, EnterpriseActing.sid == LoginSession.sid)
         .where(EnterpriseActing.org_id == org_id, LoginSession.user_id == user_id, LoginSession.ended_at.is_(None)))
    if role is not None:
        q = q.where(EnterpriseActing.role == role)
    if agent_id is not None:
        q = q.where(EnterpriseActing.agent_id == agent_id)
    rows = db.session.execute(q.distinct()).scalars().all()
    for sess in rows:
        sessions.end(sess, reason, actor)
    return len(rows)


# ---------------------------------------------------------------- acting for an enterprise


@dataclass(frozen=True)
class Capacity:
    """One way a person may act: for ``org`` in ``role`` (on ``agent`` for agents)."""

    org: Organisation
    role: str
    agent: AgentAuthorisation | None = None

    @property
    def key(self) -> str:
        return f"agent:{self.agent.id}" if self.agent else f"{self.role}:{self.org.id}"


def managed(user: User) -> list[Capacity]:
    """Enterprises the person manages (legal representative or administrator)."""
    out = [Capacity(o, ROLE_LEGAL_REP) for o in db.session.execute(
        select(Organisation).where(Organisation.legal_rep_id == user.id).order_by(Organisation.id)).scalars()]
    out += [Capacity(a.org, ROLE_ADMIN) for a in db.session.execute(
        select(EnterpriseAdmin).where(EnterpriseAdmin.user_id == user.id).order_by(EnterpriseAdmin.id)).scalars()]
    return out


def managed_usccs(user: User) -> list[str]:
    return [c.org.uscc for c in managed(user)]


def my_authorisations(user: User) -> list[AgentAuthorisation]:
    return list(db.session.execute(select(AgentAuthorisation).where(AgentAuthorisation.user_id == user.id)
                                   .order_by(AgentAuthorisation.valid_until.desc())).scalars())


def capacities(user: User, client_id: str, now: datetime | None = None) -> list[Capacity]:
    """Everyone the person may act as at ``client_id`` now, besides themself."""
    now = now or utcnow()
    out = managed(user)
    out += [Capacity(a.org, ROLE_AGENT, a) for a in my_authorisations(user) if a.is_active(now, client_id)]
    return out


def selection(sid: str | None, client_id: str) -> EnterpriseActing | None:
    if not sid:
        return None
    return get_by_pk(EnterpriseActing, (sid, client_id))


def choose(sess: LoginSession, client_id: str, key: str) -> EnterpriseActing:
    """Record who ``sess`` acts as at ``client_id``: ``self`` or a ``Capacity.key``."""
    cap = None
    if key != "self":
        cap = next((c for c in capacities(sess.user, client_id) if c.key == key), None)
        if cap is None:
            raise NoAuthority(str(_l("You may not act for this enterprise at this system.")))
    row = selection(sess.sid, client_id)
    if row is None:
        row = EnterpriseActing(sid=sess.sid, client_id=client_id)
        db.session.add(row)
    row.org_id = cap.org.id if cap else None
    row.role = cap.role if cap else None
    row.agent_id = cap.agent.id if cap and cap.agent else None
    row.chosen_at = utcnow()
    db.session.flush()
    audit.record("enterprise.acting_chosen", actor=_actor(sess.user), object=f"session:{sess.sid}",
                 detail={"client": client_id, "org": cap.org.uscc if cap else None,
                         "role": cap.role if cap else None})
    return row


def _still_valid(row: EnterpriseActing, user_id: int, now: datetime) -> bool:
    org = row.org
    if org is None:
        return False
    if row.role == ROLE_LEGAL_REP:
        return org.legal_rep_id == user_id
    if row.role == ROLE_ADMIN:
        return db.session.execute(select(EnterpriseAdmin.id).where(
            EnterpriseAdmin.org_id == org.id, EnterpriseAdmin.user_id == user_id)).first() is not None
    agent = row.agent
    return agent is not None and agent.user_id == user_id and agent.is_active(now, row.client_id)


class AuthorityEnded(Exception):
    """The session acted for an enterprise on an authority that is gone; the session is ended."""


_LOOK_UP = object()


def acting_claims(sid: str | None, client_id: str, *, commit: bool = False, acting=_LOOK_UP) -> dict:
    """The enterprise claims of (``sid``, ``client_id``), checked on use.

    ``{}`` when the session acts as the person. Raises ``AuthorityEnded`` (after
    ending the session) when the authority was withdrawn or has expired, or the
    session acting for the enterprise has ended. With ``commit`` the ending is
    committed at once: callers answer with an error, and their request rolls back.

    ``acting``: the caller's own read of ``selection(sid, client_id)`` in this transaction (the
    row, or None: there is none), so the person acting as themself costs no query here (the code
    exchange reads it with the code); every check below runs on it as on a row read here.
    """
    row = selection(sid, client_id) if acting is _LOOK_UP else acting
    if row is None or row.org_id is None:
        return {}
    sess = db.session.execute(select(LoginSession).where(LoginSession.sid == sid)).scalar_one_or_none()
    now = utcnow()
    if sess is None or sess.ended_at is not None:
        raise AuthorityEnded(sid)

    if sessions.is_expired(sess.created_at, sess.last_seen, now):
        # past its idle or absolute lifetime: over even before a sweep or its browser ends it
        sessions.end(sess, "expired", "system")
        if commit:
            db.session.commit()
        raise AuthorityEnded(sid)
    if not _still_valid(row, sess.user_id, now):
        agent = row.agent
        reason = ("enterprise_authority_expired" if agent is not None and agent.withdrawn_at is None
                  and agent.valid_until <= now else "enterprise_authority_withdrawn")
        if agent is not None and agent.ended_at is None and agent.state(now) in ("expired", "withdrawn"):
            _end_authorisation(agent, reason, "system")
        else:
            sessions.end(sess, reason, "system")
        if commit:
            db.session.commit()
        raise AuthorityEnded(sid)
    org = row.org
    claims: dict[str, object] = {"org_uscc": org.uscc, "org_name": org.name, "org_role": row.role}
    if row.agent is not None:
        claims["org_authorised_until"] = to_epoch(row.agent.valid_until)
    return claims


def claims_for_scope(sid: str | None, client_id: str, scope: str, *, commit: bool = False,
                     acting=_LOOK_UP) -> dict:
    """``acting_claims`` if ``scope`` includes ``enterprise`` (it is checked either way)."""
    claims = acting_claims(sid, client_id, commit=commit, acting=acting)
    return claims if SCOPE in (scope or "").split() else {}


def is_valid(sid: str | None, client_id: str) -> bool:
    """Check-on-use for refresh and introspection: False (and the session ended, committed) if gone."""
    try:
        acting_claims(sid, client_id, commit=True)
    except AuthorityEnded:
        return False
    return True


def _expiry_chore() -> None:
    """Agent authorisations end on time even when nobody uses them: the outbox worker thread
    runs this every minute (``flask enterprises expire`` does the same by hand)."""
    if expire_due():
        db.session.commit()


def _register_chore() -> None:
    from tongban import outbox

    outbox.ensure_chore(_expiry_chore, every=60)


_register_chore()


# ---------------------------------------------------------------- one round trip for userinfo


_SNAPSHOT_STMT: list = []


def _snapshot_stmt():
    if not _SNAPSHOT_STMT:
        u, ls, ea = User.__table__, LoginSession.__table__, EnterpriseActing.__table__
        _SNAPSHOT_STMT.append(
            select(u.c.id, u.c.sub, u.c.id_number, u.c.name, u.c.phone, u.c.assurance_level, u.c.disabled,
                   ls.c.id.label("session_id"), ls.c.ended_at, ls.c.created_at, ls.c.last_seen,
                   ea.c.sid.label("acting_sid"), ea.c.org_id)
            .select_from(u.outerjoin(ls, ls.c.sid == bindparam("sid"))
                         .outerjoin(ea, and_(ea.c.sid == bindparam("sid"), ea.c.client_id == bindparam("client_id"))))
            .where(u.c.sub == bindparam("sub")))
    return _SNAPSHOT_STMT[0]


def person_acting_as_self(sub: str, sid: str | None, client_id: str) -> User | None:
    """In one query, the account ``sub`` (detached, read-only) when it is enabled, its log-in
    session ``sid`` (if any) is live, and the session acts as the person at ``client_id``, not for
    an enterprise. None in every other case: the caller then takes the full path
    (``accounts.get_user_by_sub``, ``sessions.is_live``, ``claims_for_scope``), which also ends
    what must end. The lean userinfo answer (idp.fast) is built on it."""
    found = person_acting_as_self_with_session(sub, sid, client_id)
    return found[0] if found is not None else None


def person_acting_as_self_with_session(sub: str, sid: str | None, client_id: str):
    """``person_acting_as_self`` and, when ``sid`` is given, the session's ``created_at`` and
    ``last_seen`` as read (what its idle and absolute lifetimes run from): ``(user, created_at,
    last_seen)`` or None. The hot cache (tongban.hotcache) keeps an answer only while
    ``sessions.is_expired`` of these is false."""
    with read_connection() as conn:  # straight from the pool, one statement, no transaction
        row = conn.execute(_snapshot_stmt(), {"sub": sub, "sid": sid or "", "client_id": client_id}).first()
    if row is None or row.disabled:
        return None
    if sid:
        if row.session_id is None or row.ended_at is not None or sessions.is_expired(row.created_at, row.last_seen):
            return None
        if row.acting_sid is not None and row.org_id is not None:
            return None
    user = User(id=row.id, sub=row.sub, id_number=row.id_number, name=row.name, phone=row.phone,
                assurance_level=row.assurance_level, disabled=row.disabled)
    return user, (row.created_at if sid else None), (row.last_seen if sid else None)
