"""The PKCS#11 back-end against SoftHSM2: the seal's key is generated in the token and never leaves it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from seal import services
from tongban.extensions import db

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "123456"

pytestmark = pytest.mark.skipif(not (shutil.which("softhsm2-util") and os.path.exists(MODULE)),
                                reason="softhsm2 is not installed")


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory):
    d = tmp_path_factory.mktemp("softhsm")
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    # read by SoftHSM when the module is first initialised in this process
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "tongban-test", "--pin", PIN,
                    "--so-pin", "654321"], check=True, capture_output=True, env={**os.environ})
    return "tongban-test"


@pytest.fixture
def hsm(app, softhsm_token):
    keys = ("TONGBAN_SEAL_KEY_BACKEND", "TONGBAN_PKCS11_MODULE", "TONGBAN_PKCS11_TOKEN", "TONGBAN_PKCS11_PIN")
    old = {k: app.config.get(k) for k in keys}
    app.config.update(TONGBAN_SEAL_KEY_BACKEND="pkcs11", TONGBAN_PKCS11_MODULE=MODULE,
                      TONGBAN_PKCS11_TOKEN=softhsm_token, TONGBAN_PKCS11_PIN=PIN)
    yield
    app.config.update(old)


@pytest.mark.parametrize("alg", ["ec", "rsa"])
def test_pkcs11_seal(hsm, org, plain_pdf, alg):
    import pkcs11

    from keys.ca import get_certificate
    from keys.signers import _pkcs11_session

    seal = services.create_seal(org.uscc, f"HSM 章 {alg}", "contract", alg=alg)
    db.session.commit()
    cert = get_certificate(seal.cert_serial)
    assert cert.key_backend == "pkcs11" and cert.private_key is None
    with _pkcs11_session() as session:
        key = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=cert.key_ref)
        assert key[pkcs11.Attribute.SENSITIVE] and not key[pkcs11.Attribute.EXTRACTABLE]
    sealed = services.sign_pdf(seal, plain_pdf, purpose="HSM", actor="test")
    verdict = services.verify_pdf(sealed)
    assert verdict["valid"] is True and verdict["signatures"][0]["seal_code"] == seal.code


def test_pkcs11_misconfigured(app, org, softhsm_token):
    from tongban.errors import ValidationError

    app.config.update(TONGBAN_PKCS11_TOKEN="no-such-token", TONGBAN_PKCS11_PIN=PIN)
    try:
        with pytest.raises(ValidationError):
            services.create_seal(org.uscc, "x", "contract", backend="pkcs11")
    finally:
        app.config.update(TONGBAN_PKCS11_TOKEN="", TONGBAN_PKCS11_PIN="")
