"""private_key_jwt (RFC 7523 §2.2, OIDC Core §9): clients authenticate with a JWT signed by a key
whose public half they registered (``clients create --jwks FILE`` or ``--jwks-uri URL``).

The same keys verify the client's signed request objects (idp/jar.py). What a client
assertion must be (docs/oidc-modern.md):

- signed with ES256, PS256 or RS256 (never ``none`` or an HMAC: a public key used as an HMAC
  secret would be a forgery anyone can make), by a key of the client's registered set;
- ``iss`` = ``sub`` = the client_id; ``aud`` the issuer identifier (RFC 7523bis, FAPI 2.0),
  or the token endpoint URL, or the URL of the endpoint called (RFC 7523 §3);
- ``exp`` required, at most TONGBAN_CLIENT_ASSERTION_MAX_LIFETIME ahead; ``iat`` not in the future;
- ``jti`` required and used once: remembered (Redis, else the database: shared by every server)
  until the assertion expires.
"""

from __future__ import annotations

import json
import threading
import time
from functools import lru_cache

from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from flask import current_app
from flask import request as flask_request
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tongban import audit
from tongban.cache import redis_client
from tongban.clock import digest, utcnow
from tongban.errors import ValidationError
from tongban.extensions import db, session_holds_sqlite_write

from .errors import shown
from .models import UsedAssertion
from .uris import check_uri

METHOD = "private_key_jwt"
# asymmetric only: ``none`` and HS* are refused (RFC 9700 §2.6, FAPI 2.0 §5.4)
ALGS = ("ES256", "PS256", "RS256")
_KTY = {"ES256": "EC", "PS256": "RSA", "RS256": "RSA"}
LEEWAY = 30  # seconds of clock skew allowed on exp / iat / nbf
# the endpoints a client authenticates at; an assertion may name the one it is sent to
AUTH_PATHS = ("/oauth/token", "/oauth/par", "/oauth/introspect", "/oauth/revoke", "/oauth/device_authorization")


class KeysUnavailable(Exception):
    """The client has no usable keys (none registered, or its jwks_uri could not be read)."""


# ---------------------------------------------------------------- registration


def _import_public_set(data, what: str) -> KeySet:
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list) or not data["keys"]:
        raise ValidationError(f"{what} must be a JWKS: a JSON object with a non-empty \"keys\" list",
                              "invalid_jwks")
    for k in data["keys"]:
        if not isinstance(k, dict):
            raise ValidationError(f"{what}: every key must be a JSON object", "invalid_jwks")
        if any(p in k for p in ("d", "p", "q", "k")):
            raise ValidationError(f"{what} holds private or symmetric key material: register public keys only",
                                  "invalid_jwks")
        if k.get("kty") not in ("RSA", "EC"):
            raise ValidationError(f"{what}: key type {k.get('kty')!r} is not supported (RSA or EC P-256)",
                                  "invalid_jwks")
        if k.get("kty") == "EC" and k.get("crv") != "P-256":
            raise ValidationError(f"{what}: EC keys must be on P-256 (ES256)", "invalid_jwks")
    try:
        return KeySet.import_key_set(data)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError) as e:
        raise ValidationError(f"{what} is not a valid JWKS: {e}", "invalid_jwks") from None


def check_keys(jwks, jwks_uri: str | None, method: str, require_signed_request_object: bool = False):
    """Registration: the client's public keys (a JWKS object, or an https URL to fetch it from)."""
    if jwks and jwks_uri:
        raise ValidationError("register either --jwks or --jwks-uri, not both", "invalid_jwks")
    if jwks is not None:
        _import_public_set(jwks, "--jwks")
    if jwks_uri:
        jwks_uri = check_uri(jwks_uri, "jwks_uri")
    if (method == METHOD or require_signed_request_object) and not (jwks or jwks_uri):
        raise ValidationError("private_key_jwt and signed request objects need the client's public keys "
                              "(--jwks FILE or --jwks-uri URL)", "invalid_jwks")
    return jwks or None, jwks_uri or None


def load_jwks_file(path: str) -> dict:
    """``--jwks FILE``: the JSON document, checked."""
    try:
        with open(path, "rb") as f:
            raw = f.read(1024 * 1024 + 1)
    except OSError as e:
        raise ValidationError(f"cannot read {path}: {e.strerror}", "invalid_jwks") from None
    if len(raw) > 1024 * 1024:
        raise ValidationError(f"{path} is too large for a JWKS", "invalid_jwks")
    try:
        data = json.loads(raw)
    except ValueError:
        raise ValidationError(f"{path} is not JSON", "invalid_jwks") from None
    _import_public_set(data, path)
    return data


# ---------------------------------------------------------------- the client's keys


@lru_cache(maxsize=256)
def _registered(jwks_json: str) -> KeySet:
    return KeySet.import_key_set(json.loads(jwks_json))


_fetched: dict[str, tuple[float, KeySet, float]] = {}  # uri -> (fresh until, keys, fetched at)
REFETCH_AFTER = 30.0  # an unknown kid refetches a jwks_uri at most this often (no amplification)
_fetch_lock = threading.Lock()


def _end_read_transaction() -> None:
    """A jwks_uri is fetched outside any database transaction: a read-only one is ended, and a
    request that already wrote must not get here (programming error)."""
    session = db.session()
    if not session.in_transaction():
        return
    if session.new or session.dirty or session.deleted or session_holds_sqlite_write():
        raise RuntimeError("a client's jwks_uri must not be fetched inside a write transaction")
    session.rollback()


def _fetch(uri: str) -> KeySet:
    from tongban.fetch import FetchError, fetch_public  # urllib3, imported when a jwks_uri is first fetched

    cfg = current_app.config
    _end_read_transaction()
    try:
        resp = fetch_public(uri, what="jwks_uri", timeout=float(cfg["TONGBAN_JWKS_URI_TIMEOUT"]),
                            max_bytes=int(cfg["TONGBAN_JWKS_URI_MAX_BYTES"]), headers={"Accept": "application/json"})
    except FetchError as e:
        raise KeysUnavailable(str(e)) from None
    if resp.status != 200:
        raise KeysUnavailable(f"jwks_uri answered {resp.status}")
    body = resp.body
    try:
        return _import_public_set(json.loads(body), "jwks_uri document")
    except (ValueError, ValidationError) as e:
        raise KeysUnavailable(f"jwks_uri document is not a public JWKS: {e}") from None


def client_keyset(client, refresh: bool = False) -> KeySet:
    """The client's public keys: registered, or fetched from its jwks_uri (cached per process for
    TONGBAN_JWKS_URI_CACHE_SECONDS; ``refresh`` refetches, e.g. for an unknown kid)."""
    if client.jwks_json:
        return _registered(client.jwks_json)
    uri = client.jwks_uri
    if not uri:
        raise KeysUnavailable("the client registered no keys")
    now = time.monotonic()
    with _fetch_lock:
        hit = _fetched.get(uri)
    if hit is not None and hit[0] > now and (not refresh or now - hit[2] < REFETCH_AFTER):
        return hit[1]
    keys = _fetch(uri)
    with _fetch_lock:
        _fetched[uri] = (now + float(current_app.config["TONGBAN_JWKS_URI_CACHE_SECONDS"]), keys, now)
    return keys


def verify_signed(raw: str, client, error_cls) -> jwt.Token:
    """A JWS compact token signed by one of ``client``'s keys with an allowed algorithm; ``error_cls``
    (an OAuth2Error class) describes why not."""
    from joserfc.jws import extract_compact

    try:
        header = extract_compact(raw.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError):
        raise error_cls(description="not a signed JWT (JWS compact serialization)") from None
    alg = header.get("alg")
    if alg not in ALGS:
        raise error_cls(description=f"alg '{shown(alg, 10)}' is not allowed (one of {', '.join(ALGS)})")
    kid = header.get("kid")
    for attempt in (False, True):
        try:
            keys = client_keyset(client, refresh=attempt)
        except KeysUnavailable as e:
            raise error_cls(description=str(e)) from None
        candidates = [k for k in keys.keys if k.key_type == _KTY[alg] and (kid is None or k.kid == kid)]
        for key in candidates:
            try:
                return jwt.decode(raw, key, algorithms=[alg])
            except BadSignatureError:
                continue
            except (JoseError, ValueError) as e:
                reason = getattr(e, "description", None) or e
                raise error_cls(description=f"invalid JWT: {shown(reason, 200)}") from None
        if client.jwks_json or (candidates and kid is None):
            break  # registered keys: nothing to refetch
    raise error_cls(description="the signature does not verify with the client's registered keys")


# ---------------------------------------------------------------- one-time jti


def remember_once(namespace: str, value: str, expires_at: int) -> bool:
    """True the first time ``value`` is seen in ``namespace`` (until ``expires_at``, epoch seconds),
    False ever after: shared by every server (Redis, else the database)."""
    key = digest(f"{namespace}\0{value}")
    ttl = max(1, int(expires_at - time.time()) + LEEWAY)
    r = redis_client()
    if r is not None:
        return bool(r.set(f"tongban:once:{key}", 1, nx=True, ex=ttl))
    from datetime import timedelta

    now = utcnow()
    insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    stmt = (insert(UsedAssertion).values(key=key, expires_at=now + timedelta(seconds=ttl))
            .on_conflict_do_nothing(index_elements=["key"]).returning(UsedAssertion.key))

    def _run(conn) -> bool:
        conn.execute(delete(UsedAssertion).where(UsedAssertion.expires_at < now))
        return conn.execute(stmt).first() is not None  # a row only when it was inserted now

    if session_holds_sqlite_write():
        return _run(db.session.connection())
    # its own transaction: the jti stays used even if the request fails later
    with db.engine.begin() as conn:
        return _run(conn)


# ---------------------------------------------------------------- the authentication method


def audiences() -> list[str]:
    iss = current_app.config["TONGBAN_ISSUER"]
    out = [iss, f"{iss}/oauth/token"]
    if flask_request and flask_request.path in AUTH_PATHS and f"{iss}{flask_request.path}" not in out:
        out.append(f"{iss}{flask_request.path}")
    return out


class PrivateKeyJWT(JWTBearerClientAssertion):
    CLIENT_AUTH_METHOD = METHOD

    def __init__(self):
        super().__init__(validate_jti=True, leeway=LEEWAY)

    def __call__(self, query_client, request):
        try:
            return super().__call__(query_client, request)
        except InvalidClientError as e:
            who = str(request.form.get("client_id") or "")[:64]
            audit.record_later("client_auth.refused", actor=f"client:{who}", outcome="failure",
                               detail={"method": METHOD, "reason": (e.description or "")[:200]},
                               throttle=flask_request.remote_addr or "")
            raise

    def get_audiences(self):
        return audiences()

    def resolve_client_public_key(self, client):
        return client  # the keys are chosen in process_assertion_claims (by kid and alg)

    def process_assertion_claims(self, assertion, client):
        token = verify_signed(assertion, client, InvalidClientError)
        claims = token.claims
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            raise InvalidClientError(description="iss and sub must be the client_id")
        if "response_type" in claims or token.header.get("typ") == "oauth-authz-req+jwt":
            # a request object (it passes through browsers) is never a client assertion (RFC 9101 §10.8)
            raise InvalidClientError(description="a request object is not a client assertion")
        now = int(time.time())
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int):
            raise InvalidClientError(description="exp is required")
        if exp > now + int(current_app.config["TONGBAN_CLIENT_ASSERTION_MAX_LIFETIME"]) + LEEWAY:
            raise InvalidClientError(description="exp is too far in the future")
        if iat is not None and (not isinstance(iat, int) or iat > now + LEEWAY):
            raise InvalidClientError(description="iat is in the future")
        if not isinstance(claims.get("jti"), str) or not claims["jti"]:
            raise InvalidClientError(description="jti is required")
        self.verify_claims(claims)  # aud, exp, nbf (Authlib), then the jti (used once)
        return claims

    def validate_jti(self, claims, jti):
        if remember_once(f"client_assertion:{claims['sub']}", jti, claims["exp"]):
            return True
        audit.record_later("client_assertion.replayed", actor=f"client:{claims['sub']}", outcome="failure",
                           detail={"jti": str(jti)[:64]}, throttle=flask_request.remote_addr or "")
        return False

    def authenticate_client(self, client):
        if client.check_endpoint_auth_method(self.CLIENT_AUTH_METHOD, "token"):
            return client
        raise InvalidClientError(description=f"the client is not registered for {METHOD}")


def register(server) -> None:
    """Offer private_key_jwt wherever a class lists it (token, PAR, revocation, introspection,
    device authorization)."""
    server.register_client_auth_method(METHOD, PrivateKeyJWT())
