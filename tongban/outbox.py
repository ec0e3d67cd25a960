"""A durable outbox: messages to other systems (back-channel logout tokens, ...) written
in the same transaction as the change that causes them, delivered after the commit.

Delivery is at least once, never in the user's request: a daemon thread per web process
(started lazily, woken after each commit that queued something, polling otherwise) and
the ``flask outbox work`` command drain the same table. Any number of them may run
against one database: a row is claimed with a conditional ``UPDATE`` (exactly one
claimant sees ``rowcount == 1`` on SQLite and PostgreSQL alike), and a claim that is
not settled in time (a worker died mid-delivery) lapses and the row is tried again.
Failures are retried with exponential back-off and recorded on the row.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import DateTime, Index, Integer, String, Text, func, or_, select, update
from sqlalchemy.orm import Mapped, mapped_column

from .background import ProcessThread, at_first_request
from .clock import utcnow
from .extensions import after_commit, db

log = logging.getLogger(__name__)

PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"
# seconds to wait after the 1st, 2nd, ... failed attempt (the last value repeats)
BACKOFF = (10, 60, 300, 1800, 7200, 21600)
CLAIM_SECONDS = 120  # a claim not settled by then lapses (the worker died mid-delivery)


class OutboxItem(db.Model):
    __tablename__ = "outbox_items"
    __table_args__ = (Index("ix_outbox_items_status_next_try", "status", "next_try"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))  # names the handler, e.g. backchannel_logout
    target: Mapped[str] = mapped_column(String(500))  # where it goes (as registered when queued)
    subject: Mapped[str] = mapped_column(String(200), default="")  # what it is about, for the console
    payload: Mapped[str] = mapped_column(Text, default="{}")  # JSON for the handler
    status: Mapped[str] = mapped_column(String(20), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=8)
    next_try: Mapped[datetime] = mapped_column(DateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    @property
    def data(self) -> dict:
        return json.loads(self.payload or "{}")


class DeliveryError(Exception):
    """A delivery attempt failed; the message says why (recorded on the row)."""


Handler = Callable[[OutboxItem], None]
_handlers: dict[str, Handler] = {}


def handler(kind: str) -> Callable[[Handler], Handler]:
    """Register the function that delivers items of ``kind`` (raises to fail the attempt)."""

    def deco(fn: Handler) -> Handler:
        _handlers[kind] = fn
        return fn

    return deco


def enqueue(kind: str, target: str, payload: dict, subject: str = "") -> OutboxItem:
    """Queue a message in the current transaction; the worker is woken once it commits."""
    now = utcnow()
    item = OutboxItem(kind=kind, target=target, subject=subject[:200],
                      payload=json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
                      status=PENDING, attempts=0, max_attempts=current_app.config["TONGBAN_OUTBOX_MAX_ATTEMPTS"],
                      next_try=now, created_at=now, updated_at=now)
    db.session.add(item)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    after_commit(lambda: wake(app))
    return item


def backoff(attempts: int) -> int:
    return BACKOFF[min(attempts, len(BACKOFF)) - 1] if attempts > 0 else 0


# ---------------------------------------------------------------- working the queue


def _due_ids(limit: int) -> list[int]:
    now = utcnow()
    return list(db.session.execute(
        select(OutboxItem.id).where(or_(
            (OutboxItem.status == PENDING) & (OutboxItem.next_try <= now),
            (OutboxItem.status == SENDING) & (OutboxItem.claimed_until < now),
        )).order_by(OutboxItem.next_try, OutboxItem.id).limit(limit)).scalars())


def _claim(item_id: int) -> bool:
    now = utcnow()
    claimed = db.session.execute(  # type: ignore[attr-defined]
        update(OutboxItem).where(OutboxItem.id == item_id, or_(
            (OutboxItem.status == PENDING) & (OutboxItem.next_try <= now),
            (OutboxItem.status == SENDING) & (OutboxItem.claimed_until < now),
        )).values(status=SENDING, claimed_until=now + timedelta(seconds=CLAIM_SECONDS),
                  attempts=OutboxItem.attempts + 1, updated_at=now)
        .execution_options(synchronize_session=False)).rowcount
    db.session.commit()  # the claim is visible before the (slow) delivery starts
    return claimed == 1


def deliver(item_id: int) -> str | None:
    """Claim and deliver one item; returns its new status, or None if another worker has it."""
    if not _claim(item_id):
        return None
    item = db.session.get(OutboxItem, item_id)
    db.session.refresh(item)
    error = None
    try:
        fn = _handlers.get(item.kind)
        if fn is None:
            raise DeliveryError(f"no handler for {item.kind!r}")
        fn(item)
    except Exception as e:  # any failure is recorded and retried, never raised to the caller
        db.session.rollback()
        item = db.session.get(OutboxItem, item_id)
        error = (str(e) or type(e).__name__)[:500]
    now = utcnow()
    item.claimed_until = None
    item.updated_at = now
    if error is None:
        item.status, item.delivered_at, item.last_error = DELIVERED, now, None
    else:
        item.last_error = error
        if item.attempts >= item.max_attempts:
            item.status = FAILED
            log.warning("outbox item %s (%s to %s) failed for good: %s", item.id, item.kind, item.target, error)
        else:
            item.status = PENDING
            item.next_try = now + timedelta(seconds=backoff(item.attempts))
    status = item.status
    db.session.commit()
    return status


def work_once(limit: int = 50) -> dict[str, int]:
    """Deliver what is due now; returns counts by outcome."""
    counts: dict[str, int] = {}
    for item_id in _due_ids(limit):
        status = deliver(item_id)
        if status is not None:
            counts[status] = counts.get(status, 0) + 1
    return counts


# periodic chores the worker runs too (e.g. ending expired sessions), at most every N seconds;
# N is a number, or the name of a setting holding it (read at each pass: configurable)
_chores: list[tuple[Callable[[], object], float | str]] = []
_chores_last: dict[int, float] = {}


def chore(every: float | str) -> Callable[[Callable[[], object]], Callable[[], object]]:
    def deco(fn):
        ensure_chore(fn, every)
        return fn

    return deco


def ensure_chore(fn: Callable[[], object], every: float | str) -> None:
    """Register ``fn`` as a chore once, however often the module registering it is set up."""
    if not any(existing is fn for existing, _ in _chores):
        _chores.append((fn, every))


def purge_expired(model, every: float = 3600) -> Callable[[], None]:
    """Register (and return) a chore deleting ``model`` rows a day past their ``expires_at``
    (the audit log keeps what happened)."""

    def purge() -> None:
        from sqlalchemy import delete

        db.session.execute(delete(model).where(model.expires_at < utcnow() - timedelta(days=1)))
        db.session.commit()

    purge.__name__ = f"purge_{model.__tablename__}"
    ensure_chore(purge, every=every)
    return purge


def _interval(every: float | str) -> float:
    return float(current_app.config[every]) if isinstance(every, str) else every


def run_chores(force: bool = False) -> None:
    for i, (fn, every) in enumerate(_chores):
        now = time.monotonic()
        if force or now - _chores_last.get(i, -1e9) >= _interval(every):
            _chores_last[i] = now
            try:
                fn()
            except Exception:
                db.session.rollback()
                log.exception("outbox chore %s failed", fn.__name__)


# ---------------------------------------------------------------- the worker thread


class _Worker(ProcessThread):
    """The outbox thread of this process, woken by ``wake``."""

    name = "tongban-outbox"

    def timeout(self, app: Flask) -> float:
        return app.config["TONGBAN_OUTBOX_POLL_SECONDS"]

    def run_pass(self, app: Flask, woken: bool) -> None:
        self.event.clear()
        if not app.config["TONGBAN_OUTBOX_THREAD"]:
            return
        try:
            with app.app_context():
                while work_once():
                    pass
                run_chores()
        except Exception:  # the database may be briefly away: try again at the next wake
            log.exception("outbox worker pass failed")


_worker = _Worker()


def wake(app: Flask) -> None:
    if not app.config["TONGBAN_OUTBOX_THREAD"]:
        return
    _worker.wake(app)


# ---------------------------------------------------------------- listing (admin console)


def recent(limit: int = 200, status: str | None = None) -> list[OutboxItem]:
    stmt = select(OutboxItem).order_by(OutboxItem.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(OutboxItem.status == status)
    return list(db.session.execute(stmt).scalars())


def counts() -> dict[str, int]:
    return {status: n for status, n in db.session.execute(
        select(OutboxItem.status, func.count()).group_by(OutboxItem.status))}


def retry_now(item_id: int) -> bool:
    """Make a pending or failed item due at once (an administrator's "retry now")."""
    item = db.session.get(OutboxItem, item_id)
    if item is None or item.status not in (PENDING, FAILED):
        return False
    if item.status == FAILED:
        item.max_attempts = item.attempts + 1
    item.status, item.next_try, item.updated_at = PENDING, utcnow(), utcnow()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    after_commit(lambda: wake(app))
    return True


# ---------------------------------------------------------------- CLI and wiring

outbox_cli = AppGroup("outbox", help="The outbox of messages to other systems (back-channel logout, ...).")


@outbox_cli.command("work")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
def work_cmd(once: bool):
    """Deliver queued messages (retrying with back-off); runs until stopped unless --once."""
    poll = current_app.config["TONGBAN_OUTBOX_POLL_SECONDS"]
    while True:
        total: dict[str, int] = {}
        while True:
            done = work_once()
            for k, v in done.items():
                total[k] = total.get(k, 0) + v
            if not done:
                break
        run_chores(force=once)
        if once:
            click.echo(json.dumps(total))
            return
        time.sleep(poll)


def init_app(app: Flask) -> None:
    app.cli.add_command(outbox_cli)

    def start_worker() -> None:
        # rows left by a previous run (or queued by another process) are picked up without
        # waiting for this process to queue something itself
        if app.config["TONGBAN_OUTBOX_THREAD"]:
            _worker.ensure(app)

    at_first_request(app, start_worker)
