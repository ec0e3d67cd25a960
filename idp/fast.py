"""The OpenID provider's lean answers (``tongban.fastpath``): the common case of the token
endpoint (``client_credentials``), introspection of an access token, userinfo, discovery.

Each handler does what the full stack does for a well-formed request from a well-behaved
system, calling the same functions (client register, secret check, token generator, deny list,
session liveness, claims), and returns None, so that the full stack answers, for anything else:
another grant or authentication method, DPoP, resource indicators, pairwise or FAPI clients,
repeated or unknown parameters, a failed check of any kind. Refusals are therefore always the
full stack's, with their audit records and rate limits. ``tests/idp/test_fast_path.py`` holds
the two paths to the same answers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from urllib.parse import unquote

from flask import Flask

from keys.services import current_keyring, keyring
from people import enterprise, sessions
from tongban import fastpath, hotcache
from tongban.fastpath import LeanResponse, Request
from tongban.metrics import TOKENS, counter_inc

from . import clients as registry
from . import tokens
from .clients import RegisteredClient
from .dpop import client_requires_dpop
from .pairwise import is_pairwise, subject_for_client_id
from .scopes import SCOPES
from .server import introspect_access_token, user_claims
from .views import discovery_body, discovery_bytes_if_cached

_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


# Basic credentials verified by a full check, by the exact text of the Authorization header, for
# the one register (``registry.loaded_register()``, never changed in place) they were verified
# against: a change to any system (a secret rotated, a system disabled or changed, here or in
# another process: the generation) makes a new register, and credentials remembered for the old
# one are never used again (the whole memory is dropped at the first look with the new one).
# Only successes are remembered, and only what the full check accepted: a hit is the same system
# the check would find again. Bounded (the oldest eighth goes when full): an entry needs a valid
# secret, so only a system's own header variants (percent-encoding) can take room. The look-up
# reveals nothing by its time: a dict compares a key's full 64-bit (keyed SipHash) hash before
# any byte, so a different header is all but never compared at all. The header itself (a
# client's secret in base64) is not kept: the key is its BLAKE2b digest under a random key of
# this process (``_basic_key``), so the memory holds no secret a dump or a debugger could read.
_basic_verified: tuple[dict | None, dict[bytes, RegisteredClient]] = (None, {})
_BASIC_MAX = 1024
_BASIC_KEY = os.urandom(32)


def _basic_key(auth: str) -> bytes:
    """What a verified Authorization header is remembered by: its keyed digest."""
    return hashlib.blake2b(auth.encode("utf-8", "surrogateescape"), key=_BASIC_KEY, digest_size=16).digest()


def _basic_client(req: Request, register: dict[str, RegisteredClient]) -> RegisteredClient | None:
    """The registered system a well-formed ``client_secret_basic`` header proves, or None.
    ``register``: the current register (``registry.loaded_register()`` or ``current_register``)."""
    global _basic_verified
    auth = req.header("Authorization")
    if not auth:
        return None
    key = _basic_key(auth)
    held_for, held = _basic_verified
    if held_for is not register:  # a new register: nothing verified against the old one is kept
        held = {}
        _basic_verified = (register, held)
    else:
        client = held.get(key)
        if client is not None and register.get(client.client_id) is client:
            return client
    client = _check_basic(auth, register)
    if client is not None:
        if len(held) >= _BASIC_MAX:
            for old in list(held)[: _BASIC_MAX // 8]:
                held.pop(old, None)
        held[key] = client
    return client


def _check_basic(auth: str, register: dict[str, RegisteredClient]) -> RegisteredClient | None:
    scheme, _sep, value = auth.partition(" ")
    if scheme != "Basic" or not value or " " in value:
        return None
    try:
        text = base64.b64decode(value, validate=True).decode("ascii")
    except (binascii.Error, ValueError):
        return None
    client_id, sep, secret = text.partition(":")
    if not sep or not _PRINTABLE.fullmatch(text):
        return None
    try:
        client_id, secret = unquote(client_id, errors="strict"), unquote(secret, errors="strict")
    except UnicodeError:
        return None
    if not client_id or not _PRINTABLE.fullmatch(client_id) or not _PRINTABLE.fullmatch(secret):
        return None
    client = register.get(client_id)  # as registry.get_client: an enabled system
    if (client is None or not client.enabled or client.token_endpoint_auth_method != "client_secret_basic"
            or client.profile or client_requires_dpop(client)
            or not client.check_client_secret(secret)):
        return None
    return client


def _token(req: Request, quick: bool) -> LeanResponse | None:
    """``grant_type=client_credentials`` (and an optional ``scope``) with Basic credentials.
    ``quick``: outside any application context, from the register and key ring this process
    holds when they are current, else None (the handler then runs in one and loads them)."""
    if req.query:
        return None
    form = req.form()
    if form is None or form.get("grant_type") != "client_credentials" or not set(form) <= {"grant_type", "scope"}:
        return None
    scope = form.get("scope")
    if scope is not None and (not _SCOPE.fullmatch(scope) or any(s not in SCOPES for s in scope.split(" "))):
        return None
    app = req.app
    if app is None:
        return None
    register = registry.current_register(app) if quick else registry.loaded_register()
    if register is None:
        return None
    client = _basic_client(req, register)
    if (client is None or not client.check_grant_type("client_credentials") or is_pairwise(client)
            or client.allowed_resources):
        return None
    ring = current_keyring(app) if quick else keyring()
    if ring is None:
        return None
    out = tokens.client_credentials_token(app.config, ring, client, scope)
    registry.record_usage(client.client_id, "token")
    if quick:  # what the application context's end does after every request (no session was opened)
        registry.flush_usage_if_due(app)
    return LeanResponse(_token_body(out), metric=_count_client_credentials)


_TOKEN_KEYS = ("token_type", "access_token", "expires_in")


def _plain(value: object) -> bool:
    """A string ``json.dumps`` writes as it stands: printable ASCII without a quote or a backslash."""
    return type(value) is str and value.isascii() and value.isprintable() and '"' not in value and "\\" not in value


def _token_body(out: dict) -> bytes:
    """``json.dumps(out).encode()``, spelt directly for what ``client_credentials_token`` answers
    (its keys in its order, a token and a scope with nothing to escape, an int lifetime);
    anything else by json."""
    keys = tuple(out)
    exp, tok, scope = out.get("expires_in"), out.get("access_token"), out.get("scope")
    if keys[:3] == _TOKEN_KEYS and out["token_type"] == "Bearer" and type(exp) is int and _plain(tok):
        if len(keys) == 3:
            return f'{{"token_type": "Bearer", "access_token": "{tok}", "expires_in": {exp}}}'.encode()
        if len(keys) == 4 and keys[3] == "scope" and _plain(scope):
            return (f'{{"token_type": "Bearer", "access_token": "{tok}", "expires_in": {exp}, '
                    f'"scope": "{scope}"}}').encode()
    return json.dumps(out).encode()


def quick_token(req: Request) -> LeanResponse | None:
    return _token(req, quick=True)


def token(req: Request) -> LeanResponse | None:
    return _token(req, quick=False)


_client_credentials_count: list = []  # TOKENS' child for the grant, looked up once


def _count_client_credentials() -> None:
    if not _client_credentials_count:
        _client_credentials_count.append(counter_inc(TOKENS.labels("client_credentials")))
    _client_credentials_count[0]()


def introspect(req: Request) -> LeanResponse | None:
    """An access token introspected by its own system or one allowed to introspect."""
    if req.query:
        return None
    form = req.form()
    if form is None or "token" not in form or not set(form) <= {"token", "token_type_hint"}:
        return None
    if form.get("token_type_hint", "access_token") != "access_token":
        return None
    client = _basic_client(req, registry.loaded_register())
    if client is None:
        return None
    tok = tokens.decode_access_token(form["token"])
    if tok is None or "act" in tok.claims or not (client.introspection_allowed or tok.check_client(client)):
        return None  # an exchanged token (act): who sees which sub is the full stack's (check_permission)
    out = introspect_access_token(tok)
    if not out.get("active"):
        return None  # the full stack answers every inactive token (and ends what it must)
    return LeanResponse(json.dumps(out).encode())


def userinfo(req: Request) -> LeanResponse | None:
    """``GET`` with ``Authorization: Bearer`` of a default (unbound, client-audience) token."""
    if req.query or req.environ.get("CONTENT_LENGTH") not in (None, "", "0"):
        return None
    auth = req.header("Authorization") or ""
    scheme, _sep, raw = auth.partition(" ")
    if scheme != "Bearer" or not raw:
        return None
    tok = tokens.decode_access_token(raw)
    if tok is None or "cnf" in tok.claims or tok.is_revoked():
        return None
    claims = tok.claims
    if claims.get("aud") not in (tok.client_id, [tok.client_id]) or "openid" not in tok.get_scope().split():
        return None
    if not tok.is_user_token or not registry.is_enabled(tok.client_id):
        return None
    sub = tok.sub
    if not sub:
        return None
    sid = claims.get("sid")
    cache = hotcache.for_app()
    if cache is None:
        user = enterprise.person_acting_as_self(sub, sid, tok.client_id)
        return None if user is None else LeanResponse(_userinfo_body(user, tok))
    client = registry.get_client(tok.client_id)  # the record the answer was built with (pairwise subject)
    key = ("userinfo", tok.client_id, raw)
    position = cache.position()  # before the database is read: the store race (tongban.hotcache)
    hit = cache.get(key)
    if hit is not None and hit.extra is client:
        return LeanResponse(hit.body)
    found = enterprise.person_acting_as_self_with_session(sub, sid, tok.client_id)
    if found is None:
        return None  # disabled, session over, acting for an enterprise, ...: the full stack
    user, created_at, last_seen = found
    body = _userinfo_body(user, tok)
    deps = [f"sub:{user.sub}"] + ([f"sid:{sid}"] if sid else [])
    still_live = (lambda: not sessions.is_expired(created_at, last_seen)) if sid else None
    cache.put(key, position, body, deps, still_live, extra=client)
    return LeanResponse(body)


def _userinfo_body(user, tok) -> bytes:
    out = dict(user_claims(user, tok.get_scope()))
    out["sub"] = subject_for_client_id(tok.client_id, user.sub)  # OIDC Core §8.1
    return json.dumps(out, ensure_ascii=False).encode()


def discovery(req: Request) -> LeanResponse | None:
    """The discovery document, serialised once per application (as the view caches it)."""
    if req.query:
        return None
    return LeanResponse(discovery_body().encode())


def quick_discovery(req: Request) -> LeanResponse | None:
    """The same document without an application context, once it was serialised."""
    if req.query or req.app is None:
        return None
    body = discovery_bytes_if_cached(req.app)
    return LeanResponse(body) if body is not None else None


def init_app(app: Flask) -> None:
    fastpath.register(app, "POST", "/oauth/token", "/oauth/token", token, quick=quick_token)
    fastpath.register(app, "POST", "/oauth/introspect", "/oauth/introspect", introspect)
    fastpath.register(app, "GET", "/oauth/userinfo", "/oauth/userinfo", userinfo)
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        fastpath.register(app, "GET", path, path, discovery, quick=quick_discovery)
