"""The people layer's tables: accounts, organisations, staff roles, the local population
register, log-in history and throttles, and the browser log-in (SSO) session.

Secrets are stored only as SHA-256 digests (the SSO cookie) or password hashes.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tongban.extensions import db
from tongban.identifiers import parse_id_number


class User(db.Model):
    """A citizen account (natural person), identified by ID number."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sub: Mapped[str] = mapped_column(String(40), unique=True)  # stable pairwise-free subject id
    id_number: Mapped[str] = mapped_column(String(18), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(20), unique=True, nullable=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    # assurance level 1..5 (STANDARDS.md: L1 self-registered ... L5 in person / certificate)
    assurance_level: Mapped[int] = mapped_column(Integer, default=1)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    password_changed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    roles: Mapped[list[StaffRole]] = relationship(back_populates="user", cascade="all, delete-orphan")

    def get_user_id(self) -> str:  # Authlib
        return self.sub

    @property
    def birthdate(self) -> date:
        return parse_id_number(self.id_number).birthdate

    @property
    def gender(self) -> str:
        return parse_id_number(self.id_number).gender

    @property
    def acr(self) -> str:
        return f"L{self.assurance_level}"

    def has_role(self, role: str) -> bool:
        return any(r.role == role for r in self.roles)


class Organisation(db.Model):
    """An enterprise, public institution or government body, identified by its USCC."""

    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uscc: Mapped[str] = mapped_column(String(18), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    legal_rep_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)

    legal_rep: Mapped[User | None] = relationship()


class StaffRole(db.Model):
    """A person's role in an organisation: clerk, seal-admin, auditor or admin."""

    __tablename__ = "staff_roles"
    __table_args__ = (UniqueConstraint("user_id", "org_id", "role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime)

    user: Mapped[User] = relationship(back_populates="roles")
    org: Mapped[Organisation] = relationship()


class PopulationRecord(db.Model):
    """The local stand-in for the population register the IdentityVerifier checks."""

    __tablename__ = "population_register"

    id_number: Mapped[str] = mapped_column(String(18), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class LoginEvent(db.Model):
    """A user's recent log-in history (shown on the account page)."""

    __tablename__ = "login_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    outcome: Mapped[str] = mapped_column(String(20))  # success | bad_password | locked


class LoginThrottle(db.Model):
    """Wrong-password state of one (account, client address) pair: tries in flight, confirmed
    failures, the pair's lock and how many locks it served (each lasts twice the last)."""

    __tablename__ = "login_throttles"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)  # an IPv4 address or IPv6 /64
    failures: Mapped[int] = mapped_column(Integer, default=0)
    pending: Mapped[int] = mapped_column(Integer, default=0)
    pending_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    locks: Mapped[int] = mapped_column(Integer, default=0)


class LoginSession(db.Model):
    """A single-sign-on session: one per browser log-in; its id is the ``sid`` claim."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sid: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # of the SSO cookie value
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    auth_time: Mapped[datetime] = mapped_column(DateTime)
    acr: Mapped[str] = mapped_column(String(10), default="L1")
    amr: Mapped[str] = mapped_column(String(100), default="pwd")  # space-separated
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_seen: Mapped[datetime] = mapped_column(DateTime)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)

    user: Mapped[User] = relationship()


class SessionClient(db.Model):
    """Which systems were signed in through a session (for logout everywhere)."""

    __tablename__ = "session_clients"

    sid: Mapped[str] = mapped_column(String(64), ForeignKey("login_sessions.sid", ondelete="CASCADE"),
                                     primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_at: Mapped[datetime] = mapped_column(DateTime)
    last_at: Mapped[datetime] = mapped_column(DateTime)
