"""The fast compact signer agrees with joserfc both ways."""

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from keys import jws


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_compact_signer_matches_joserfc(alg):
    private = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else rsa.generate_private_key(
        public_exponent=65537, key_size=2048)
    jwk = (ECKey if alg == "ES256" else RSAKey).import_key(private)
    claims = {"iss": "https://id.example.gov.cn", "sub": "张三", "exp": 2_000_000_000}
    token = jws.CompactSigner(private, alg, "kid-1", "at+jwt").sign(claims)
    decoded = jwt.decode(token, jwk, algorithms=[alg])
    assert decoded.claims == claims
    assert decoded.header == {"alg": alg, "kid": "kid-1", "typ": "at+jwt"}
    # and joserfc's tokens verify with ours
    other = jwt.encode({"alg": alg, "kid": "kid-1", "typ": "at+jwt"}, claims, jwk, algorithms=[alg])
    header, signing_input, _payload, signature = jws.parse(other)
    assert header["kid"] == "kid-1"
    assert jws.verify(private.public_key(), alg, signing_input, signature, low_s=False)
    assert not jws.verify(private.public_key(), alg, signing_input + b"x", signature, low_s=False)
    if alg == "ES256":  # joserfc does not normalise s: ours accepts its tokens in low-S form only
        low = int.from_bytes(signature[32:], "big") <= jws.P256_N // 2
        assert jws.verify(private.public_key(), alg, signing_input, signature) is low


def test_parse_rejects_garbage():
    assert jws.parse("a.b") is None
    assert jws.parse("!!.??.**") is None
    assert jws.parse("e30.e30.") is not None  # {} header parses; verification then fails
    assert not jws.verify(ec.generate_private_key(ec.SECP256R1()).public_key(), "ES256", b"x", b"")
    assert not jws.verify(None, "HS256", b"x", b"sig")


def _es256_token():
    private = ec.generate_private_key(ec.SECP256R1())
    token = jws.CompactSigner(private, "ES256", "kid-1", "at+jwt").sign({"sub": "x", "exp": 2_000_000_000})
    return private.public_key(), token


def _verifies(public, token: str) -> bool:
    parsed = jws.parse(token)
    return parsed is not None and jws.verify(public, "ES256", parsed[1], parsed[3])


def test_signer_produces_low_s_only():
    private = ec.generate_private_key(ec.SECP256R1())
    signer = jws.CompactSigner(private, "ES256", "kid-1", "at+jwt")
    for i in range(40):  # a high s would turn up half the time without normalisation
        sig = jws.b64d(signer.sign({"n": i}).rsplit(".", 1)[1])
        assert 0 < int.from_bytes(sig[32:], "big") <= jws.P256_N // 2


def test_high_s_twin_is_refused():
    public, token = _es256_token()
    assert _verifies(public, token)
    head, sig = token.rsplit(".", 1)
    raw = jws.b64d(sig)
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    twin = head + "." + jws.b64e(r + (jws.P256_N - s).to_bytes(32, "big")).decode()
    parsed = jws.parse(twin)
    assert jws.verify(public, "ES256", parsed[1], parsed[3], low_s=False)  # mathematically valid
    assert not _verifies(public, twin)  # but not the one spelling we accept
    zero = head + "." + jws.b64e(bytes(64)).decode()
    big = head + "." + jws.b64e(jws.P256_N.to_bytes(32, "big") + raw[32:]).decode()
    assert not _verifies(public, zero) and not _verifies(public, big)


@pytest.mark.parametrize("mangle", [
    lambda h, p, s: f"{h}.{p}.{s[:10]}****{s[10:]}",  # skipped by a lenient decoder
    lambda h, p, s: f"{h}.{p}.{s}=",
    lambda h, p, s: f"{h}.{p}.{s}==",
    lambda h, p, s: f"{h}.{p}.{s[:20]}\n{s[20:]}",
    lambda h, p, s: f"{h}.{p}.{s[:20]}+{s[21:]}",  # standard (not url-safe) alphabet
    lambda h, p, s: f"{h}=.{p}.{s}",
    lambda h, p, s: f"{h}.{p}*.{s}",
    lambda h, p, s: f"{h}.{p}.{s}A",  # one character too many
    lambda h, p, s: f" {h}.{p}.{s}",
])
def test_non_canonical_base64url_is_refused(mangle):
    public, token = _es256_token()
    h, p, s = token.split(".")
    assert not _verifies(public, mangle(h, p, s))


def test_trailing_bits_must_be_zero():
    public, token = _es256_token()
    head, sig = token.rsplit(".", 1)
    # 64 bytes -> 86 characters carrying 516 bits: the last character's 4 low bits are padding
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    assert last % 16 == 0
    other = head + "." + sig[:-1] + alphabet[last + 1]
    assert jws.b64d(other.rsplit(".", 1)[1]) == jws.b64d(sig)  # same bytes, another spelling
    assert not _verifies(public, other)


def test_deeply_nested_header_is_malformed_not_a_crash():
    h = jws.b64e(b"[" * 5000).decode()
    assert jws.parse(f"{h}.e30.") is None
