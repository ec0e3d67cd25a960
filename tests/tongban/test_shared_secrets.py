"""Servers of one deployment share their secrets (tongban/shared_secrets.py): the first server
records the fingerprints, another with a different secret is not ready, ``secrets accept`` after
a rotation makes it ready (audited), and the fingerprint in the database reveals nothing usable.

Runs on SQLite and, with TEST_DATABASE_URL, on PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select

SHARED = ("SECRET_KEY", "TONGBAN_AUDIT_KEY", "TONGBAN_ISSUER", "TONGBAN_KEK", "TONGBAN_PAIRWISE_SALT")


def _secrets_of(app) -> dict:
    """The values a second server needs to be this one's twin."""
    from idp.pairwise import shared_salt
    from tongban.audit import load_secret

    return {"SECRET_KEY": app.config["SECRET_KEY"], "TONGBAN_KEK": app.config["TONGBAN_KEK"],
            "TONGBAN_ISSUER": app.config["TONGBAN_ISSUER"], "TONGBAN_AUDIT_KEY": load_secret(app).hex(),
            "TONGBAN_PAIRWISE_SALT": shared_salt(app).hex()}


@pytest.fixture
def other_server(app, tmp_path_factory):
    """Another server on the same database: its own instance folder, the first one's secrets
    unless the test says otherwise."""
    from tongban import create_app

    def _make(**changed):
        config = {"TESTING": True, "TONGBAN_INSTANCE_DIR": str(tmp_path_factory.mktemp("other")),
                  "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"], "REDIS_URL": "",
                  "TONGBAN_OUTBOX_THREAD": False, "TONGBAN_AUDIT_CHAIN_THREAD": False,
                  **_secrets_of(app), **changed}
        return create_app(config)

    return _make


def _readyz(server):
    r = server.test_client().get("/readyz")
    return r.status_code, r.get_json(), r.get_data(as_text=True)


def _cli(server, *args):
    """A ``flask --app wsgi`` command run as ``server`` (the test's own app context would
    otherwise be the one the command sees)."""
    with server.app_context():
        return server.test_cli_runner().invoke(args=list(args))


def _rows(app) -> dict:
    from tongban.extensions import db
    from tongban.shared_secrets import DeploymentSecret

    with app.app_context():
        rows = {r.name: r for r in db.session.execute(select(DeploymentSecret)).scalars()}
        db.session.expunge_all()
        db.session.remove()
    return rows


def test_the_first_server_records_its_fingerprints_and_is_ready(app, client):
    assert _rows(app) == {}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.get_json()["checks"]["secrets"] == "ok"
    rows = _rows(app)
    assert sorted(rows) == sorted(SHARED)
    assert len({row.salt for row in rows.values()}) == len(SHARED)  # a random salt per secret
    assert client.get("/readyz").status_code == 200  # and the second look compares, still ok


def test_a_twin_server_is_ready(app, client, other_server):
    assert client.get("/readyz").status_code == 200
    twin = other_server()
    status, body, _ = _readyz(twin)
    assert status == 200 and body["checks"]["secrets"] == "ok"


def test_a_server_with_another_pairwise_salt_is_not_ready_until_accepted(app, client, other_server, caplog):
    assert client.get("/readyz").status_code == 200  # the first server recorded the deployment's
    new_salt = "ab" * 32
    second = other_server(TONGBAN_PAIRWISE_SALT=new_salt)
    with caplog.at_level(logging.ERROR, logger="tongban.shared_secrets"):
        status, body, raw = _readyz(second)
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"] == {"database": "ok", "secrets": "differ"}
    assert body["differ"] == ["TONGBAN_PAIRWISE_SALT"]
    assert "TONGBAN_PAIRWISE_SALT" in body["reason"]
    # neither the value nor any fingerprint leaves the server
    assert new_salt not in raw and _secrets_of(app)["TONGBAN_PAIRWISE_SALT"] not in raw
    assert not any(row.fingerprint in raw for row in _rows(app).values())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "TONGBAN_PAIRWISE_SALT" in errors[0].getMessage()
    assert new_salt not in errors[0].getMessage()
    with caplog.at_level(logging.ERROR, logger="tongban.shared_secrets"):
        _readyz(second)
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1  # once, not every probe

    # the first server is unaffected by the second's look: it still matches
    assert client.get("/readyz").status_code == 200

    # after a rotation the operator accepts the second server's secrets as the deployment's
    refused = _cli(second, "secrets", "accept")  # asks first: the other servers would go 503
    assert refused.exit_code == 1 and "TONGBAN_PAIRWISE_SALT" in refused.output
    assert _readyz(second)[0] == 503
    result = _cli(second, "secrets", "accept", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"changed": ["TONGBAN_PAIRWISE_SALT"], "added": [],
                                         "unchanged": sorted(set(SHARED) - {"TONGBAN_PAIRWISE_SALT"}),
                                         "previous_until": None}
    status, body, _ = _readyz(second)
    assert status == 200 and body["checks"]["secrets"] == "ok"
    # ... and now the first server is the odd one out
    r = client.get("/readyz")
    assert r.status_code == 503 and r.get_json()["differ"] == ["TONGBAN_PAIRWISE_SALT"]

    # audited, in the hash-chained log
    from tongban import audit
    from tongban.extensions import db

    with app.app_context():
        stmt = select(audit.AuditLog).where(audit.AuditLog.action == "secrets.accepted")
        rows = db.session.execute(stmt).scalars().all()
        assert len(rows) == 1
        assert rows[0].object == "TONGBAN_PAIRWISE_SALT"
        assert json.loads(rows[0].detail)["changed"] == ["TONGBAN_PAIRWISE_SALT"]
        assert new_salt not in rows[0].detail
        verdict = audit.verify()
        assert verdict.whole, verdict.reason
        db.session.remove()


def test_accept_with_nothing_changed_changes_nothing(app, client):
    assert client.get("/readyz").status_code == 200
    before = {n: (r.fingerprint, r.accepted_at) for n, r in _rows(app).items()}
    result = _cli(app, "secrets", "accept")
    assert result.exit_code == 0 and "nothing to accept" in result.output
    assert {n: (r.fingerprint, r.accepted_at) for n, r in _rows(app).items()} == before


@pytest.mark.parametrize("name, value", [
    ("SECRET_KEY", "another-secret-key"),
    ("TONGBAN_KEK", bytes(range(1, 33))),
    ("TONGBAN_AUDIT_KEY", "cd" * 32),
    ("TONGBAN_ISSUER", "https://id.example.gov.cn"),
])
def test_each_shared_secret_is_checked(app, client, other_server, name, value):
    assert client.get("/readyz").status_code == 200
    status, body, _ = _readyz(other_server(**{name: value}))
    assert status == 503 and body["differ"] == [name]


def test_a_rolling_rotation_keeps_the_previous_secret_for_the_window(app, client, other_server, monkeypatch):
    from tongban import shared_secrets

    assert client.get("/readyz").status_code == 200
    rotated = other_server(SECRET_KEY="the-new-secret-key")
    result = _cli(rotated, "secrets", "accept", "--keep-previous", "1h", "--yes", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["changed"] == ["SECRET_KEY"] and out["previous_until"]
    assert _readyz(rotated)[0] == 200
    assert client.get("/readyz").status_code == 200  # the old one: accepted for an hour
    status = _cli(app, "secrets", "status", "--json")
    assert status.exit_code == 0
    assert json.loads(status.output)["secrets"]["SECRET_KEY"]["state"] == "previous"
    # an hour later the old value is refused
    later = shared_secrets.utcnow() + timedelta(hours=1, seconds=1)
    monkeypatch.setattr(shared_secrets, "utcnow", lambda: later)
    r = client.get("/readyz")
    assert r.status_code == 503 and r.get_json()["differ"] == ["SECRET_KEY"]
    assert _readyz(rotated)[0] == 200
    # a third value was never accepted, window or not
    monkeypatch.undo()
    assert _readyz(other_server(SECRET_KEY="a-third-key"))[0] == 503


def test_status_exits_1_when_a_secret_differs(app, client, other_server):
    assert client.get("/readyz").status_code == 200
    odd = other_server(TONGBAN_KEK=bytes(32))
    result = _cli(odd, "secrets", "status", "--json")
    assert result.exit_code == 1
    body = json.loads(result.output)
    assert body["ok"] is False and body["secrets"]["TONGBAN_KEK"]["state"] == "differs"
    assert body["secrets"]["SECRET_KEY"]["state"] == "same"
    text = _cli(odd, "secrets", "status")
    assert text.exit_code == 1 and "TONGBAN_KEK: differs" in text.output


def test_two_servers_recording_at_once_one_wins_the_other_is_compared(app, other_server, monkeypatch):
    """Both read an empty table, both insert: the loser's insert fails on the primary key, and it
    is then compared with the winner's fingerprints like any other server."""
    from tongban import shared_secrets

    loser = other_server(TONGBAN_PAIRWISE_SALT="ef" * 32)
    with app.app_context():
        first = shared_secrets.check(app)  # the winner records
    assert first.ok
    real_rows = shared_secrets._rows
    calls = []

    def stale_then_real():
        calls.append(1)
        return {} if len(calls) == 1 else real_rows()  # the loser read before the winner's commit

    monkeypatch.setattr(shared_secrets, "_rows", stale_then_real)
    with loser.app_context():
        verdict = shared_secrets.check(loser)
    assert len(calls) == 2
    assert verdict.differing == ["TONGBAN_PAIRWISE_SALT"]
    monkeypatch.undo()
    with app.app_context():
        assert shared_secrets.check(app).ok  # the winner's record stands


def test_start_up_logs_an_error_line_when_secrets_differ(app, client, other_server, caplog):
    from tongban.shared_secrets import check_at_startup

    assert client.get("/readyz").status_code == 200
    odd = other_server(TONGBAN_ISSUER="https://elsewhere.example")
    with caplog.at_level(logging.INFO, logger="tongban.shared_secrets"):
        verdict = check_at_startup(odd)
    assert verdict is not None and not verdict.ok
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "TONGBAN_ISSUER" in errors[0] and "secrets accept" in errors[0]
    assert "elsewhere" not in errors[0]


# ---------------------------------------------------------------- what the fingerprint reveals


def _candidates(secret: bytes, name: str) -> set[str]:
    """What an attacker holding the table would try first: plain and keyed hashes of a guess."""
    out = set()
    for fn in (hashlib.sha256, hashlib.sha512, hashlib.sha1, hashlib.md5, hashlib.blake2b):
        out.add(fn(secret).hexdigest())
    for label in (b"", name.encode(), b"tongban", b"tongban deployment secret fingerprint v1"):
        out.add(hmac.new(secret, label, hashlib.sha256).hexdigest())
        out.add(hmac.new(label or b"\0", secret, hashlib.sha256).hexdigest())
    return out


def test_the_fingerprint_reveals_nothing_usable(app, client):
    from tongban.shared_secrets import LABEL, SCHEME, fingerprint

    assert client.get("/readyz").status_code == 200
    rows = _rows(app)
    key = app.config["SECRET_KEY"].encode()  # "test-secret-key": a weak secret, as an operator might set
    row = rows["SECRET_KEY"]
    # neither the secret nor any fast hash of it: a dictionary of weak keys checked against a plain or
    # keyed hash would find it at once
    assert key.hex() not in row.fingerprint and app.config["SECRET_KEY"] not in row.fingerprint
    assert not any(c.startswith(row.fingerprint) or row.fingerprint in c for c in _candidates(key, "SECRET_KEY"))
    # it is Argon2id at the password-hash cost, salted per deployment: a guess costs what a password
    # guess costs, and no table made for one deployment fits another
    assert row.scheme == SCHEME and "m=19456" in SCHEME and "t=2" in SCHEME
    assert len(bytes.fromhex(row.salt)) == 16 and len(bytes.fromhex(row.fingerprint)) == 16
    from argon2.low_level import Type, hash_secret_raw

    expected = hash_secret_raw(key, LABEL + b"SECRET_KEY\x00" + bytes.fromhex(row.salt), time_cost=2,
                               memory_cost=19456, parallelism=1, hash_len=16, type=Type.ID).hex()
    assert row.fingerprint == expected
    # the same secret in another deployment (another salt), or under another name, looks unrelated
    assert fingerprint("SECRET_KEY", key, "00" * 16) != row.fingerprint
    assert fingerprint("TONGBAN_ISSUER", key, row.salt) != row.fingerprint
    # so two secrets with the same value (a KEK copied into the pairwise salt) do not show as equal
    kek = app.config["TONGBAN_KEK"]
    assert fingerprint("TONGBAN_KEK", kek, row.salt) != fingerprint("TONGBAN_PAIRWISE_SALT", kek, row.salt)


def test_a_database_without_the_record_table_is_not_ready(tmp_path):
    """Code deployed before its migration (0022) ran: fail closed, and say which check failed."""
    from tongban import create_app

    bare = create_app({"TESTING": True, "TONGBAN_INSTANCE_DIR": str(tmp_path / "instance"),
                       "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'empty.db'}", "REDIS_URL": "",
                       "TONGBAN_OUTBOX_THREAD": False, "TONGBAN_AUDIT_CHAIN_THREAD": False})
    r = bare.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.get_json() == {"status": "unavailable", "checks": {"database": "ok", "secrets": "unavailable"}}
    assert "deployment_secrets" not in r.get_data(as_text=True)
