"""Consent: the scopes a user granted a system, remembered until revoked."""

from __future__ import annotations

from sqlalchemy import select

from people.models import User
from tongban import audit
from tongban.clock import utcnow
from tongban.extensions import db

from .models import Consent, RefreshToken
from .scopes import SILENT
from .tokens import revoke_family


def _row(user: User, client_id: str) -> Consent | None:
    return db.session.execute(select(Consent).where(Consent.user_id == user.id,
                                                    Consent.client_id == client_id)).scalar_one_or_none()


def covers(user: User, client_id: str, scopes: list[str]) -> bool:
    row = _row(user, client_id)
    needed = {s for s in scopes if s not in SILENT}
    return row is not None and needed <= set(row.scopes or [])


def grant(user: User, client_id: str, scopes: list[str]) -> Consent:
    now = utcnow()
    row = _row(user, client_id)
    wanted = sorted({s for s in scopes if s not in SILENT})
    if row is None:
        row = Consent(user_id=user.id, client_id=client_id, scopes=wanted, granted_at=now, updated_at=now)
        db.session.add(row)
    else:
        row.scopes = sorted(set(row.scopes or []) | set(wanted))
        row.updated_at = now
    audit.record("consent.granted", actor=f"user:{user.sub}", object=f"client:{client_id}",
                 detail={"scopes": wanted})
    return row


def revoke(user: User, client_id: str) -> bool:
    """Withdraw consent and end the system's refresh tokens for this user."""

    row = _row(user, client_id)
    if row is None:
        return False
    db.session.delete(row)
    families = set(db.session.execute(select(RefreshToken.family_id).where(
        RefreshToken.user_id == user.id, RefreshToken.client_id == client_id,
        RefreshToken.revoked_at.is_(None))).scalars())
    for fam in families:
        revoke_family(fam, "consent_revoked", f"user:{user.sub}")
    audit.record("consent.revoked", actor=f"user:{user.sub}", object=f"client:{client_id}")
    return True


def list_for(user: User) -> list[Consent]:
    return list(db.session.execute(select(Consent).where(Consent.user_id == user.id)
                                   .order_by(Consent.updated_at.desc())).scalars())
