"""The project CA: root and issuing CA, seal certificates naming the organisation, CRLs, the RFC 3161 TSA."""

from __future__ import annotations

import hashlib
import subprocess

from asn1crypto import crl, tsp
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keys import ca as ca_service
from tongban.extensions import db


def test_root_issuing_and_tsa(app, client):
    state = ca_service.ca()
    root, issuing, tsa = state["root"].cert, state["issuing"].cert, state["tsa"].cert
    assert root.issuer == root.subject
    issuing.verify_directly_issued_by(root)
    tsa.verify_directly_issued_by(issuing)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = tsa.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    r = client.get("/ca/root.pem")
    assert r.status_code == 200 and x509.load_pem_x509_certificate(r.data) == root


def test_bootstrap_is_idempotent(app):
    from tongban.bootstrap import bootstrap

    before = ca_service.ca()["root"].cert
    bootstrap()
    db.session.commit()
    assert ca_service.ca()["root"].cert == before


def test_seal_certificate_names_the_organisation(app):
    from seal import services

    seal = services.get_active_seal(app.config["TONGBAN_AUTHORITY_USCC"], "licence")
    cert = x509.load_der_x509_certificate(ca_service.get_certificate(seal.cert_serial).cert_der)
    cert.verify_directly_issued_by(ca_service.ca()["issuing"].cert)
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == app.config["TONGBAN_AUTHORITY_NAME"]
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)[0].value == \
        app.config["TONGBAN_AUTHORITY_USCC"]
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == seal.code
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment and not ku.key_cert_sign
    dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert dp[0].full_name[0].value.endswith("/ca/crl")


def test_crl_is_signed_and_renewed_on_revocation(app, client):
    from seal import services

    first = crl.CertificateList.load(client.get("/ca/crl").data)
    issuing = ca_service.ca()["issuing"].cert
    x509.load_der_x509_crl(first.dump()).is_signature_valid(issuing.public_key())
    seal = services.get_active_seal(app.config["TONGBAN_AUTHORITY_USCC"], "licence")
    services.revoke_seal(seal.id, "test")
    db.session.commit()
    r = client.get("/ca/crl")
    assert r.mimetype == "application/pkix-crl"
    second = x509.load_der_x509_crl(r.data)
    assert second.is_signature_valid(issuing.public_key())
    assert second.get_revoked_certificate_by_serial_number(int(seal.cert_serial, 16)) is not None
    number = second.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > first["tbs_cert_list"]["crl_extensions"][0]["extn_value"].native
    root_crl = x509.load_der_x509_crl(client.get("/ca/root.crl").data)
    assert root_crl.is_signature_valid(ca_service.ca()["root"].cert.public_key())


def _chain_pem(tmp_path):
    from cryptography.hazmat.primitives.serialization import Encoding

    state = ca_service.ca()
    path = tmp_path / "chain.pem"
    path.write_bytes(state["root"].cert.public_bytes(Encoding.PEM) + state["issuing"].cert.public_bytes(Encoding.PEM))
    return path


def test_tsa_answers_a_real_rfc3161_request(app, client, tmp_path):
    """openssl makes the request and checks the reply: an independent RFC 3161 implementation."""
    data = tmp_path / "data.txt"
    data.write_bytes(b"tongban time-stamp test")
    req = tmp_path / "req.tsq"
    subprocess.run(["openssl", "ts", "-query", "-data", str(data), "-sha256", "-cert", "-out", str(req)],
                   check=True, capture_output=True)
    r = client.post("/tsa", data=req.read_bytes(), headers={"Content-Type": "application/timestamp-query"})
    assert r.status_code == 200 and r.mimetype == "application/timestamp-reply"
    resp = tsp.TimeStampResp.load(r.data)
    assert resp["status"]["status"].native == "granted"
    info = resp["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed
    assert info["message_imprint"]["hashed_message"].native == hashlib.sha256(data.read_bytes()).digest()
    (tmp_path / "resp.tsr").write_bytes(r.data)
    v = subprocess.run(["openssl", "ts", "-verify", "-queryfile", str(req), "-in", str(tmp_path / "resp.tsr"),
                        "-CAfile", str(_chain_pem(tmp_path))], capture_output=True, text=True)
    assert v.returncode == 0 and "Verification: OK" in v.stdout, v.stdout + v.stderr


def test_tsa_rejects_garbage(client):
    r = client.post("/tsa", data=b"not a request", headers={"Content-Type": "application/timestamp-query"})
    assert r.status_code == 200
    from asn1crypto import core

    # asn1crypto's TimeStampResp insists on a token; a rejection has only the status
    status = tsp.PKIStatusInfo.load(core.load(r.data).contents)
    assert status["status"].native == "rejection" and status["fail_info"].native == {"bad_request"}
