"""Citizen self-service: register, the account page (profile, password, systems, history)."""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask import session as flask_session
from flask_babel import gettext as _

from people import accounts, recovery, sessions
from people.devices import device_label
from people.forms import ConfirmForm, ForgotForm, PasswordChangeForm, RegisterForm, ResetForm
from tongban import audit, ratelimit
from tongban.errors import TongbanError
from tongban.extensions import db
from tongban.i18n import safe_next
from tongban.masking import mask_number

from . import ciba, consents
from . import clients as registry
from .errors import FormExpired, RegistrationClosed
from .logout import end_all_sessions, systems_by_session
from .logout import end_other_sessions as end_others
from .mfa_views import mark_fresh
from .scopes import SILENT, describe
from .views import logged_out_page

bp = Blueprint("account", __name__)


def login_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        if sessions.current_session() is None:
            return redirect(url_for("idp.login", next=request.full_path))
        return view(*args, **kwargs)

    return wrapper


def _registration_throttled():
    """Registrations per client address, then in all (each one hashes a password and creates an
    account): None while allowed, else a function rendering the 429 page."""
    cfg = current_app.config
    window = cfg["TONGBAN_REGISTER_RATE_WINDOW"]
    ip = request.remote_addr or ""
    hit = ratelimit.hit(f"register-ip:{accounts.login_source(ip)}", cfg["TONGBAN_REGISTER_RATE_PER_IP"], window)
    scope = "address"
    if hit.allowed:
        hit = ratelimit.hit("register-all", cfg["TONGBAN_REGISTER_RATE_GLOBAL"], window)
        scope = "global"
    if hit.allowed:
        return None
    audit.record("account.register_throttled", actor=ip[:64] or "anonymous", outcome="failure",
                 detail={"scope": scope})
    db.session.commit()

    def render(form):
        error = _("Too many registrations. Try again in %(m)d minutes.", m=max(1, -(-hit.retry_after // 60)))
        resp = current_app.make_response((render_template("idp/register.html", form=form, error=error), 429))
        resp.headers["Retry-After"] = str(hit.retry_after)
        return resp

    return render


@bp.route("/register", methods=["GET", "POST"])
def register():
    if not current_app.config["TONGBAN_PUBLIC_REGISTRATION"]:
        raise RegistrationClosed()
    form = RegisterForm()
    if request.method == "GET":
        form.next.data = safe_next(request.args.get("next"), "")
    if form.validate_on_submit():
        if not (form.code.data or "").strip():
            form.code.errors = [_("Enter the code we sent to your phone.")]
            return render_template("idp/register.html", form=form), 400
        throttled = _registration_throttled()
        if throttled is not None:
            return throttled(form)
        try:
            check_id = recovery.check_registration_code(form.phone.data, form.code.data)
        except TongbanError as e:
            db.session.rollback()
            form.code.errors = [e.message]
            return render_template("idp/register.html", form=form), 400
        try:
            user = accounts.create_user(form.id_number.data, form.name.data, form.password.data,
                                        form.phone.data)
            recovery.spend_registration_code(check_id)
        except TongbanError as e:
            db.session.rollback()
            return render_template("idp/register.html", form=form, error=e.message), 400
        user.assurance_level = max(user.assurance_level, 2)  # the phone answered the code
        audit.record("account.phone_verified", actor=f"user:{user.sub}", object=f"user:{user.sub}")
        cookie: dict = {}
        sess = sessions.start(user, cookie)
        db.session.commit()

        mark_fresh(sess.sid, password=True)  # the password was just chosen
        flash(_("Your account is ready. You are logged in."), "success")
        response = redirect(safe_next(form.next.data, url_for("account.account")))
        sessions.set_cookie(response, cookie["value"])
        return response
    status = 400 if request.method == "POST" else 200
    return render_template("idp/register.html", form=form), status


@bp.route("/register/code", methods=["POST"])
def register_code():
    """The "send code" button of the registration form (the form is posted here, and shown
    again with what was typed, passwords excepted)."""
    if not current_app.config["TONGBAN_PUBLIC_REGISTRATION"]:
        raise RegistrationClosed()
    form = RegisterForm()
    if not _csrf_ok(form):
        raise FormExpired()
    cfg = current_app.config
    try:
        recovery.throttle(f"register-code-ip:{accounts.login_source(request.remote_addr or '')}",
                          cfg["TONGBAN_REGISTER_CODES_PER_IP"], cfg["TONGBAN_REGISTER_RATE_WINDOW"])
        recovery.send_registration_code(form.phone.data or "")
    except recovery.Throttled as e:
        db.session.rollback()
        resp = current_app.make_response((render_template("idp/register.html", form=form, error=e.message), 429))
        resp.headers["Retry-After"] = str(e.retry_after)
        return resp
    except TongbanError as e:
        db.session.rollback()
        form.phone.errors = [e.message]
        return render_template("idp/register.html", form=form), 400
    db.session.commit()
    return render_template("idp/register.html", form=form, code_sent=True,
                           minutes=cfg["TONGBAN_SMS_CODE_MINUTES"])


def _csrf_ok(form) -> bool:
    from flask_wtf.csrf import ValidationError as CSRFError
    from flask_wtf.csrf import validate_csrf

    try:
        validate_csrf(form.csrf_token.data)
    except CSRFError:
        return False
    return True


@bp.route("/terms")
def terms():
    return render_template("idp/terms.html")


@bp.route("/developers")
def developers():
    return render_template("idp/developers.html", issuer=current_app.config["TONGBAN_ISSUER"])


# ---------------------------------------------------------------- forgotten password

_RESET_KEY = "tb_reset_login"


def _reset_throttle() -> None:
    cfg = current_app.config
    recovery.throttle(f"reset-ip:{accounts.login_source(request.remote_addr or '')}",
                      cfg["TONGBAN_RESET_RATE_PER_IP"], cfg["TONGBAN_RESET_RATE_WINDOW"])


def _throttled_page(template: str, form, e) -> object:
    db.session.commit()
    resp = current_app.make_response((render_template(template, form=form, error=e.message), 429))
    resp.headers["Retry-After"] = str(e.retry_after)
    return resp


@bp.route("/password/forgot", methods=["GET", "POST"])
def forgot_password():
    form = ForgotForm()
    if request.method == "GET" and request.args.get("login"):
        form.login.data = request.args["login"][:32]
    if not form.validate_on_submit():
        return render_template("idp/forgot.html", form=form), 400 if request.method == "POST" else 200
    try:
        _reset_throttle()
    except recovery.Throttled as e:
        return _throttled_page("idp/forgot.html", form, e)
    login = form.login.data.strip()
    recovery.start_reset(login)
    db.session.commit()
    flask_session[_RESET_KEY] = login
    return redirect(url_for("account.reset_password"))


@bp.route("/password/reset", methods=["GET", "POST"])
def reset_password():
    login = flask_session.get(_RESET_KEY)
    if not login:
        return redirect(url_for("account.forgot_password"))
    form = ResetForm()
    minutes = current_app.config["TONGBAN_SMS_CODE_MINUTES"]
    if not form.validate_on_submit():
        return render_template("idp/reset.html", form=form, login=mask_number(login),
                               minutes=minutes), 400 if request.method == "POST" else 200
    try:
        _reset_throttle()
    except recovery.Throttled as e:
        return _throttled_page("idp/reset.html", form, e)
    try:
        prepared = recovery.prepare_password(login, form.new.data)  # hashed before any write
        recovery.complete_reset(login, form.code.data, prepared)
    except TongbanError as e:
        db.session.commit()  # the wrong try counts (and stays in the audit log)
        field = form.code if isinstance(e, recovery.CodeRefused) else form.new
        field.errors = [e.message]
        return render_template("idp/reset.html", form=form, login=mask_number(login), minutes=minutes), 400
    db.session.commit()
    flask_session.pop(_RESET_KEY, None)
    flash(_("Your password has been reset, and every device that was logged in has been logged out. "
            "Log in with the new password."), "success")
    return redirect(url_for("idp.login"))


@bp.route("/account")
@login_required
def account():
    sess = sessions.current_session()
    user = sess.user
    live = sessions.active_sessions(user)

    granted = []
    for c in consents.list_for(user):
        client = registry.get_client(c.client_id)
        words = "、".join(describe(s) for s in c.scopes if s not in SILENT) or _("that you logged in")
        granted.append({"consent": c, "client": client, "words": words})
    return render_template(
        "idp/account.html", user=user, masked_id=mask_number(user.id_number),
        masked_phone=mask_number(user.phone) if user.phone else "", granted=granted,
        logins=accounts.recent_logins(user), sessions=live, current_sid=sess.sid,
        session_systems=systems_by_session([s.sid for s in live]),
        password_form=PasswordChangeForm(), confirm=ConfirmForm(), device=device_label,
        ciba_pending=_ciba_pending(user),
    )


def _ciba_pending(user) -> int:
    return ciba.count_pending(user.id)  # requests from service windows waiting for an answer (CIBA)


@bp.route("/account/password", methods=["POST"])
@login_required
def change_password():
    sess = sessions.current_session()
    user = sess.user
    form = PasswordChangeForm()
    if form.validate_on_submit():
        db.session.commit()  # no write transaction (a last_seen touch) held across password hashing
        try:
            ended = accounts.change_password(user, form.current.data, form.new.data, keep_sid=sess.sid)
        except TongbanError as e:
            db.session.commit()  # the failed attempt stays in the audit log
            flash(e.message, "error")
            return redirect(url_for("account.account") + "#password")
        db.session.commit()
        flash(_("Your password has been changed."), "success")
        if ended:
            flash(_("%(n)d other sessions were ended.", n=ended), "success")
    else:
        for errors in form.errors.values():
            for err in errors:
                flash(str(err), "error")
    return redirect(url_for("account.account") + "#password")


@bp.route("/account/verify-identity", methods=["POST"])
@login_required
def verify_identity():
    user = sessions.current_user()
    if not ConfirmForm().validate_on_submit():
        raise FormExpired()
    ok = accounts.verify_identity(user)
    db.session.commit()
    if ok:
        flash(_("Your name and ID number were confirmed by the population register (level L3)."), "success")
    else:
        flash(_("The population register could not confirm your name and ID number."), "error")
    return redirect(url_for("account.account"))


@bp.route("/account/consents/<client_id>/revoke", methods=["POST"])
@login_required
def revoke_consent(client_id: str):
    user = sessions.current_user()
    if not ConfirmForm().validate_on_submit():
        raise FormExpired()
    if consents.revoke(user, client_id):
        flash(_("Access withdrawn."), "success")
    db.session.commit()
    return redirect(url_for("account.account") + "#systems")


@bp.route("/account/sessions/<sid>/end", methods=["POST"])
@login_required
def end_session(sid: str):
    user = sessions.current_user()
    if not ConfirmForm().validate_on_submit():
        raise FormExpired()
    for s in sessions.active_sessions(user):
        if s.sid == sid:
            sessions.end(s, "ended_by_user", f"user:{user.sub}")
    db.session.commit()
    return redirect(url_for("account.account") + "#sessions")


@bp.route("/account/logout-everywhere", methods=["POST"])
@login_required
def logout_everywhere():
    """End every session of the account, this one included, with back-channel (and
    front-channel) logout of every system signed in through any of them."""
    sess = sessions.current_session()
    if not ConfirmForm().validate_on_submit():
        raise FormExpired()
    user = sess.user
    n, frames = end_all_sessions(user, f"user:{user.sub}")
    audit.record("account.logout_everywhere", actor=f"user:{user.sub}", object=f"user:{user.sub}",
                 detail={"sessions": n})
    db.session.commit()
    return logged_out_page(frames, everywhere=n)


@bp.route("/account/sessions/end-others", methods=["POST"])
@login_required
def end_other_sessions():
    sess = sessions.current_session()
    if not ConfirmForm().validate_on_submit():
        raise FormExpired()
    n = end_others(sess.user, sess.sid, f"user:{sess.user.sub}")
    db.session.commit()
    flash(_("%(n)d other sessions were ended.", n=n), "success")
    return redirect(url_for("account.account") + "#sessions")
