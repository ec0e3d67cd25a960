"""The hash-chained audit log: what is recorded, masking, `audit verify`, concurrent writers."""

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
    return list(db.session.execute(select(AuditLog.action).order_by(AuditLog.seq)).scalars())


def _all_text() -> str:
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM audit_log")).all()
    return "\n".join("|".join(str(v) for v in row) for row in rows)


def _verify_cli(app):
    return app.test_cli_runner().invoke(args=["audit", "verify"])


def _seed(n: int = 5) -> list[int]:
    """``n`` more events (after the one ``bootstrap`` writes); returns the ids of all, in order."""
    for i in range(n):
        audit.record("test.event", actor=f"user:{i}", object=f"thing:{i}", detail={"i": i})
    db.session.commit()
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
    from idp import accounts

    accounts.authenticate(CITIZEN_ID, PASSWORD)
    db.session.commit()  # (a log-in's own session must not hold the write lock the next try needs)
    accounts.authenticate(CITIZEN_ID, "Wrong-Passw0rd!")
    db.session.commit()
    rows = db.session.execute(select(AuditLog).where(AuditLog.action.like("login.%"))
                              .order_by(AuditLog.seq)).scalars().all()
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


# ---------------------------------------------------------------- audit verify


def test_verify_whole_chain(app):
    _seed()
    result = _verify_cli(app)
    assert result.exit_code == 0, result.output
    assert f"{_count()} entries" in result.output


def test_verify_empty_log(app):
    assert _verify_cli(app).exit_code == 0


def _assert_broken(app, bad_id: int | tuple[int, ...]):
    result = _verify_cli(app)
    assert result.exit_code == 1, result.output
    err = result.stderr
    ids = bad_id if isinstance(bad_id, tuple) else (bad_id,)
    assert any(f"entry {i}:" in err for i in ids), err
    return err


def test_verify_detects_an_edited_row(app):
    ids = _seed()
    _sql("UPDATE audit_log SET outcome = 'failure' WHERE id = :id", id=ids[2])
    _assert_broken(app, ids[2])


def test_verify_detects_an_edited_row_with_recomputed_hash(app):
    """Rewriting the row's own hash does not help: the next row's link breaks."""
    ids = _seed()
    row = db.session.get(AuditLog, ids[1])
    row.actor = "someone-else"
    new_hash = audit.chain_hash(row.prev_hash, row.payload())
    db.session.rollback()
    _sql("UPDATE audit_log SET actor = 'someone-else', hash = :h WHERE id = :id", h=new_hash, id=ids[1])
    _assert_broken(app, ids[2])


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


def test_verify_detects_all_rows_deleted(app):
    _seed()
    _sql("DELETE FROM audit_log")
    result = _verify_cli(app)
    assert result.exit_code == 1


def _insert(seq: int, prev_hash: str, hash_: str, at="2024-01-01 00:00:00") -> int:
    _sql("INSERT INTO audit_log (seq, at, actor, action, object, ip, outcome, detail, prev_hash, hash) "
         "VALUES (:seq, :at, 'forger', 'test.forged', '', '', 'success', '{}', :p, :h)",
         seq=seq, at=at, p=prev_hash, h=hash_)
    return db.session.execute(select(func.max(AuditLog.id))).scalar()


def test_verify_detects_an_inserted_row(app):
    _seed()
    new_id = _insert(99, "f" * 64, "e" * 64)
    _assert_broken(app, new_id)


def test_verify_detects_an_appended_row_with_a_valid_link(app):
    """Even with a correct hash linked to the last row, the head does not vouch for it."""
    from datetime import datetime

    ids = _seed()
    last = db.session.get(AuditLog, ids[-1])
    at = datetime(2024, 1, 1)
    payload = audit.canonical(last.seq + 1, at, "forger", "test.forged", "", "", "success", "{}")
    h = audit.chain_hash(last.hash, payload)
    new_id = _insert(last.seq + 1, last.hash, h, at=at)
    _assert_broken(app, new_id)


def test_verify_detects_a_row_inserted_in_the_middle(app):
    """Renumber the tail and slip a well-formed row in: the next row's link breaks."""
    from datetime import datetime

    ids = _seed()
    for rid in reversed(ids[2:]):
        _sql("UPDATE audit_log SET seq = seq + 1 WHERE id = :id", id=rid)
    before = db.session.get(AuditLog, ids[1])
    at = datetime(2024, 1, 1)
    payload = audit.canonical(3, at, "forger", "test.forged", "", "", "success", "{}")
    new_id = _insert(3, before.hash, audit.chain_hash(before.hash, payload), at=at)
    assert new_id not in ids
    _assert_broken(app, ids[2])


def test_verify_detects_edited_head(app):
    _seed()
    _sql("UPDATE audit_head SET seq = seq + 1")
    result = _verify_cli(app)
    assert result.exit_code == 1


# ---------------------------------------------------------------- concurrent writers


@pytest.mark.parametrize("threads,per_thread", [(8, 25)])
def test_concurrent_writers_keep_the_chain_whole(app, threads, per_thread):
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

    db.session.expire_all()
    total = base + threads * per_thread
    seqs = list(db.session.execute(select(AuditLog.seq).order_by(AuditLog.seq)).scalars())
    assert seqs == list(range(1, total + 1))
    head = db.session.get(AuditHead, 1)
    assert head.seq == total
    whole, bad, count, reason = audit.verify()
    assert whole, (bad, reason)
    assert count == total
    assert _verify_cli(app).exit_code == 0


def test_a_rolled_back_event_leaves_no_gap(app):
    _seed(2)
    audit.record("test.rolled_back")
    db.session.rollback()
    _seed(1)
    assert audit.verify()[0]
    seqs = list(db.session.execute(select(AuditLog.seq).order_by(AuditLog.seq)).scalars())
    assert seqs == list(range(1, _count() + 1))
    assert "test.rolled_back" not in set(db.session.execute(select(AuditLog.action)).scalars())


def test_hash_is_sha256_of_prev_and_payload(app):
    ids = _seed(2)
    first, second = (db.session.get(AuditLog, i) for i in ids[:2])
    assert first.prev_hash == audit.GENESIS
    assert first.hash == hashlib.sha256((audit.GENESIS + first.payload()).encode()).hexdigest()
    assert second.prev_hash == first.hash
