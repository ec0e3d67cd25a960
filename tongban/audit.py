"""The hash-chained audit log of every security and licence event.

Each row carries the SHA-256 of the previous row's hash and its own content, so
an edited, inserted or deleted row breaks the chain. Writers serialise on the
single ``audit_head`` row: ``UPDATE ... RETURNING`` takes its row lock (PostgreSQL)
or the write lock (SQLite) and returns the latest committed head, so the chain
stays unbroken with any number of concurrent writers. The head also records the
last sequence number, so deleting rows at the end shows too.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from flask import has_request_context, request
from sqlalchemy import BigInteger, DateTime, Integer, String, Text, event, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from .clock import utcnow
from .extensions import db
from .masking import mask_text

GENESIS = "0" * 64


class AuditLog(db.Model):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    actor: Mapped[str] = mapped_column(String(200), default="", index=True)
    action: Mapped[str] = mapped_column(String(80), index=True)
    object: Mapped[str] = mapped_column(String(300), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(20), default="success")
    detail: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    def payload(self) -> str:
        return canonical(self.seq, self.at, self.actor, self.action, self.object, self.ip, self.outcome,
                         self.detail)


class AuditHead(db.Model):
    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64), default=GENESIS)


@event.listens_for(AuditHead.__table__, "after_create")
def _create_head(target, connection, **kw):
    connection.execute(insert(target).values(id=1, seq=0, last_hash=GENESIS))


def canonical(seq, at, actor, action, obj, ip, outcome, detail) -> str:
    stamp = at.isoformat(timespec="microseconds") if isinstance(at, datetime) else str(at)
    return json.dumps([seq, stamp, actor, action, obj, ip, outcome, detail], ensure_ascii=False,
                      separators=(",", ":"))


def chain_hash(prev_hash: str, payload: str) -> str:
    return hashlib.sha256((prev_hash + payload).encode()).hexdigest()


def client_ip() -> str:
    if has_request_context():
        return request.remote_addr or ""
    return "cli"


def record(action: str, *, actor: str = "", object: str = "", outcome: str = "success",
           detail: dict | None = None, ip: str | None = None) -> AuditLog:
    """Append one event in the current transaction (it commits or rolls back with it).

    Personal data (ID numbers, phone numbers) is masked before it is written.
    """
    head = db.session.execute(
        update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + 1)
        .returning(AuditHead.seq, AuditHead.last_hash)
    ).one()
    seq, prev = head
    row = AuditLog(
        seq=seq, at=utcnow(), actor=mask_text(str(actor or ""))[:200], action=action,
        object=mask_text(str(object or ""))[:300], ip=(ip if ip is not None else client_ip())[:64],
        outcome=outcome,
        detail=mask_text(json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, default=str)),
        prev_hash=prev,
    )
    row.hash = chain_hash(prev, row.payload())
    db.session.add(row)
    db.session.execute(update(AuditHead).where(AuditHead.id == 1).values(last_hash=row.hash))
    return row


def verify() -> tuple[bool, int | None, int, str]:
    """Walk the chain. Returns (whole, first bad row id, rows checked, reason)."""
    prev, expected_seq, count = GENESIS, 1, 0
    rows = db.session.execute(select(AuditLog).order_by(AuditLog.seq)).scalars()
    for row in rows:
        if row.seq != expected_seq:
            return False, row.id, count, f"sequence jumps from {expected_seq - 1} to {row.seq} (rows deleted)"
        if row.prev_hash != prev:
            return False, row.id, count, "previous-hash link broken (row inserted or deleted before it)"
        if chain_hash(prev, row.payload()) != row.hash:
            return False, row.id, count, "content does not match its hash (row edited)"
        prev, expected_seq, count = row.hash, expected_seq + 1, count + 1
    head = db.session.get(AuditHead, 1)
    if head is None or head.seq != expected_seq - 1 or head.last_hash != prev:
        last = db.session.execute(select(AuditLog.id).order_by(AuditLog.seq.desc()).limit(1)).scalar()
        return False, last, count, "the chain's head does not match its last row (rows deleted at the end)"
    return True, None, count, ""


__all__ = ["AuditHead", "AuditLog", "record", "verify"]


def init_app(app) -> None:
    import sys

    import click
    from flask.cli import AppGroup

    group = AppGroup("audit", help="The hash-chained audit log.")

    @group.command("verify")
    def verify_cmd():
        """Check the hash chain: exit 0 when whole, 1 with the first bad entry's id."""
        whole, bad_id, count, reason = verify()
        if whole:
            click.echo(f"audit log intact: {count} entries")
            return
        click.echo(f"audit log broken at entry {bad_id}: {reason}", err=True)
        sys.exit(1)

    app.cli.add_command(group)
