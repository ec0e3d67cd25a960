"""SM2 and SM3 (keys/sm2.py): the standards' own test vectors, and OpenSSL as the independent
implementation in both directions (it verifies our signatures; we verify its)."""

from __future__ import annotations

import subprocess

import pytest

from keys import sm2

# GB/T 32918.5-2017 / GM/T 0003.5-2012, appendix A: signature example on the recommended curve
VECTOR_D = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8"
VECTOR_PUB = ("09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
              "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13")
VECTOR_MSG = b"message digest"
VECTOR_R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
VECTOR_S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA


def _der(r: int, s: int) -> bytes:
    from asn1crypto.algos import DSASignature

    return DSASignature({"r": r, "s": s}).dump()


def test_sm3_vectors_of_gbt_32905():
    assert sm2.sm3(b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    assert sm2.sm3(b"abcd" * 16).hex() == "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"


def test_gbt_32918_5_sample_signature_verifies_and_nothing_else_does():
    pub = sm2.SM2PublicKey(bytes.fromhex(VECTOR_PUB))
    assert pub.verify(VECTOR_MSG, _der(VECTOR_R, VECTOR_S))
    assert not pub.verify(b"message digesT", _der(VECTOR_R, VECTOR_S))
    assert not pub.verify(VECTOR_MSG, _der(VECTOR_R, VECTOR_S ^ 1))
    assert not pub.verify(VECTOR_MSG, _der(VECTOR_R, VECTOR_S), ident=b"ALICE123@YAHOO.COM")
    # a signature made with the example's private key verifies under the example's public key
    key = sm2.SM2PrivateKey(bytes.fromhex(VECTOR_D), bytes.fromhex(VECTOR_PUB))
    assert pub.verify(b"any message", key.sign(b"any message"))


@pytest.mark.parametrize("garbage", [b"", b"\x30\x00", b"x" * 72, b"\x30" * 200])
def test_malformed_signatures_are_false_not_errors(garbage):
    key = sm2.generate()
    assert key.public_key().verify(b"m", garbage) is False
    assert sm2.SM2PublicKey(b"\x01" * 64).verify(b"m", key.sign(b"m")) is False


def test_openssl_verifies_our_signatures(tmp_path):
    key = sm2.generate()
    message = "盖章的原文 ✓".encode() * 50
    (tmp_path / "pub.pem").write_text(key.public_key().pem())
    (tmp_path / "msg").write_bytes(message)
    (tmp_path / "sig").write_bytes(key.sign(message))

    def openssl_verify(msg: bytes) -> subprocess.CompletedProcess:
        (tmp_path / "msg").write_bytes(msg)
        return subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "pub.pem"),
                               "-rawin", "-digest", "sm3", "-in", str(tmp_path / "msg"), "-sigfile",
                               str(tmp_path / "sig"), "-pkeyopt", "distid:1234567812345678"],
                              capture_output=True, text=True)

    ok = openssl_verify(message)
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout
    assert openssl_verify(message + b"!").returncode != 0


def test_we_verify_openssl_signatures(tmp_path):
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, cwd=tmp_path)  # noqa: E731
    run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:SM2", "-out", "k.pem")
    run("openssl", "pkey", "-in", "k.pem", "-pubout", "-outform", "DER", "-out", "p.der")
    (tmp_path / "m").write_bytes(b"signed by OpenSSL")
    run("openssl", "pkeyutl", "-sign", "-inkey", "k.pem", "-rawin", "-digest", "sm3", "-in", "m", "-out", "s",
        "-pkeyopt", "distid:1234567812345678")
    pub = sm2.SM2PublicKey.from_spki((tmp_path / "p.der").read_bytes())
    assert pub.verify(b"signed by OpenSSL", (tmp_path / "s").read_bytes())
    assert not pub.verify(b"signed by OpenSSl", (tmp_path / "s").read_bytes())


def test_spki_round_trip_and_refusals():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = sm2.generate()
    assert sm2.SM2PublicKey.from_spki(key.public_key().spki_der()) == key.public_key()
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(sm2.SM2Error):
        sm2.SM2PublicKey.from_spki(p256)
    with pytest.raises(sm2.SM2Error):
        sm2.SM2PublicKey.from_spki(b"\x30\x03\x02\x01\x00")


def test_keys_are_encrypted_at_rest(app):
    key = sm2.generate()
    blob = sm2.seal_key(key, "label-a")
    assert key.d not in blob
    assert sm2.unseal_key(blob, "label-a") == key
    with pytest.raises(Exception):  # bound to its label: a blob moved to another key's row does not open
        sm2.unseal_key(blob, "label-b")
