"""The SM2 CA (keys/sm2ca.py): certificates and CRLs that OpenSSL verifies, revocation, the
published root and CRL, keys encrypted at rest."""

from __future__ import annotations

import subprocess

import pytest
from asn1crypto import crl as asn1_crl
from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509

from keys import sm2, sm2ca
from tests.conftest import USCC
from tongban.extensions import db

# OpenSSL 3.0 computes SM2's Z value with an empty identifier unless told: name the default one
DISTID = ["-vfyopt", "distid:1234567812345678"]


def _openssl(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def _write_pem(path, der: bytes, kind: str = "CERTIFICATE") -> None:
    path.write_bytes(asn1_pem.armor(kind, der))


@pytest.fixture
def org(app):
    from people import accounts

    o = accounts.create_org(USCC, "测试科技有限公司")
    db.session.commit()
    return o


def _issue(org, code="3501000000001"):
    key = sm2.generate()
    row = sm2ca.issue_seal_certificate(key.public_key(), common_name="测试科技有限公司公章", org_name=org.name,
                                       org_uscc=org.uscc, seal_code=code, days=365,
                                       private_blob=sm2.seal_key(key, "seal-key:t"))
    db.session.commit()
    return key, row


def _openssl_signature_ok(tmp_path, tbs: bytes, signature: bytes, signer_pem: str) -> bool:
    """OpenSSL checks an SM3withSM2 signature (default identifier) of ``signer_pem``'s key over ``tbs``."""
    (tmp_path / "tbs").write_bytes(tbs)
    (tmp_path / "sig").write_bytes(signature)
    pub = _openssl("x509", "-in", signer_pem, "-pubkey", "-noout", cwd=tmp_path)
    (tmp_path / "signer-pub.pem").write_text(pub.stdout)
    r = _openssl("pkeyutl", "-verify", "-pubin", "-inkey", "signer-pub.pem", "-rawin", "-digest", "sm3",
                 "-in", "tbs", "-sigfile", "sig", "-pkeyopt", "distid:1234567812345678", cwd=tmp_path)
    return r.returncode == 0


def test_openssl_verifies_the_chain_and_the_crl(app, client, org, tmp_path):
    root_pem = client.get("/ca/sm2-root.pem")
    assert root_pem.status_code == 200 and root_pem.mimetype == "application/x-pem-file"
    (tmp_path / "root.pem").write_bytes(root_pem.data)
    (tmp_path / "issuing.pem").write_bytes(client.get("/ca/sm2-issuing.pem").data)
    _key, row = _issue(org)
    _write_pem(tmp_path / "seal.pem", row.cert_der)

    # `openssl verify` (3.0) applies -vfyopt's identifier to the certificate it is given only: each
    # link of the chain is therefore checked as its own leaf
    ok = _openssl("verify", *DISTID, "-partial_chain", "-CAfile", "issuing.pem", "seal.pem", cwd=tmp_path)
    assert ok.returncode == 0 and "seal.pem: OK" in ok.stdout, ok.stdout + ok.stderr
    ok = _openssl("verify", *DISTID, "-CAfile", "root.pem", "issuing.pem", cwd=tmp_path)
    assert ok.returncode == 0 and "issuing.pem: OK" in ok.stdout, ok.stdout + ok.stderr
    # without the standard identifier OpenSSL refuses the signature: it is really SM2 with Z(ID)
    assert _openssl("verify", "-partial_chain", "-CAfile", "issuing.pem", "seal.pem", cwd=tmp_path).returncode != 0
    root = asn1_x509.Certificate.load(asn1_pem.unarmor(root_pem.data)[2])
    assert _openssl_signature_ok(tmp_path, root["tbs_certificate"].dump(), root["signature_value"].native,
                                 "root.pem")  # the root's self-signature
    text = _openssl("x509", "-in", "seal.pem", "-noout", "-text", cwd=tmp_path).stdout
    assert "SM2-with-SM3" in text and "ASN1 OID: SM2" in text
    assert "Digital Signature, Non Repudiation" in text and "3501000000001" in text
    assert "/ca/sm2-crl" in text

    crl = client.get("/ca/sm2-crl")
    assert crl.status_code == 200 and crl.mimetype == "application/pkix-crl"
    parsed = asn1_crl.CertificateList.load(crl.data)
    assert _openssl_signature_ok(tmp_path, parsed["tbs_cert_list"].dump(), parsed["signature"].native,
                                 "issuing.pem")
    _write_pem(tmp_path / "crl.pem", crl.data, "X509 CRL")
    listed = _openssl("crl", "-in", "crl.pem", "-noout", "-text", cwd=tmp_path).stdout
    assert "SM2-with-SM3" in listed and "No Revoked Certificates" in listed

    # revoked: on the next CRL at once, and OpenSSL reads it there
    from keys.ca import revoke

    revoke(row.serial, "key compromise")
    db.session.commit()
    assert sm2ca.is_revoked(row.serial)
    crl2 = client.get("/ca/sm2-crl").data
    _write_pem(tmp_path / "crl2.pem", crl2, "X509 CRL")
    listed = _openssl("crl", "-in", "crl2.pem", "-noout", "-text", cwd=tmp_path).stdout
    assert f"Serial Number: {row.serial.upper()}" in listed
    parsed = asn1_crl.CertificateList.load(crl2)
    assert _openssl_signature_ok(tmp_path, parsed["tbs_cert_list"].dump(), parsed["signature"].native,
                                 "issuing.pem")
    # the EC CA's CRL does not list SM2 certificates, and the EC CA does not call them revoked
    from keys import ca as ec_ca

    assert not ec_ca.is_revoked(row.serial)
    assert client.get("/ca/sm2-root.crl").status_code == 200


def test_validation_trusts_only_our_chain(app, org):
    _key, row = _issue(org)
    cert = asn1_x509.Certificate.load(row.cert_der)
    status = sm2ca.validate_seal_certificate(cert, row.not_before.replace(microsecond=0) +
                                             (row.not_after - row.not_before) / 2)
    assert status["trusted"] and status["in_validity"] and not status["revoked"]

    # the attack: the same subject and key, signed by a look-alike CA of the attacker's
    fake_root = sm2.generate()
    forged = sm2ca.build_certificate(cert.subject, sm2ca.public_key_of(cert),
                                     issuer=sm2ca.sm2ca()["sm2-issuing"].cert.subject, issuer_key=fake_root,
                                     issuer_key_id=None, days=30, ca=False,
                                     key_usage={"digital_signature", "non_repudiation"})
    assert not sm2ca.validate_seal_certificate(forged, row.not_before)["trusted"]
    # a certificate edited after signing (a byte of the subject changed) no longer verifies
    der = bytearray(row.cert_der)
    i = der.find("测试".encode())
    der[i + 2] ^= 1
    assert not sm2ca.validate_seal_certificate(asn1_x509.Certificate.load(bytes(der)), row.not_before)["trusted"]


def test_ca_keys_are_encrypted_and_not_mixed_with_the_ec_ca(app):
    from sqlalchemy import select

    from keys import ca as ec_ca
    from keys.models import CAKey

    rows = {r.role: r for r in db.session.execute(select(CAKey)).scalars()}
    assert {"sm2-root", "sm2-issuing", "sm2-maker", "root", "issuing", "tsa"} <= set(rows)
    for role in sm2ca.ROLES:
        key = sm2.unseal_key(rows[role].private_key, f"ca:{role}")
        assert key.d not in rows[role].private_key and rows[role].alg == "sm2"
    assert set(ec_ca.ca().authorities) == {"root", "issuing", "tsa"}
    assert set(ec_ca.ca().crls) == {"root", "issuing"}
