"""The keyed, chained audit log: what is recorded, masking, the chainer, `audit verify` against
a database-only attacker (edit, insert, delete, rewrite, rewind), checkpoints, concurrent writers."""

from __future__ import annotations

import hashlib
import threading

import pytest
from sqlalchemy import func, select, text

from tests.conftest import CITIZEN_ID, PASSWORD
from tests.flask_flows import authorize_code, basic, exchange, login
from tongban import audit
from tongban.audit import AuditHead, AuditLog
from tongban.extensions import db

PHONE = "13800138000"


def _actions() -> list[str]:
    db.session.expire_all()
    return list(db.session.execute(select(AuditLog.action).order_by(AuditLog.id)).scalars())


def _all_text() -> str:
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM audit_log")).all()
    return "\n".join("|".join(str(v) for v in row) for row in rows)


def _verify_cli(app):
    return app.test_cli_runner().invoke(args=["audit", "verify"])


def _seed(n: int = 5) -> list[int]:
    """``n`` more events (after the one ``bootstrap`` writes), chained; returns the ids of all, in order."""
    for i in range(n):
        audit.record("test.event", actor=f"user:{i}", object=f"thing:{i}", detail={"i": i})
    db.session.commit()
    audit.chain()
    db.session.expire_all()
    return list(db.session.execute(select(AuditLog.id).order_by(AuditLog.seq)).scalars())


def _count() -> int:
    db.session.expire_all()
    return db.session.execute(select(func.count()).select_from(AuditLog)).scalar()


def _sql(statement: str, **params) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(statement), params)
    db.session.expire_all()


# ---------------------------------------------------------------- what is recorded


def test_security_events_are_recorded_with_masked_personal_data(app, browser, citizen, make_client,
                                                                restore_keys):
    from keys import services

    client = browser()

    threshold = app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    assert login(client, password="Wrong-Passw0rd!").status_code == 401
    assert login(client, login=PHONE, password="Wrong-Passw0rd!").status_code == 401
    assert login(client, login="110105198001010016", password="x").status_code == 401  # unknown account
    assert login(client).status_code == 302
    assert "login.failure" in _actions() and "login.success" in _actions()

    client_id, secret = make_client()
    assert "client.created" in _actions()

    code = authorize_code(client, client_id, scope="openid profile phone offline_access")
    actions = _actions()
    assert "consent.granted" in actions and "code.issued" in actions
    tokens = exchange(client, client_id, secret, code)
    assert tokens.status_code == 200, tokens.get_data(as_text=True)
    body = tokens.get_json()
    resp = client.post("/oauth/revoke", data={"token": body["refresh_token"],
                                              "token_type_hint": "refresh_token"},
                       headers=basic(client_id, secret))
    assert resp.status_code == 200
    resp = client.post("/oauth/revoke", data={"token": body["access_token"]}, headers=basic(client_id, secret))
    assert resp.status_code == 200
    actions = _actions()
    assert "refresh.family_revoked" in actions and "token.revoked" in actions

    services.rotate()
    db.session.commit()
    assert _actions().count("key.rotated") == 2

    # lockout: the rest of the threshold, by phone number this time
    for _ in range(threshold + 1):
        login(client, login=PHONE, password="Wrong-Passw0rd!")
    actions = _actions()
    assert "account.locked" in actions and "login.refused_locked" in actions

    dump = _all_text()
    for secret_value in (CITIZEN_ID, PHONE, "110105198001010016", PASSWORD, "Wrong-Passw0rd!",
                         CITIZEN_ID.lower()):
        assert secret_value not in dump
    assert "110***********002X" in dump  # account.created keeps the masked number
    whole, _bad, count, reason = audit.verify()
    assert whole, reason
    assert count == len(actions)


def test_each_login_outcome_has_its_row(app, citizen):
    from people import accounts

    accounts.authenticate(CITIZEN_ID, PASSWORD)
    db.session.commit()  # (a log-in's own session must not hold the write lock the next try needs)
    accounts.authenticate(CITIZEN_ID, "Wrong-Passw0rd!")
    db.session.commit()
    rows = db.session.execute(select(AuditLog).where(AuditLog.action.like("login.%"))
                              .order_by(AuditLog.id)).scalars().all()
    assert [(r.action, r.outcome) for r in rows] == [("login.success", "success"),
                                                     ("login.failure", "failure")]
    assert all(r.actor == f"user:{citizen.sub}" for r in rows)


def test_free_text_is_masked(app):
    row = audit.record("test.masking", actor=CITIZEN_ID, object=f"phone {PHONE}",
                       detail={"note": f"{CITIZEN_ID.lower()} / +86{PHONE}"})
    db.session.commit()
    assert row.actor == "110***********002X"
    assert PHONE not in row.object and "138****8000" in row.object
    assert CITIZEN_ID.lower() not in row.detail and PHONE not in row.detail


# ---------------------------------------------------------------- the chainer


def test_record_appends_unchained_and_the_chainer_seals_in_id_order(app):
    base = _count()
    for i in range(3):
        audit.record("test.pending", object=f"thing:{i}")
    db.session.commit()
    pending = db.session.execute(select(AuditLog).where(AuditLog.action == "test.pending")
                                 .order_by(AuditLog.id)).scalars().all()
    assert [r.seq for r in pending] == [None, None, None]  # no global lock, no chain fields yet
    assert all(r.tag for r in pending)
    assert audit.chain() == base + 3
    db.session.expire_all()
    rows = db.session.execute(select(AuditLog).order_by(AuditLog.id)).scalars().all()
    assert [r.seq for r in rows] == list(range(1, base + 4))
    assert audit.chain() == 0
    head = db.session.get(AuditHead, 1)
    assert head.seq == base + 3 and head.last_hash == rows[-1].hash and head.mac


def test_the_mac_is_keyed_not_plain_sha256(app):
    import hmac

    ids = _seed(2)
    first, second = (db.session.get(AuditLog, i) for i in ids[:2])
    key = audit.keys().chain
    assert first.prev_hash == audit.GENESIS and second.prev_hash == first.hash
    assert first.hash != hashlib.sha256((audit.GENESIS + first.payload()).encode()).hexdigest()
    assert first.hash == hmac.new(key, (audit.GENESIS + first.payload()).encode(), hashlib.sha256).hexdigest()
    # the key is in the instance folder (0600), not in the database
    path = app.config["TONGBAN_INSTANCE_DIR"] + "/audit_key"
    import os
    import stat

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as f:
        assert f.read().strip() not in _all_text()


def test_the_chainer_thread_seals_within_seconds(app, monkeypatch):
    import time

    monkeypatch.setitem(app.config, "TONGBAN_AUDIT_CHAIN_THREAD", True)
    audit.record("test.threaded")
    db.session.commit()  # wakes the chainer
    deadline = time.monotonic() + 20  # generous: the machine is shared; it normally takes < 1 s
    seq = None
    while time.monotonic() < deadline and seq is None:
        time.sleep(0.1)
        db.session.expire_all()
        seq = db.session.execute(select(AuditLog.seq).where(AuditLog.action == "test.threaded")).scalar()
    assert seq is not None
    monkeypatch.setitem(app.config, "TONGBAN_AUDIT_CHAIN_THREAD", False)
    audit._chainer.event.set()  # let the thread see it is off before the next test resets the tables
    deadline = time.monotonic() + 10
    while audit._chainer.event.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert audit.verify().whole


def test_two_chainers_at_once_keep_one_chain(app):
    for i in range(60):
        audit.record("test.many", detail={"i": i})
    db.session.commit()
    errors = []

    def run():
        try:
            with app.app_context():
                for _ in range(5):
                    audit.chain(batch=7)
        except Exception as e:  # pragma: no cover - the assertion shows it
            errors.append(repr(e))

    pool = [threading.Thread(target=run) for _ in range(3)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert not errors
    db.session.expire_all()
    seqs = list(db.session.execute(select(AuditLog.seq).order_by(AuditLog.seq)).scalars())
    assert seqs == list(range(1, _count() + 1))
    assert audit.verify().whole


# ---------------------------------------------------------------- audit verify


def test_verify_whole_chain(app):
    _seed()
    result = _verify_cli(app)
    assert result.exit_code == 0, result.output
    assert f"{_count()} entries" in result.output


def test_verify_chains_pending_entries_first(app):
    audit.record("test.late")
    db.session.commit()
    result = _verify_cli(app)
    assert result.exit_code == 0, result.output
    assert db.session.execute(select(AuditLog.seq).where(AuditLog.action == "test.late")).scalar() is not None


def test_verify_empty_log(app):
    _sql("DELETE FROM audit_log")
    assert _verify_cli(app).exit_code == 0


def _assert_broken(app, bad_id: int | tuple[int, ...] | None, *words: str):
    result = _verify_cli(app)
    assert result.exit_code == 1, result.output
    err = result.stderr
    if bad_id is not None:
        ids = bad_id if isinstance(bad_id, tuple) else (bad_id,)
        assert any(f"entry {i}:" in err for i in ids), err
    for w in words:
        assert w in err, err
    return err


def test_verify_detects_an_edited_row(app):
    ids = _seed()
    _sql("UPDATE audit_log SET outcome = 'failure' WHERE id = :id", id=ids[2])
    _assert_broken(app, ids[2])


def test_verify_detects_an_edited_row_with_recomputed_hash(app):
    """Recomputing the row's hash as the old plain SHA-256 chain did is no longer possible."""
    ids = _seed()
    row = db.session.get(AuditLog, ids[1])
    row.actor = "someone-else"
    new_hash = audit.legacy_hash(row.prev_hash, row.payload())
    db.session.rollback()
    _sql("UPDATE audit_log SET actor = 'someone-else', hash = :h WHERE id = :id", h=new_hash, id=ids[1])
    _assert_broken(app, ids[1], "edited")


def test_verify_detects_a_deleted_middle_row(app):
    ids = _seed()
    _sql("DELETE FROM audit_log WHERE id = :id", id=ids[2])
    _assert_broken(app, ids[3])


def test_verify_detects_a_deleted_first_row(app):
    ids = _seed()
    _sql("DELETE FROM audit_log WHERE id = :id", id=ids[0])
    _assert_broken(app, ids[1])


def test_verify_detects_a_deleted_last_row(app):
    ids = _seed()
    _sql("DELETE FROM audit_log WHERE id = :id", id=ids[-1])
    err = _assert_broken(app, ids[-2])
    assert "end" in err


def test_verify_detects_deleted_last_rows_with_the_head_moved_back(app):
    """The attacker deletes the last two rows and points the head at the new last row."""
    ids = _seed()
    keep = db.session.get(AuditLog, ids[-3])
    _sql("DELETE FROM audit_log WHERE id IN (:a, :b)", a=ids[-1], b=ids[-2])
    _sql("UPDATE audit_head SET seq = :s, last_hash = :h", s=keep.seq, h=keep.hash)
    _assert_broken(app, ids[-3], "end")


def test_verify_detects_all_rows_deleted(app):
    _seed()
    _sql("DELETE FROM audit_log")
    result = _verify_cli(app)
    assert result.exit_code == 1


def test_verify_detects_everything_deleted_and_the_head_reset(app):
    """A fresh-looking empty log: the instance's witness remembers how far the chain went."""
    _seed()
    _sql("DELETE FROM audit_log")
    _sql("UPDATE audit_head SET seq = 0, last_hash = :g, mac = NULL", g=audit.GENESIS)
    _sql("DELETE FROM audit_checkpoints")
    _assert_broken(app, None, "no longer contains")


def _rewrite_without_the_key(drop_action: str, key: bytes | None = None) -> None:
    """The attack from issue 10: delete rows, renumber, recompute the chain and the head."""
    import hmac

    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE action = :a"), {"a": drop_action})
        rows = conn.execute(text("SELECT id, at, actor, action, object, ip, outcome, detail FROM audit_log "
                                 "ORDER BY seq")).all()
        conn.execute(text("UPDATE audit_log SET seq = -id"))
        prev = audit.GENESIS
        for n, r in enumerate(rows, start=1):
            row = db.session.get(AuditLog, r.id)  # the datetime exactly as the application reads it
            payload = audit.canonical(n, row.at, r.actor, r.action, r.object, r.ip, r.outcome, r.detail)
            h = (hmac.new(key, (prev + payload).encode(), hashlib.sha256).hexdigest() if key
                 else audit.legacy_hash(prev, payload))
            conn.execute(text("UPDATE audit_log SET seq = :s, prev_hash = :p, hash = :h WHERE id = :id"),
                         {"s": n, "p": prev, "h": h, "id": r.id})
            prev = h
        mac = hmac.new(key, f"head|{len(rows)}|{prev}".encode(), hashlib.sha256).hexdigest() if key else None
        conn.execute(text("UPDATE audit_head SET seq = :s, last_hash = :h, mac = :m"),
                     {"s": len(rows), "h": prev, "m": mac})
    db.session.expire_all()


def test_deleting_every_seal_use_and_recomputing_the_sha256_chain_is_detected(app):
    for i in range(4):
        audit.record("seal.used", actor="client:portal", object="seal:S1", detail={"doc": i})
        audit.record("test.event", object=f"thing:{i}")
    db.session.commit()
    audit.chain()
    _rewrite_without_the_key("seal.used")
    assert "seal.used" not in _actions()
    _assert_broken(app, None, "edited or forged")


def test_a_rewrite_with_a_guessed_key_is_detected(app):
    import secrets

    for i in range(4):
        audit.record("seal.used", object="seal:S1", detail={"doc": i})
        audit.record("test.event", object=f"thing:{i}")
    db.session.commit()
    audit.chain()
    _rewrite_without_the_key("seal.used", key=secrets.token_bytes(32))
    _assert_broken(app, None, "forged")


def _insert(seq: int | None, prev_hash: str | None, hash_: str | None, at="2024-01-01 00:00:00",
            tag: str | None = None) -> int:
    _sql("INSERT INTO audit_log (seq, at, actor, action, object, ip, outcome, detail, prev_hash, hash, tag) "
         "VALUES (:seq, :at, 'forger', 'test.forged', '', '', 'success', '{}', :p, :h, :t)",
         seq=seq, at=at, p=prev_hash, h=hash_, t=tag)
    return db.session.execute(select(func.max(AuditLog.id))).scalar()


def test_verify_detects_an_inserted_row(app):
    _seed()
    new_id = _insert(99, "f" * 64, "e" * 64)
    _assert_broken(app, new_id)


def test_verify_detects_an_appended_row_with_a_valid_link(app):
    """A row linked to the last one with a plain hash: the MAC and the head do not vouch for it."""
    from datetime import datetime

    ids = _seed()
    last = db.session.get(AuditLog, ids[-1])
    at = datetime(2024, 1, 1)
    payload = audit.canonical(last.seq + 1, at, "forger", "test.forged", "", "", "success", "{}")
    h = audit.legacy_hash(last.hash, payload)
    new_id = _insert(last.seq + 1, last.hash, h, at=at)
    _assert_broken(app, new_id)


def test_verify_detects_a_row_inserted_in_the_middle(app):
    """Renumber the tail and slip a well-formed row in: its MAC and the next link break."""
    from datetime import datetime

    ids = _seed()
    for rid in reversed(ids[2:]):
        _sql("UPDATE audit_log SET seq = seq + 1 WHERE id = :id", id=rid)
    before = db.session.get(AuditLog, ids[1])
    at = datetime(2024, 1, 1)
    payload = audit.canonical(3, at, "forger", "test.forged", "", "", "success", "{}")
    new_id = _insert(3, before.hash, audit.legacy_hash(before.hash, payload), at=at)
    assert new_id not in ids
    _assert_broken(app, (new_id, ids[2]))


def test_a_forged_unchained_row_is_never_chained(app):
    """An attacker inserts an event as if Tongban had written it and waits for the chainer."""
    _seed()
    forged = _insert(None, None, None, tag="00" * 12 + "." + "ab" * 32)
    untagged = _insert(None, None, None)
    audit.chain()
    db.session.expire_all()
    assert db.session.get(AuditLog, forged).seq is None and db.session.get(AuditLog, untagged).seq is None
    _assert_broken(app, (forged, untagged), "not written by Tongban")


def test_a_pending_row_edited_before_it_is_chained_is_refused(app):
    _seed()
    audit.record("seal.used", object="seal:S1")
    db.session.commit()
    target = db.session.execute(select(AuditLog.id).where(AuditLog.action == "seal.used")).scalar()
    _sql("UPDATE audit_log SET object = 'seal:S2' WHERE id = :id", id=target)
    _assert_broken(app, target, "not written by Tongban")


def test_a_pending_row_cannot_be_replayed(app):
    from sqlalchemy.exc import IntegrityError

    audit.record("seal.used", object="seal:S1")
    db.session.commit()
    with pytest.raises(IntegrityError), db.engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_log (at, actor, action, object, ip, outcome, detail, tag) "
                          "SELECT at, actor, action, object, ip, outcome, detail, tag FROM audit_log "
                          "WHERE action = 'seal.used'"))


def test_verify_detects_edited_head(app):
    _seed()
    _sql("UPDATE audit_head SET seq = seq + 1")
    result = _verify_cli(app)
    assert result.exit_code == 1


def test_the_chainer_does_not_extend_a_forged_head(app):
    _seed()
    _sql("UPDATE audit_head SET last_hash = :h", h="ab" * 32)
    audit.record("test.after")
    db.session.commit()
    with pytest.raises(audit.ChainError):
        audit.chain()


# ---------------------------------------------------------------- rewinding, checkpoints


def _snapshot_tables() -> tuple[list, list, list]:
    with db.engine.connect() as conn:
        return (conn.execute(text("SELECT * FROM audit_log")).mappings().all(),
                conn.execute(text("SELECT * FROM audit_head")).mappings().all(),
                conn.execute(text("SELECT * FROM audit_checkpoints")).mappings().all())


def _restore_tables(snapshot) -> None:
    log_rows, head_rows, cp_rows = snapshot
    with db.engine.begin() as conn:
        for table, rows in (("audit_log", log_rows), ("audit_head", head_rows), ("audit_checkpoints", cp_rows)):
            conn.execute(text(f"DELETE FROM {table}"))
            for r in rows:
                cols = ", ".join(r.keys())
                conn.execute(text(f"INSERT INTO {table} ({cols}) VALUES ({', '.join(':' + c for c in r)})"),
                             dict(r))
    db.session.expire_all()


def test_restoring_an_old_copy_of_the_log_is_detected(app):
    """A database-only attacker puts back yesterday's audit tables (every MAC in them is genuine)."""
    _seed(3)
    old = _snapshot_tables()
    audit.record("seal.used", object="seal:S1")
    db.session.commit()
    audit.chain()
    _restore_tables(old)
    _assert_broken(app, None, "no longer contains")


def test_an_externally_held_checkpoint_catches_a_rewind(app, tmp_path, monkeypatch):
    import json

    monkeypatch.setitem(app.config, "TONGBAN_AUDIT_CHECKPOINT_ROWS", 3)
    _seed(3)
    old = _snapshot_tables()
    for i in range(4):
        audit.record("seal.used", object="seal:S1", detail={"i": i})
    db.session.commit()
    audit.chain()
    out = app.test_cli_runner().invoke(args=["audit", "checkpoints"])
    assert out.exit_code == 0, out.output
    published = json.loads(out.output)
    latest = published["checkpoints"][0]
    assert latest["seq"] == _count()
    kept = tmp_path / "checkpoint.json"
    kept.write_text(json.dumps(latest))
    ok = app.test_cli_runner().invoke(args=["audit", "verify", "--checkpoint", str(kept)])
    assert ok.exit_code == 0, ok.output

    _restore_tables(old)
    audit.reset_witness(app)  # say the log lives on another server than this instance folder
    assert app.test_cli_runner().invoke(args=["audit", "verify"]).exit_code == 0  # the database alone: fooled
    result = app.test_cli_runner().invoke(args=["audit", "verify", "--checkpoint", str(kept)])
    assert result.exit_code == 1 and "checkpoint" in result.stderr

    forged = dict(latest, seq=1)
    kept.write_text(json.dumps(forged))
    result = app.test_cli_runner().invoke(args=["audit", "verify", "--checkpoint", str(kept)])
    assert result.exit_code == 1 and "bad signature" in result.stderr


def test_published_checkpoints_verify_with_the_published_key(app, client, monkeypatch):
    import base64
    import json

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    monkeypatch.setitem(app.config, "TONGBAN_AUDIT_CHECKPOINT_ROWS", 2)
    _seed(4)
    resp = client.get("/audit/checkpoints")
    assert resp.status_code == 200
    body = resp.get_json()
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(body["public_key"]))
    assert body["checkpoints"]
    for cp in body["checkpoints"]:
        signed = {k: cp[k] for k in ("seq", "hash", "at")} | {"kid": audit.key_id(key)}
        message = json.dumps(signed, separators=(",", ":"), sort_keys=True).encode()
        key.verify(base64.urlsafe_b64decode(cp["signature"] + "=" * (-len(cp["signature"]) % 4)), message)
        assert audit.check_checkpoint_signature(cp, key)
        assert cp["iss"] == app.config["TONGBAN_ISSUER"]
    assert client.get("/audit/checkpoints?limit=abc").status_code == 200


def test_checkpoints_signed_under_one_address_verify_under_another(app, monkeypatch):
    """A server behind http://host:port signs checkpoints; the command line (another issuer URL)
    must still find them genuine: the signature binds the audit key, not the address."""
    monkeypatch.setitem(app.config, "TONGBAN_AUDIT_CHECKPOINT_ROWS", 2)
    monkeypatch.setitem(app.config, "TONGBAN_ISSUER", "http://127.0.0.1:40123")
    _seed(4)
    monkeypatch.setitem(app.config, "TONGBAN_ISSUER", "https://tongban.example.gov.cn")
    verdict = audit.verify()
    assert verdict.whole, verdict.reason


def test_a_forged_stored_checkpoint_is_detected(app, monkeypatch):
    monkeypatch.setitem(app.config, "TONGBAN_AUDIT_CHECKPOINT_ROWS", 2)
    _seed(4)
    _sql("UPDATE audit_checkpoints SET hash = :h", h="cd" * 32)
    _assert_broken(app, None, "checkpoint")


def test_verify_cli_refuses_an_unreadable_checkpoint(app, tmp_path):
    bad = tmp_path / "cp.json"
    bad.write_text("not json")
    result = app.test_cli_runner().invoke(args=["audit", "verify", "--checkpoint", str(bad)])
    assert result.exit_code == 2 and "checkpoint" in result.stderr


# ---------------------------------------------------------------- concurrent writers


@pytest.mark.parametrize("threads,per_thread", [(8, 25)])
def test_concurrent_writers_keep_the_chain_whole(app, threads, per_thread, monkeypatch):
    monkeypatch.setitem(app.config, "TONGBAN_AUDIT_CHAIN_THREAD", True)  # the chainer runs meanwhile
    base = _count()
    barrier = threading.Barrier(threads)
    errors: list[str] = []

    def writer(n: int):
        try:
            barrier.wait(timeout=30)
            for i in range(per_thread):
                with app.app_context():
                    try:
                        audit.record("test.concurrent", actor=f"thread:{n}", object=f"event:{i}",
                                     detail={"n": n, "i": i}, ip="127.0.0.1")
                        db.session.commit()
                    finally:
                        db.session.remove()
        except Exception as e:
            errors.append(f"{n}: {e!r}")

    pool = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert not any(t.is_alive() for t in pool), "writers hung"
    assert not errors, errors[:3]
    monkeypatch.setitem(app.config, "TONGBAN_AUDIT_CHAIN_THREAD", False)

    total = base + threads * per_thread
    whole, bad, count, reason = audit.verify()
    assert whole, (bad, reason)
    assert count == total
    db.session.expire_all()
    seqs = list(db.session.execute(select(AuditLog.seq).order_by(AuditLog.seq)).scalars())
    assert seqs == list(range(1, total + 1))
    assert db.session.get(AuditHead, 1).seq == total
    assert _verify_cli(app).exit_code == 0


def test_writers_do_not_wait_for_each_other(app):
    """One transaction has recorded an event and not committed; another records and commits at once
    (before, both took the one audit_head row lock). SQLite has one writer at a time anyway."""
    import time

    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises all writers; the global row lock is a PostgreSQL matter")
    holder = db.engine.connect()
    try:
        txn = holder.begin()
        holder.execute(text("SELECT 1"))
        from sqlalchemy.orm import Session

        with Session(bind=holder) as s:
            s.add(AuditLog(at=audit.utcnow(), action="test.holding", actor="", object="", ip="", outcome="success",
                           detail="{}"))
            s.flush()
            done = threading.Event()

            def other():
                with app.app_context():
                    audit.record("test.other")
                    db.session.commit()
                    db.session.remove()
                done.set()

            t = threading.Thread(target=other)
            start = time.monotonic()
            t.start()
            assert done.wait(30), "the second writer waited for the first one's transaction"
            elapsed = time.monotonic() - start
            t.join()
            txn.rollback()
        assert elapsed < 30
    finally:
        holder.close()


def test_a_rolled_back_event_leaves_no_gap(app):
    _seed(2)
    audit.record("test.rolled_back")
    db.session.rollback()
    _seed(1)
    assert audit.verify()[0]
    seqs = list(db.session.execute(select(AuditLog.seq).order_by(AuditLog.seq)).scalars())
    assert seqs == list(range(1, _count() + 1))
    assert "test.rolled_back" not in set(db.session.execute(select(AuditLog.action)).scalars())


# ---------------------------------------------------------------- migrating the unkeyed chain


def _legacy_instance(tmp_path, tamper: bool):
    """A database at 0007 with an old SHA-256 chain of three entries, then upgraded."""
    from datetime import datetime

    from flask_migrate import upgrade

    from tongban import create_app

    legacy = create_app({
        "TESTING": True, "TONGBAN_INSTANCE_DIR": str(tmp_path / "instance"),
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'legacy.db'}", "SECRET_KEY": "x",
        "TONGBAN_KEK": bytes(32), "TONGBAN_AUDIT_CHAIN_THREAD": False, "TONGBAN_OUTBOX_THREAD": False,
    })
    directory = legacy.extensions["migrate"].directory
    ctx = legacy.app_context()
    ctx.push()
    upgrade(directory=directory, revision="0007_qr_device")
    prev = audit.GENESIS
    with db.engine.begin() as conn:
        for seq in (1, 2, 3):
            at = datetime(2026, 1, 1, 8, 0, seq, 123456)
            payload = audit.canonical(seq, at, "user:a", f"old.event{seq}", "", "1.2.3.4", "success", "{}")
            h = audit.legacy_hash(prev, payload)
            conn.execute(text("INSERT INTO audit_log (seq, at, actor, action, object, ip, outcome, detail, "
                              "prev_hash, hash) VALUES (:s, :at, 'user:a', :a, '', '1.2.3.4', 'success', '{}', "
                              ":p, :h)"), {"s": seq, "at": at, "a": f"old.event{seq}", "p": prev, "h": h})
            prev = h
        conn.execute(text("UPDATE audit_head SET seq = 3, last_hash = :h"), {"h": prev})
        if tamper:
            conn.execute(text("UPDATE audit_log SET actor = 'user:b' WHERE seq = 2"))
    upgrade(directory=directory, revision="heads")
    return legacy, ctx


def test_the_migration_reseals_an_intact_legacy_chain_with_the_key(tmp_path):
    _legacy, ctx = _legacy_instance(tmp_path, tamper=False)
    try:
        verdict = audit.verify()
        assert verdict.whole, verdict.reason
        assert verdict.count == 4
        rows = db.session.execute(select(AuditLog).order_by(AuditLog.seq)).scalars().all()
        assert [r.action for r in rows] == ["old.event1", "old.event2", "old.event3", "audit.rekeyed"]
        assert rows[-1].outcome == "success" and '"legacy_chain": "intact"' in rows[-1].detail
        # the old rows are now under the key: the plain SHA-256 no longer matches
        assert rows[0].hash != audit.legacy_hash(audit.GENESIS, rows[0].payload())
    finally:
        db.session.remove()
        ctx.pop()


def test_the_migration_records_a_broken_legacy_chain(tmp_path):
    _legacy, ctx = _legacy_instance(tmp_path, tamper=True)
    try:
        assert audit.verify().whole  # from now on the chain holds ...
        rekeyed = db.session.execute(select(AuditLog).where(AuditLog.action == "audit.rekeyed")).scalar_one()
        assert rekeyed.outcome == "failure" and "broken at entry 2" in rekeyed.detail  # ... and says what it was
    finally:
        db.session.remove()
        ctx.pop()


def test_unchaining_everything_to_have_it_rechained_without_some_rows_is_refused(app):
    """The attacker keeps Tongban's genuine tags, deletes the seal uses, hands every other row
    back to the chainer and resets the head: the chainer will not rebuild history."""
    for i in range(3):
        audit.record("seal.used", object="seal:S1", detail={"i": i})
        audit.record("test.event", detail={"i": i})
    db.session.commit()
    audit.chain()
    _sql("DELETE FROM audit_log WHERE action = 'seal.used'")
    _sql("UPDATE audit_log SET seq = NULL, prev_hash = NULL, hash = NULL")
    _sql("UPDATE audit_head SET seq = 0, last_hash = :g, mac = NULL", g=audit.GENESIS)
    _sql("DELETE FROM audit_checkpoints")
    with pytest.raises(audit.ChainError):
        audit.chain()
    _assert_broken(app, None, "no longer contains")


def test_verify_while_events_are_chained_gives_no_false_alarm(app):
    """A chainer committing between verify's reads only adds rows beyond the head it read."""
    _seed(3)
    stop = threading.Event()
    errors: list[str] = []

    def traffic():
        try:
            with app.app_context():
                while not stop.is_set():
                    audit.record("test.traffic")
                    db.session.commit()
                    audit.chain()
                db.session.remove()
        except Exception as e:  # pragma: no cover - the assertion shows it
            errors.append(repr(e))

    t = threading.Thread(target=traffic)
    t.start()
    try:
        verdicts = []
        for _ in range(15):
            verdicts.append(audit.verify(chain_first=False))
            db.session.rollback()
    finally:
        stop.set()
        t.join(60)
    assert not errors
    assert all(v.whole for v in verdicts), [v.reason for v in verdicts if not v.whole]
    assert audit.verify().whole


def test_a_chained_rows_tag_cannot_be_freed_to_replay_it(app):
    """A database-only attacker frees a chained row's unique tag and inserts a copy of the row
    carrying it: the chainer would seal the copy as a new event, so the tag is under the MAC."""
    from sqlalchemy import text

    for i in range(3):
        audit.record("licence.revoked", actor=f"user:{i}", object=f"licence:{i}", detail={"i": i})
    db.session.commit()
    audit.chain()
    assert audit.verify().whole
    with db.engine.begin() as conn:
        r = conn.execute(text("SELECT id, at, actor, action, object, ip, outcome, detail, tag FROM audit_log "
                              "WHERE action='licence.revoked' ORDER BY id LIMIT 1")).one()
        conn.execute(text("UPDATE audit_log SET tag=NULL WHERE id=:i"), {"i": r.id})
        conn.execute(text("INSERT INTO audit_log (at, actor, action, object, ip, outcome, detail, tag) "
                          "VALUES (:at,:actor,:action,:object,:ip,:outcome,:detail,:tag)"),
                     dict(at=r.at, actor=r.actor, action=r.action, object=r.object, ip=r.ip, outcome=r.outcome,
                          detail=r.detail, tag=r.tag))
    db.session.expire_all()
    verdict = audit.verify()
    assert not verdict.whole and verdict.bad_id == r.id
