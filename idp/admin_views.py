"""The administrators' console: the register of government systems (政务信息系统登记),
citizen accounts (unlock, end sessions) and the audit log.

Administrators (role ``admin``) of the operating authority may change things;
its auditors (role ``auditor``) may read the register and the audit log. The
work is done by the services (which audit it); these views only check, call and
commit.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import (
    BooleanField,
    DateField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from people import accounts, sessions
from people.auth import ADMIN, READERS, staff_only
from people.forms import ConfirmForm
from people.mfa import outbox
from people.models import User
from tongban import audit
from tongban.audit import AuditLog
from tongban.clock import utcnow
from tongban.errors import TongbanError
from tongban.extensions import db
from tongban.masking import mask_number

from . import clients as registry
from .models import Client, ClientUsage
from .scopes import RESTRICTED, SCOPES, describe

bp = Blueprint("admin", __name__, url_prefix="/admin")

AUDIT_PAGE_SIZE = 200
MAX_DORMANT_DAYS = 3650

GRANT_LABELS = {
    "authorization_code": _l("Authorization code: people log in through the system"),
    "refresh_token": _l("Refresh token: stay signed in"),
    "client_credentials": _l("Client credentials: system-to-system calls"),
    "urn:ietf:params:oauth:grant-type:token-exchange": _l(
        "Token exchange: call other systems on behalf of a citizen (targets below)"),
    "urn:openid:params:grant-type:ciba": _l("CIBA: a service window asks the citizen to confirm on their phone"),
}

# ---------------------------------------------------------------- access


def _error(code: int, message: str):
    return render_template("tongban/error.html", code=code, message=message), code


def _actor() -> str:
    return f"user:{g.admin_user.sub}"


@bp.context_processor
def _admin_context():
    return {"can_edit": g.get("admin_can_edit", False), "grant_labels": GRANT_LABELS,
            "describe_scope": describe, "restricted_scopes": RESTRICTED, "audit_detail": _short_detail}


# ---------------------------------------------------------------- forms


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class ClientForm(FlaskForm):
    """Every field of a register entry (name ... funding source) and its OAuth metadata."""

    name = StringField(_l("System name"), validators=[DataRequired(), Length(max=200)])
    department = StringField(_l("Department"), validators=[DataRequired(), Length(max=200)])
    function = TextAreaField(_l("Function"), validators=[Optional(), Length(max=2000)],
                             render_kw={"rows": 3})
    scope_of_use = TextAreaField(_l("Scope of use"), validators=[Optional(), Length(max=2000)],
                                 render_kw={"rows": 2})
    approver = StringField(_l("Approved by"), validators=[Optional(), Length(max=200)])
    approval_date = DateField(_l("Approval date"), validators=[Optional()])
    funding_source = StringField(_l("Funding source"), validators=[Optional(), Length(max=200)])
    contact = StringField(_l("Contact"), validators=[Optional(), Length(max=200)])
    redirect_uris = TextAreaField(_l("Redirect URIs (one per line)"), validators=[Optional()],
                                  render_kw={"rows": 3, "spellcheck": "false", "autocapitalize": "off"})
    post_logout_redirect_uris = TextAreaField(
        _l("Post-logout redirect URIs (one per line)"), validators=[Optional()],
        render_kw={"rows": 2, "spellcheck": "false", "autocapitalize": "off"})
    backchannel_logout_uri = StringField(_l("Back-channel logout URI"),
                                         validators=[Optional(), Length(max=500)],
                                         render_kw={"spellcheck": "false", "autocapitalize": "off"})
    frontchannel_logout_uri = StringField(_l("Front-channel logout URI"),
                                          validators=[Optional(), Length(max=500)],
                                          render_kw={"spellcheck": "false", "autocapitalize": "off"})
    grant_types = MultiCheckboxField(_l("Grant types"),
                                     choices=[(gt, gt) for gt in registry.GRANT_TYPES],
                                     default=["authorization_code", "refresh_token"])
    scopes = MultiCheckboxField(_l("Scopes"), default=["openid", "profile"])
    first_party = BooleanField(_l("First-party system (no consent screen)"))
    public_client = BooleanField(_l("Public client (no secret; PKCE required)"))
    id_token_alg = SelectField(_l("ID token algorithm"), choices=[(a, a) for a in registry.ID_TOKEN_ALGS],
                               default="RS256")
    introspection_allowed = BooleanField(_l("May introspect tokens"))
    exchange_targets = TextAreaField(_l("Token exchange targets (client IDs or resource URIs, one per line)"),
                                     validators=[Optional()],
                                     render_kw={"rows": 2, "spellcheck": "false", "autocapitalize": "off"})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # other packages register scopes at start-up: read the catalogue now, not at import
        self.scopes.choices = [(s, s) for s in SCOPES]

    def values(self, current_method: str | None = None) -> dict:
        """The keyword arguments of create_client / update_client."""
        if self.public_client.data:
            method = "none"
        elif current_method and current_method != "none":
            method = current_method  # keep client_secret_post when it was registered so
        else:
            method = "client_secret_basic"
        return {
            "name": (self.name.data or "").strip(),
            "department": (self.department.data or "").strip(),
            "function": (self.function.data or "").strip(),
            "scope_of_use": (self.scope_of_use.data or "").strip(),
            "approver": (self.approver.data or "").strip(),
            "approval_date": self.approval_date.data,
            "funding_source": (self.funding_source.data or "").strip(),
            "contact": (self.contact.data or "").strip(),
            "redirect_uris": _lines(self.redirect_uris.data),
            "post_logout_redirect_uris": _lines(self.post_logout_redirect_uris.data),
            "backchannel_logout_uri": (self.backchannel_logout_uri.data or "").strip() or None,
            "frontchannel_logout_uri": (self.frontchannel_logout_uri.data or "").strip() or None,
            "grant_types": list(self.grant_types.data or ()),
            "scopes": list(self.scopes.data or ()),
            "first_party": bool(self.first_party.data),
            "introspection_allowed": bool(self.introspection_allowed.data),
            "id_token_signed_response_alg": self.id_token_alg.data,
            "token_endpoint_auth_method": method,
            "exchange_targets": _lines(self.exchange_targets.data),
        }


def _lines(text: str | None) -> list[str]:
    return list(dict.fromkeys(line.strip() for line in (text or "").splitlines() if line.strip()))


def _form_data(row: Client) -> dict:
    return {
        "name": row.name, "department": row.department, "function": row.function,
        "scope_of_use": row.scope_of_use, "approver": row.approver, "approval_date": row.approval_date,
        "funding_source": row.funding_source, "contact": row.contact,
        "redirect_uris": "\n".join(row.redirect_uris or ()),
        "post_logout_redirect_uris": "\n".join(row.post_logout_redirect_uris or ()),
        "backchannel_logout_uri": row.backchannel_logout_uri or "",
        "frontchannel_logout_uri": row.frontchannel_logout_uri or "",
        "grant_types": list(row.grant_types or ()), "scopes": list(row.scopes or ()),
        "first_party": row.first_party, "public_client": row.is_public,
        "id_token_alg": row.id_token_signed_response_alg, "introspection_allowed": row.introspection_allowed,
        "exchange_targets": "\n".join(row.exchange_targets or ()),
    }


class UserSearchForm(FlaskForm):
    # posted, not in the query string: ID numbers stay out of URLs, access logs and history
    login = StringField(_l("ID number or phone"), validators=[DataRequired(), Length(max=32)],
                        render_kw={"autocomplete": "off", "autocapitalize": "characters"})


# ---------------------------------------------------------------- the register


def _dormant_days() -> int:
    days = request.args.get("dormant_days", type=int)
    if days is None or days < 1:
        return current_app.config["TONGBAN_DORMANT_DAYS"]
    return min(days, MAX_DORMANT_DAYS)


@bp.get("/")
@staff_only(READERS)
def index():
    return redirect(url_for("admin.clients"))


@bp.get("/clients")
@staff_only(READERS)
def clients():
    days = _dormant_days()
    only_dormant = request.args.get("dormant") == "1"
    q = request.args.get("q", "").strip()[:100]
    rows = registry.report(days)  # one aggregate pass over the usage table for all systems
    meta = {cid: (grants or [], scopes or [], method) for cid, grants, scopes, method in db.session.execute(
        select(Client.client_id, Client.grant_types, Client.scopes, Client.token_endpoint_auth_method))}
    summary = {"total": len(rows), "dormant": sum(r.dormant for r in rows),
               "disabled": sum(not r.enabled for r in rows)}
    if only_dormant:
        rows = [r for r in rows if r.dormant]
    if q:
        needle = q.casefold()
        rows = [r for r in rows if needle in f"{r.name}\n{r.department}\n{r.client_id}".casefold()]
    return render_template("admin/clients.html", rows=rows, meta=meta, days=days, only_dormant=only_dormant,
                           q=q, summary=summary, default_days=current_app.config["TONGBAN_DORMANT_DAYS"])


@bp.route("/clients/new", methods=["GET", "POST"])
@staff_only(ADMIN)
def client_new():
    form = ClientForm()
    if form.validate_on_submit():
        try:
            row, secret = registry.create_client(**form.values(), actor=_actor())
        except TongbanError as e:
            db.session.rollback()
            return render_template("admin/client_form.html", form=form, error=e.message, row=None), 400
        db.session.commit()
        return render_template("admin/client_secret.html", row=row, secret=secret, created=True)
    status = 400 if request.method == "POST" else 200
    return render_template("admin/client_form.html", form=form, row=None), status


def _row(client_id: str) -> Client | None:
    return db.session.execute(select(Client).where(Client.client_id == client_id)).scalar_one_or_none()


def _usage(row: Client, days: int) -> dict:
    """One system's usage (what report() says about it, without reading every system)."""
    registry.usage.flush()
    now = utcnow()
    last_used = db.session.execute(select(func.max(ClientUsage.last_used))
                                   .where(ClientUsage.client_id == row.client_id)).scalar()
    logins, tokens = db.session.execute(
        select(func.coalesce(func.sum(ClientUsage.logins), 0), func.coalesce(func.sum(ClientUsage.tokens), 0))
        .where(ClientUsage.client_id == row.client_id,
               ClientUsage.day >= (now - timedelta(days=30)).date())).one()
    return {"last_used": last_used, "logins_30d": int(logins), "tokens_30d": int(tokens),
            "dormant": (last_used or row.created_at) < now - timedelta(days=days)}


def _not_found():
    return _error(404, _("There is no registered system with this client ID."))


def _changes(row: Client, values: dict) -> dict:
    changed = {}
    for key, new in values.items():
        old = getattr(row, key)
        if isinstance(new, list):
            old = list(old or ())
        if key in ("backchannel_logout_uri", "frontchannel_logout_uri"):
            old = old or None
        if old != new:
            changed[key] = new
    return changed


@bp.route("/clients/<client_id>", methods=["GET", "POST"])
@staff_only(READERS)
def client_detail(client_id: str):
    row = _row(client_id)
    if row is None:
        return _not_found()
    form, error, status = None, None, 200
    if g.admin_can_edit:
        form = ClientForm(data=_form_data(row))
    if request.method == "POST":
        if form is None:
            return _error(403, _("Only administrators may change the register."))
        if form.validate_on_submit():
            was_public = row.is_public
            changes = _changes(row, form.values(row.token_endpoint_auth_method))
            if not changes:
                flash(_("Nothing was changed."), "info")
                return redirect(url_for("admin.client_detail", client_id=client_id))
            try:
                registry.update_client(client_id, actor=_actor(), **changes)
                # a public client that becomes confidential needs a secret: issue it now, shown once
                secret = registry.rotate_secret(client_id, actor=_actor()) if (
                    was_public and not row.is_public) else None
            except TongbanError as e:
                db.session.rollback()
                row = _row(client_id)
                error, status = e.message, 400
            else:
                db.session.commit()
                if secret:
                    return render_template("admin/client_secret.html", row=row, secret=secret, created=False)
                flash(_("The register entry was saved."), "success")
                return redirect(url_for("admin.client_detail", client_id=client_id))
        else:
            status = 400
    days = _dormant_days()
    return render_template("admin/client_detail.html", row=row, form=form, error=error, days=days,
                           usage=_usage(row, days), confirm=ConfirmForm()), status


@bp.route("/clients/<client_id>/rotate", methods=["GET", "POST"])
@staff_only(ADMIN)
def client_rotate(client_id: str):
    row = _row(client_id)
    if row is None:
        return _not_found()
    form = ConfirmForm()
    if request.method == "POST":
        if not form.validate_on_submit():
            return _error(400, _("The form expired; please try again."))
        try:
            secret = registry.rotate_secret(client_id, actor=_actor())
        except TongbanError as e:
            db.session.rollback()
            return _error(400, e.message)
        db.session.commit()
        return render_template("admin/client_secret.html", row=row, secret=secret, created=False)
    return render_template("admin/client_confirm.html", row=row, form=form, action="rotate")


@bp.route("/clients/<client_id>/disable", methods=["GET", "POST"])
@staff_only(ADMIN)
def client_disable(client_id: str):
    row = _row(client_id)
    if row is None:
        return _not_found()
    form = ConfirmForm()
    if request.method == "POST":
        if not form.validate_on_submit():
            return _error(400, _("The form expired; please try again."))
        registry.set_enabled(client_id, False, actor=_actor())
        db.session.commit()
        flash(_("The system is disabled: its log-ins and tokens are refused from now on."), "success")
        return redirect(url_for("admin.client_detail", client_id=client_id))
    return render_template("admin/client_confirm.html", row=row, form=form, action="disable")


@bp.post("/clients/<client_id>/enable")
@staff_only(ADMIN)
def client_enable(client_id: str):
    if _row(client_id) is None:
        return _not_found()
    if not ConfirmForm().validate_on_submit():
        return _error(400, _("The form expired; please try again."))
    registry.set_enabled(client_id, True, actor=_actor())
    db.session.commit()
    flash(_("The system is enabled again."), "success")
    return redirect(url_for("admin.client_detail", client_id=client_id))


# ---------------------------------------------------------------- citizen accounts


@bp.route("/users", methods=["GET", "POST"])
@staff_only(ADMIN)
def users():
    form = UserSearchForm()
    if form.validate_on_submit():
        user = accounts.find_user_by_login(form.login.data)
        if user is not None:
            return redirect(url_for("admin.user_detail", sub=user.sub))
        audit.record("admin.user_lookup", actor=_actor(), outcome="failure",
                     detail={"query": mask_number(form.login.data.strip()[:32])})
        db.session.commit()
        return render_template("admin/users.html", form=form,
                               error=_("No account has this ID number or phone number.")), 404
    status = 400 if request.method == "POST" else 200
    return render_template("admin/users.html", form=form), status


def _user(sub: str) -> User | None:
    return accounts.get_user_by_sub(sub)


@bp.get("/users/<sub>")
@staff_only(ADMIN)
def user_detail(sub: str):
    user = _user(sub)
    if user is None:
        return _error(404, _("No such account."))
    # looking at a citizen's account is itself recorded
    audit.record("admin.user_viewed", actor=_actor(), object=f"user:{user.sub}")
    db.session.commit()
    locked = accounts.lock_status(user)  # account-wide or for one address, or None
    return render_template(
        "admin/user_detail.html", account=user, masked_id=mask_number(user.id_number),
        masked_phone=mask_number(user.phone) if user.phone else "", locked=locked,
        live_sessions=sessions.active_sessions(user), logins=accounts.recent_logins(user, 10),
        confirm=ConfirmForm())


@bp.post("/users/<sub>/unlock")
@staff_only(ADMIN)
def user_unlock(sub: str):
    user = _user(sub)
    if user is None:
        return _error(404, _("No such account."))
    if not ConfirmForm().validate_on_submit():
        return _error(400, _("The form expired; please try again."))
    accounts.unlock(user, _actor())  # audited there (admin.account_unlocked)
    db.session.commit()
    flash(_("The account is unlocked."), "success")
    return redirect(url_for("admin.user_detail", sub=sub))


@bp.post("/users/<sub>/end-sessions")
@staff_only(ADMIN)
def user_end_sessions(sub: str):
    user = _user(sub)
    if user is None:
        return _error(404, _("No such account."))
    if not ConfirmForm().validate_on_submit():
        return _error(400, _("The form expired; please try again."))
    count = sessions.end_all_for_user(user, "ended_by_admin", _actor())
    audit.record("admin.sessions_ended", actor=_actor(), object=f"user:{user.sub}", detail={"count": count})
    db.session.commit()
    flash(_("%(n)d sessions of this account were ended.", n=count), "success")
    return redirect(url_for("admin.user_detail", sub=sub))


@bp.get("/sms")
@staff_only(ADMIN)
def sms_outbox():
    rows = outbox()
    audit.record_later("admin.sms_read", actor=_actor(), object="sms_outbox", detail={"rows": len(rows)})
    return render_template("admin/sms_outbox.html", rows=rows, mask=mask_number)


# ---------------------------------------------------------------- the audit log

AUDIT_PREFIXES = ("client.", "admin.", "login.", "account.", "session.", "consent.", "code.", "token.")


def _audit_rows(prefix: str) -> list[AuditLog]:
    stmt = select(AuditLog).order_by(AuditLog.id.desc()).limit(AUDIT_PAGE_SIZE)  # chained or not yet
    if prefix:
        stmt = stmt.where(AuditLog.action.startswith(prefix, autoescape=True))
    return list(db.session.execute(stmt).scalars())


@bp.route("/audit", methods=["GET", "POST"])
@staff_only(READERS)
def audit_log():
    prefix = request.values.get("action", "").strip()[:80]
    verdict = None
    if request.method == "POST":
        if not ConfirmForm().validate_on_submit():
            return _error(400, _("The form expired; please try again."))
        whole, bad_id, count, reason = audit.verify()
        verdict = {"whole": whole, "bad_id": bad_id, "count": count, "reason": reason}
        audit.record("admin.audit_verified", actor=_actor(), outcome="success" if whole else "failure",
                     detail={"checked": count, "first_bad": bad_id})
        db.session.commit()
    audit.record_later("admin.audit_read", actor=_actor(), object="audit_log", detail={"filter": prefix})
    return render_template("admin/audit.html", rows=_audit_rows(prefix), prefix=prefix, verdict=verdict,
                           prefixes=AUDIT_PREFIXES, limit=AUDIT_PAGE_SIZE, confirm=ConfirmForm())


def _short_detail(detail: str) -> str:
    return "" if detail in ("", "{}") else (detail if len(detail) <= 160 else detail[:157] + "...")


# ---------------------------------------------------------------- the outbox (back-channel logout deliveries)


@bp.route("/outbox", methods=["GET", "POST"])
@staff_only(ADMIN)
def outbox_view():
    from tongban import outbox

    if request.method == "POST":
        if not ConfirmForm().validate_on_submit():
            return _error(400, _("The form expired; please try again."))
        if outbox.retry_now(request.form.get("item", type=int) or 0):
            audit.record("admin.outbox_retry", actor=_actor(), object=f"outbox:{request.form.get('item')}")
            flash(_("The delivery will be tried again now."), "success")
        db.session.commit()
        return redirect(url_for("admin.outbox_view", status=request.args.get("status") or None))
    status = request.args.get("status", "")
    if status not in ("", outbox.PENDING, outbox.SENDING, outbox.DELIVERED, outbox.FAILED):
        status = ""
    return render_template("admin/outbox.html", rows=outbox.recent(AUDIT_PAGE_SIZE, status or None),
                           counts=outbox.counts(), status=status, confirm=ConfirmForm(),
                           statuses=(outbox.PENDING, outbox.SENDING, outbox.DELIVERED, outbox.FAILED))
