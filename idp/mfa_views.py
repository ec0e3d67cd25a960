"""HTTP for second factors: the second-factor / step-up page, and the account's Security section.

Thin: the work is in :mod:`people.mfa` (factors) and :mod:`people.assurance` (levels). The second-factor
page serves two cases: a log-in whose password was right for an account with a second factor
(no session yet: the pending log-in is kept in the signed Flask session for five minutes), and
a step-up of the current session to the level a system asked for.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import session as flask_session
from flask_babel import gettext as _
from werkzeug.wrappers import Response as ResponseBase

from people import accounts, mfa, sessions
from people.auth import login_required
from people.forms import ConfirmForm
from people.models import User
from people.passwords import check_account_password
from tongban import audit, ratelimit
from tongban.clock import epoch
from tongban.errors import TongbanError
from tongban.extensions import db
from tongban.i18n import safe_next
from tongban.masking import mask_number

from . import stepup
from .errors import FormExpired, NotApplicable, PageNotFound, ReauthenticationRequired

bp = Blueprint("mfa", __name__)

_PENDING = "tb_mfa_login"
_PENDING_SECONDS = 300
_CHALLENGE = "tb_webauthn"
_FRESH = "tb_fresh"


# ---------------------------------------------------------------- fresh authentication


def mark_fresh(sid: str, *, password: bool = False, factor: bool = False, at: int | None = None) -> None:
    """Remember, for this browser's session ``sid``, that the password and/or a second factor
    were just proven (kept in the signed Flask session, bound to the SSO session id)."""
    now = epoch()
    state = dict(flask_session.get(_FRESH) or {})
    if state.get("sid") != sid:
        state = {"sid": sid}
    if password:
        state["pwd"] = at or now
    if factor:
        state["factor"] = now
    flask_session[_FRESH] = state


def is_fresh(sess) -> bool:
    """The password, and an existing second factor if the account has one, were proven in this
    session within ``TONGBAN_MFA_FRESH_MINUTES``: what removing or replacing a factor needs."""
    state = flask_session.get(_FRESH) or {}
    if sess is None or state.get("sid") != sess.sid:
        return False
    window = current_app.config["TONGBAN_MFA_FRESH_MINUTES"] * 60
    now = epoch()
    if not 0 <= now - int(state.get("pwd") or 0) <= window:
        return False
    factor_ok = 0 <= now - int(state.get("factor") or 0) <= window
    return factor_ok or not mfa.has_second_factor(sess.user)


def _needs_reauth(json: bool = False):
    """None when the session is fresh; otherwise the answer that sends the user to confirm."""
    sess = sessions.current_session()
    if is_fresh(sess):
        return None
    target = url_for("mfa.reauth", next=url_for("account.account") + "#security")
    message = _("To change your second factors, confirm it is you first (password and second factor).")
    if json:
        return jsonify({"error": "reauthentication_required", "message": message, "next": target}), 401
    flash(message, "warning")
    return redirect(target)


# ---------------------------------------------------------------- who is proving a factor


def start_login(user: User, next_url: str | None) -> ResponseBase:
    """The password was right and the account has a second factor: ask for it before the session."""
    flask_session[_PENDING] = {"uid": user.id, "at": epoch(), "next": safe_next(next_url, "")}
    return redirect(url_for("mfa.verify"))


def _pending_user() -> User | None:
    p = flask_session.get(_PENDING)
    if not p or epoch() - int(p.get("at", 0)) > _PENDING_SECONDS:
        return None
    user = db.session.get(User, p.get("uid"))
    return None if user is None or user.disabled else user


class _Subject:
    def __init__(self):
        self.user = _pending_user()
        self.login = self.user is not None
        self.sess = None if self.login else sessions.current_session()
        if self.sess is not None:
            self.user = self.sess.user
        self.target = stepup.level_of(request.values.get("acr"))
        self.next = safe_next(request.values.get("next"), "")

    @property
    def ok(self) -> bool:
        return self.user is not None

    def needs(self) -> dict:
        """What is still missing to reach the target level (step-up) or to log in."""
        user = self.user
        if self.login:
            return {"factor": True}
        target = min(self.target, stepup.ONLINE_MAX)
        level = stepup.level_of(self.sess.acr)
        if target <= level:
            return {}
        out = {}
        if target >= 3 and user.assurance_level < 3:
            out["identity"] = True
        elif target == 2 and user.assurance_level < 2:
            out["phone"] = True
        if target >= 3 and not set((self.sess.amr or "").split()) & stepup.POSSESSION:
            out["factor"] = True
        return out

    def args(self) -> dict:
        return {"acr": stepup.LEVELS[self.target - 1] if self.target else None, "next": self.next or None}


def _subject() -> _Subject:
    subj = _Subject()
    if not subj.ok:
        abort(redirect(url_for("idp.login", next=request.values.get("next") or None)))
    # end the transaction (a session's last_seen touch): the attempt counters run in their own
    # transaction, which on SQLite must not wait for a write lock this request holds
    db.session.commit()
    return subj


def _done(subj: _Subject, methods: list[str]):
    """A factor was proven: finish the log-in, or record it on the session and carry on."""
    if subj.login:
        pending = flask_session.pop(_PENDING, {})
        amr = stepup.with_factor("pwd", methods)
        cookie: dict = {}
        sess = sessions.start(subj.user, cookie, acr=stepup.session_acr(subj.user, amr), amr=amr)
        db.session.commit()
        mark_fresh(sess.sid, password=True, factor=True, at=int(pending.get("at") or 0) or None)
        response = redirect(safe_next(pending.get("next"), url_for("account.account")))
        sessions.set_cookie(response, cookie["value"])
        return response
    stepup.add_factor(subj.sess, methods)
    db.session.commit()
    mark_fresh(subj.sess.sid, factor=True)
    return redirect(url_for("mfa.verify", **subj.args()))


def _refused(subj: _Subject, e: TongbanError):
    db.session.commit()  # failed tries stay counted and audited
    flash(e.message, "error")
    return redirect(url_for("mfa.verify", **subj.args()))


def _check_form() -> None:
    if not ConfirmForm().validate_on_submit():
        raise FormExpired()


# ---------------------------------------------------------------- the second-factor / step-up page


@bp.get("/mfa/verify")
def verify():
    subj = _subject()
    needs = subj.needs()
    if not needs:
        return redirect(subj.next or url_for("account.account"))
    user = subj.user
    return render_template(
        "idp/mfa_verify.html", subj=subj, needs=needs, factors=mfa.overview(user), confirm=ConfirmForm(),
        masked_phone=mask_number(user.phone) if user.phone else "", args=subj.args(),
        target=stepup.LEVELS[subj.target - 1] if subj.target else None,
        sms_sent=flask_session.get("tb_sms_sent") == user.id)


@bp.post("/mfa/verify/totp")
def verify_totp():
    subj = _subject()
    _check_form()
    try:
        mfa.verify_totp(subj.user, request.form.get("code", ""))
    except TongbanError as e:
        return _refused(subj, e)
    return _done(subj, ["otp"])


@bp.post("/mfa/verify/recovery")
def verify_recovery():
    subj = _subject()
    _check_form()
    try:
        mfa.use_recovery_code(subj.user, request.form.get("code", ""))
    except TongbanError as e:
        return _refused(subj, e)
    flash(_("You used a recovery code. Each code works once; make new ones on your account page."), "warning")
    return _done(subj, ["otp"])


def _sms_purpose(subj: _Subject) -> str:
    return "phone" if subj.needs().get("phone") else "login"


@bp.post("/mfa/verify/sms/send")
def sms_send():
    subj = _subject()
    _check_form()
    needs = subj.needs()
    # an SMS code is a second factor only to a phone already verified (L2+), and only for an
    # account without a stronger one (an authenticator app or a passkey); or it verifies the phone
    if not (needs.get("phone") or (needs.get("factor") and subj.user.assurance_level >= 2
                                   and not mfa.has_second_factor(subj.user))):
        raise NotApplicable()
    try:
        mfa.send_sms_code(subj.user, _sms_purpose(subj))
    except TongbanError as e:
        return _refused(subj, e)
    db.session.commit()
    flask_session["tb_sms_sent"] = subj.user.id
    flash(_("We sent a code by text message to %(phone)s.", phone=mask_number(subj.user.phone)), "success")
    return redirect(url_for("mfa.verify", **subj.args()))


@bp.post("/mfa/verify/sms")
def verify_sms():
    subj = _subject()
    _check_form()
    purpose = _sms_purpose(subj)
    try:
        mfa.verify_sms_code(subj.user, purpose, request.form.get("code", ""))
    except TongbanError as e:
        return _refused(subj, e)
    flask_session.pop("tb_sms_sent", None)
    if purpose == "phone":
        mfa.confirm_phone(subj.user)
        flash(_("Your mobile phone number is confirmed (level L2)."), "success")
        if mfa.has_second_factor(subj.user):
            # the phone is confirmed, but the code does not count as this session's second
            # factor: SMS never stands in for the app or passkey the account has
            stepup.refresh(subj.sess)
            db.session.commit()
            return redirect(url_for("mfa.verify", **subj.args()))
    return _done(subj, ["sms"])


@bp.post("/mfa/verify/identity")
def verify_identity():
    subj = _subject()
    _check_form()
    if subj.login:
        raise NotApplicable()
    if accounts.verify_identity(subj.user):
        stepup.refresh(subj.sess)
        flash(_("Your name and ID number were confirmed by the population register (level L3)."), "success")
    else:
        flash(_("The population register could not confirm your name and ID number."), "error")
    db.session.commit()
    return redirect(url_for("mfa.verify", **subj.args()))


@bp.post("/mfa/verify/cancel")
def cancel():
    subj = _subject()
    _check_form()
    if subj.login:
        flask_session.pop(_PENDING, None)
        return redirect(url_for("idp.login"))
    stepup.cancel(subj.sess)
    return redirect(subj.next or url_for("account.account"))


@bp.post("/mfa/passkey/options")
def passkey_options():
    subj = _subject()
    if not mfa.passkeys(subj.user):
        raise NotApplicable()
    options, challenge = mfa.passkey_authentication_options(subj.user)
    flask_session[_CHALLENGE] = {"c": challenge, "uid": subj.user.id, "kind": "auth"}
    return Response(options, mimetype="application/json")


def _challenge(user: User, kind: str) -> str:
    state = flask_session.pop(_CHALLENGE, None) or {}
    if state.get("uid") != user.id or state.get("kind") != kind:
        raise NotApplicable()
    return state["c"]


@bp.post("/mfa/passkey/verify")
def passkey_verify():
    subj = _subject()
    challenge = _challenge(subj.user, "auth")
    try:
        methods = mfa.verify_passkey(subj.user, request.get_json(silent=True) or {}, challenge)
    except TongbanError as e:
        db.session.commit()
        return jsonify({"error": e.code, "message": e.message}), 400
    response = _done(subj, methods)
    out = jsonify({"next": response.headers["Location"]})
    for header in response.headers.getlist("Set-Cookie"):
        out.headers.add("Set-Cookie", header)
    return out


# ---------------------------------------------------------------- the account's Security section


def _back():
    return redirect(url_for("account.account") + "#security")


@bp.post("/account/security/totp/start")
@login_required
def totp_start():
    _check_form()
    refused = _needs_reauth()
    if refused is not None:
        return refused
    try:
        mfa.begin_totp(sessions.current_user())
    except TongbanError as e:
        flash(e.message, "error")
        return _back()
    db.session.commit()
    return redirect(url_for("mfa.totp_setup"))


@bp.get("/account/security/totp")
@login_required
def totp_setup():
    refused = _needs_reauth()  # the pending secret is shown and bound only in a fresh session
    if refused is not None:
        return refused
    user = sessions.current_user()
    row = mfa.totp_factor(user)
    if row is None or row.confirmed_at is not None:
        return _back()
    return render_template("idp/mfa_totp_setup.html", secret=mfa.totp_secret(row), confirm=ConfirmForm())


@bp.get("/account/security/totp/qr.svg")
@login_required
def totp_qr():
    from tongban.qr import qr_svg

    if not is_fresh(sessions.current_session()):
        raise ReauthenticationRequired()

    user = sessions.current_user()
    row = mfa.totp_factor(user)
    if row is None or row.confirmed_at is not None:
        raise PageNotFound()
    resp = Response(qr_svg(mfa.provisioning_uri(user, row), border=2), mimetype="image/svg+xml")
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/account/security/totp/confirm")
@login_required
def totp_confirm():
    refused = _needs_reauth()  # the pending secret is shown and bound only in a fresh session
    if refused is not None:
        return refused
    _check_form()
    user = sessions.current_user()
    db.session.commit()  # see _subject()
    try:
        codes = mfa.confirm_totp(user, request.form.get("code", ""))
    except TongbanError as e:
        db.session.commit()
        flash(e.message, "error")
        return redirect(url_for("mfa.totp_setup"))
    # not counted as a second factor of this session: it was enrolled with the password alone
    db.session.commit()
    flash(_("The authenticator app is set up. You will be asked for a code when you log in."), "success")
    if codes:
        return _show_codes(codes)
    return _back()


def _show_codes(codes: list[str]):
    resp = current_app.make_response(render_template("idp/mfa_recovery.html", codes=codes))
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/account/security/totp/remove")
@login_required
def totp_remove():
    _check_form()
    refused = _needs_reauth()
    if refused is not None:
        return refused
    if mfa.remove_totp(sessions.current_user()):
        flash(_("The authenticator app was removed."), "success")
    db.session.commit()
    return _back()


@bp.post("/account/security/recovery-codes")
@login_required
def recovery_regenerate():
    _check_form()
    refused = _needs_reauth()
    if refused is not None:
        return refused
    user = sessions.current_user()
    if not mfa.overview(user).any:
        raise NotApplicable()
    codes = mfa.regenerate_recovery_codes(user)
    db.session.commit()
    return _show_codes(codes)


@bp.post("/account/security/passkeys/options")
@login_required
def passkey_register_options():
    refused = _needs_reauth(json=True)
    if refused is not None:
        return refused
    user = sessions.current_user()
    options, challenge = mfa.passkey_registration_options(user)
    flask_session[_CHALLENGE] = {"c": challenge, "uid": user.id, "kind": "register"}
    return Response(options, mimetype="application/json")


@bp.post("/account/security/passkeys")
@login_required
def passkey_register():
    refused = _needs_reauth(json=True)
    if refused is not None:
        return refused
    user = sessions.current_user()
    challenge = _challenge(user, "register")
    body = request.get_json(silent=True) or {}
    try:
        mfa.register_passkey(user, body.get("credential") or {}, challenge, str(body.get("name") or ""))
    except TongbanError as e:
        db.session.commit()
        return jsonify({"error": e.code, "message": e.message}), 400
    db.session.commit()
    flash(_("The passkey was added. You can use it as a second factor when you log in."), "success")
    return jsonify({"next": url_for("account.account") + "#security"})


@bp.post("/account/security/passkeys/<int:passkey_id>/remove")
@login_required
def passkey_remove(passkey_id: int):
    _check_form()
    refused = _needs_reauth()
    if refused is not None:
        return refused
    if mfa.remove_passkey(sessions.current_user(), passkey_id):
        flash(_("The passkey was removed."), "success")
    db.session.commit()
    return _back()


@bp.route("/account/security/confirm", methods=["GET", "POST"])
@login_required
def reauth():
    """Confirm it is you: the password again, and a second factor the account has."""
    sess = sessions.current_session()
    user = sess.user
    next_url = safe_next(request.values.get("next"), url_for("account.account") + "#security")
    if request.method == "POST":
        _check_form()
        db.session.commit()  # no write transaction held across password hashing (SQLite)
        cfg = current_app.config
        hit = ratelimit.hit(f"reauth:{user.id}", cfg["TONGBAN_MFA_ATTEMPTS"], cfg["TONGBAN_MFA_WINDOW"])
        if not hit.allowed:
            audit.record("account.reauth", actor=f"user:{user.sub}", outcome="failure",
                         detail={"reason": "throttled"})
            db.session.commit()
            flash(_("Too many attempts. Try again in %(s)d seconds.", s=hit.retry_after), "error")
            return redirect(url_for("mfa.reauth", next=next_url))
        if not check_account_password(user, request.form.get("password", "")):
            audit.record("account.reauth", actor=f"user:{user.sub}", outcome="failure",
                         detail={"reason": "bad_password"})
            db.session.commit()
            flash(_("The password is wrong."), "error")
            return redirect(url_for("mfa.reauth", next=next_url))
        factor_ok = False
        code = (request.form.get("code") or "").strip()
        if code and mfa.has_second_factor(user):
            try:
                if any(ch.isalpha() for ch in code):
                    mfa.use_recovery_code(user, code)
                else:
                    mfa.verify_totp(user, code)
                factor_ok = True
            except TongbanError as e:
                db.session.commit()
                flash(e.message, "error")
                return redirect(url_for("mfa.reauth", next=next_url))
        audit.record("account.reauth", actor=f"user:{user.sub}", object=f"session:{sess.sid}",
                     detail={"factor": factor_ok})
        db.session.commit()
        mark_fresh(sess.sid, password=True, factor=factor_ok)
        if is_fresh(sess):
            return redirect(next_url)
        return redirect(url_for("mfa.reauth", next=next_url))
    state = flask_session.get(_FRESH) or {}
    factor_done = state.get("sid") == sess.sid and \
        0 <= epoch() - int(state.get("factor") or 0) <= current_app.config["TONGBAN_MFA_FRESH_MINUTES"] * 60
    return render_template("idp/mfa_reauth.html", factors=mfa.overview(user), confirm=ConfirmForm(),
                           next_url=next_url, factor_done=factor_done,
                           needs_factor=mfa.has_second_factor(user))


# ---------------------------------------------------------------- wiring


def init_app(app: Flask) -> None:
    for key, value in mfa.DEFAULTS.items():
        app.config.setdefault(key, value)
    app.register_blueprint(bp)

    @app.context_processor
    def _mfa_helpers():
        return {"mfa_overview": mfa.overview, "mfa_fresh": lambda: is_fresh(sessions.current_session())}


__all__ = ["bp", "init_app", "start_login"]
