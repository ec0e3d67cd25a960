"""audit log: keyed chain sealed by a chainer (rows appended unchained), head MAC, signed checkpoints

Existing rows were chained with plain SHA-256, which anyone with the database can recompute.
The upgrade checks that chain one last time, records the verdict as a new event
(``audit.rekeyed``), and hands every row back to the chainer, which seals them again, in the
same order, with the keyed MAC (``tongban/audit.py``) the next time it runs.

Revision ID: 0011_audit_chainer
Revises: 0010_session_security
Create Date: 2026-12-07 07:00:00

"""
import hashlib
import json
import secrets
from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0011_audit_chainer"
down_revision = "0010_session_security"
branch_labels = None
depends_on = None

GENESIS = "0" * 64

log_table = sa.table(
    "audit_log",
    sa.column("id", sa.Integer), sa.column("seq", sa.BigInteger), sa.column("at", sa.DateTime),
    sa.column("actor", sa.String), sa.column("action", sa.String), sa.column("object", sa.String),
    sa.column("ip", sa.String), sa.column("outcome", sa.String), sa.column("detail", sa.Text),
    sa.column("prev_hash", sa.String), sa.column("hash", sa.String), sa.column("tag", sa.String),
)
head_table = sa.table("audit_head", sa.column("id", sa.Integer), sa.column("seq", sa.BigInteger),
                      sa.column("last_hash", sa.String))


def _payload(seq, r) -> str:
    stamp = r.at.isoformat(timespec="microseconds") if isinstance(r.at, datetime) else str(r.at)
    return json.dumps([seq, stamp, r.actor, r.action, r.object, r.ip, r.outcome, r.detail], ensure_ascii=False,
                      separators=(",", ":"))


LEGACY = [c for c in log_table.c if c.name != "tag"]


def _legacy_verdict(bind) -> tuple[int, str]:
    rows = bind.execute(sa.select(*LEGACY).order_by(log_table.c.seq)).all()
    prev, expected = GENESIS, 1
    for r in rows:
        if r.seq != expected:
            return len(rows), f"broken at entry {r.id}: sequence jumps from {expected - 1} to {r.seq}"
        if r.prev_hash != prev:
            return len(rows), f"broken at entry {r.id}: previous-hash link broken"
        if hashlib.sha256((prev + _payload(r.seq, r)).encode()).hexdigest() != r.hash:
            return len(rows), f"broken at entry {r.id}: content does not match its hash"
        prev, expected = r.hash, expected + 1
    head = bind.execute(sa.select(head_table.c.seq, head_table.c.last_hash).where(head_table.c.id == 1)).first()
    if head is None or head.seq != expected - 1 or head.last_hash != prev:
        return len(rows), "broken at the end: the head does not match the last entry"
    return len(rows), "intact"


def upgrade():
    bind = op.get_bind()
    count, verdict = _legacy_verdict(bind)

    op.create_table('audit_checkpoints',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('signature', sa.String(length=120), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_checkpoints')),
    sa.UniqueConstraint('seq', name=op.f('uq_audit_checkpoints_seq'))
    )
    with op.batch_alter_table('audit_head', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mac', sa.String(length=64), nullable=True))

    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.alter_column('seq', existing_type=sa.BigInteger(), nullable=True)
        batch_op.alter_column('prev_hash', existing_type=sa.String(length=64), nullable=True)
        batch_op.alter_column('hash', existing_type=sa.String(length=64), nullable=True)
        batch_op.add_column(sa.Column('tag', sa.String(length=100), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_audit_log_tag'), ['tag'])

    # every row goes back to the chainer (id order is the old chain's order), tagged with the
    # instance's audit key as if just written, and the head to genesis
    bind.execute(sa.update(log_table).values(seq=None, prev_hash=None, hash=None))
    bind.execute(sa.update(head_table).where(head_table.c.id == 1).values(seq=0, last_hash=GENESIS))
    if count:
        bind.execute(sa.insert(log_table).values(
            at=datetime.now(UTC).replace(tzinfo=None), actor="system", action="audit.rekeyed", object="audit_log",
            ip="cli", outcome="success" if verdict == "intact" else "failure",
            detail=json.dumps({"legacy_entries": count, "legacy_chain": verdict}, ensure_ascii=False,
                              sort_keys=True)))
        from flask import current_app

        from tongban.audit import keys, row_tag

        key = keys(current_app).chain
        for r in bind.execute(sa.select(log_table).order_by(log_table.c.id)).all():
            tag = row_tag(key, secrets.token_hex(12), r.at, r.actor, r.action, r.object, r.ip, r.outcome, r.detail)
            bind.execute(sa.update(log_table).where(log_table.c.id == r.id).values(tag=tag))


def downgrade():
    bind = op.get_bind()
    # back to the unkeyed SHA-256 chain, in id order
    prev, seq = GENESIS, 0
    rows = bind.execute(sa.select(*LEGACY).order_by(log_table.c.id)).all()
    bind.execute(sa.update(log_table).values(seq=None))
    for r in rows:
        seq += 1
        h = hashlib.sha256((prev + _payload(seq, r)).encode()).hexdigest()
        bind.execute(sa.update(log_table).where(log_table.c.id == r.id).values(seq=seq, prev_hash=prev, hash=h))
        prev = h
    bind.execute(sa.update(head_table).where(head_table.c.id == 1).values(seq=seq, last_hash=prev))
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_audit_log_tag'), type_='unique')
        batch_op.drop_column('tag')
        batch_op.alter_column('hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('prev_hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('seq', existing_type=sa.BigInteger(), nullable=False)
    with op.batch_alter_table('audit_head', schema=None) as batch_op:
        batch_op.drop_column('mac')
    op.drop_table('audit_checkpoints')
