"""The expired-credential purge the background chores run (idp/tokens.py ``purge_expired``,
every TONGBAN_PURGE_INTERVAL_SECONDS): what can no longer be used goes; what still tells a
replay apart is kept."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select


def _code(user, code_hash, expires_at, used=False):
    from idp.models import AuthorizationCode

    return AuthorizationCode(code_hash=code_hash, client_id="c", user_id=user.id, auth_time=0,
                             created_at=expires_at - timedelta(seconds=60), expires_at=expires_at,
                             used_at=expires_at - timedelta(seconds=30) if used else None, family_id="f-live")


def _refresh(user, token_hash, family, expires_at):
    from idp.models import RefreshToken

    return RefreshToken(token_hash=token_hash, family_id=family, client_id="c", user_id=user.id,
                        issued_at=expires_at - timedelta(days=30), expires_at=expires_at)


def test_the_chore_purges_expired_credentials_only(app, citizen):
    from idp.models import AuthorizationCode, RefreshToken, RevokedAccessToken
    from tongban import outbox
    from tongban.audit import AuditLog
    from tongban.clock import epoch, utcnow
    from tongban.extensions import db

    now = utcnow()
    db.session.add_all([
        _code(citizen, "old", now - timedelta(days=2), used=True),
        _code(citizen, "recent", now - timedelta(hours=1), used=True),  # a replay is still recognised
        _code(citizen, "live", now + timedelta(seconds=30)),
        # a family whose every member expired long ago
        _refresh(citizen, "dead-1", "f-dead", now - timedelta(days=5)),
        _refresh(citizen, "dead-2", "f-dead", now - timedelta(days=3)),
        # a family with an old rotated member and a live one: all kept (reuse detection)
        _refresh(citizen, "rotated", "f-live", now - timedelta(days=4)),
        _refresh(citizen, "current", "f-live", now + timedelta(days=20)),
        RevokedAccessToken(jti="gone", expires_at=epoch() - 10, revoked_at=now),
        RevokedAccessToken(jti="still", expires_at=epoch() + 600, revoked_at=now),
    ])
    db.session.commit()

    outbox.run_chores(force=True)  # what the worker thread / `make worker` runs

    assert sorted(db.session.execute(select(AuthorizationCode.code_hash)).scalars()) == ["live", "recent"]
    assert sorted(db.session.execute(select(RefreshToken.token_hash)).scalars()) == ["current", "rotated"]
    assert list(db.session.execute(select(RevokedAccessToken.jti)).scalars()) == ["still"]
    event = db.session.execute(select(AuditLog).where(AuditLog.action == "tokens.purged")).scalar_one()
    assert '"codes": 1' in event.detail and '"refresh_tokens": 2' in event.detail


def test_the_purge_interval_is_a_setting(app):
    from idp.tokens import purge_expired
    from people.recovery import purge_phone_checks
    from tongban import outbox

    registered = {fn: every for fn, every in outbox._chores}
    assert registered[purge_expired] == "TONGBAN_PURGE_INTERVAL_SECONDS"
    assert registered[purge_phone_checks] == "TONGBAN_PURGE_INTERVAL_SECONDS"
    app.config["TONGBAN_PURGE_INTERVAL_SECONDS"] = 120
    try:
        assert outbox._interval("TONGBAN_PURGE_INTERVAL_SECONDS") == 120
    finally:
        app.config["TONGBAN_PURGE_INTERVAL_SECONDS"] = 3600
