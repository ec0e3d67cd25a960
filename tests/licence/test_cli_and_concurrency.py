import json
import os
import threading

import pytest
from sqlalchemy import select

from licence import services
from licence.models import Licence
from tongban.extensions import db


def _run(app, *args):
    return app.test_cli_runner().invoke(args=["licences", *args])


def test_cli_commands(app, tmp_path):
    r = _run(app, "types", "--json")
    types = json.loads(r.output)
    assert r.exit_code == 0 and len(types) == 14 and set(types[0]) == {"code", "name", "holder_kind"}
    r = _run(app, "issue", "--type", "营业执照", "--holder-id", "91350100M000100Y43", "--holder-name",
             "冒烟测试科技有限公司", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["verify_url"].startswith(app.config["TONGBAN_ISSUER"] + "/v/")
    code = services.get_type("结婚证").code
    r = _run(app, "issue", "--type", code, "--holder-id", "11010519491231002X", "--holder-name", "张三",
             "--field", "registered_on=2020-05-20", "--json")
    assert r.exit_code == 1 and "required" in r.output
    pdf = tmp_path / "l.pdf"
    assert _run(app, "pdf", out["id"], str(pdf)).exit_code == 0 and pdf.read_bytes().startswith(b"%PDF-")
    assert _run(app, "suspend", out["id"], "--reason", "核查").exit_code == 0
    assert _run(app, "resume", out["id"]).exit_code == 0
    assert _run(app, "revoke", out["id"], "--reason", "吊销").exit_code == 0
    assert services.find(out["id"]).status == "revoked"
    assert _run(app, "issue", "--type", "驾驶证", "--holder-id", "x", "--holder-name", "y", "--json").exit_code == 1
    spec = tmp_path / "t.json"
    spec.write_text(json.dumps({"code": "11100000MB0000040U098", "name": "测试证", "holder_kind": "citizen",
                                "items": [], "layout": {"kind": "card", "page": "card"}}), encoding="utf-8")
    assert _run(app, "type-add", str(spec), "--json").exit_code == 0
    assert len(json.loads(_run(app, "types", "--json").output)) == 15


@pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="needs PostgreSQL (TEST_DATABASE_URL)")
def test_concurrent_serials_never_collide(app):
    """Two clerks at the same moment: 8 threads, each issuing twice through its own session and transaction."""
    from tests.licence.samples import SAMPLES

    errors: list = []
    barrier = threading.Barrier(8)

    def worker():
        with app.app_context():
            try:
                barrier.wait()
                for _ in range(2):
                    (hid, hname), data = SAMPLES["营业执照"]
                    services.issue("营业执照", hid, hname, data, actor="thread")
                    db.session.commit()
            except Exception as e:  # reported below
                errors.append(e)
                db.session.rollback()
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    serials = db.session.scalars(select(Licence.serial)).all()
    assert len(serials) == 16 and len(set(serials)) == 16
    assert sorted(int(s) for s in serials) == list(range(1, 17))


@pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="needs PostgreSQL (TEST_DATABASE_URL)")
def test_concurrent_counter_increments(app):
    got: list[int] = []
    lock = threading.Lock()

    def worker():
        with app.app_context():
            for _ in range(25):
                v = services.next_value("serial:TEST")
                db.session.commit()
                with lock:
                    got.append(v)
            db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 201))
