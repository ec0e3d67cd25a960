"""Single-sign-on sessions: a random cookie value whose SHA-256 keys a server-side row.

Ending the row ends the session everywhere; idle and absolute lifetimes apply.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Response, current_app, g, has_request_context, request
from flask import session as cookie_session
from sqlalchemy import DateTime, String, bindparam, select, update
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.attributes import set_committed_value
from werkzeug.wrappers import Response as BaseResponse  # flask's Response and redirect()'s both

from tongban import audit
from tongban.clock import digest, token, utcnow
from tongban.extensions import after_request_task, after_request_write, db, mark_written
from tongban.upsert import execute_prebuilt, upsert

from .assurance import session_acr
from .models import LoginSession, SessionClient, User
from .signals import session_ended

_NOT_LOADED = object()


def _cookie_name() -> str:
    return current_app.config["SSO_COOKIE_NAME"]


def current_session() -> LoginSession | None:
    """The live SSO session of this browser, or None (memoised per request)."""
    cached = g.get("_sso", _NOT_LOADED)
    if cached is not _NOT_LOADED:
        return cached
    sess = None
    raw = request.cookies.get(_cookie_name())
    if raw:
        row = db.session.execute(_by_token_hash_statement(), {"b_token_hash": digest(raw)}).scalar_one_or_none()
        if row is not None and row.ended_at is None:
            now = utcnow()
            if is_expired(row.created_at, row.last_seen, now):
                _end_after_request(row.id, "expired")
            elif row.user.disabled:
                _end_after_request(row.id, "account_disabled")
            else:
                if now - row.last_seen > timedelta(minutes=1):
                    _touch(row, now)
                sess = row
    g._sso = sess
    return sess


_by_token_hash: list = []


def _by_token_hash_statement():
    """The session by its cookie's digest, with its user: every caller looks at it (one query, not
    two). Built once, at first use (the mappers are configured by then)."""
    if not _by_token_hash:
        _by_token_hash.append(select(LoginSession).options(joinedload(LoginSession.user)).where(
            LoginSession.token_hash == bindparam("b_token_hash", type_=String())))
    return _by_token_hash[0]


def is_expired(created_at, last_seen, now=None) -> bool:
    """Whether a session started at ``created_at`` and last seen at ``last_seen`` is past its
    idle or absolute lifetime: over then whether or not its row was ended yet (the browser
    may never come back; ``logout.end_expired_sessions`` ends such rows)."""
    now = now or utcnow()
    cfg = current_app.config
    idle = timedelta(minutes=cfg["TONGBAN_SESSION_IDLE_MINUTES"])
    absolute = timedelta(hours=cfg["TONGBAN_SESSION_ABSOLUTE_HOURS"])
    return now - last_seen > idle or now - created_at > absolute


def _end_after_request(session_id: int, reason: str) -> None:
    """End a session found expired (or whose account is disabled) in its own transaction after
    the request: a page that only reads never commits, so ending it in the page's transaction
    was rolled back (refresh tokens kept working, no back-channel logout, no audit entry)."""
    def task():
        row = db.session.get(LoginSession, session_id)
        if row is not None and row.ended_at is None:
            end(row, reason)

    after_request_task(task)


def _touch(row: LoginSession, now) -> None:
    """Note that the session was seen, in its own short transaction after the request (a page
    that merely reads must not hold SQLite's write lock, and never commits anyway)."""
    set_committed_value(row, "last_seen", now)
    stmt = (update(LoginSession).where(LoginSession.id == row.id, LoginSession.last_seen < now)
            .values(last_seen=now)
            # only ever later: lengthens what a cached answer assumed (tongban.hotcache), never shortens it
            .execution_options(synchronize_session=False, tongban_hotcache="neutral"))
    after_request_write(lambda conn: conn.execute(stmt))


def current_user() -> User | None:
    sess = current_session()
    return sess.user if sess else None


def start(user: User, response_cookie: dict, *, acr: str | None = None, amr: str = "pwd") -> LoginSession:
    """Create a session; the caller sets the cookie from ``response_cookie`` on its response.

    The same person logging in again in this browser (``prompt=login``, ``max_age``) keeps the
    session: same ``sid``, new ``auth_time``, so the other systems signed in through it are not
    logged out; the cookie is still replaced (a log-in never keeps a cookie value), and so is
    the browser's CSRF secret (``renew_csrf``)."""
    renew_csrf()
    old = current_session()
    if old is not None:
        if old.user_id == user.id:
            return _reauthenticate(old, response_cookie, acr=acr or _capped_acr(user, amr), amr=amr)
        end(old, "replaced")
    raw = token(32)
    now = utcnow()
    sess = LoginSession(sid=token(24), token_hash=digest(raw), user_id=user.id, auth_time=now,
                        acr=acr or _capped_acr(user, amr), amr=amr, created_at=now, last_seen=now,
                        ip=(request.remote_addr or "")[:64],
                        user_agent=(request.user_agent.string or "")[:300])
    db.session.add(sess)
    # recorded before the flush (the sid is known already): its audit row goes in with the
    # log-in's own (one multi-row INSERT, not two statements)
    audit.record("session.started", actor=f"user:{user.sub}", object=f"session:{sess.sid}")
    db.session.flush()
    response_cookie["value"] = raw
    g._sso = sess
    return sess


def renew_csrf() -> None:
    """A new CSRF secret for this browser as it logs in (by any means): a form of before the
    log-in — the password form itself, sent again from the browser's history on a shared
    computer after a logout — is refused from then on. The pages of the log-in's own response
    get tokens of the new secret."""
    name = current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    cookie_session.pop(name, None)
    g.pop(name, None)


def _reauthenticate(sess: LoginSession, response_cookie: dict, *, acr: str, amr: str) -> LoginSession:
    raw = token(32)
    now = utcnow()
    sess.token_hash = digest(raw)
    sess.auth_time = now
    sess.last_seen = now
    sess.acr, sess.amr = acr, amr
    db.session.flush()
    response_cookie["value"] = raw
    g._sso = sess
    audit.record("session.reauthenticated", actor=f"user:{sess.user.sub}", object=f"session:{sess.sid}",
                 detail={"amr": amr})
    return sess


def _capped_acr(user: User, amr: str) -> str:
    return session_acr(user, amr)  # the account's level capped by how the session authenticated


def set_cookie(response: BaseResponse, value: str) -> None:
    cfg = current_app.config
    response.set_cookie(_cookie_name(), value, httponly=True, samesite="Lax",
                        secure=cfg.get("SESSION_COOKIE_SECURE", False), path="/",
                        max_age=cfg["TONGBAN_SESSION_ABSOLUTE_HOURS"] * 3600)


def clear_cookie(response: Response) -> None:
    response.delete_cookie(_cookie_name(), path="/")


def end(sess: LoginSession, reason: str, actor: str | None = None) -> bool:
    """End ``sess`` (its systems are told, its tokens revoked); False if it had already ended.

    The end is claimed with a conditional ``UPDATE``: of several servers ending one session at
    once (a logout in two tabs reaching two servers, a sweep of expired sessions), exactly one
    ends it — the others wait for its commit, find the row ended, and do nothing (no second
    back-channel logout, no second audit entry)."""
    if sess.ended_at is not None:
        return False
    now = utcnow()
    claimed = db.session.execute(update(LoginSession).where(  # type: ignore[attr-defined]
        LoginSession.id == sess.id, LoginSession.ended_at.is_(None)).values(ended_at=now, end_reason=reason)
        # the one row it changes, for the hot cache's invalidation (tongban.hotcache)
        .execution_options(synchronize_session=False, tongban_hotcache=(f"sid:{sess.sid}",))).rowcount
    if g.get("_sso") is sess:
        g._sso = None
    if not claimed:  # another server (or request) ended it first
        db.session.refresh(sess)
        return False
    set_committed_value(sess, "ended_at", now)
    set_committed_value(sess, "end_reason", reason)
    # the protocol layer (idp.hooks) revokes the session's refresh tokens, denies the access
    # tokens issued through it and queues back-channel logout to the other systems (after commit)
    session_ended.send(sess, reason=reason, actor=actor or f"user:{sess.user.sub}")
    audit.record("session.ended", actor=actor or f"user:{sess.user.sub}", object=f"session:{sess.sid}",
                 detail={"reason": reason})
    return True


def end_all_for_user(user: User, reason: str, actor: str) -> int:
    rows = db.session.execute(select(LoginSession).where(
        LoginSession.user_id == user.id, LoginSession.ended_at.is_(None))).scalars().all()
    return sum(end(row, reason, actor) for row in rows)


_NOTE_CLIENT: dict[str, object] = {}  # per dialect, built once


def note_client(sess: LoginSession, client_id: str) -> None:
    """Remember that ``client_id`` was signed in through this session."""
    session = db.session()
    dialect = session.get_bind().dialect.name
    stmt = _NOTE_CLIENT.get(dialect)
    if stmt is None:
        now = bindparam("b_now", type_=DateTime())
        stmt = _NOTE_CLIENT[dialect] = upsert(
            session, SessionClient, dict(sid=bindparam("b_sid", type_=String()),
                                         client_id=bindparam("b_client_id", type_=String()), first_at=now,
                                         last_at=now), ["sid", "client_id"], {"last_at": now})
    # on the session's connection, in its transaction: one INSERT ... ON CONFLICT, compiled once
    execute_prebuilt(session.connection(), stmt, {"b_sid": sess.sid, "b_client_id": client_id, "b_now": utcnow()})
    mark_written(session)


def active_sessions(user: User) -> list[LoginSession]:
    return list(db.session.execute(select(LoginSession).where(
        LoginSession.user_id == user.id, LoginSession.ended_at.is_(None)
    ).order_by(LoginSession.last_seen.desc())).scalars())


def session_clients(sid: str) -> list[str]:
    return list(db.session.execute(select(SessionClient.client_id).where(SessionClient.sid == sid)).scalars())


def is_live(sid: str | None) -> bool:
    """Whether the log-in session ``sid`` still holds: not ended and within its idle and
    absolute lifetimes. Tokens bound to it (refresh, introspection, userinfo) ask this, so a
    session whose browser never came back stops working on time; one found expired is ended
    (refresh tokens revoked, access tokens denied, back-channel logout) after the request."""
    if not sid:
        return False
    row = db.session.execute(select(LoginSession.id, LoginSession.ended_at, LoginSession.created_at,
                                    LoginSession.last_seen).where(LoginSession.sid == sid)).first()
    if row is None or row.ended_at is not None:
        return False
    if is_expired(row.created_at, row.last_seen):
        if has_request_context():
            _end_after_request(row.id, "expired")
        return False
    return True
