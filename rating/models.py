"""好差评 tables: service events (办件), ratings (one per event) and bad-rating cases.

The one-time rating link is stored only as a SHA-256 digest; a citizen named by ID
number only (window services, no account) is stored as a keyed hash plus a masked
form, so the table never holds a full ID number.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tongban.extensions import db


class RatingEvent(db.Model):
    """A completed service (办件) a department system registered; what a rating rates."""

    __tablename__ = "rating_events"
    __table_args__ = (UniqueConstraint("client_id", "case_no"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)  # the registering system
    case_no: Mapped[str | None] = mapped_column(String(100), nullable=True)  # 办件编号 (per system)
    service_item_code: Mapped[str] = mapped_column(String(64), index=True)
    service_item_name: Mapped[str] = mapped_column(String(200))
    department_code: Mapped[str] = mapped_column(String(18), index=True)
    department_name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(2))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True,
                                                index=True)
    citizen_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    citizen_masked: Mapped[str] = mapped_column(String(40), default="")
    window: Mapped[str] = mapped_column(String(100), default="")
    staff: Mapped[str] = mapped_column(String(100), default="")
    handled_at: Mapped[datetime] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    rate_until: Mapped[datetime] = mapped_column(DateTime)
    link_hash: Mapped[str] = mapped_column(String(64), unique=True)
    link_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    rating: Mapped[Rating | None] = relationship(back_populates="event", uselist=False)


class Rating(db.Model):
    """One evaluation (评价) of one event: level 1 (非常不满意) .. 5 (非常满意)."""

    __tablename__ = "ratings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    # unique: one rating per event, whichever way it arrives (link, account list, window)
    event_id: Mapped[int] = mapped_column(ForeignKey("rating_events.id", ondelete="CASCADE"), unique=True)
    level: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[list] = mapped_column(JSON, default=list)
    comment: Mapped[str] = mapped_column(Text, default="")
    rater_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"),
                                                      nullable=True)
    via: Mapped[str] = mapped_column(String(10))  # link | account
    rated_at: Mapped[datetime] = mapped_column(DateTime)
    month: Mapped[str] = mapped_column(String(7), index=True)  # YYYY-MM (Asia/Shanghai) of rated_at
    # set when the authority upholds the department's appeal: left out of every figure
    invalidated: Mapped[bool] = mapped_column(Boolean, default=False)

    event: Mapped[RatingEvent] = relationship(back_populates="rating")
    case: Mapped[RatingCase | None] = relationship(back_populates="rating", uselist=False)


class RatingCase(db.Model):
    """A bad rating's handling (差评整改): verify, respond, rectify, call back, close; or appeal."""

    __tablename__ = "rating_cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rating_id: Mapped[int] = mapped_column(ForeignKey("ratings.id", ondelete="CASCADE"), unique=True)
    department_code: Mapped[str] = mapped_column(String(18), index=True)
    state: Mapped[str] = mapped_column(String(12), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    verify_due: Mapped[datetime] = mapped_column(DateTime)
    due_at: Mapped[datetime] = mapped_column(DateTime)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    verify_note: Mapped[str] = mapped_column(Text, default="")
    responded_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    response: Mapped[str] = mapped_column(Text, default="")
    rectified_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    rectification: Mapped[str] = mapped_column(Text, default="")
    called_back_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    callback_answer: Mapped[str] = mapped_column(String(12), default="")
    callback_note: Mapped[str] = mapped_column(Text, default="")
    closed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    appealed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    appealed_by: Mapped[str] = mapped_column(String(80), default="")
    appeal_reason: Mapped[str] = mapped_column(Text, default="")
    appeal_from: Mapped[str] = mapped_column(String(12), default="")
    appeal_decision: Mapped[str] = mapped_column(String(10), default="")  # upheld | rejected
    appeal_decided_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    appeal_note: Mapped[str] = mapped_column(Text, default="")
    escalated_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)

    rating: Mapped[Rating] = relationship(back_populates="case")


__all__ = ["Rating", "RatingCase", "RatingEvent"]
