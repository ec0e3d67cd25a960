"""HTTP for the device authorization grant (RFC 8628): the kiosk's endpoint and the
citizen's ``/device`` page. Thin: the work is in ``idp.device`` and Authlib."""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_babel import gettext as _

from people import sessions
from people.forms import ConfirmForm
from tongban import audit, ratelimit
from tongban.extensions import csrf, db

from . import clients as registry
from . import device
from .scopes import SILENT, describe
from .server import server

bp = Blueprint("device", __name__)


@bp.route("/oauth/device_authorization", methods=["POST"])
@csrf.exempt
def device_authorization():
    response = server.create_endpoint_response("device_authorization")
    if response.status_code == 200:
        db.session.commit()
    else:
        db.session.rollback()
    return response


_ERRORS = {
    "malformed": lambda: _("A code has eight letters, like BCDF-GHJK. Please check it and try again."),
    "unknown": lambda: _("That code was not found. Please check the code shown on the device."),
    "used": lambda: _("That code has already been used. Ask the device for a new one."),
    "expired": lambda: _("That code has expired. Ask the device for a new one."),
}


def _code_page(form, user_code: str = "", error: str | None = None, status: int = 200):
    return render_template("idp/device_code.html", form=form, user_code=user_code, error=error), status


@bp.route("/device", methods=["GET", "POST"])
def verify():
    """Enter the code (or arrive with it from the kiosk's QR code), review, approve or deny."""
    sess = sessions.current_session()
    if sess is None:
        return redirect(url_for("idp.login", next=request.full_path.rstrip("?")))
    form = ConfirmForm()
    user_code = (request.values.get("user_code") or "").strip()[:20]
    if request.method == "GET" and not user_code:
        return _code_page(form)
    if request.method == "POST" and not form.validate_on_submit():
        return _code_page(form, user_code, _("The form expired; please try again."), 400)
    cfg = current_app.config
    hit = ratelimit.hit(f"device-code:{sess.user_id}", cfg.get("TONGBAN_DEVICE_CODE_TRIES", 20),
                        cfg.get("TONGBAN_DEVICE_CODE_TRIES_WINDOW", 600))
    if not hit.allowed:
        audit.record("device.throttled", actor=f"user:{sess.user.sub}", outcome="failure")
        db.session.commit()
        return _code_page(form, user_code, _("Too many codes tried. Try again in %(s)d seconds.",
                                             s=hit.retry_after), 429)
    decision = request.form.get("decision") if request.method == "POST" else None
    try:
        if decision in ("approve", "deny"):
            row = device.decide(user_code, sess, approve=decision == "approve")
            db.session.commit()
            client = registry.get_client(row.client_id)
            return render_template("idp/device_done.html", approved=decision == "approve", client=client)
        row = device.pending_by_user_code(user_code)
    except device.DeviceError as e:
        db.session.rollback()
        return _code_page(form, user_code, _ERRORS[e.reason](), 400)
    client = registry.get_client(row.client_id)
    if client is None:
        return _code_page(form, user_code, _ERRORS["unknown"](), 400)
    scopes = [(s, describe(s)) for s in row.scope.split() if s not in SILENT]
    return render_template("idp/device_confirm.html", form=form, client=client, scopes=scopes, user=sess.user,
                           user_code=device.normalise_user_code(user_code), expires_at=row.expires_at)


def init_app(app) -> None:
    app.register_blueprint(bp)
