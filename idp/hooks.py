"""What the protocol does when the people layer says something happened (``people.signals``).

Connected once by ``idp.init_app``; the receivers run inside the sender's transaction.
"""

from __future__ import annotations

from sqlalchemy import select

from people import signals
from people.models import LoginSession, User
from people.sessions import session_clients
from tongban.extensions import db

from . import logout, tokens
from .models import Client


def on_session_ended(sess: LoginSession, *, reason: str, actor: str) -> None:
    """Session-bound refresh tokens are revoked, the access tokens issued through the session
    are denied, and the other systems in it are queued a back-channel logout token."""
    tokens.revoke_session_refresh_tokens(sess.sid)
    if session_clients(sess.sid):  # access tokens were issued through it: they end too
        tokens.deny_session(sess.sid, reason, actor)
    logout.session_ended(sess)  # delivered after the commit


def on_credentials_revoked(user: User, *, keep_sid: str | None, reason: str, actor: str) -> int:
    """Every refresh-token family of the account (offline ones too) but those of ``keep_sid``."""
    return tokens.revoke_user_refresh_tokens(user.id, keep_sid, reason, actor)


def on_systems_known(client_ids: list[str]) -> set[str]:
    if not client_ids:
        return set()
    return set(db.session.execute(select(Client.client_id).where(
        Client.client_id.in_(client_ids), Client.enabled.is_(True))).scalars())


def connect() -> None:
    """Idempotent: blinker keeps one connection per receiver (every app built in the process
    shares the module-level signals, as it shares the Authlib server)."""
    signals.session_ended.connect(on_session_ended)
    signals.credentials_revoked.connect(on_credentials_revoked)
    signals.systems_known.connect(on_systems_known)
