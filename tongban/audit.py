"""The audit log of every security and licence event: keyed chain, one chainer, signed checkpoints.

Writing an event (``record``) is one short ``INSERT`` in the caller's transaction: the row
gets its own id and no place in the chain yet, so no writer waits for another. A single
*chainer* at a time (a daemon thread per process, ``flask audit chain``, and ``audit
verify`` itself) takes the committed rows not yet chained in id order, in batches, and
seals them into the chain: each gets the next sequence number, the previous row's MAC
and its own ``HMAC-SHA256(chain key, previous MAC + content)``. The chain key is derived
from a secret that is not in the database (``TONGBAN_AUDIT_KEY`` or ``instance/audit_key``,
0600), so someone who can only edit the database cannot recompute the chain after
editing, inserting or deleting rows. The head row (last sequence number and MAC) carries
its own MAC, so deleting rows at the end shows too; the chainer serialises on that row
only for its own short transaction.

Rewinding the whole log to an earlier state (restoring an old copy of the database,
deleting everything) cannot be told from the database alone; two witnesses outside it
catch it: the chainer writes the head it reached to ``instance/audit_witness`` after each
commit, and every ``TONGBAN_AUDIT_CHECKPOINT_ROWS`` rows or ``..._SECONDS`` seconds it
signs a checkpoint (sequence number, MAC, time) with an Ed25519 key derived from the
same secret. Checkpoints are stored, published at ``/audit/checkpoints`` and printed by
``flask audit checkpoints``; a third party who keeps one can later have ``flask audit
verify --checkpoint FILE`` show that the log still contains it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask, current_app, has_request_context, request
from sqlalchemy import BigInteger, DateTime, Integer, String, Text, bindparam, event, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.exceptions import HTTPException

from .background import ProcessThread, at_first_request
from .clock import utcnow
from .extensions import after_commit, db, read_connection, session_holds_sqlite_write
from .masking import mask_text

log = logging.getLogger(__name__)

GENESIS = "0" * 64
WITNESS_FILE = "audit_witness"
KEY_FILE = "audit_key"


class AuditLog(db.Model):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # chain position and MACs: empty until the chainer seals the row into the chain
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    actor: Mapped[str] = mapped_column(String(200), default="", index=True)
    action: Mapped[str] = mapped_column(String(80), index=True)
    object: Mapped[str] = mapped_column(String(300), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(20), default="success")
    detail: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # "<nonce>.<HMAC of nonce and content>", written with the row: the chainer seals only rows
    # Tongban wrote (a row inserted or edited by hand before it is chained is refused)
    tag: Mapped[str | None] = mapped_column(String(100), unique=True, nullable=True)

    @property
    def chained(self) -> bool:
        return self.seq is not None

    def payload(self, seq: int | None = None) -> str:
        return canonical(self.seq if seq is None else seq, self.at, self.actor, self.action, self.object,
                         self.ip, self.outcome, self.detail, self.tag)


class AuditHead(db.Model):
    """The one row the chainer serialises on: the last sequence number and MAC, and their MAC."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64), default=GENESIS)
    mac: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AuditCheckpoint(db.Model):
    """A signed statement "the chain had ``seq`` rows ending in ``hash`` at ``at``"."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime)
    signature: Mapped[str] = mapped_column(String(120))

    def as_dict(self, issuer: str) -> dict:
        return checkpoint_dict(issuer, self.seq, self.hash, self.at, self.signature)


@event.listens_for(AuditHead.__table__, "after_create")
def _create_head(target, connection, **kw):
    connection.execute(insert(target).values(id=1, seq=0, last_hash=GENESIS))


# ---------------------------------------------------------------- keys and MACs


def canonical(seq, at, actor, action, obj, ip, outcome, detail, tag=None) -> str:
    """What a row's MAC covers. The tag is part of it: a chained row's tag cannot be freed (set to
    NULL or changed) to let a copy of the row be chained again as a new event."""
    stamp = at.isoformat(timespec="microseconds") if isinstance(at, datetime) else str(at)
    items = [seq, stamp, actor, action, obj, ip, outcome, detail]
    if tag is not None:
        items.append(tag)
    return json.dumps(items, ensure_ascii=False, separators=(",", ":"))


def legacy_hash(prev_hash: str, payload: str) -> str:
    """The unkeyed SHA-256 chain of before migration 0011 (anyone could recompute it)."""
    return hashlib.sha256((prev_hash + payload).encode()).hexdigest()


chain_hash = legacy_hash  # the old name


class AuditKeyError(Exception):
    """The audit key is missing or malformed."""


def load_secret(app: Flask) -> bytes:
    """``TONGBAN_AUDIT_KEY`` (64 hex digits) or ``instance/audit_key`` (created 0600 on first use)."""
    from .config import _secret_file

    raw = app.config.get("TONGBAN_AUDIT_KEY")
    if isinstance(raw, bytes) and raw:
        secret = raw
    elif isinstance(raw, str) and raw:
        try:
            secret = bytes.fromhex(raw)
        except ValueError:
            raise AuditKeyError("TONGBAN_AUDIT_KEY must be hexadecimal") from None
    else:
        secret = _secret_file(Path(app.config["TONGBAN_INSTANCE_DIR"]), KEY_FILE, 32)
    if len(secret) < 32:
        raise AuditKeyError("the audit key must be at least 32 bytes")
    return secret


@dataclass(frozen=True)
class Keys:
    chain: bytes
    signer: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signer.public_key()


def derive_keys(secret: bytes) -> Keys:
    chain = hmac.new(secret, b"tongban audit chain v1", hashlib.sha256).digest()
    seed = hmac.new(secret, b"tongban audit checkpoints v1", hashlib.sha256).digest()
    return Keys(chain=chain, signer=Ed25519PrivateKey.from_private_bytes(seed))


def keys(app: Flask | None = None) -> Keys:
    app = app or current_app
    found = app.extensions.get("tongban.audit_keys")
    if found is None:
        found = app.extensions["tongban.audit_keys"] = derive_keys(load_secret(app))
    return found


def row_mac(key: bytes, prev_hash: str, payload: str) -> str:
    return hmac.new(key, (prev_hash + payload).encode(), hashlib.sha256).hexdigest()


def row_tag(key: bytes, nonce: str, at, actor, action, obj, ip, outcome, detail) -> str:
    content = canonical(None, at, actor, action, obj, ip, outcome, detail)
    return nonce + "." + hmac.new(key, f"tag|{nonce}|{content}".encode(), hashlib.sha256).hexdigest()


def tag_ok(key: bytes, tag: str | None, at, actor, action, obj, ip, outcome, detail) -> bool:
    if not tag or "." not in tag:
        return False
    nonce = tag.split(".", 1)[0]
    return hmac.compare_digest(tag, row_tag(key, nonce, at, actor, action, obj, ip, outcome, detail))


def head_mac(key: bytes, seq: int, last_hash: str) -> str:
    return hmac.new(key, f"head|{seq}|{last_hash}".encode(), hashlib.sha256).hexdigest()


def key_id(public_key: Ed25519PublicKey) -> str:
    """The audit key's fingerprint: what a checkpoint's signature binds it to (not the issuer URL,
    which differs between the command line and a server behind another address)."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return _b64url(hashlib.sha256(raw).digest()[:16])


def _checkpoint_message(kid: str, seq: int, hash_: str, at: datetime) -> bytes:
    return json.dumps({"kid": kid, "seq": seq, "hash": hash_, "at": at.isoformat(timespec="seconds") + "Z"},
                      separators=(",", ":"), sort_keys=True).encode()


def checkpoint_dict(issuer: str, seq: int, hash_: str, at: datetime, signature: str) -> dict:
    return {"iss": issuer, "seq": seq, "hash": hash_, "at": at.isoformat(timespec="seconds") + "Z",
            "alg": "Ed25519", "signature": signature}  # signed: {"kid", "seq", "hash", "at"} (key_id)


def public_key_b64(app: Flask | None = None) -> str:
    raw = keys(app).public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def check_checkpoint_signature(cp: dict, public_key: Ed25519PublicKey) -> bool:
    try:
        at = datetime.fromisoformat(str(cp["at"]).removesuffix("Z"))
        message = _checkpoint_message(key_id(public_key), int(cp["seq"]), str(cp["hash"]), at)
        sig = base64.urlsafe_b64decode(str(cp["signature"]) + "=" * (-len(str(cp["signature"])) % 4))
        public_key.verify(sig, message)
    except (KeyError, TypeError, ValueError, InvalidSignature):
        return False
    return True


# ---------------------------------------------------------------- writing


def client_ip() -> str:
    if has_request_context():
        return request.remote_addr or ""
    return "cli"


def record(action: str, *, actor: str = "", object: str = "", outcome: str = "success",
           detail: dict | None = None, ip: str | None = None) -> AuditLog:
    """Append one event in the current transaction (it commits or rolls back with it).

    Personal data (ID numbers, phone numbers) is masked before it is written. The row is
    sealed into the chain by the chainer shortly after the transaction commits.
    """
    row = AuditLog(
        at=utcnow(), actor=mask_text(str(actor or ""))[:200], action=action,
        object=mask_text(str(object or ""))[:300], ip=(ip if ip is not None else client_ip())[:64],
        outcome=outcome,
        detail=mask_text(json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, default=str)),
    )
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    row.tag = row_tag(keys(app).chain, secrets.token_hex(12), row.at, row.actor, row.action, row.object, row.ip,
                      row.outcome, row.detail)
    db.session.add(row)
    after_commit(lambda: wake(app))
    after_commit(lambda: _observe(action, outcome))
    return row


def _observe(action: str, outcome: str) -> None:
    from .metrics import observe_audit  # log-ins, licences, seals counted once committed

    observe_audit(action, outcome)


def _row_values(app: Flask, action: str, actor, object, outcome: str, detail, ip) -> dict:
    values = {
        "at": utcnow(), "actor": mask_text(str(actor or ""))[:200], "action": action,
        "object": mask_text(str(object or ""))[:300], "ip": (ip if ip is not None else client_ip())[:64],
        "outcome": outcome,
        "detail": mask_text(json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, default=str)),
    }
    values["tag"] = row_tag(keys(app).chain, secrets.token_hex(12), values["at"], values["actor"], action,
                            values["object"], values["ip"], outcome, values["detail"])
    return values


def record_later(action: str, *, actor: str = "", object: str = "", outcome: str = "success",
                 detail: dict | None = None, ip: str | None = None, throttle: str | None = None) -> None:
    """Like ``record``, but written in its own short transaction once the request's session is
    closed: for reads (a page that shows personal data never commits) and refusals (the
    request's own transaction is rolled back). Outside a request it is written at once.

    ``throttle``: a key (the source of an unauthenticated request) under which at most
    TONGBAN_AUDIT_REFUSALS_PER_MINUTE such events are written per minute; the first one over
    is written as one ``audit.refusals_suppressed`` event, the rest are counted only — so no
    stranger can fill the log."""
    from .extensions import after_request_write

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    values = _row_values(app, action, actor, object, outcome, detail, ip)
    suppressed = _row_values(app, "audit.refusals_suppressed", "system", throttle or "", "refused",
                             {"action": action, "per_minute": app.config["TONGBAN_AUDIT_REFUSALS_PER_MINUTE"]},
                             ip) if throttle else None

    def write(conn):
        row = values
        if throttle:
            from . import ratelimit

            limit = app.config["TONGBAN_AUDIT_REFUSALS_PER_MINUTE"]
            counted = ratelimit.hit(f"audit-refusals:{throttle}", limit, 60, conn=conn)
            if not counted.allowed:
                if counted.count != limit + 1:
                    return
                row = suppressed
        conn.execute(insert(AuditLog).values(**row))
        _observe(row["action"], row["outcome"])
        wake(app)  # (the chainer waits for its short pause, by then this has committed)

    after_request_write(write)


def _source(ip: str) -> str:
    """Where an unauthenticated request comes from: an IPv4 address, or the /64 of an IPv6 one
    (a host picks any address in its /64)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr.ipv4_mapped or addr) if isinstance(addr, ipaddress.IPv6Address) else str(addr)


# ---------------------------------------------------------------- the chainer


class ChainError(Exception):
    """The chain's head does not vouch for itself: nothing more is chained until it is checked."""


def chain(batch: int = 500, *, app: Flask | None = None) -> int:
    """Seal every committed unchained row into the chain; returns how many. Raises ChainError."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    total, after = 0, 0
    refused: list = []
    while True:
        n, after = _chain_batch(app, batch, after, refused)
        total += n
        if n < batch:
            break
    if refused:
        log.error("audit chainer: entries %s were not written by Tongban or were edited; not chained",
                  refused[:20])
    return total - len(refused)


def _chain_batch(app: Flask, batch: int, after: int, refused: list[int]) -> tuple[int, int]:
    k = keys(app)
    # a look without the lock (most passes find nothing to do): one statement on an autocommit
    # connection, no transaction (it was three statements in one, each pass of every process)
    with read_connection() as conn:
        pending, head_seq, cp_seq, cp_at = conn.execute(_LOOK, {"b_after": after}).one()
    cp_seq = cp_seq or 0
    if pending is None and head_seq is not None and not (
            head_seq > cp_seq and _checkpoint_due(app, head_seq, cp_seq, cp_at, utcnow())):
        return 0, after
    with db.engine.begin() as conn:
        # the chainer's lock: the head row (row lock on PostgreSQL, write lock on SQLite), held
        # for this short transaction only
        head = conn.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq)
                            .returning(AuditHead.seq, AuditHead.last_hash, AuditHead.mac)).one_or_none()
        if head is None:
            raise ChainError("the chain's head row is missing")
        seq, last, mac = head
        if not (seq == 0 and last == GENESIS and mac is None) and (
                mac is None or not hmac.compare_digest(mac, head_mac(k.chain, seq, last))):
            raise ChainError("the chain's head does not carry a valid MAC")
        witness = read_witness(app)
        if witness is not None and witness[0] > seq:  # rewound (or emptied and re-chained): not extended
            raise ChainError(f"the chain's head ({seq}) is behind the {witness[0]} entries this instance saw")
        cp_seq, cp_at = _last_checkpoint(conn)
        rows = conn.execute(select(AuditLog.id, AuditLog.at, AuditLog.actor, AuditLog.action, AuditLog.object,
                                   AuditLog.ip, AuditLog.outcome, AuditLog.detail, AuditLog.tag)
                            .where(AuditLog.seq.is_(None), AuditLog.id > after).order_by(AuditLog.id)
                            .limit(batch)).all()
        sealed = []
        for r in rows:
            if not tag_ok(k.chain, r.tag, r.at, r.actor, r.action, r.object, r.ip, r.outcome, r.detail):
                refused.append(r.id)  # not written by Tongban, or edited since: left out, verify names it
                continue
            seq += 1
            h = row_mac(k.chain, last,
                        canonical(seq, r.at, r.actor, r.action, r.object, r.ip, r.outcome, r.detail, r.tag))
            sealed.append({"row_id": r.id, "new_seq": seq, "new_prev": last, "new_hash": h})
            last = h
        if sealed:  # one statement executed for every row (executemany), in the same transaction
            conn.execute(_SEAL_ROW, sealed)
        now = utcnow()
        values = {"seq": seq, "last_hash": last, "mac": head_mac(k.chain, seq, last)}
        due = seq > cp_seq and _checkpoint_due(app, seq, cp_seq, cp_at, now)
        if due:
            at = now.replace(microsecond=0)
            sig = _b64url(k.signer.sign(_checkpoint_message(key_id(k.public_key), seq, last, at)))
            conn.execute(insert(AuditCheckpoint).values(seq=seq, hash=last, at=at, signature=sig))
        if rows or due:
            conn.execute(update(AuditHead).where(AuditHead.id == 1).values(**values))
    if rows:
        _write_witness(app, seq, last)
    return len(rows), (rows[-1].id if rows else after)


def _last_checkpoint_column(column):
    return (select(column).order_by(AuditCheckpoint.seq.desc()).limit(1)).scalar_subquery()


# (an unchained row after b_after, the head's seq, the last checkpoint's seq and time)
_LOOK = select(
    select(AuditLog.id).where(AuditLog.seq.is_(None), AuditLog.id > bindparam("b_after", type_=Integer()))
    .limit(1).scalar_subquery(),
    select(AuditHead.seq).where(AuditHead.id == 1).scalar_subquery(),
    _last_checkpoint_column(AuditCheckpoint.seq),
    _last_checkpoint_column(AuditCheckpoint.at),
)

_SEAL_ROW = (update(AuditLog).where(AuditLog.id == bindparam("row_id"), AuditLog.seq.is_(None))
             .values(seq=bindparam("new_seq"), prev_hash=bindparam("new_prev"), hash=bindparam("new_hash")))


def _last_checkpoint(conn) -> tuple[int, datetime | None]:
    row = conn.execute(select(AuditCheckpoint.seq, AuditCheckpoint.at).order_by(AuditCheckpoint.seq.desc())
                       .limit(1)).first()
    return (row.seq, row.at) if row else (0, None)


def _checkpoint_due(app: Flask, seq: int, cp_seq: int, cp_at: datetime | None, now: datetime) -> bool:
    return (seq - cp_seq >= app.config["TONGBAN_AUDIT_CHECKPOINT_ROWS"] or cp_at is None
            or (now - cp_at).total_seconds() >= app.config["TONGBAN_AUDIT_CHECKPOINT_SECONDS"])


# -------- the witness in the instance folder: the furthest head this instance has seen


def _witness_path(app: Flask) -> Path:
    return Path(app.config["TONGBAN_INSTANCE_DIR"]) / WITNESS_FILE


_witness_lock = threading.Lock()


def read_witness(app: Flask | None = None) -> tuple[int, str] | None:
    path = _witness_path(app or current_app)
    try:
        data = json.loads(path.read_text())
        return int(data["seq"]), str(data["hash"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return -1, ""


def _write_witness(app: Flask, seq: int, last: str) -> None:
    path = _witness_path(app)
    with _witness_lock:
        current = read_witness(app)
        if current is not None and current[0] >= seq:
            return
        tmp = path.with_name(f".{WITNESS_FILE}.{os.getpid()}.{threading.get_ident()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"seq": seq, "hash": last}, f)
            os.replace(tmp, path)
        except OSError:  # a read-only instance folder: the checkpoints still witness
            log.warning("could not write the audit witness %s", path)


def reset_witness(app: Flask | None = None) -> None:
    """Forget the witnessed head (after restoring the database from a backup on purpose)."""
    _witness_path(app or current_app).unlink(missing_ok=True)


# -------- the worker thread


class _Chainer(ProcessThread):
    """The chainer thread of this process, woken after each audited commit."""

    name = "tongban-audit-chainer"

    def __init__(self):
        super().__init__()
        self.passes = 0

    def timeout(self, app: Flask) -> float:
        return app.config["TONGBAN_AUDIT_CHAIN_SECONDS"] * 10

    def run_pass(self, app: Flask, woken: bool) -> None:
        if woken:  # let a burst of commits gather into one batch
            time.sleep(min(0.2, app.config["TONGBAN_AUDIT_CHAIN_SECONDS"]))
        self.event.clear()
        if not app.config["TONGBAN_AUDIT_CHAIN_THREAD"]:
            return
        try:
            with app.app_context():
                chain(app=app)
            self.passes += 1
        except ChainError as e:
            log.error("audit chainer stopped: %s (run `flask audit verify`)", e)
        except Exception:  # the database may be briefly away: try again at the next wake
            log.exception("audit chainer pass failed")


_chainer = _Chainer()


def wake(app: Flask) -> None:
    if not app.config["TONGBAN_AUDIT_CHAIN_THREAD"]:
        return
    _chainer.wake(app)


# ---------------------------------------------------------------- verifying


@dataclass
class Verdict:
    whole: bool
    bad_id: int | None
    count: int
    reason: str
    pending: int = 0

    def __iter__(self):  # (whole, bad_id, count, reason), as before
        return iter((self.whole, self.bad_id, self.count, self.reason))

    def __getitem__(self, i):
        return tuple(self)[i]


def verify(*, checkpoints: list[dict] | None = None, chain_first: bool = True) -> Verdict:
    """Chain what is pending, then walk the chain with the key.

    Returns a ``Verdict`` (unpacks as ``whole, first bad row id, rows checked, reason``).
    ``checkpoints``: checkpoints held outside the database that the chain must contain.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    k = keys(app)
    if chain_first and not session_holds_sqlite_write():
        with contextlib.suppress(ChainError):  # the walk below says what is wrong
            chain(app=app)
    prev, expected_seq, count = GENESIS, 1, 0
    by_seq: dict[int, str] = {}
    # read in this order (witness, checkpoints, head, rows): a chainer committing meanwhile only
    # adds rows beyond the head read here, which are left for the next check
    witness = read_witness(app)
    stored = list(db.session.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.seq)
                                     .execution_options(populate_existing=True)).scalars())
    head = db.session.execute(select(AuditHead.seq, AuditHead.last_hash, AuditHead.mac)
                              .where(AuditHead.id == 1)).first()
    wanted = {int(c["seq"]) for c in (checkpoints or []) if str(c.get("seq", "")).isdigit()}
    wanted |= {c.seq for c in stored}
    if witness is not None:
        wanted.add(witness[0])
    if head is not None:
        wanted.add(head.seq)
    # rows beyond the head read above (chained meanwhile) are walked too: only the key makes them
    rows = db.session.execute(select(AuditLog).where(AuditLog.seq.is_not(None))
                              .order_by(AuditLog.seq)
                              .execution_options(yield_per=1000, populate_existing=True)).scalars()
    for row in rows:
        if row.seq != expected_seq:
            return Verdict(False, row.id, count, f"sequence jumps from {expected_seq - 1} to {row.seq} (rows deleted)")
        if row.prev_hash != prev:
            return Verdict(False, row.id, count, "previous-MAC link broken (row inserted or deleted before it)")
        if not hmac.compare_digest(row.hash or "", row_mac(k.chain, prev, row.payload())):
            return Verdict(False, row.id, count, "content does not match its MAC (row edited or forged)")
        if row.seq in wanted:
            by_seq[row.seq] = row.hash
        prev, expected_seq, count = row.hash, expected_seq + 1, count + 1
    last_id = db.session.execute(select(AuditLog.id).where(AuditLog.seq.is_not(None))
                                 .order_by(AuditLog.seq.desc()).limit(1)).scalar()
    if head is None or head.seq > expected_seq - 1 or (
            head.last_hash != (by_seq.get(head.seq) if head.seq else GENESIS)):
        return Verdict(False, last_id, count, "the chain's head does not match its last row (rows deleted at the end)")
    if head.seq and not hmac.compare_digest(head.mac or "", head_mac(k.chain, head.seq, head.last_hash)):
        return Verdict(False, last_id, count, "the chain's head does not carry a valid MAC (rows deleted at the end)")
    if witness is not None and (witness[0] < 0 or by_seq.get(witness[0]) != witness[1]):
        return Verdict(False, last_id, count, f"the log no longer contains entry {witness[0]} this instance "
                                              "saw chained (rewound, or rows deleted at the end)")
    public = k.public_key
    issuer = app.config["TONGBAN_ISSUER"]
    for cp in stored:
        if not check_checkpoint_signature(cp.as_dict(issuer), public):
            return Verdict(False, last_id, count, f"checkpoint at entry {cp.seq} has a bad signature (forged)")
        if by_seq.get(cp.seq) != cp.hash:
            return Verdict(False, last_id, count, f"the log does not match the signed checkpoint at entry {cp.seq}")
    for given in checkpoints or []:
        if not check_checkpoint_signature(given, public):
            return Verdict(False, None, count, "a checkpoint given to compare has a bad signature")
        if by_seq.get(int(given["seq"])) != given["hash"]:
            return Verdict(False, last_id, count, f"the log does not contain the checkpoint at entry {given['seq']} "
                                                  "(rewritten or rows deleted)")
    pending = 0
    for row in db.session.execute(select(AuditLog).where(AuditLog.seq.is_(None)).order_by(AuditLog.id)
                                  .execution_options(yield_per=1000, populate_existing=True)).scalars():
        if not tag_ok(k.chain, row.tag, row.at, row.actor, row.action, row.object, row.ip, row.outcome, row.detail):
            return Verdict(False, row.id, count, "an entry waiting to be chained was not written by Tongban "
                                                 "or was edited (forged)")
        pending += 1
    return Verdict(True, None, count, "", pending=pending)


def recent_checkpoints(limit: int = 100) -> list[dict]:
    issuer = current_app.config["TONGBAN_ISSUER"]
    rows = db.session.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(limit)).scalars()
    return [r.as_dict(issuer) for r in rows]


__all__ = ["AuditCheckpoint", "AuditHead", "AuditLog", "Verdict", "chain", "record", "verify"]


# ---------------------------------------------------------------- refusals no view records itself

# endpoints where a client authenticates itself (RFC 6749 §2.3, RFC 7009, RFC 7662, RFC 8628)
CLIENT_AUTH_PATHS = ("/oauth/token", "/oauth/revoke", "/oauth/introspect", "/oauth/device_authorization")


def _record_refusal(resp) -> None:
    """Client authentication failures at the token endpoints and every refusal (4xx) of the
    department APIs under /api/ are audited, in their own transaction: the refused request's
    own transaction is rolled back."""
    status, path = resp.status_code, request.path
    if not 400 <= status < 500 or not (path.startswith("/api/") or path in CLIENT_AUTH_PATHS):
        return
    try:
        body = resp.get_json(silent=True) if resp.is_json and not resp.is_streamed else None
    except Exception:
        body = None
    code = str((body or {}).get("error") or "")[:60] if isinstance(body, dict) else ""
    if path in CLIENT_AUTH_PATHS:
        if code != "invalid_client":
            return
        auth = request.authorization
        client_id = (auth.username if auth and auth.type == "basic" else None) or _param("client_id")
        record_later("client.auth_failed", actor=f"client:{str(client_id or '')[:100]}", object=path,
                     outcome="failure", detail={"status": status}, throttle=_source(client_ip()))
        return
    if status == 401 and "Authorization" not in request.headers:
        return  # no credentials at all: nothing was refused to anyone (and no free way to fill the log)
    token = _current_token()
    client_id = getattr(token, "client_id", "") if token is not None else ""
    actor = f"client:{client_id}" if client_id else ""
    record_later("api.refused", actor=actor, object=f"{request.method} {path}"[:300], outcome="refused",
                 throttle=None if client_id else _source(client_ip()),
                 detail={"status": status, "error": code,
                         "purpose": _param("purpose")[:200], "service_item": _param("service_item")[:100]})


def _param(name: str) -> str:
    """A request parameter for the record, or "" when the body cannot be read (too large, broken)."""
    try:
        return str(request.values.get(name, ""))
    except HTTPException:
        return ""


def _current_token():
    from flask import g

    return g.get("authlib_server_oauth2_token")


# ---------------------------------------------------------------- CLI, endpoint, wiring


def init_app(app: Flask) -> None:
    import click
    from flask import Blueprint, jsonify
    from flask.cli import AppGroup

    group = AppGroup("audit", help="The keyed, hash-chained audit log.")

    @group.command("verify")
    @click.option("--checkpoint", "checkpoint_files", multiple=True, type=click.Path(dir_okay=False),
                  help="A checkpoint (JSON, as `audit checkpoints` prints) kept outside the database; "
                       "the log must still contain it. Repeatable.")
    def verify_cmd(checkpoint_files):
        """Chain pending entries, then check the chain: exit 0 when whole, 1 with the first bad entry's id."""
        given = []
        for name in checkpoint_files:
            try:
                data = json.loads(Path(name).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                click.echo(f"cannot read checkpoint {name}: {e}", err=True)
                sys.exit(2)
            for cp in data if isinstance(data, list) else [data]:
                if not isinstance(cp, dict) or not str(cp.get("seq", "")).isdigit():
                    click.echo(f"not a checkpoint: {name}", err=True)
                    sys.exit(2)
                given.append(cp)
        try:
            verdict = verify(checkpoints=given)
        except AuditKeyError as e:
            click.echo(f"audit key: {e}", err=True)
            sys.exit(2)
        if verdict.whole:
            click.echo(f"audit log intact: {verdict.count} entries")
            return
        click.echo(f"audit log broken at entry {verdict.bad_id}: {verdict.reason}", err=True)
        sys.exit(1)

    @group.command("chain")
    def chain_cmd():
        """Seal pending entries into the chain now (the web processes do it within a second)."""
        try:
            n = chain()
        except ChainError as e:
            click.echo(f"audit chain refused: {e}", err=True)
            sys.exit(1)
        click.echo(f"chained {n} entries")

    @group.command("checkpoints")
    @click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
    def checkpoints_cmd(limit):
        """Print the latest signed checkpoints (JSON) and the public key that checks them."""
        click.echo(json.dumps({"alg": "Ed25519", "public_key": public_key_b64(),
                               "checkpoints": recent_checkpoints(limit)}, ensure_ascii=False, indent=1))

    @group.command("reset-witness")
    def reset_witness_cmd():
        """Forget the head this instance witnessed (only after restoring the database on purpose)."""
        reset_witness()
        click.echo("audit witness removed")

    app.cli.add_command(group)

    bp = Blueprint("audit", __name__)

    @bp.get("/audit/checkpoints")
    def checkpoints_view():
        limit = request.args.get("limit", default=100, type=int)
        limit = 100 if limit is None or limit < 1 or limit > 1000 else limit
        resp = jsonify(alg="Ed25519", public_key=public_key_b64(), checkpoints=recent_checkpoints(limit))
        resp.headers["Cache-Control"] = "no-store"
        return resp

    app.register_blueprint(bp)
    keys(app)  # a malformed TONGBAN_AUDIT_KEY stops the start, like a malformed KEK

    @app.after_request
    def _audit_refusals(resp):
        _record_refusal(resp)
        return resp

    def start_chainer() -> None:
        # rows left unchained by a previous run are sealed without waiting for a new event
        if app.config["TONGBAN_AUDIT_CHAIN_THREAD"]:
            wake(app)

    at_first_request(app, start_chainer)
