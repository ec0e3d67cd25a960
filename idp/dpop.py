"""DPoP: sender-constrained access and refresh tokens (RFC 9449).

``verify_proof`` is the one place a DPoP proof is checked: at the token endpoint (before any
grant runs) and at every resource server (userinfo, the licence API, the seal API) through the
``DPoPTokenValidator`` registered on ``require_oauth``.

- the proof: a JWS of ``typ`` ``dpop+jwt`` signed with one of ``ALGS`` by the public ``jwk``
  in its header; ``htm``/``htu`` name this request (``htu`` compared with the issuer's URL of the
  endpoint, normalised, without query and fragment); ``iat`` within TONGBAN_DPOP_PROOF_WINDOW;
  ``jti`` used once (a replay store shared by every server: Redis when configured, else a table);
  at a resource server ``ath`` is the hash of the access token presented with it.
- nonces (§8, §9): stateless, an HMAC of the current time step under a key derived from the
  Flask secret key, so every server issues and accepts the same ones; the token endpoint
  requires one when TONGBAN_DPOP_REQUIRE_NONCE is on (``use_dpop_nonce`` + ``DPoP-Nonce``).
- binding: a token response to a request with a valid proof carries ``token_type`` ``DPoP``
  and an access token with ``cnf.jkt`` (the proof key's RFC 7638 thumbprint); refresh tokens
  of public clients are bound to the key (§5); a code asked for with ``dpop_jkt`` can only be
  exchanged with a proof of that key (§10).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import warnings
from urllib.parse import urlsplit

from authlib.oauth2 import OAuth2Error
from flask import current_app
from flask import request as flask_request
from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import JWKRegistry
from sqlalchemy import BigInteger, String, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from tongban.extensions import db

from . import fapi
from .context import GrantContext, grant_context

ALGS = ("ES256", "PS256", "RS256", "EdDSA")
# "EdDSA" is what DPoP clients send for Ed25519 keys (RFC 9449 examples); the key type is checked
# below (Ed25519 only), so joserfc's RFC 9864 deprecation warning on every proof is noise
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)
HEADER = "DPoP"
NONCE_HEADER = "DPoP-Nonce"
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_KEY_TYPES = {"ES256": ("EC", "P-256"), "PS256": ("RSA", None), "RS256": ("RSA", None), "EdDSA": ("OKP", "Ed25519")}


class DPoPProof(db.Model):
    """Proofs seen within the acceptance window (``jti`` per key, hashed): each is used once."""

    __tablename__ = "dpop_proofs"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)  # epoch seconds


class DPoPError(Exception):
    """A proof refused: ``error`` is ``invalid_dpop_proof`` or ``use_dpop_nonce``."""

    def __init__(self, description: str, error: str = "invalid_dpop_proof"):
        super().__init__(description)
        self.error = error
        self.description = description


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(access_token: str) -> str:
    """``ath`` (RFC 9449 §4.2): base64url of the SHA-256 of the access token's ASCII."""
    return _b64(hashlib.sha256(access_token.encode("ascii", "replace")).digest())


def normalise_url(url: str) -> str | None:
    """scheme://host[:port]/path, lower-cased scheme and host, default port dropped, no query or
    fragment (RFC 9449 §4.3, RFC 3986 §6.2.2-3); None if not an absolute http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path or '/'}"


def endpoint_url() -> str:
    """The URL the current request was made to, as the issuer names it (not as a proxy passed it)."""
    return current_app.config["TONGBAN_ISSUER"] + flask_request.path


# ---------------------------------------------------------------- nonces


def _nonce_key() -> bytes:
    secret = str(current_app.config.get("SECRET_KEY") or "").encode()
    return hashlib.sha256(b"tongban dpop-nonce\x00" + secret).digest()


def _nonce_for(step: int) -> str:
    mac = hmac.new(_nonce_key(), str(step).encode(), hashlib.sha256).digest()[:18]
    return f"{step:x}.{_b64(mac)}"


def _step() -> int:
    return int(time.time()) // int(current_app.config["TONGBAN_DPOP_NONCE_SECONDS"])


def current_nonce() -> str:
    return _nonce_for(_step())


def nonce_is_valid(nonce: str) -> bool:
    """Issued in this time step or the one before (every server computes the same)."""
    step = _step()
    return isinstance(nonce, str) and any(hmac.compare_digest(nonce, _nonce_for(s)) for s in (step, step - 1))


# ---------------------------------------------------------------- replay


def _remember(jkt: str, jti: str, ttl: int) -> bool:
    """Record the proof; False if it was seen before (a replay)."""
    key = hashlib.sha256(f"{jkt}:{jti}".encode()).hexdigest()
    from tongban.cache import redis_client

    r = redis_client()
    if r is not None:
        return bool(r.set(f"tongban:dpop:{key}", b"1", nx=True, ex=ttl))
    now = int(time.time())
    try:
        # its own short transaction: a refused request rolls back, the proof stays spent
        with db.engine.begin() as conn:
            conn.execute(delete(DPoPProof).where(DPoPProof.expires_at < now))
            conn.execute(DPoPProof.__table__.insert().values(key=key, expires_at=now + ttl))
    except IntegrityError:
        return False
    return True


# ---------------------------------------------------------------- the proof


def verify_proof(proof: str | None, *, method: str, url: str, access_token: str | None = None,
                 require_nonce: bool = False) -> str:
    """Check a DPoP proof for ``method`` ``url`` (and ``access_token``: ``ath``); return the
    thumbprint (``jkt``) of its key. DPoPError if anything is wrong; the proof is then spent
    only if it was otherwise valid (a replay is refused before it is recorded)."""
    if not proof or not isinstance(proof, str) or proof.count(".") != 2 or len(proof) > 8192:
        raise DPoPError("the DPoP header is not a compact JWS")
    try:
        obj = jws.extract_compact(proof.encode("ascii"))
        header = obj.headers()
    except (JoseError, ValueError, UnicodeError, RecursionError):
        raise DPoPError("the DPoP proof is not a JWS") from None
    if header.get("typ") != "dpop+jwt":
        raise DPoPError("the DPoP proof's typ must be dpop+jwt")
    alg = header.get("alg")
    if alg not in ALGS:
        raise DPoPError(f"DPoP proofs must be signed with one of {', '.join(ALGS)}")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise DPoPError("the DPoP proof has no jwk header")
    if _PRIVATE_MEMBERS & set(jwk):
        raise DPoPError("the DPoP proof's jwk must be a public key")
    kty, crv = _KEY_TYPES[alg]
    if jwk.get("kty") != kty or (crv and jwk.get("crv") != crv):
        raise DPoPError(f"the DPoP proof's jwk does not fit {alg}")
    try:
        key = JWKRegistry.import_key(jwk)
        if kty == "RSA" and key.raw_value.key_size < 2048:  # type: ignore[union-attr]
            raise DPoPError("the DPoP proof's RSA key is shorter than 2048 bits")
        jws.deserialize_compact(proof, key, algorithms=[alg])
    except DPoPError:
        raise
    except (JoseError, ValueError, TypeError, UnicodeError, RecursionError):
        raise DPoPError("the DPoP proof's signature does not verify") from None
    try:
        claims = json.loads(obj.payload)
    except (ValueError, RecursionError):
        raise DPoPError("the DPoP proof's payload is not JSON") from None
    if not isinstance(claims, dict):
        raise DPoPError("the DPoP proof's payload is not a JSON object")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 1 <= len(jti) <= 256:
        raise DPoPError("the DPoP proof has no jti")
    if claims.get("htm") != method:
        raise DPoPError("the DPoP proof is for another HTTP method (htm)")
    htu = claims.get("htu")
    if not isinstance(htu, str) or normalise_url(htu) is None or normalise_url(htu) != normalise_url(url):
        raise DPoPError("the DPoP proof is for another URL (htu)")
    iat = claims.get("iat")
    window = int(current_app.config["TONGBAN_DPOP_PROOF_WINDOW"])
    now = int(time.time())
    if not isinstance(iat, (int, float)) or isinstance(iat, bool) or not abs(now - iat) <= window:
        raise DPoPError("the DPoP proof's iat is not within the acceptance window")
    if access_token is not None and not hmac.compare_digest(str(claims.get("ath", "")),
                                                            access_token_hash(access_token)):
        raise DPoPError("the DPoP proof's ath is not the hash of the access token")
    nonce = claims.get("nonce")
    if nonce is not None and not nonce_is_valid(nonce):
        raise DPoPError("the DPoP nonce is stale or unknown: use the DPoP-Nonce given", "use_dpop_nonce")
    if nonce is None and require_nonce:
        raise DPoPError("a DPoP nonce is required: use the DPoP-Nonce given", "use_dpop_nonce")
    jkt = key.thumbprint()
    if not _remember(jkt, jti, 2 * window + 5):
        _audit_refusal("dpop.proof_replayed", {"jkt": jkt})
        raise DPoPError("the DPoP proof was used before (jti)")
    return jkt


def _audit_refusal(action: str, detail: dict) -> None:
    from tongban import audit, ratelimit

    audit.record_later(action, actor="anonymous", object=flask_request.path, outcome="failure", detail=detail,
                       throttle=ratelimit.client_key(flask_request.remote_addr))


def _single_proof() -> str | None:
    values = flask_request.headers.getlist(HEADER)
    if len(values) > 1:
        raise DPoPError("more than one DPoP header")
    return values[0] if values else None


# ---------------------------------------------------------------- the token endpoint


def before_token_request():
    """Check the token request's DPoP proof, if any, before any grant runs: the key's thumbprint
    is kept in ``grant_context().dpop_jkt``. Returns an error response, or None to go on."""
    grant_context().dpop_jkt = None
    try:
        proof = _single_proof()
        if proof is None:
            return None
        grant_context().dpop_jkt = verify_proof(proof, method="POST", url=endpoint_url(),
                                  require_nonce=current_app.config["TONGBAN_DPOP_REQUIRE_NONCE"])
    except DPoPError as e:
        return token_error_response(e.error, e.description)
    return None


def token_error_response(error: str, description: str, status: int = 400):
    from flask import Response

    headers = {"Cache-Control": "no-store", "Pragma": "no-cache", NONCE_HEADER: current_nonce()}
    return Response(json.dumps({"error": error, "error_description": description}), status, headers,
                    mimetype="application/json")


def after_token_response(response) -> None:
    """Every token response to a DPoP request carries a fresh nonce for the next proof."""
    if flask_request.headers.get(HEADER) is not None and NONCE_HEADER not in response.headers:
        response.headers[NONCE_HEADER] = current_nonce()


def check_grant(client, *, code=None, refresh_row=None) -> None:
    """Binding rules for a token request whose client and grant are known (OAuth2Error if broken)."""
    from authlib.oauth2.rfc6749.errors import InvalidGrantError

    jkt = grant_context().dpop_jkt
    if jkt is None and client_requires_dpop(client):
        raise InvalidDPoPProofError("this client must send a DPoP proof with every token request")
    bound = getattr(code, "dpop_jkt", None) if code is not None else None
    if bound and bound != jkt:
        _audit_refusal("dpop.code_key_mismatch", {"client": client.client_id})
        raise InvalidGrantError("the code is bound to another DPoP key (dpop_jkt)")
    bound = getattr(refresh_row, "dpop_jkt", None) if refresh_row is not None else None
    if bound and bound != jkt:
        _audit_refusal("dpop.refresh_key_mismatch", {"client": client.client_id})
        raise InvalidGrantError("the refresh token is bound to another DPoP key")


def refresh_binding(client) -> str | None:
    """The key a refresh token issued now is bound to: the proof's, for public clients (§5)."""
    return grant_context().dpop_jkt if client.is_public else None


def access_token_claims(gctx: GrantContext | None = None) -> dict:
    jkt = (gctx or grant_context()).dpop_jkt
    return {"cnf": {"jkt": jkt}} if jkt else {}


def token_type(gctx: GrantContext | None = None) -> str | None:
    return "DPoP" if (gctx or grant_context()).dpop_jkt else None


# ---------------------------------------------------------------- what other modules ask


def client_requires_dpop(client) -> bool:
    """Whether ``client`` (a RegisteredClient or a Client row) must use DPoP."""
    return bool(getattr(client, "require_dpop", False)) or fapi.requires_sender_constraint(client)


def token_is_sender_constrained(token) -> bool:
    """Whether an access token (an ``AccessToken``, or its claims) is bound to a DPoP key."""
    claims = getattr(token, "claims", token) or {}
    cnf = claims.get("cnf") if isinstance(claims, dict) else None
    return isinstance(cnf, dict) and bool(cnf.get("jkt"))


def bound_jkt(token) -> str | None:
    claims = getattr(token, "claims", token) or {}
    cnf = claims.get("cnf") if isinstance(claims, dict) else None
    return cnf.get("jkt") if isinstance(cnf, dict) else None


# ---------------------------------------------------------------- errors



class InvalidDPoPProofError(OAuth2Error):
    error = "invalid_dpop_proof"
    status_code = 400


class ResourceDPoPError(OAuth2Error):
    """A resource server's refusal (RFC 9449 §7.1): 401 with a DPoP challenge naming the algs."""

    status_code = 401

    def __init__(self, error: str, description: str, *, nonce: bool = False):
        super().__init__(description=description)
        self.error = error
        self.nonce = nonce

    def get_headers(self):
        challenge = (f'DPoP error="{self.error}", error_description="{self.description}", '
                     f'algs="{" ".join(ALGS)}"')
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                   ("WWW-Authenticate", challenge)]
        if self.nonce:
            headers.append((NONCE_HEADER, current_nonce()))
        return headers


def challenge() -> str:
    return f'DPoP algs="{" ".join(ALGS)}"'


def check_resource_request(token, token_string: str, *, dpop_scheme: bool) -> None:
    """At a resource server: a DPoP-bound token comes with ``Authorization: DPoP`` and a proof
    of its key for this request; a bound token presented as Bearer is refused."""
    jkt = bound_jkt(token)
    if not dpop_scheme:
        if jkt:
            _audit_refusal("dpop.bound_token_as_bearer", {"client": token.client_id})
            from authlib.oauth2.rfc6750 import InvalidTokenError

            raise InvalidTokenError(description="a DPoP-bound token must be sent with the DPoP scheme")
        return
    if not jkt:
        raise ResourceDPoPError("invalid_token", "the token is not DPoP-bound: send it as Bearer")
    try:
        proof = _single_proof()
        if proof is None:
            raise DPoPError("a DPoP proof is required with a DPoP token")
        got = verify_proof(proof, method=flask_request.method, url=endpoint_url(), access_token=token_string,
                           require_nonce=current_app.config["TONGBAN_DPOP_REQUIRE_NONCE_RESOURCE"])
    except DPoPError as e:
        raise ResourceDPoPError(e.error, e.description, nonce=e.error == "use_dpop_nonce") from None
    if not hmac.compare_digest(got, jkt):
        _audit_refusal("dpop.token_key_mismatch", {"client": token.client_id})
        raise ResourceDPoPError("invalid_token", "the DPoP proof's key is not the one the token is bound to")


__all__ = ["ALGS", "DPoPError", "check_resource_request", "client_requires_dpop", "token_is_sender_constrained",
           "verify_proof"]
