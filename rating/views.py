"""HTTP for people: rating pages (one-time link, the citizen's own list), the department's
bad-rating cases, the supervision dashboard and the public page. Thin: services do the work."""

from __future__ import annotations

import json

from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _

from people.accounts import is_authority_staff
from people.auth import READERS, login_required, staff_only
from people.forms import ConfirmForm
from people.sessions import current_user
from tongban import audit
from tongban.clock import utcnow
from tongban.errors import TongbanError
from tongban.extensions import db
from tongban.masking import mask_text

from . import services
from .errors import AlreadyRated, InvalidRating, NotYourEvent, RatingClosed
from .models import RatingEvent

bp = Blueprint("rating", __name__)
admin_bp = Blueprint("rating_admin", __name__, url_prefix="/admin/ratings")


def qr_data_uri(text: str) -> str:
    """The SVG QR code as a data: URI (the one QR helper; no inline script needed)."""
    from tongban.qr import qr_data_uri as make_uri

    return make_uri(text)


def _month_arg() -> str:
    raw = (request.args.get("month") or "").strip()
    if not raw:
        return services.month_of(utcnow())
    return services.check_month(raw[:7]) or services.month_of(utcnow())


def _labels() -> dict:
    return {"levels": services.LEVELS, "channels": services.CHANNELS, "reasons": services.REASONS,
            "states": services.CASE_STATES, "answers": services.CALLBACK_ANSWERS}


# ---------------------------------------------------------------- rating


def _form_values() -> tuple:
    return request.form.get("level"), request.form.getlist("reason"), request.form.get("comment", "")


def _rate_page(event: RatingEvent, *, link: str | None, action: str):
    """GET: the form; POST: rate, then a thank-you page (or the form again with the error)."""
    user = current_user()
    if user is not None and not services.belongs(event, user) and (link is None or services.has_citizen(event)):
        raise NotYourEvent(_("This service was not provided to you."))
    if event.rating is not None or (link is not None and event.link_used_at is not None):
        raise AlreadyRated(_("This service has been rated already. Thank you."))
    if utcnow() > event.rate_until:
        raise RatingClosed(_("The rating period for this service is over."))
    form, error, values = ConfirmForm(), None, {"level": None, "reasons": [], "comment": ""}
    if request.method == "POST":
        if not form.validate_on_submit():
            abort(400)
        level, reasons, comment = _form_values()
        values = {"level": level, "reasons": reasons, "comment": comment[:services.MAX_COMMENT]}
        try:
            row = services.rate(event, level=level, reasons=reasons, comment=comment, rater=user, link=link)
            db.session.commit()
        except InvalidRating as e:
            db.session.rollback()
            error = e.message
        else:
            return render_template("rating/thanks.html", bad=row.level <= services.BAD)
    return render_template("rating/rate.html", event=event, form=form, error=error, values=values,
                           action=action, bad_reasons=services.BAD_REASONS, good_reasons=services.GOOD_REASONS,
                           **_labels()), 400 if error else 200


@bp.route("/r/<link>", methods=["GET", "POST"])
def rate_by_link(link: str):
    event = services.event_by_link(link[:100])
    return _rate_page(event, link=link, action=url_for("rating.rate_by_link", link=link))


@bp.route("/r/<link>/qr")
def window_qr(link: str):
    """What the window's screen shows: the QR code of the rating link, large."""
    event = services.event_by_link(link[:100])
    url = services.rating_url(link)
    return render_template("rating/window_qr.html", event=event, url=url, qr=qr_data_uri(url),
                           done=event.rating is not None, **_labels())


@bp.route("/ratings/mine")
@login_required
def mine():
    user = current_user()
    events = services.events_of(user)
    return render_template("rating/mine.html", events=events, now=utcnow(), **_labels())


@bp.route("/ratings/events/<event_id>", methods=["GET", "POST"])
@login_required
def rate_own(event_id: str):
    event = services.own_event(current_user(), event_id[:64])
    return _rate_page(event, link=None, action=url_for("rating.rate_own", event_id=event.public_id))


# ---------------------------------------------------------------- public page


@bp.route("/ratings")
def public():
    month = _month_arg()
    return render_template("rating/public.html", month=month, totals=services.figures(None, month)[0],
                           departments=services.figures("department", month),
                           by_channel=services.figures("channel", month), cases=services.public_cases(month),
                           months=services.recent_months(), **_labels())


# ---------------------------------------------------------------- the department's cases


def _case_reader(user) -> bool:
    return is_authority_staff(user, READERS)


@bp.route("/ratings/cases")
@login_required
def cases():
    user = current_user()
    if not services.handled_departments(user) and not _case_reader(user):
        abort(403)
    state = request.args.get("state", "active")
    rows = services.cases_for_reader(state) if _case_reader(user) else services.cases_for(user, state)
    return render_template("rating/cases.html", rows=rows, state=state, now=utcnow(),
                           overdue=services.overdue, **_labels())


@bp.route("/ratings/cases/<int:case_id>", methods=["GET", "POST"])
@login_required
def case_detail(case_id: int):
    user = current_user()
    c = services.get_case(case_id)
    can_handle = services.may_handle(user, c)
    if not can_handle and not _case_reader(user):
        abort(403)
    if request.method == "POST":
        if not ConfirmForm().validate_on_submit():
            abort(400)
        step, note = request.form.get("step", ""), request.form.get("note", "")
        try:
            if step in ("uphold", "reject"):
                services.decide_appeal(c, user, uphold=step == "uphold", note=note)
            else:
                services.case_step(c, step, user, note=note, answer=request.form.get("answer"))
            db.session.commit()
        except TongbanError as e:
            db.session.rollback()
            flash(e.message, "error")
            return redirect(url_for("rating.case_detail", case_id=c.id)), 303
        flash(_("Saved."), "success")
        return redirect(url_for("rating.case_detail", case_id=c.id)), 303
    nxt = [s for s, (frm, _to) in services.STEPS.items() if c.state in frm] if can_handle else []
    if c.appeal_decision and "appeal" in nxt:
        nxt.remove("appeal")
    return render_template("rating/case.html", c=c, r=c.rating, ev=c.rating.event, steps=nxt, form=ConfirmForm(),
                           can_decide=c.state == "appealed" and services.is_supervisor(user)
                           and c.appealed_by != f"user:{user.sub}",
                           overdue=services.overdue(c), **_labels())


# ---------------------------------------------------------------- supervision


@admin_bp.get("")
@staff_only(READERS)
def dashboard():
    month = _month_arg()
    by = request.args.get("by", "department")
    if by not in services.GROUPS:
        by = "department"
    return render_template("rating/dashboard.html", month=month, by=by, can_edit=g.admin_can_edit,
                           totals=services.figures(None, month)[0], rows=services.figures(by, month),
                           monthly=services.figures("month", None), months=services.recent_months(),
                           late=services.cases_for_reader("overdue"), overdue=services.overdue, **_labels())


@admin_bp.get("/export.json")
@staff_only(READERS)
def export_json():
    month = services.check_month(request.args.get("month")) or _month_arg()
    rows = services.export(month)
    audit.record("rating.exported", actor=f"user:{g.admin_user.sub}", object=f"month:{month}",
                 detail={"count": len(rows)})
    db.session.commit()
    body = json.dumps({"month": month, "standard": "GB/T 39735-2020", "records": rows}, ensure_ascii=False,
                      indent=1)
    resp = Response(body, mimetype="application/json")
    resp.headers["Content-Disposition"] = f'attachment; filename="ratings-{month}.json"'
    return resp


def _beijing(at) -> str:
    """Stored naive UTC shown in Beijing time."""
    return (at + services.CST).strftime("%Y-%m-%d %H:%M") if at else ""


def init_app(app) -> None:
    app.add_template_filter(_beijing, "beijing")
    app.add_template_filter(mask_text, "mask_text")
    app.register_blueprint(bp)
    app.register_blueprint(admin_bp)
