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
    assert jws.verify(private.public_key(), alg, signing_input, signature)
    assert not jws.verify(private.public_key(), alg, signing_input + b"x", signature)


def test_parse_rejects_garbage():
    assert jws.parse("a.b") is None
    assert jws.parse("!!.??.**") is None
    assert jws.parse("e30.e30.") is not None  # {} header parses; verification then fails
    assert not jws.verify(ec.generate_private_key(ec.SECP256R1()).public_key(), "ES256", b"x", b"")
    assert not jws.verify(None, "HS256", b"x", b"sig")
