"""Logging out everywhere: OpenID Connect Back-Channel Logout 1.0 and Front-Channel Logout 1.0.

When a log-in session ends (logout, ended by the user or an administrator, expiry, an
authorisation withdrawn), every other system signed in through it that registered a
back-channel logout URI is sent a logout token. The tokens are queued in the outbox in
the same transaction as the session end and delivered after the commit, with retries;
they are signed at delivery time, so a retried delivery carries a fresh, short-lived token.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from urllib.parse import urlencode, urlsplit

from flask import current_app
from joserfc import jwt
from sqlalchemy import or_, select, update

from keys.services import keyring
from people import sessions
from people.models import LoginSession, SessionClient
from tongban import outbox
from tongban.clock import epoch, utcnow
from tongban.extensions import db

from . import clients as registry
from .context import grant_context
from .pairwise import subject_for

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
KIND = "backchannel_logout"


# ---------------------------------------------------------------- logout tokens


def logout_token(client: registry.RegisteredClient, sid: str, sub: str) -> str:
    """A logout token (Back-Channel Logout §2.4) for ``client``, signed like its ID tokens."""
    alg = client.id_token_signed_response_alg or "RS256"
    key = keyring().active(alg)
    now = epoch()
    claims = {
        "iss": current_app.config["TONGBAN_ISSUER"],
        "aud": client.client_id,
        "iat": now,
        "exp": now + current_app.config["TONGBAN_LOGOUT_TOKEN_LIFETIME"],
        "jti": uuid.uuid4().hex,
        "sub": subject_for(client, sub),  # pairwise clients know the person by their own sub
        "sid": sid,
        "events": {BACKCHANNEL_EVENT: {}},
    }
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "logout+jwt"}, claims, key.signer, algorithms=[alg])


@outbox.handler(KIND)
def _deliver(item: outbox.OutboxItem) -> None:
    import requests  # imported by the first delivery, not at start-up

    data = item.data
    client = registry.get_client(data["client_id"])
    if client is None:
        raise outbox.DeliveryError("the system is disabled or no longer registered")
    token = logout_token(client, data["sid"], data["sub"])
    timeout = current_app.config["TONGBAN_OUTBOX_TIMEOUT"]
    try:
        resp = requests.post(item.target, data={"logout_token": token}, timeout=(min(3, timeout), timeout),
                             allow_redirects=False, headers={"Cache-Control": "no-store"})
    except requests.RequestException as e:
        raise outbox.DeliveryError(f"{type(e).__name__}: {e}"[:500]) from None
    if not 200 <= resp.status_code < 300:
        raise outbox.DeliveryError(f"HTTP {resp.status_code}: {resp.text[:200]}")


# ---------------------------------------------------------------- when a session ends


def initiated_by(client_id: str | None) -> None:
    """The system that asked for this logout (a validated id_token_hint): it is not notified."""
    grant_context().logout_initiator = client_id


_session_end_hooks: list = []


def on_session_end(fn):
    """Register ``fn(sess)``, called in the transaction that ends a session (CAS and SAML single
    logout queue their messages to the outbox from here). Registered once per function."""
    if fn not in _session_end_hooks:
        _session_end_hooks.append(fn)
    return fn


def session_ended(sess: LoginSession) -> None:
    """Queue a logout token for every other system in the session (called by sessions.end)."""
    initiator = grant_context().logout_initiator
    sub = sess.user.sub
    for client_id in _session_client_ids(sess.sid):
        if client_id == initiator:
            continue
        client = registry.get_client(client_id)
        if client is None or not client.backchannel_logout_uri:
            continue
        outbox.enqueue(KIND, client.backchannel_logout_uri, {"client_id": client_id, "sid": sess.sid, "sub": sub},
                       subject=f"client:{client_id} session:{sess.sid[:8]}")


def _session_client_ids(sid: str) -> list[str]:
    return list(db.session.execute(select(SessionClient.client_id).where(SessionClient.sid == sid)
                                   .order_by(SessionClient.first_at)).scalars())


def frontchannel_frames(sid: str, except_client: str | None = None) -> list[dict]:
    """The iframes of Front-Channel Logout §2 for the systems in session ``sid``."""
    iss = current_app.config["TONGBAN_ISSUER"]
    frames = []
    for client_id in _session_client_ids(sid):
        client = registry.get_client(client_id)
        uri = getattr(client, "frontchannel_logout_uri", None) if client else None
        if not uri or client_id == except_client:
            continue
        src = uri + ("&" if "?" in uri else "?") + urlencode({"iss": iss, "sid": sid})
        parts = urlsplit(uri)
        frames.append({"name": client.name, "src": src, "origin": f"{parts.scheme}://{parts.netloc}"})
    return frames


def systems_by_session(sids: list[str]) -> dict[str, list[str]]:
    """For the account page: the names of the systems signed in through each session."""
    out: dict[str, list[str]] = {sid: [] for sid in sids}
    if not sids:
        return out
    for sid, client_id in db.session.execute(select(SessionClient.sid, SessionClient.client_id).where(
            SessionClient.sid.in_(sids)).order_by(SessionClient.first_at)):
        client = registry.get_client(client_id)
        out[sid].append(client.name if client else client_id)
    return out


# ---------------------------------------------------------------- ending sessions


def end_other_sessions(user, keep_sid: str, actor: str) -> int:
    n = 0
    for s in sessions.active_sessions(user):
        if s.sid != keep_sid:
            sessions.end(s, "ended_by_user", actor)
            n += 1
    return n


def end_all_sessions(user, actor: str) -> tuple[int, list[dict]]:
    """"Log out everywhere": every live session of ``user`` ends (all devices, all systems).

    Each ending queues a back-channel logout token for every system signed in through that
    session (in this transaction; delivered after the commit). Returns how many sessions ended
    and the front-channel logout frames of all of them (one per system and session)."""
    initiated_by(None)  # the account page asked: every system is told, none is spared
    live = sessions.active_sessions(user)
    frames: list[dict] = []
    for s in live:
        frames.extend(frontchannel_frames(s.sid))
    for s in live:
        sessions.end(s, "logout_everywhere", actor)
    return len(live), frames


@outbox.chore(every=60)
def end_expired_sessions(limit: int = 200) -> int:
    """Sessions past their idle or absolute lifetime end (and log out everywhere) even when
    their browser never comes back."""

    cfg = current_app.config
    now = utcnow()
    idle_cut = now - timedelta(minutes=cfg["TONGBAN_SESSION_IDLE_MINUTES"])
    absolute_cut = now - timedelta(hours=cfg["TONGBAN_SESSION_ABSOLUTE_HOURS"])
    expired = list(db.session.execute(select(LoginSession.id).where(
        LoginSession.ended_at.is_(None),
        or_(LoginSession.last_seen < idle_cut, LoginSession.created_at < absolute_cut)).limit(limit)).scalars())
    db.session.rollback()
    ended = 0
    for row_id in expired:
        # take the row's write lock first: of several workers sweeping at once, one ends it
        locked = db.session.execute(update(LoginSession).where(  # type: ignore[attr-defined]
            LoginSession.id == row_id, LoginSession.ended_at.is_(None)).values(last_seen=LoginSession.last_seen)
            .execution_options(synchronize_session=False, tongban_hotcache="neutral")).rowcount  # a lock, no change
        if locked:
            sess = db.session.get(LoginSession, row_id)
            db.session.refresh(sess)
            sessions.end(sess, "expired", "system")
            ended += 1
        db.session.commit()
    return ended
