"""A citizen's answer to a grant waiting on another device (CIBA, the device authorization grant):
recorded once, by a conditional UPDATE that only a still-pending, unexpired request matches, so two
answers at once (two tabs, two servers) give one winner; then the session is noted as using the
client and the answer audited."""

from __future__ import annotations

from sqlalchemy import update

from people.models import LoginSession
from people.sessions import note_client
from tongban import audit
from tongban.clock import to_epoch, utcnow
from tongban.extensions import db


def record(model, row, sess: LoginSession, approve: bool, *, kind: str, error: type[Exception],
           where: tuple = (), values: dict | None = None, detail: dict | None = None):
    """Settle ``row`` (a pending ``model`` request) as approved or denied by ``sess``; ``where``
    narrows the claim further, ``values`` adds columns. Raises ``error("used")`` when another
    answer, or the expiry, came first."""
    now = utcnow()
    settled: dict[str, object] = {"state": "approved" if approve else "denied", "decided_at": now, **(values or {})}
    if approve:
        settled.update(sid=sess.sid, auth_time=to_epoch(sess.auth_time), acr=sess.acr, amr=sess.amr)
    won = db.session.execute(update(model).where(
        model.id == row.id, model.state == "pending", model.expires_at > now, *where)
        .values(**settled).execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    if won != 1:
        raise error("used")
    db.session.refresh(row)
    if approve:
        note_client(sess, row.client_id)
    audit.record(f"{kind}.approved" if approve else f"{kind}.denied", actor=f"user:{sess.user.sub}",
                 object=f"{kind}:{row.id}", detail={"client": row.client_id, "scope": row.scope, **(detail or {})})
    return row

