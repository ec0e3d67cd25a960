"""HTTP for CIBA (poll mode): the clerk system's ``/oauth/bc-authorize`` and the citizen's
``/ciba`` page. Thin: the work is in ``idp.ciba`` and Authlib."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from people import sessions
from people.assurance import LEVELS
from people.forms import ConfirmForm
from tongban.extensions import csrf, db

from . import ciba
from . import clients as registry
from .scopes import SILENT, describe
from .server import server

bp = Blueprint("ciba", __name__)


@bp.route("/oauth/bc-authorize", methods=["POST"])
@csrf.exempt
def backchannel_authentication():
    response = server.create_endpoint_response("backchannel_authentication")
    if response.status_code == 200:
        db.session.commit()
    else:
        db.session.rollback()
    if response.status_code == 429:
        response.headers["Retry-After"] = str(current_window())
    return response


def current_window() -> int:
    return int(current_app.config["TONGBAN_CIBA_RATE_WINDOW"])


_ERRORS = {
    "unknown": lambda: _("That request was not found."),
    "used": lambda: _("That request has already been answered."),
    "expired": lambda: _("That request has expired. Ask the staff to send a new one."),
}


def _login_again():
    return redirect(url_for("idp.login", force=1, next=url_for("ciba.pending")))


@bp.route("/ciba", methods=["GET"])
def pending():
    """The requests waiting for this citizen's answer, newest last."""
    sess = sessions.current_session()
    if sess is None:
        return redirect(url_for("idp.login", next=url_for("ciba.pending")))
    items = []
    for row in ciba.pending_for(sess.user_id):
        client = registry.get_client(row.client_id)
        if client is None:
            continue
        items.append({"row": row, "client": client,
                      "scopes": [(s, describe(s)) for s in row.scope.split() if s not in SILENT]})
    return render_template("idp/ciba.html", items=items, form=ConfirmForm(), user=sess.user,
                           fresh=ciba.is_fresh(sess))


@bp.route("/ciba/<int:request_id>", methods=["POST"])
def answer(request_id: int):
    sess = sessions.current_session()
    if sess is None:
        return redirect(url_for("idp.login", next=url_for("ciba.pending")))
    form = ConfirmForm()
    if not form.validate_on_submit():
        flash(_("The form expired; please try again."), "error")
        return redirect(url_for("ciba.pending")), 303
    decision = request.form.get("decision")
    if decision not in ("approve", "deny"):
        flash(_("Choose approve or deny."), "error")
        return redirect(url_for("ciba.pending")), 303
    approve = decision == "approve"
    if approve and not ciba.is_fresh(sess):
        flash(_("For your safety, log in again before approving."), "warning")
        return _login_again()
    try:
        row = ciba.decide(request_id, sess, approve=approve)
    except ciba.CibaError as e:
        db.session.rollback()
        if e.reason == "level":
            row = db.session.get(ciba.CibaRequest, request_id)
            level = LEVELS[ciba.required_level(row) - 1]
            return redirect(url_for("mfa.verify", acr=level, next=url_for("ciba.pending")))
        flash(_ERRORS[e.reason](), "error")
        return redirect(url_for("ciba.pending")), 303
    db.session.commit()
    client = registry.get_client(row.client_id)
    name = client.name if client else row.client_id
    if approve:
        flash(_("Approved. %(name)s has confirmed who you are.", name=name), "success")
    else:
        flash(_("Denied. %(name)s was not told who you are.", name=name), "info")
    return redirect(url_for("ciba.pending")), 303


def init_app(app) -> None:
    app.register_blueprint(bp)
