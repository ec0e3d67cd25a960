"""Housekeeping of the brokering tables, run by the worker with the other chores."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select

from people.models import LoginSession
from tongban import outbox
from tongban.clock import utcnow
from tongban.extensions import db

from .models import FederatedSession, FederationRequest, UsedLogoutToken

KEEP_ENDED = timedelta(days=1)  # an ended session's upstream ID token is kept this long (logout hint)


@outbox.chore(every=3600)
def purge() -> dict[str, int]:
    """Forget log-ins never completed, used logout-token ids past their age, and the upstream
    ID tokens of sessions that ended more than a day ago."""
    now = utcnow()
    ended = select(LoginSession.sid).where(LoginSession.ended_at.is_not(None),
                                           LoginSession.ended_at < now - KEEP_ENDED)
    out = {
        "requests": db.session.execute(delete(FederationRequest).where(FederationRequest.expires_at < now)).rowcount,  # type: ignore[attr-defined]
        "jtis": db.session.execute(delete(UsedLogoutToken).where(UsedLogoutToken.expires_at < now)).rowcount,  # type: ignore[attr-defined]
        "sessions": db.session.execute(delete(FederatedSession).where(FederatedSession.sid.in_(ended))  # type: ignore[attr-defined]
                                       .execution_options(synchronize_session=False,  # reads login_sessions only
                                                          tongban_hotcache="neutral")).rowcount,
    }
    db.session.commit()
    return out
