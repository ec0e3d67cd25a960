"""Clerk pages for identity matters, done in person at a service counter (``/clerk/identity``):
ID-number recovery from a squatting account, and enterprise claims (dispute, undo).

Only window clerks of the operating authority (role ``clerk`` in ``TONGBAN_AUTHORITY_USCC``),
in a session proven at ``TONGBAN_CLERK_IDENTITY_ACR`` (default L3) with a second factor.
Thin: the work is in ``people.identity`` and ``people.enterprise``; the CLI group ``identity`` too.
"""

from __future__ import annotations

import click
from flask import Blueprint, Flask, abort, flash, redirect, render_template, request, url_for
from flask.cli import AppGroup
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, EqualTo, Length, Optional

from people import accounts, enterprise, identity, sessions
from people.auth import login_required
from tongban import audit
from tongban.cli import command_errors, emit, read_password_stdin
from tongban.errors import TongbanError
from tongban.extensions import db
from tongban.masking import mask_name, mask_number

from .errors import NoPassword, NotClerk, NotStaff, PageNotFound

bp = Blueprint("clerk_identity", __name__, url_prefix="/clerk/identity")

CLERK = ("clerk",)
_IN_PERSON = _l("I checked the person's identity card (and, for an enterprise, the business licence) in person.")


class RecoverForm(FlaskForm):
    id_number = StringField(_l("ID number"), validators=[DataRequired(), Length(min=18, max=18)],
                            render_kw={"autocapitalize": "characters", "autocomplete": "off"})
    name = StringField(_l("Name (as on the identity card)"), validators=[DataRequired(), Length(max=100)],
                       render_kw={"autocomplete": "off"})
    phone = StringField(_l("The person's mobile phone"), validators=[Optional(), Length(max=16)],
                        render_kw={"autocomplete": "off", "inputmode": "tel"})
    password = PasswordField(_l("Password (typed by the person)"), validators=[DataRequired(), Length(max=128)],
                             render_kw={"autocomplete": "new-password"})
    confirm = PasswordField(_l("Repeat password"),
                            validators=[DataRequired(), EqualTo("password", _l("Passwords do not match."))],
                            render_kw={"autocomplete": "new-password"})
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(), Length(max=1000)])
    in_person = BooleanField(_IN_PERSON, validators=[DataRequired()])
    submit = SubmitField(_l("Move the ID number to this person"))


class DisputeNoteForm(FlaskForm):
    note = TextAreaField(_l("Who disputes, and why"), validators=[DataRequired(), Length(max=1000)])
    submit = SubmitField(_l("Record the dispute"))


class UndoForm(FlaskForm):
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(), Length(max=1000)])
    in_person = BooleanField(_IN_PERSON, validators=[DataRequired()])
    submit = SubmitField(_l("Undo the claim"))


def _clerk():
    """The clerk's session, after the role and proofing checks (else 403 / a step-up)."""
    sess = sessions.current_session()
    user = sess.user
    if not accounts.is_authority_staff(user, CLERK):
        audit.record("clerk.access_denied", actor=f"user:{user.sub}", object=request.path[:300], outcome="failure")
        db.session.commit()
        raise NotStaff()
    proof = enterprise.proofing(sess, "TONGBAN_CLERK_IDENTITY_ACR")
    if not proof.ok:
        db.session.commit()
        back = request.full_path.rstrip("?") if request.method == "GET" else url_for(".home")
        abort(redirect(url_for("mfa.verify", acr="L3" if proof.factor else proof.level, next=back)))
    db.session.commit()  # end the read transaction (a session touch) before the real work
    return sess


def _by(sess) -> str:
    return f"user:{sess.user.sub}"


def _errors(form) -> str:
    return " ".join(str(e) for errs in form.errors.values() for e in errs) or _("The form expired; please try again.")


@bp.route("/")
@login_required
def home():
    _clerk()
    return _desk(RecoverForm())


def _desk(form, status: int = 200):
    return render_template("idp/clerk_identity.html", form=form, disputed=enterprise.claims(states=("disputed",)),
                           recent=enterprise.claims(limit=30), recoveries=identity.recent(),
                           masked=mask_name), status


@bp.route("/recover", methods=["POST"])
@login_required
def recover():
    sess = _clerk()
    form = RecoverForm()
    status = 400
    if form.validate_on_submit():
        try:
            done = identity.recover(form.id_number.data, name=form.name.data, password=form.password.data,
                                    phone=form.phone.data or None, reason=form.reason.data, by=_by(sess))
        except TongbanError as e:
            db.session.rollback()
            audit.record("identity.recovered", actor=_by(sess), object=f"id:{mask_number(form.id_number.data)}",
                         outcome="failure", detail={"reason": e.code})
            db.session.commit()
            flash(e.message, "error")
            status = e.status
        else:
            db.session.commit()
            flash(_("The ID number now belongs to %(name)s's new account; the other account is closed and its "
                    "sessions ended. The person can log in now.", name=mask_name(done.owner.name)), "success")
            return redirect(url_for(".home"), 303)
    else:
        flash(_errors(form), "error")
    form.password.data = form.confirm.data = ""
    return _desk(form, status)


def _claim_or_404(claim_id: int):
    try:
        return enterprise.get_claim(claim_id)
    except TongbanError:
        raise PageNotFound() from None


def _claim_page(row, status: int = 200, dispute_form=None, undo_form=None):
    return render_template("idp/clerk_claim.html", claim=row, dispute_form=dispute_form or DisputeNoteForm(),
                           undo_form=undo_form or UndoForm(), masked=mask_name,
                           admins=enterprise.admins(row.org), agents=enterprise.agents(row.org)), status


@bp.route("/claims/<int:claim_id>")
@login_required
def claim(claim_id: int):
    _clerk()
    return _claim_page(_claim_or_404(claim_id))


@bp.route("/claims/<int:claim_id>/dispute", methods=["POST"])
@login_required
def dispute(claim_id: int):
    sess = _clerk()
    row = _claim_or_404(claim_id)
    form = DisputeNoteForm()
    if not form.validate_on_submit():
        flash(_errors(form), "error")
        return _claim_page(row, 400, dispute_form=form)
    try:
        enterprise.dispute(claim_id, by=_by(sess), note=form.note.data)
    except TongbanError as e:
        db.session.rollback()
        flash(e.message, "error")
        return _claim_page(_claim_or_404(claim_id), e.status)
    db.session.commit()
    flash(_("The dispute is recorded."), "success")
    return redirect(url_for(".claim", claim_id=claim_id), 303)


@bp.route("/claims/<int:claim_id>/undo", methods=["POST"])
@login_required
def undo(claim_id: int):
    sess = _clerk()
    row = _claim_or_404(claim_id)
    form = UndoForm()
    if not form.validate_on_submit():
        flash(_errors(form), "error")
        return _claim_page(row, 400, undo_form=form)
    try:
        done = enterprise.undo_claim(claim_id, by=_by(sess), reason=form.reason.data)
    except TongbanError as e:
        db.session.rollback()
        flash(e.message, "error")
        return _claim_page(_claim_or_404(claim_id), e.status)
    db.session.commit()
    flash(_("The claim is undone: %(admins)d administrator(s) removed, %(agents)d authorisation(s) withdrawn, "
            "%(sessions)d session(s) ended.", admins=done.admins_removed, agents=done.agents_withdrawn,
            sessions=done.sessions_ended), "success")
    return redirect(url_for(".claim", claim_id=claim_id), 303)


# ---------------------------------------------------------------- CLI


identity_cli = AppGroup("identity", help="Identity matters settled in person (ID-number recovery).")


@identity_cli.command("recover")
@click.argument("id_number")
@click.option("--name", required=True, help="The owner's name, as on the identity card.")
@click.option("--phone", default=None, help="The owner's mobile phone.")
@click.option("--reason", required=True, help="What was checked in person.")
@click.option("--clerk", "clerk_id", required=True, help="ID number of the clerk who checked (audited).")
@click.option("--password-stdin", is_flag=True, help="Read the owner's password from standard input.")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def recover_cmd(id_number, name, phone, reason, clerk_id, password_stdin, as_json):
    """Move ID_NUMBER from the account holding it to its owner (a new account, L3)."""
    clerk = accounts.find_user_by_login(clerk_id)
    if clerk is None or len((clerk_id or "").strip()) != 18 or not accounts.is_authority_staff(clerk, CLERK):
        raise NotClerk("--clerk must be the ID number of a clerk of the operating authority")
    if not password_stdin:
        raise NoPassword("pass the owner's password on standard input with --password-stdin")
    password = read_password_stdin()
    done = identity.recover(id_number, name=name, password=password, phone=phone, reason=reason,
                            by=f"user:{clerk.sub}")
    emit({"sub": done.owner.sub, "closed": done.squatter.sub, "sessions_ended": done.sessions_ended,
          "roles_ended": done.roles_ended}, as_json,
         f"ID number moved to {done.owner.sub}; account {done.squatter.sub} closed")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.cli.add_command(identity_cli)
