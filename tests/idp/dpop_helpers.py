"""DPoP proofs (RFC 9449) made with fixed test keys, and a public client's code flow with them."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from urllib.parse import urlencode

import requests
from joserfc import jws
from joserfc.jwk import ECKey

from tests.idp.helpers import REDIRECT, Browser

KEY_A = ECKey.import_key({"crv": "P-256", "x": "RxutVOupPLoTtG9fnnOMoQ7_1x5H5CeZifMjtgsE_ME",
                          "y": "ngAiIL0L7n5UDVfB6ZRfTe6CBA_o9vwGIit6cZ6qubk",
                          "d": "e54OXagWozHzmTiroKFtWuDwDJevzJy4jsa4a5m2BDk", "kty": "EC"})
KEY_B = ECKey.import_key({"crv": "P-256", "x": "CwH23cDEIfARoHE2lFF18utXQtcK7WvUTYHuHdsRwF8",
                          "y": "ofI_xVAEbVMLqZvTnUVSDxR_Q5w-XzibLLKl9T6XnpI",
                          "d": "KjMzFMSjHdwWkdApcm137yiPCif95Vq3fGP-mlV8Iv8", "kty": "EC"})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def proof(key, method: str, url: str, *, nonce: str | None = None, access_token: str | None = None,
          iat: int | None = None, jti: str | None = None, typ: str = "dpop+jwt", jwk: dict | None = None) -> str:
    claims = {"jti": jti or uuid.uuid4().hex, "htm": method, "htu": url,
              "iat": int(time.time()) if iat is None else iat}
    if nonce:
        claims["nonce"] = nonce
    if access_token:
        claims["ath"] = b64(hashlib.sha256(access_token.encode()).digest())
    header = {"typ": typ, "alg": "ES256", "jwk": jwk or key.as_dict(private=False)}
    import json

    return jws.serialize_compact(header, json.dumps(claims).encode(), key, algorithms=["ES256"])


def nonce(base: str) -> str:
    """A server nonce: what the token endpoint answers a proof without one."""
    r = requests.post(f"{base}/oauth/token", data={"grant_type": "client_credentials"},
                      headers={"DPoP": proof(KEY_A, "POST", f"{base}/oauth/token")})
    assert r.status_code == 400 and r.json()["error"] == "use_dpop_nonce", r.text
    return r.headers["DPoP-Nonce"]


def token_request(base: str, data: dict, key=KEY_A, *, auth=None, with_proof: bool = True, **kw) -> requests.Response:
    headers = {}
    if with_proof:
        headers["DPoP"] = proof(key, "POST", f"{base}/oauth/token", nonce=nonce(base), **kw)
    return requests.post(f"{base}/oauth/token", data=data, headers=headers, auth=auth)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, b64(hashlib.sha256(verifier.encode()).digest())


def authorize_code(base: str, client_id: str, scope: str = "openid profile", **extra) -> tuple[str, str]:
    """Log in and consent in a scripted browser; returns (code, PKCE verifier)."""
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope,
              "state": "s1", "nonce": secrets.token_urlsafe(8), "code_challenge": challenge,
              "code_challenge_method": "S256", **extra}
    step = Browser(base).authorize(f"{base}/oauth/authorize?" + urlencode(params, doseq=True))
    assert "code" in step.params, step.params
    return step.params["code"], verifier


def code_tokens(base: str, client_id: str, key=KEY_A, *, auth=None, code_extra: dict | None = None,
                **token_extra) -> dict:
    code, verifier = authorize_code(base, client_id, **(code_extra or {}))
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
            **({} if auth else {"client_id": client_id}), **token_extra}
    r = token_request(base, data, key, auth=auth)
    assert r.status_code == 200, r.text
    return r.json()
