"""HTTP for enterprises: claim, administrators, agents, and the "act as" chooser of /oauth/authorize.

Thin: the work is in ``people.enterprise``. The CLI group ``enterprises`` lives here too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import click
from flask import Blueprint, Flask, current_app, flash, redirect, render_template, request, url_for
from flask.cli import AppGroup
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import (
    DateTimeLocalField,
    HiddenField,
    SelectMultipleField,
    StringField,
    SubmitField,
    TextAreaField,
    widgets,
)
from wtforms.validators import DataRequired, Length, Optional

from people import enterprise, sessions
from people.auth import login_required
from people.forms import ConfirmForm
from tongban.cli import command_errors
from tongban.clock import utcnow
from tongban.errors import Forbidden, TongbanError
from tongban.extensions import db
from tongban.i18n import safe_next
from tongban.masking import mask_name, mask_number

from .errors import FormExpired, NoEnterpriseRole, NotApplicable, PageNotFound
from .models import Client
from .scopes import register_scope
from .server import server

bp = Blueprint("enterprise", __name__, url_prefix="/enterprise")

_LOCAL_FORMAT = "%Y-%m-%dT%H:%M"


# ---------------------------------------------------------------- forms


class ClaimForm(FlaskForm):
    uscc = StringField(_l("Unified social credit code (USCC)"), validators=[DataRequired(), Length(min=18, max=18)],
                       render_kw={"autocapitalize": "characters", "autocomplete": "off"})
    submit = SubmitField(_l("Claim this enterprise"))


class DisputeForm(FlaskForm):
    uscc = StringField(_l("Unified social credit code (USCC)"), validators=[DataRequired(), Length(min=18, max=18)],
                       render_kw={"autocapitalize": "characters", "autocomplete": "off"})
    code = StringField(_l("Code from the text message"), validators=[DataRequired(), Length(max=20)],
                       render_kw={"autocapitalize": "characters", "autocomplete": "off"})
    note = TextAreaField(_l("What happened (optional)"), validators=[Optional(), Length(max=1000)])
    submit = SubmitField(_l("Dispute the claim"))


class AdminForm(FlaskForm):
    id_number = StringField(_l("ID number"), validators=[DataRequired(), Length(min=18, max=18)],
                            render_kw={"autocapitalize": "characters", "autocomplete": "off"})
    submit = SubmitField(_l("Appoint administrator"))


class AgentForm(FlaskForm):
    id_number = StringField(_l("Agent's ID number"), validators=[DataRequired(), Length(min=18, max=18)],
                            render_kw={"autocapitalize": "characters", "autocomplete": "off"})
    systems = SelectMultipleField(_l("Systems"), choices=[], validate_choice=True,
                                  option_widget=widgets.CheckboxInput(), widget=widgets.ListWidget(prefix_label=False))
    valid_from = DateTimeLocalField(_l("From"), format=_LOCAL_FORMAT, validators=[DataRequired()])
    valid_until = DateTimeLocalField(_l("Until"), format=_LOCAL_FORMAT, validators=[DataRequired()])
    submit = SubmitField(_l("Authorise agent"))


class ActAsForm(FlaskForm):
    """The chooser: one submit button per choice (``name="choice"``)."""

    next = HiddenField()
    client_id = HiddenField()


def _tz() -> ZoneInfo:
    return ZoneInfo(current_app.config.get("BABEL_DEFAULT_TIMEZONE") or "Asia/Shanghai")


def _to_utc(local: datetime) -> datetime:
    return local.replace(tzinfo=_tz()).astimezone(UTC).replace(tzinfo=None)


def _to_local(utc: datetime) -> datetime:
    return utc.replace(tzinfo=UTC).astimezone(_tz()).replace(tzinfo=None, second=0, microsecond=0)


def _system_choices() -> list[tuple[str, str]]:
    rows = db.session.execute(select(Client).where(Client.enabled.is_(True)).order_by(Client.name)).scalars()
    return [(c.client_id, f"{c.name} ({c.department})") for c in rows]


# ---------------------------------------------------------------- pages


def _step_up_url(proof: enterprise.Proofing) -> str:
    acr = "L3" if proof.factor else proof.level
    return url_for("mfa.verify", acr=acr, next=url_for(".home") + "#claim")


@bp.route("/")
@login_required
def home():
    sess = sessions.current_session()
    user = sess.user
    now = utcnow()
    mine = [a for a in enterprise.my_authorisations(user) if a.state(now) in ("active", "pending")]
    proof = enterprise.proofing(sess)
    db.session.commit()  # the session's level may have followed the account's
    return render_template("idp/enterprise_home.html", managed=enterprise.managed(user), mine=mine,
                           form=ClaimForm(), now=now, systems=dict(_system_choices()), proof=proof,
                           step_up_url=_step_up_url(proof))


@bp.route("/claim", methods=["POST"])
@login_required
def claim():
    sess = sessions.current_session()
    user = sess.user
    form = ClaimForm()
    if not form.validate_on_submit():
        flash(_("Enter the 18-character USCC."), "error")
        return redirect(url_for(".home"), 303)
    try:
        org = enterprise.claim(user, form.uscc.data, sess)
    except Forbidden as e:
        db.session.commit()  # keep the audited refusal
        flash(e.message, "error")
        return redirect(url_for(".home") + "#claim", 303)
    except TongbanError as e:
        db.session.rollback()
        flash(e.message, "error")
        return redirect(url_for(".home"), 303)
    db.session.commit()
    flash(_("You are now the legal representative of %(name)s.", name=org.name), "success")
    return redirect(url_for(".manage", uscc=org.uscc), 303)


@bp.route("/dispute", methods=["GET", "POST"])
def dispute():
    """Public: the enterprise disputes a claim with the code the register's contact phone received."""
    form = DisputeForm()
    if request.method == "GET":
        form.uscc.data = form.uscc.data or request.args.get("uscc", "")[:18]
        return render_template("idp/enterprise_dispute.html", form=form, done=False)
    if not form.validate_on_submit():
        return render_template("idp/enterprise_dispute.html", form=form, done=False), 400
    try:
        enterprise.dispute_with_code(form.uscc.data, form.code.data, form.note.data or "",
                                     source=request.remote_addr or "")
    except TongbanError as e:
        db.session.commit()  # the refusal is audited, the try counted
        flash(e.message, "error")
        return render_template("idp/enterprise_dispute.html", form=form, done=False), e.status
    db.session.commit()
    return render_template("idp/enterprise_dispute.html", form=form, done=True)


def _managed_org(uscc: str):
    user = sessions.current_user()
    try:
        org = enterprise.get_enterprise(uscc)
    except TongbanError:
        raise PageNotFound() from None
    role = enterprise.role_in(user, org)
    if role is None:
        raise NoEnterpriseRole()
    return user, org, role


def _agent_form() -> AgentForm:
    form = AgentForm()
    form.systems.choices = _system_choices()
    if request.method == "GET":
        start = _to_local(utcnow())
        form.valid_from.data = start
        form.valid_until.data = start + timedelta(days=30)
    return form


@bp.route("/<uscc>")
@login_required
def manage(uscc: str):
    user, org, role = _managed_org(uscc)
    now = utcnow()
    proof = enterprise.proofing(sessions.current_session())
    db.session.commit()
    step_up = None if proof.ok else url_for("mfa.verify", acr="L3", next=url_for(".manage", uscc=org.uscc))
    return render_template("idp/enterprise_manage.html", org=org, role=role, user=user, step_up=step_up,
                           admins=enterprise.admins(org), agents=enterprise.agents(org), now=now,
                           max_admins=enterprise.MAX_ADMINS, admin_form=AdminForm(), agent_form=_agent_form(),
                           confirm=ConfirmForm(), systems=dict(_system_choices()), masked=mask_number,
                           local=_to_local)


def _done(uscc: str, fn, success: str):
    try:
        fn()
    except enterprise.ProofingRequired as e:
        db.session.commit()  # keep the audited refusal
        flash(e.message, "error")
    except TongbanError as e:
        db.session.rollback()
        flash(e.message, "error")
    else:
        db.session.commit()
        flash(success, "success")
    return redirect(url_for(".manage", uscc=uscc), 303)


def _checked(form) -> None:
    if not form.validate_on_submit():
        errors = [e for errs in form.errors.values() for e in errs]
        flash(" ".join(str(e) for e in errors) or _("The form expired; please try again."), "error")
        raise _Invalid


class _Invalid(Exception):
    pass


@bp.route("/<uscc>/admins", methods=["POST"])
@login_required
def appoint_admin(uscc: str):
    user, org, _role = _managed_org(uscc)
    form = AdminForm()
    try:
        _checked(form)
    except _Invalid:
        return redirect(url_for(".manage", uscc=org.uscc), 303)
    return _done(org.uscc, lambda: enterprise.appoint_admin(user, org, form.id_number.data,
                                                            sessions.current_session()),
                 _("Administrator appointed."))


@bp.route("/<uscc>/admins/<int:admin_id>/remove", methods=["POST"])
@login_required
def remove_admin(uscc: str, admin_id: int):
    user, org, _role = _managed_org(uscc)
    if not ConfirmForm().validate_on_submit():
        raise FormExpired()
    return _done(org.uscc, lambda: enterprise.remove_admin(user, org, admin_id), _("Administrator removed."))


@bp.route("/<uscc>/agents", methods=["POST"])
@login_required
def authorise_agent(uscc: str):
    user, org, _role = _managed_org(uscc)
    form = _agent_form()
    try:
        _checked(form)
    except _Invalid:
        return redirect(url_for(".manage", uscc=org.uscc), 303)
    return _done(org.uscc, lambda: enterprise.authorise_agent(
        user, org, form.id_number.data, form.systems.data, _to_utc(form.valid_from.data),
        _to_utc(form.valid_until.data), sessions.current_session()), _("Agent authorised."))


@bp.route("/<uscc>/agents/<int:authorisation_id>/withdraw", methods=["POST"])
@login_required
def withdraw_agent(uscc: str, authorisation_id: int):
    user, org, _role = _managed_org(uscc)
    if not ConfirmForm().validate_on_submit():
        raise FormExpired()
    return _done(org.uscc, lambda: enterprise.withdraw_agent(user, org, authorisation_id),
                 _("Authorisation withdrawn; the agent's sessions for this enterprise have ended."))


# ---------------------------------------------------------------- "act as" in /oauth/authorize


def _authorize_url_without_select() -> str:
    from flask import g

    args = g.get("authorize_args") or request.args  # as sent (a PAR request_uri, not its parameters)
    params = [(k, v) for k, v in args.items(multi=True) if k != "prompt"]
    prompts = [p for p in args.get("prompt", "").split() if p != "select_account"]
    if prompts:
        params.append(("prompt", " ".join(prompts)))
    return url_for("idp.authorize") + "?" + urlencode(params)


def acting_step(sess, client, scopes: list[str], prompts: set[str], redirect_uri: str, state: str | None):
    """The chooser, when the system asked for ``enterprise`` and the person may act for one here.

    Returns a response to send instead of going on, or None to go on (to consent / the code).
    The choice is remembered for this session at this system; ``prompt=select_account`` asks again.
    """
    if enterprise.SCOPE not in scopes:
        return None
    row = enterprise.selection(sess.sid, client.client_id)
    if row is not None and row.org_id is not None:
        try:
            enterprise.acting_claims(sess.sid, client.client_id, commit=True)
        except enterprise.AuthorityEnded:
            return redirect(request.full_path)  # the session just ended: log in again
    if row is not None and ("select_account" not in prompts or request.method == "POST"):
        return None
    caps = enterprise.capacities(sess.user, client.client_id)
    if not caps:
        return None
    if "none" in prompts:
        from authlib.oidc.core.errors import AccountSelectionRequiredError

        return server.handle_error_response(None, AccountSelectionRequiredError(redirect_uri=redirect_uri,
                                                                                 state=state))
    form = ActAsForm()
    form.next.data = _authorize_url_without_select()
    form.client_id.data = client.client_id
    current = None
    if row is not None:
        current = "self" if row.org_id is None else (
            f"agent:{row.agent_id}" if row.agent_id else f"{row.role}:{row.org_id}")
    return render_template("idp/enterprise_choose.html", form=form, client=client, user=sess.user,
                           caps=caps, current=current)


@bp.route("/act", methods=["POST"])
@login_required
def act():
    sess = sessions.current_session()
    form = ActAsForm()
    if not form.validate_on_submit():
        raise FormExpired()
    target = safe_next(form.next.data, "")
    if not target.startswith(url_for("idp.authorize") + "?"):
        raise NotApplicable()
    choice = request.form.get("choice") or "self"
    try:
        enterprise.choose(sess, form.client_id.data or "", choice)
    except TongbanError:
        db.session.rollback()
        raise
    db.session.commit()
    return redirect(target, 303)


# ---------------------------------------------------------------- CLI


enterprises_cli = AppGroup("enterprises", help="Enterprise (legal person) accounts.")


@enterprises_cli.command("expire")
@command_errors
def expire_cmd():
    """End the sessions of agent authorisations that expired or were withdrawn (run it every minute)."""
    n = enterprise.expire_due()
    db.session.commit()
    click.echo(f"{n} authorisation(s) ended")


@enterprises_cli.command("register-add")
@click.argument("uscc")
@click.argument("name")
@click.argument("legal_rep_id_number")
@click.argument("legal_rep_name")
@click.option("--contact-phone", default=None, help="The enterprise's contact mobile (told of every claim).")
@command_errors
def register_add_cmd(uscc, name, legal_rep_id_number, legal_rep_name, contact_phone):
    """Add an entry to the local legal person register (the shipped LegalPersonRegister)."""
    enterprise.add_register_record(uscc, name, legal_rep_id_number, legal_rep_name, contact_phone)
    db.session.commit()
    click.echo(f"registered {uscc}")


def _claim_json(row) -> dict:
    return {"id": row.id, "uscc": row.org.uscc, "org": row.org.name, "claimant": row.user.sub,
            "claimant_name": mask_name(row.user.name), "claimed_at": row.claimed_at.isoformat(timespec="seconds"),
            "acr": row.acr, "amr": row.amr, "notified": row.notified_phone, "state": row.state,
            "disputed_at": row.disputed_at.isoformat(timespec="seconds") if row.disputed_at else None,
            "undone_at": row.undone_at.isoformat(timespec="seconds") if row.undone_at else None}


@enterprises_cli.command("claims")
@click.option("--uscc", default=None, help="Only this enterprise.")
@click.option("--disputed", is_flag=True, help="Only disputed claims.")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def claims_cmd(uscc, disputed, as_json):
    """List claims (newest first)."""
    org = enterprise.get_enterprise(uscc) if uscc else None
    rows = enterprise.claims(org, ("disputed",) if disputed else None)
    if as_json:
        click.echo(json.dumps([_claim_json(r) for r in rows], ensure_ascii=False))
        return
    for r in rows:
        click.echo(f"{r.id}\t{r.org.uscc}\t{r.state}\t{r.claimed_at:%Y-%m-%d %H:%M}\t{mask_name(r.user.name)}"
                   f"\t{r.user.sub}")


@enterprises_cli.command("dispute")
@click.argument("claim_id", type=int)
@click.option("--note", required=True, help="Who disputes, and why.")
@command_errors
def dispute_cmd(claim_id, note):
    """Record a dispute brought in person (the claim stays until it is undone)."""
    enterprise.dispute(claim_id, by="admin", note=note)
    click.echo(f"claim {claim_id} disputed")


@enterprises_cli.command("undo-claim")
@click.argument("claim_id", type=int)
@click.option("--reason", required=True, help="What was checked in person.")
@command_errors
def undo_claim_cmd(claim_id, reason):
    """Undo a claim after checking in person: legal representative, administrators and agents go."""
    done = enterprise.undo_claim(claim_id, by="admin", reason=reason)
    click.echo(f"claim {claim_id} undone: {done.admins_removed} administrator(s) removed, "
               f"{done.agents_withdrawn} authorisation(s) withdrawn, {done.sessions_ended} session(s) ended")


def init_app(app: Flask) -> None:
    register_scope(enterprise.SCOPE, _l("Which enterprise you act for, and your role in it"))
    app.register_blueprint(bp)
    app.cli.add_command(enterprises_cli)
