"""HTTP for scan-to-log-in: the desktop's start/status/complete calls and the phone's
confirmation page. Thin: the state machine is in ``idp.qrlogin``."""

from __future__ import annotations

import base64
from ipaddress import ip_address

from flask import Blueprint, Response, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _

from people import sessions
from people.forms import ConfirmForm
from tongban import audit, ratelimit
from tongban.clock import utcnow
from tongban.extensions import db
from tongban.i18n import safe_next

from . import qrlogin

bp = Blueprint("qrlogin", __name__)

BINDING_COOKIE = "tb_qr"
POLL_MS = 1500


def _set_binding(response: Response, binding: str) -> None:
    cfg = current_app.config
    response.set_cookie(BINDING_COOKIE, binding, httponly=True, samesite="Strict", path="/qr",
                        secure=cfg.get("SESSION_COOKIE_SECURE", False),
                        max_age=cfg.get("TONGBAN_QR_LIFETIME", qrlogin.LIFETIME_SECONDS)
                        + qrlogin.COMPLETE_GRACE_SECONDS)


def _binding() -> str | None:
    return request.cookies.get(BINDING_COOKIE)


# ---------------------------------------------------------------- the desktop


@bp.route("/qr/start", methods=["POST"])
def start():
    """A new code for this browser (CSRF-checked: the page sends its token in X-CSRFToken)."""
    cfg = current_app.config
    hit = ratelimit.hit_client("qr-ip", request.remote_addr, cfg.get("TONGBAN_QR_RATE_PER_IP", 30),
                              cfg.get("TONGBAN_QR_RATE_WINDOW", 60))
    if not hit.allowed:
        audit.record("qr.throttled", actor=request.remote_addr or "", outcome="failure")
        db.session.commit()
        resp = jsonify(error="slow_down", retry_after=hit.retry_after)
        resp.status_code = 429
        resp.headers["Retry-After"] = str(hit.retry_after)
        return resp
    made = qrlogin.create(ip=request.remote_addr or "", user_agent=request.user_agent.string or "")
    db.session.commit()
    svg = qrlogin.qr_svg(qrlogin.qr_url(made.code))
    resp = jsonify(state="waiting", image="data:image/svg+xml;base64," + base64.b64encode(svg).decode(),
                   expires_in=int((made.row.expires_at - made.row.created_at).total_seconds()),
                   status_url=url_for("qrlogin.status"), interval_ms=POLL_MS)
    _set_binding(resp, made.binding)
    return resp


@bp.route("/qr/status")
def status():
    row = qrlogin.by_binding(_binding())
    db.session.commit()  # a lazily noted expiry
    return jsonify(state=qrlogin.status(row))


_COMPLETE_ERRORS = {
    "expired": lambda: _("The QR code expired. Scan the new one, or log in with your password."),
    "denied": lambda: _("The log-in was declined on the phone."),
    "withdrawn": lambda: _("The phone logged out before this computer could log in. Please scan again."),
}


@bp.route("/qr/complete", methods=["POST"])
def complete():
    """The desktop turns a confirmed code into its own session (needs its binding cookie)."""
    form = ConfirmForm()
    next_url = safe_next(request.form.get("next"), url_for("account.account"))
    if not form.validate_on_submit():
        return redirect(url_for("idp.login", next=next_url))
    try:
        row = qrlogin.complete(_binding())
    except qrlogin.QrError as e:
        db.session.rollback()
        audit.record("qr.complete_rejected", actor=request.remote_addr or "", outcome="failure",
                     detail={"reason": e.reason})
        db.session.commit()
        message = _COMPLETE_ERRORS.get(e.reason, lambda: _("This QR log-in cannot be used here. Please scan "
                                                           "a new code."))()
        flash(message, "error")
        response = redirect(url_for("idp.login", next=next_url))
        response.delete_cookie(BINDING_COOKIE, path="/qr")
        return response
    cookie: dict = {}
    sess = sessions.start(row.user, cookie, acr=qrlogin.session_acr(row), amr=qrlogin.AMR)
    qrlogin.consumed(row, sess)
    db.session.commit()
    response = redirect(next_url)
    sessions.set_cookie(response, cookie["value"])
    response.delete_cookie(BINDING_COOKIE, path="/qr")
    return response


# ---------------------------------------------------------------- the phone


_PHONE_ERRORS = {
    "unknown": lambda: _("This QR code is not valid. Ask the computer to show a new one."),
    "expired": lambda: _("This QR code has expired. Ask the computer to show a new one."),
    "confirmed": lambda: _("This QR code has already been confirmed."),
    "consumed": lambda: _("This QR code has already been used."),
    "denied": lambda: _("This log-in was declined."),
}


def _phone_error(reason: str):
    message = _PHONE_ERRORS.get(reason, _PHONE_ERRORS["unknown"])()
    return render_template("idp/qr_done.html", ok=False, message=message), 404 if reason == "unknown" else 410


def _place(ip: str) -> str:
    try:
        addr = ip_address(ip)
    except ValueError:
        return _("unknown")
    if addr.is_loopback or addr.is_private:
        return _("the local network (%(ip)s)", ip=ip)
    return ip


@bp.route("/qr/<code>", methods=["GET", "POST"])
def phone(code: str):
    sess = sessions.current_session()
    if sess is None:
        flash(_("Log in on this phone first, then confirm the log-in on the computer."), "info")
        return redirect(url_for("idp.login", next=url_for("qrlogin.phone", code=code)))
    form = ConfirmForm()
    try:
        if request.method == "POST":
            if not form.validate_on_submit():
                return render_template("idp/qr_done.html", ok=False,
                                       message=_("The form expired; please scan again.")), 400
            if request.form.get("decision") == "approve":
                qrlogin.confirm(code, sess)
                db.session.commit()
                return render_template("idp/qr_done.html", ok=True,
                                       message=_("Confirmed. The computer is logging in now."))
            qrlogin.deny(code, sess)
            db.session.commit()
            return render_template("idp/qr_done.html", ok=False, declined=True,
                                   message=_("Declined. The computer was not logged in."))
        row = qrlogin.scan(code, sess)
        db.session.commit()
    except qrlogin.QrError as e:
        db.session.commit()  # keep a lazily noted expiry
        return _phone_error(e.reason)
    browser, system = qrlogin.describe_user_agent(row.user_agent)
    remaining = max(0, int((row.expires_at - utcnow()).total_seconds()))
    return render_template("idp/qr_confirm.html", form=form, row=row, user=sess.user, browser=browser,
                           system=system, place=_place(row.ip), remaining=remaining,
                           action=url_for("qrlogin.phone", code=code))


def init_app(app) -> None:
    app.register_blueprint(bp)
