import subprocess

import pytest
from sqlalchemy import func, select

from licence import offline, pdf, services
from licence.errors import BadTransition, InvalidField, NoLicenceSeal, UnknownType
from licence.models import Licence, LicenceCounter
from tests.licence.samples import ORG, SAMPLES
from tongban.audit import AuditLog
from tongban.errors import ValidationError
from tongban.extensions import db


def _counter(app) -> int:
    key = f"serial:{app.config['TONGBAN_AUTHORITY_USCC']}"
    row = db.session.get(LicenceCounter, key)
    return row.value if row else 0


def test_catalogue_seeded(app):
    types = services.list_types()
    assert len(types) == 14
    assert services.get_type("营业执照").code == services.get_type(services.get_type("营业执照").code).code
    with pytest.raises(UnknownType):
        services.get_type("驾驶证")


@pytest.mark.parametrize("name", list(SAMPLES))
def test_issue_every_type(app, issue, name):
    lic = issue(name)
    assert lic.identifier.startswith(f"1.2.156.3005.2.{lic.type_code}.{app.config['TONGBAN_AUTHORITY_USCC']}.")
    assert lic.pdf.startswith(b"%PDF-") and services.identifier_in_pdf(lic.pdf) == lic.identifier
    meta = services.metadata(lic)
    assert meta["ZZBS"] == lic.identifier and meta["CZZTDMLX"] in ("111", "001")
    assert len(lic.verify_code) >= 16  # 128 random bits, URL-safe base64


def test_pdf_is_sealed_and_certified(app, issue):
    lic = issue()
    verdict = services._seal_services().verify_pdf(lic.pdf)
    assert verdict["valid"] is True and verdict["signatures"]


def test_qr_decodes_at_150_dpi(app, issue, tmp_path):
    import zxingcpp
    from PIL import Image

    for name in ("营业执照", "社会保障卡", "出生医学证明"):
        lic = issue(name)
        path = tmp_path / "l.pdf"
        path.write_bytes(lic.pdf)
        subprocess.run(["pdftoppm", "-r", "150", "-png", "-singlefile", str(path), str(tmp_path / "page")],
                       check=True)
        found = zxingcpp.read_barcodes(Image.open(tmp_path / "page.png"))
        texts = [b.text for b in found if b.format == zxingcpp.BarcodeFormat.QRCode]
        assert services.verify_url(lic.verify_code) in texts, (name, texts)


def test_qr_is_level_m_and_at_least_20mm():
    import qrcode

    matrix = pdf.qr_matrix("http://127.0.0.1:5000/v/" + "x" * 22)
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=0)
    qr.add_data("http://127.0.0.1:5000/v/" + "x" * 22)
    qr.make(fit=True)
    assert len(matrix) == qr.modules_count
    assert 20 * pdf.mm <= pdf.QR_MIN


@pytest.mark.parametrize("kw,exc", [
    ({"holder": ("91350100M000100Y44", "x")}, ValidationError),
    ({"fields": {"gender": "女"}}, InvalidField),
    ({"fields": {**SAMPLES["营业执照"][1], "nonsense": "1"}}, InvalidField),
    ({"issuer_uscc": "91350100M000100Y43"}, NoLicenceSeal),
])
def test_invalid_issues_leave_nothing(app, issue, kw, exc):
    from people import accounts

    accounts.create_org(*ORG)
    db.session.commit()
    before = (_counter(app), db.session.scalar(select(func.count()).select_from(Licence)))
    name = "社会保障卡" if "gender" in (kw.get("fields") or {}) else "营业执照"
    with pytest.raises(exc):
        issue(name, **kw)
    db.session.rollback()
    assert (_counter(app), db.session.scalar(select(func.count()).select_from(Licence))) == before


def test_sealing_failure_rolls_back_the_serial(app, issue, monkeypatch):
    issue()
    before = _counter(app)
    from seal import services as seal_services

    def boom(*a, **k):
        raise RuntimeError("HSM unavailable")

    monkeypatch.setattr(seal_services, "sign_pdf", boom)
    with pytest.raises(RuntimeError):
        issue()
    db.session.rollback()
    assert _counter(app) == before
    monkeypatch.undo()
    nxt = issue()
    assert nxt.serial == f"{before + 1:07d}"


def test_serials_count_per_issuer(app, issue):
    a, b = issue(), issue("结婚证")
    assert int(b.serial) == int(a.serial) + 1


def test_lifecycle_is_audited(app, issue):
    lic = issue()
    ident = lic.identifier
    services.suspend(ident, "核查中", "test")
    with pytest.raises(BadTransition):
        services.suspend(ident, "again", "test")
    services.resume(ident, "test")
    new = services.change(ident, {"domicile": "福建省福州市仓山区"}, "test", reason="住所变更")
    db.session.commit()
    assert new.version == 2 and new.serial == lic.serial and new.identifier.split(".")[-2] == "002"
    old = services.find(ident)
    assert old.status == "superseded" and old.superseded_by == new.identifier
    assert services.public_view(old)["status"] == "revoked"
    services.revoke(new.identifier, "吊销", "test")
    db.session.commit()
    actions = set(db.session.scalars(select(AuditLog.action).where(AuditLog.object.like("licence:%"))))
    assert {"licence.issued", "licence.suspended", "licence.resumed", "licence.changed",
            "licence.revoked"} <= actions


def test_expiry(app, issue):
    from datetime import date

    lic = issue("社会保障卡")
    assert lic.valid_until is not None
    lic.valid_until = date(2001, 1, 1)
    db.session.commit()
    assert services.public_view(lic)["status"] == "expired"
    assert [x.identifier for x in services.expire_due("test")] == [lic.identifier]
    db.session.commit()
    assert db.session.scalar(select(AuditLog.action).where(AuditLog.action == "licence.expired"))


def test_valid_until_rules(app):
    t = services.get_type("取水许可证")
    from datetime import date

    assert services.valid_until_for(t, date(2024, 1, 1), None) == date(2028, 12, 31)
    with pytest.raises(InvalidField):
        services.valid_until_for(t, date(2024, 1, 1), "2040-01-01")
    assert services.valid_until_for(services.get_type("结婚证"), date(2024, 1, 1), None) is None


def test_add_type_without_code(app, issue):
    spec = {"code": "11100000MB0000040U099", "name": "测试许可证", "holder_kind": "organisation",
            "items": [{"name": "permit_no", "label": "许可证号", "type": "text", "required": True,
                       "format": r"^T\d{4}$"}],
            "validity": {"years": 3}, "layout": {"kind": "permit", "page": "A4L", "title": "测试许可证"}}
    services.add_type(spec, "test")
    db.session.commit()
    lic = services.issue("测试许可证", *ORG, {"permit_no": "T0001"}, actor="test")
    assert lic.type_name == "测试许可证"
    with pytest.raises(ValidationError):
        services.add_type({**spec, "code": "11100000MB0000040U09X"}, "test")


def test_offline_token_roundtrip_and_pycose(app, issue):
    import zlib

    import base45
    from pycose.keys import EC2Key
    from pycose.messages import Sign1Message

    lic = issue()
    raw = offline.make_token(lic)
    assert raw.startswith(offline.PREFIX) and len(raw) < 800
    from keys.services import keyring

    key = keyring().active("ES256")
    result = offline.verify_token(raw, {key.kid: key.public_key}, None)
    assert result["signature"] and result["licence"]["id"] == lic.identifier
    # an independent COSE implementation agrees
    import cbor2

    # cbor2 6 decodes arrays in tags as tuples, which pycose's decode() refuses: hand it a list
    tagged = cbor2.loads(zlib.decompress(base45.b45decode(raw[len(offline.PREFIX):])))
    assert tagged.tag == 18
    parts = list(tagged.value)
    parts[1] = dict(parts[1])
    msg = Sign1Message.from_cose_obj(parts, True)
    nums = key.public_key.public_numbers()
    msg.key = EC2Key(crv="P_256", x=nums.x.to_bytes(32, "big"), y=nums.y.to_bytes(32, "big"))
    assert msg.verify_signature()
    tampered = raw[:-3] + ("AAA" if raw[-3:] != "AAA" else "BBB")
    with pytest.raises(offline.OfflineError):
        offline.verify_token(tampered, {key.kid: key.public_key}, None)


def test_status_list(app, issue, client):
    import base64
    import json
    import zlib

    a, b = issue(), issue()
    services.suspend(b.identifier, "x", "test")
    db.session.commit()
    resp = client.get("/api/v1/licences/status-list")
    assert resp.status_code == 200 and resp.mimetype == "application/statuslist+jwt"
    payload = resp.get_data(as_text=True).split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    lst = claims["status_list"]["lst"]
    data = zlib.decompress(base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4)))
    assert offline.status_at(data, a.status_idx) == 0 and offline.status_at(data, b.status_idx) == 2
    keys = client.get("/api/v1/licences/offline/keys").get_json()
    assert keys["keys"] and all(k["kty"] == "EC" for k in keys["keys"])


def test_offline_keys_outlive_a_rotation(app, issue, restore_keys):
    """Offline tokens live a day: the key that signed one stays published after a rotation."""
    from keys import services as keys
    from keys.services import keyring

    lic = issue()
    old_kid = keyring().active("ES256").kid
    offline.make_token(lic)
    from datetime import timedelta

    from keys.models import SigningKey
    from tongban.clock import utcnow

    new = keys.rotate(("ES256",), delay=0)[0]
    db.session.commit()
    # an hour on: the old key left the OIDC JWKS long ago, but tokens it signed live a day
    for row in db.session.query(SigningKey).filter(SigningKey.alg == "ES256"):
        row.activates_at = utcnow() - timedelta(hours=1 if row.kid == new.kid else 3)
    db.session.commit()
    keys._ring.invalidate()  # the test edited the table behind the cache's back
    assert keyring().active("ES256").kid == new.kid
    assert old_kid not in {k.kid for k in keyring().published()}
    assert old_kid in {k["kid"] for k in offline.verifier_keys()["keys"]}
