"""Logging in through an upstream: the authorization request (PKCE S256, state, nonce, bound to
this browser, used once), the token request with Authlib's client, and the person it proves.

No database transaction stays open across a request to the upstream: each step reads what it
needs, ends its transaction, talks to the upstream, then writes in a short transaction of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from flask import current_app, request
from flask import session as flask_session
from sqlalchemy import delete, select

from keys.crypto import seal, unseal
from people import accounts, sessions
from people.models import User
from tongban import audit
from tongban.clock import digest, token, utcnow
from tongban.errors import TongbanError
from tongban.extensions import db
from tongban.identifiers import parse_id_number
from tongban.masking import mask_number

from . import metadata, registry
from .metadata import UpstreamUnavailable
from .models import FederatedSession, FederationRequest, UpstreamLink
from .registry import UpstreamInfo
from .tokens import TokenRefused, validate_id_token

_BIND_KEY = "tb_fed_bind"
_LEVELS = registry.LEVELS


class LoginFailed(Exception):
    """The log-in through the upstream did not succeed; ``reason`` for the audit log and the page."""

    def __init__(self, reason: str, detail: str = "", status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.status = status


def redirect_uri(upstream_name: str) -> str:
    return f"{current_app.config['TONGBAN_ISSUER']}/federation/{upstream_name}/callback"


def _secrets_label(state_hash: str) -> str:
    return f"federation:request:{state_hash}"


def _browser_value(create: bool) -> str | None:
    value = flask_session.get(_BIND_KEY)
    if not value and create:
        value = flask_session[_BIND_KEY] = token(24)
    return value


def start(upstream: UpstreamInfo, next_url: str) -> str:
    """The upstream's authorization URL for this browser (raises UpstreamUnavailable)."""
    from authlib.integrations.requests_client import OAuth2Session  # requests: not at start-up

    db.session.rollback()  # nothing read stays in a transaction during the HTTP request
    meta = metadata.discovery(upstream.issuer)
    state, nonce, verifier = token(32), token(32), generate_token(64)
    client = OAuth2Session(upstream.client_id, scope=upstream.scope, redirect_uri=redirect_uri(upstream.name),
                           code_challenge_method="S256")
    extra = {}
    if upstream.acr_map:  # ask for the levels the map knows, best first (many providers send acr only then)
        extra["acr_values"] = " ".join(sorted(upstream.acr_map, key=lambda a: upstream.acr_map[a], reverse=True))
    url, _ = client.create_authorization_url(meta["authorization_endpoint"], state=state, nonce=nonce,
                                             code_verifier=verifier, **extra)
    state_hash = digest(state)
    now = utcnow()
    db.session.execute(delete(FederationRequest).where(FederationRequest.expires_at < now))
    db.session.add(FederationRequest(
        state_hash=state_hash, upstream_id=upstream.id, browser_hash=digest(_browser_value(create=True)),
        secrets=seal(json.dumps({"nonce": nonce, "verifier": verifier}).encode(), _secrets_label(state_hash)),
        next_url=next_url[:2000],
        expires_at=now + timedelta(seconds=int(current_app.config["TONGBAN_FEDERATION_REQUEST_LIFETIME"]))))
    audit.record("federation.login_started", actor="anonymous", object=f"upstream:{upstream.name}")
    db.session.commit()
    return url


@dataclass
class _Pending:
    nonce: str
    verifier: str
    next_url: str


def _consume(upstream: UpstreamInfo, state: str | None) -> _Pending:
    """The request this callback answers, deleted (one use) whatever happens next."""
    if not state or len(state) > 200:
        raise LoginFailed("state_missing")
    state_hash = digest(state)
    row = db.session.get(FederationRequest, state_hash)
    if row is None:
        db.session.rollback()
        raise LoginFailed("state_mismatch")
    upstream_id, browser_hash, blob, next_url, expires_at = (row.upstream_id, row.browser_hash, row.secrets,
                                                             row.next_url, row.expires_at)
    taken = db.session.execute(delete(FederationRequest).where(FederationRequest.state_hash == state_hash)).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    if taken != 1:  # another request with the same state was faster
        raise LoginFailed("state_reused")
    browser = _browser_value(create=False)
    if upstream_id != upstream.id or not browser or digest(browser) != browser_hash:
        raise LoginFailed("state_mismatch")
    if expires_at < utcnow():
        raise LoginFailed("state_expired")
    data = json.loads(unseal(blob, _secrets_label(state_hash)))
    return _Pending(nonce=data["nonce"], verifier=data["verifier"], next_url=next_url)


@dataclass
class Proven:
    """What the upstream proved about the person."""

    sub: str
    id_number: str
    name: str
    acr: str | None
    sid: str | None
    level: str
    id_token: str


def _callback_params(upstream: UpstreamInfo, meta: dict) -> None:
    args = request.args
    iss = args.get("iss")
    if iss is not None and iss != upstream.issuer:  # RFC 9207: a mix-up
        raise LoginFailed("bad_iss_parameter")
    if iss is None and meta.get("authorization_response_iss_parameter_supported"):
        raise LoginFailed("missing_iss_parameter")
    if args.get("error"):
        raise LoginFailed("upstream_error", str(args.get("error"))[:60], status=403)
    if not args.get("code"):
        raise LoginFailed("no_code")


def finish(upstream: UpstreamInfo) -> tuple[Proven, str]:
    """Check the callback and redeem the code: the person proven, and where to go next."""
    from authlib.integrations.requests_client import OAuth2Session
    from requests import RequestException

    pending = _consume(upstream, request.args.get("state"))
    secret = upstream.client_secret()
    db.session.rollback()
    try:
        meta = metadata.discovery(upstream.issuer)
        _callback_params(upstream, meta)
        auth_methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        method = "client_secret_basic" if "client_secret_basic" in auth_methods else "client_secret_post"
        client = OAuth2Session(upstream.client_id, secret, token_endpoint_auth_method=method,
                               redirect_uri=redirect_uri(upstream.name))
        timeout = float(current_app.config["TONGBAN_FEDERATION_HTTP_TIMEOUT"])
        try:
            tok = client.fetch_token(meta["token_endpoint"], grant_type="authorization_code",
                                     code=request.args["code"], code_verifier=pending.verifier, timeout=timeout)
        except OAuthError as e:
            raise LoginFailed("token_error", str(e.error)[:60], status=502) from None
        except (RequestException, ValueError) as e:
            raise UpstreamUnavailable("token_endpoint", type(e).__name__) from None
        if str(tok.get("token_type", "")).lower() not in ("bearer", "dpop"):
            raise LoginFailed("bad_token_response", status=502)
        raw = tok.get("id_token")
        try:
            claims = validate_id_token(upstream, raw, nonce=pending.nonce, access_token=tok.get("access_token"))
        except TokenRefused as e:
            raise LoginFailed("bad_id_token", e.reason, status=502) from None
    finally:
        db.session.rollback()
    return _person(upstream, claims, raw), pending.next_url


def _person(upstream: UpstreamInfo, claims: dict, raw: str) -> Proven:
    number = claims.get(upstream.id_number_claim)
    if not isinstance(number, str) or not number:
        raise LoginFailed("no_id_number", status=403)
    if claims.get(upstream.verified_claim) is not True:
        raise LoginFailed("id_number_not_verified", status=403)
    try:
        ident = parse_id_number(number)  # the GB 11643 check digit and birth date
    except TongbanError:
        raise LoginFailed("bad_id_number", status=403) from None
    name = claims.get(upstream.name_claim)
    name = name.strip() if isinstance(name, str) else ""
    acr = claims.get("acr") if isinstance(claims.get("acr"), str) else None
    level = registry.granted_level(upstream, acr, current_app.config["TONGBAN_FEDERATION_UNMAPPED_LEVEL"])
    sid = claims.get("sid") if isinstance(claims.get("sid"), str) else None
    return Proven(sub=claims["sub"], id_number=ident.value, name=name[:100], acr=acr[:255] if acr else None,
                  sid=sid[:255] if sid else None, level=level, id_token=raw)


def _id_token_label(sid: str) -> str:
    return f"federation:session:{sid}:id_token"


def log_in(upstream: UpstreamInfo, proven: Proven, cookie: dict):
    """Link or create the account and start the session (the caller commits)."""
    actor = f"upstream:{upstream.name}"
    detail = {"upstream": upstream.name, "upstream_sub": proven.sub, "upstream_acr": proven.acr,
              "upstream_sid": proven.sid, "id_number": mask_number(proven.id_number)}
    link = db.session.execute(select(UpstreamLink).where(UpstreamLink.upstream_id == upstream.id,
                                                         UpstreamLink.upstream_sub == proven.sub)
                              ).scalar_one_or_none()
    user = db.session.execute(select(User).where(User.id_number == proven.id_number)).scalar_one_or_none()
    if link is not None:
        linked = db.session.get(User, link.user_id)
        if user is None or linked.id != user.id:
            # the upstream's subject now says another ID number than the account it is linked to
            raise LoginFailed("id_number_changed", status=403)
    else:
        other = None
        if user is not None:
            other = db.session.execute(select(UpstreamLink).where(UpstreamLink.upstream_id == upstream.id,
                                                                  UpstreamLink.user_id == user.id)
                                       ).scalar_one_or_none()
        if other is not None:
            if not upstream.trusted_id_numbers:
                raise LoginFailed("link_conflict", status=403)
            audit.record("federation.link_replaced", actor=actor, object=f"user:{user.sub}",
                         detail={**detail, "old_upstream_sub": other.upstream_sub})
            db.session.delete(other)
            db.session.flush()
        if user is None:
            if not proven.name:
                raise LoginFailed("no_name", status=403)
            user = accounts.create_user(proven.id_number, proven.name, token(32), actor=actor,
                                        check_password_policy=False)
            user.assurance_level = 1
        link = UpstreamLink(upstream_id=upstream.id, upstream_sub=proven.sub, user_id=user.id, created_at=utcnow())
        db.session.add(link)
        audit.record("federation.linked", actor=actor, object=f"user:{user.sub}", detail=detail)
    if user.disabled:
        raise LoginFailed("account_disabled", status=403)
    level = proven.level
    if proven.name and proven.name != user.name:
        # the account's name is not the one the upstream proved: its claims are not vouched for
        level = _LEVELS[min(_LEVELS.index(level), 1)]
        audit.record("federation.name_mismatch", actor=actor, object=f"user:{user.sub}", outcome="failure",
                     detail=detail)
    elif _LEVELS.index(level) + 1 > user.assurance_level:
        user.assurance_level = min(_LEVELS.index(level) + 1, 3)  # L4/L5 of an account: in person only
        if user.assurance_level >= 3 and user.verified_at is None:
            user.verified_at = utcnow()
    link.last_login_at = utcnow()
    sess = sessions.start(user, cookie, acr=level, amr="fed")
    sess.acr, sess.amr = level, "fed"
    fed = db.session.get(FederatedSession, sess.sid)  # the same person again keeps the session (same sid)
    if fed is None:
        fed = FederatedSession(sid=sess.sid)
        db.session.add(fed)
    fed.upstream_id, fed.upstream_sub, fed.upstream_sid, fed.upstream_acr = (upstream.id, proven.sub, proven.sid,
                                                                             proven.acr)
    fed.id_token = seal(proven.id_token.encode(), _id_token_label(sess.sid))
    fed.created_at = utcnow()
    audit.record("federation.login", actor=f"user:{user.sub}", object=f"session:{sess.sid}",
                 detail={**detail, "acr": level, "amr": ["fed"]})
    return sess


def id_token_of(sid: str) -> tuple[FederatedSession, str] | None:
    row = db.session.get(FederatedSession, sid)
    if row is None:
        return None
    return row, unseal(row.id_token, _id_token_label(sid)).decode()
