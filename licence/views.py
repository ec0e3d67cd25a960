"""HTTP for people: the QR landing page /v/<code>, the offline verifier, the wallet, the clerk console."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from markupsafe import Markup, escape
from sqlalchemy import select

from people.auth import login_required
from people.forms import ConfirmForm
from people.sessions import current_user
from rating.hooks import licence_issued
from tongban import audit, fastpath, hotcache
from tongban.errors import TongbanError
from tongban.extensions import db
from tongban.masking import mask_name, mask_number
from tongban.qr import qr_data_uri
from tongban.security import cacheable

from . import checks, display, offline, services
from .errors import LicenceNotFound, LicenceNotValid, NotDelegated
from .models import Licence

bp = Blueprint("licence", __name__)
_JSON = "application/json"
_UNKNOWN = json.dumps({"valid": False, "status": "unknown", "licence": None})


def _wants_json() -> bool:
    accept = request.headers.get("Accept", "")
    if _JSON not in accept:
        return False
    best = request.accept_mimetypes.best_match(["text/html", _JSON])
    return best == _JSON


# ---------------------------------------------------------------- the QR landing page (hot path)


@bp.route("/v/<code>")
def verify_code(code: str):
    row = services.lookup_code(code)
    if _wants_json():
        if row is None:
            return Response(_UNKNOWN, 404, mimetype=_JSON)
        return Response(json.dumps(services.public_view(row), ensure_ascii=False), mimetype=_JSON)
    if row is None:
        return render_template("licence/verify_result.html", view=None), 404
    return render_template("licence/verify_result.html", view=display.scan_view(row))


# ---------------------------------------------------------------- offline verification


@bp.route("/licences/verifier")
def verifier_page():
    return render_template("licence/verifier.html")


@bp.route("/api/v1/licences/offline/keys")
def offline_keys():
    cacheable(300)
    return Response(offline.verifier_keys_json(), mimetype="application/jwk-set+json")


@bp.route("/api/v1/licences/status-list")
def status_list():
    cacheable(offline.STATUS_LIST_TTL)
    return Response(offline.status_list_jwt(), mimetype="application/statuslist+jwt")


# ---------------------------------------------------------------- wallet


@bp.route("/wallet")
@login_required
def wallet():
    user = current_user()
    holders = services.holder_ids_for(user)
    rows = services.licences_of(holders)
    return render_template("licence/wallet.html", user=user, licences=rows, status=services.public_status,
                           masked=mask_number, wallet_state=display.wallet_state,
                           fmt_date=display.fmt_date)


def _own(identifier: str) -> Licence:
    try:
        return services.licence_for_user(current_user(), identifier)
    except LicenceNotFound:
        abort(404)


def _wallet_code_seconds() -> int:
    return max(60, min(int(current_app.config.get("TONGBAN_WALLET_CODE_SECONDS", 300)), offline.TOKEN_LIFETIME))


def _wallet_code(lic: Licence) -> dict:
    """The offline code the wallet shows: short-lived, renewed by the page before it expires
    (static/js/wallet-code.js), so a screenshot or photo of it soon stops verifying."""
    token = offline.make_token(lic, lifetime=_wallet_code_seconds())
    return {"token": token, "qr": qr_data_uri(token), "expires_at": offline.expires_at(token)}


@bp.route("/wallet/<identifier>")
@login_required
def wallet_licence(identifier: str):
    lic = _own(identifier)
    state = display.wallet_state(lic)
    # a licence that is not valid is not offered for showing or downloading: its QR codes and
    # sealed files would only mislead whoever is shown them
    code = _wallet_code(lic) if state["valid"] else None
    current = display.current_version(lic.superseded_by) if lic.status == "superseded" else None
    return render_template(
        "licence/wallet_licence.html", lic=lic, status=services.public_status(lic.status, lic.valid_until),
        state=state, current=current,
        online_qr=qr_data_uri(services.verify_url(lic.verify_code)) if state["valid"] else None,
        verify_url=services.verify_url(lic.verify_code), code=code, now=int(time.time()),
        access=services.access_log(lic), items=lic.type.items, masked=mask_number,
        fmt_time=display.fmt_time, fmt_date=display.fmt_date, fmt_time_s=_epoch_time)


def _epoch_time(seconds: int) -> str:
    return display.fmt_time(datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None))


@bp.route("/wallet/<identifier>/code")
@login_required
def wallet_code(identifier: str):
    """A fresh offline code (JSON) for the wallet page to show; only while the licence is valid."""
    lic = _own(identifier)
    st = display.wallet_state(lic)
    if not st["valid"]:
        body = {"error": "licence_not_valid", "state": st["state"], "label": st["label"], "since": st["since"]}
        resp = Response(json.dumps(body, ensure_ascii=False), 409, mimetype=_JSON)
    else:
        code = _wallet_code(lic)
        code["now"] = int(time.time())
        resp = Response(json.dumps(code), mimetype=_JSON)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.route("/wallet/<identifier>/card.png")
@login_required
def wallet_card(identifier: str):
    """The licence's card picture (its sealed PDF's first page; faded and stamped when not valid)."""
    from .card import card_png

    lic = _own(identifier)
    # the pages link it with the licence's state in the query (?s=revoked): a change of state is
    # a new URL, so the user's own browser may keep the picture a while
    cacheable(600, private=True)
    return Response(card_png(lic, display.wallet_state(lic)), mimetype="image/png")


def _own_valid(identifier: str) -> Licence:
    """The holder's licence, for showing or downloading: only while it is valid."""
    lic = _own(identifier)
    st = display.wallet_state(lic)
    if not st["valid"]:
        raise LicenceNotValid(_("This licence is %(state)s: its sealed file is no longer offered.",
                                state=st["label"]))
    return lic


@bp.route("/wallet/<identifier>/pdf")
@login_required
def wallet_pdf(identifier: str):
    lic = _own_valid(identifier)
    resp = Response(lic.pdf, mimetype="application/pdf")
    resp.headers["Content-Disposition"] = f'attachment; filename="{lic.type_code}-{lic.serial}-{lic.version:03d}.pdf"'
    return resp


@bp.route("/wallet/<identifier>/ofd")
@login_required
def wallet_ofd(identifier: str):
    """The licence as an OFD sealed with the issuer's SM2 seal (made on request)."""
    lic = _own_valid(identifier)
    return _ofd_response(lic, f"user:{current_user().sub}")


def _ofd_response(lic: Licence, actor: str) -> Response:
    from .ofd import sealed_ofd

    data = sealed_ofd(lic, actor=actor)
    db.session.commit()
    resp = Response(data, mimetype="application/ofd")
    resp.headers["Content-Disposition"] = f'attachment; filename="{lic.type_code}-{lic.serial}-{lic.version:03d}.ofd"'
    resp.headers["Cache-Control"] = "no-store"
    return resp


# ---------------------------------------------------------------- clerk console


def _clerk_orgs(user):
    from people.models import Organisation, StaffRole

    return list(db.session.execute(select(Organisation).join(StaffRole, StaffRole.org_id == Organisation.id)
                                   .where(StaffRole.user_id == user.id, StaffRole.role == "clerk")
                                   .order_by(Organisation.id)).scalars())


def issuer_for(org) -> str | None:
    """Whose licence seal the clerk's department issues under: its own, else a delegated one, else None."""
    seal = services._seal_services().get_active_seal(org.uscc, kind="licence")
    if seal is not None:
        return org.uscc
    return services.delegated_issuer(org.uscc)


def _clerk():
    user = current_user()
    orgs = _clerk_orgs(user)
    if not orgs:
        abort(403)
    return user, orgs


def _clerk_may(orgs, lic: Licence) -> bool:
    """Only licences the clerk's own department issued (not every licence under the same seal)."""
    return services.may_manage({o.uscc for o in orgs}, lic)


@bp.route("/clerk")
@login_required
def clerk_home():
    _user, orgs = _clerk()
    departments = [o.uscc for o in orgs]
    recent = list(db.session.execute(select(Licence).where(Licence.department_uscc.in_(departments))
                                     .order_by(Licence.id.desc()).limit(30)).scalars())
    return render_template("licence/clerk_home.html", types=services.list_types(), orgs=orgs, recent=recent,
                           status=services.public_status, masked=mask_name)


def registered_name(kind: str, holder_id: str) -> str | None:
    """The name the registers hold for an ID number or USCC (population register, accounts,
    organisations, legal person register), or None when the number is unknown."""
    from people.enterprise import LegalPersonRecord
    from people.models import Organisation, PopulationRecord, User

    if kind == "citizen":
        rec = db.session.get(PopulationRecord, holder_id)
        if rec is not None:
            return rec.name
        u = db.session.execute(select(User).where(User.id_number == holder_id)).scalar_one_or_none()
        return u.name if u else None
    o = db.session.execute(select(Organisation).where(Organisation.uscc == holder_id)).scalar_one_or_none()
    if o is not None:
        return o.name
    rec = db.session.get(LegalPersonRecord, holder_id)
    return rec.name if rec else None


def _holder_lookup(kind: str, holder_id: str) -> tuple[str | None, str | None]:
    """(normalised id, known name or None); raises the number's validation error."""
    norm = services.check_holder(kind, holder_id)
    return norm, registered_name(kind, norm)


def _labels(t) -> dict[str, str]:
    citizen = t.holder_kind == "citizen"
    return {"holder_id": _("Citizen ID number") if citizen else _("Unified social credit code"),
            "holder_name": _("Name") if citizen else _("Organisation name"), "valid_until": _("Valid until"),
            **{f"f_{i['name']}": i["label"] for i in t.items or []}}


@bp.route("/clerk/issue/<type_code>", methods=["GET", "POST"])
@login_required
def clerk_issue(type_code: str):
    user, orgs = _clerk()
    try:
        t = services.get_type(type_code)
    except TongbanError:
        abort(404)
    org = next((o for o in orgs if o.uscc == request.values.get("org")), orgs[0])
    values = {k: v for k, v in request.values.items() if k not in ("csrf_token", "submit")}
    error, known_name, status, errors = None, None, 200, {}
    if request.method == "GET" and values.get("holder_id"):
        try:
            values["holder_id"], known_name = _holder_lookup(t.holder_kind, values["holder_id"])
            audit.record_later("clerk.holder_lookup", actor=f"user:{user.sub}", object=f"holder:{values['holder_id']}", detail={"type": t.code, "found": bool(known_name)})  # noqa: E501
            if known_name and not values.get("holder_name"):
                values["holder_name"] = known_name
        except TongbanError as e:
            errors, status = {"lookup_id": e.message}, 400
    if request.method == "POST":
        if not ConfirmForm().validate_on_submit():
            abort(400)
        fields = {i["name"]: values.get(f"f_{i['name']}", "") for i in t.items}
        holder_id = values.get("holder_id", "").strip().upper()
        try:
            known_name = registered_name(t.holder_kind, services.check_holder(t.holder_kind, holder_id))
        except TongbanError:
            known_name = None
        errors = checks.problems(t, holder_id, values.get("holder_name", ""), fields,
                                 values.get("valid_until", ""), known_name, services.today())
        issuer = issuer_for(org)
        if errors:
            error, status = _("Nothing was issued: please correct the %(num)s marked field(s).",
                              num=len(errors)), 400
        else:
            try:
                if issuer is None:
                    raise NotDelegated(_("Your department has no licence seal of its own and no delegation to "
                                         "issue under the authority's seal."))
                lic = services.issue(t.code, holder_id, values.get("holder_name", ""), fields,
                                     issuer_uscc=issuer, valid_until=values.get("valid_until") or None,
                                     actor=f"user:{user.sub}", department_uscc=org.uscc)
                licence_issued(lic, org, user)  # 好差评: the issuance is a rateable window service
                db.session.commit()
            except TongbanError as e:
                db.session.rollback()
                error, status = e.message, e.status if e.status in (400, 403, 409) else 400
            else:
                flash(_("Issued: %(identifier)s. Download the sealed PDF below to print it for the holder.",
                        identifier=lic.identifier), "success")
                return redirect(url_for("licence.clerk_licence", identifier=lic.identifier))
    return render_template("licence/clerk_issue.html", t=t, org=org, orgs=orgs, values=values, error=error,
                           errors=errors, known_name=known_name, form=ConfirmForm(), labels=_labels(t),
                           example=checks.example, issuer=issuer_for(org)), status


_CONFIRMED = ("suspend", "revoke", "change")  # these ask for confirmation and a reason first


def _managed(identifier: str):
    user, orgs = _clerk()
    try:
        lic = services.find(identifier)
    except LicenceNotFound:
        abort(404)
    audit.record_later("clerk.licence_opened", actor=f"user:{user.sub}", object=f"licence:{lic.identifier}", outcome="success" if _clerk_may(orgs, lic) else "refused", detail={"method": request.method})  # noqa: E501
    if not _clerk_may(orgs, lic):
        abort(403)
    return user, lic


@bp.route("/clerk/licences/<identifier>", methods=["GET", "POST"])
@login_required
def clerk_licence(identifier: str):
    user, lic = _managed(identifier)
    if request.method == "POST":
        if not ConfirmForm().validate_on_submit():
            abort(400)
        action, actor = request.form.get("action"), f"user:{user.sub}"
        reason = (request.form.get("reason") or "").strip()
        if action not in (*_CONFIRMED, "resume"):
            abort(400)
        fields = {i["name"]: request.form[f"f_{i['name']}"] for i in lic.type.items if f"f_{i['name']}" in request.form}
        if action == "change":
            merged = {**(lic.data or {}), **fields}
            errors = checks.problems(lic.type, lic.holder_id, lic.holder_name, merged, "", None, services.today())
            if errors:  # every problem next to its field, nothing asked or changed yet
                return _licence_page(lic, errors=errors, values=merged), 400
        if action in _CONFIRMED and (request.form.get("confirm") != "yes" or not reason):
            # first press (or no reason given): show what will happen and ask again
            error = _("Give a reason.") if request.form.get("confirm") == "yes" else None
            changed = ([(i["label"], lic.data.get(i["name"], ""), fields[i["name"]].strip())
                        for i in lic.type.items
                        if i["name"] in fields and fields[i["name"]].strip() != (lic.data.get(i["name"]) or "")]
                       if action == "change" else [])
            return render_template("licence/clerk_confirm.html", lic=lic, action=action, reason=reason,
                                   error=error, fields=fields if action == "change" else {}, changed=changed,
                                   form=ConfirmForm()), 400 if error else 200
        try:
            if action == "suspend":
                services.suspend(lic.identifier, reason, actor)
            elif action == "resume":
                services.resume(lic.identifier, actor)
            elif action == "revoke":
                services.revoke(lic.identifier, reason, actor)
            else:
                new = services.change(lic.identifier, fields, actor, reason=reason)
                db.session.commit()
                flash(_("Amended; the new version is %(identifier)s", identifier=new.identifier), "success")
                return redirect(url_for("licence.clerk_licence", identifier=new.identifier))
            db.session.commit()
            flash(_("Status updated"), "success")
        except TongbanError as e:
            db.session.rollback()
            flash(e.message, "error")
        return redirect(url_for("licence.clerk_licence", identifier=lic.identifier))
    return _licence_page(lic)


def _licence_page(lic: Licence, errors: dict | None = None, values: dict | None = None) -> str:
    return render_template("licence/clerk_licence.html", lic=lic, form=ConfirmForm(),
                           status=services.public_status(lic.status, lic.valid_until),
                           verify_url=services.verify_url(lic.verify_code), items=lic.type.items,
                           example=checks.example, errors=errors or {}, values=values or lic.data or {})


@bp.route("/clerk/licences/<identifier>/pdf")
@login_required
def clerk_licence_pdf(identifier: str):
    """The sealed PDF as issued, to print or hand over (inline: the browser's viewer prints it)."""
    _user, lic = _managed(identifier)
    resp = Response(lic.pdf, mimetype="application/pdf")
    disposition = "attachment" if request.args.get("download") else "inline"
    resp.headers["Content-Disposition"] = (f'{disposition}; filename="{lic.type_code}-{lic.serial}-'
                                           f'{lic.version:03d}.pdf"')
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.route("/clerk/licences/<identifier>/ofd")
@login_required
def clerk_licence_ofd(identifier: str):
    user, lic = _managed(identifier)
    return _ofd_response(lic, f"user:{user.sub}")


@bp.route("/clerk/verify", methods=["GET", "POST"])
@login_required
def clerk_verify():
    user, _orgs = _clerk()
    result, error = None, None
    if request.method == "POST":
        if not ConfirmForm().validate_on_submit():
            abort(400)
        f = request.files.get("file")
        limit = int(current_app.config.get("TONGBAN_SEAL_MAX_BYTES") or 20 * 1024 * 1024)
        data = f.stream.read(limit + 1) if f else b""
        try:
            if len(data) > limit:
                raise TongbanError(_("The file is larger than %(mb)s MB.", mb=limit // (1024 * 1024) or 1))
            result = services.verify_file(data)
        except TongbanError as e:
            error = e.message
        audit.record_later("clerk.pdf_checked", actor=f"user:{user.sub}", object=f"licence:{((result or {}).get('licence') or {}).get('id', '')}", outcome="success" if result else "failure", detail={"status": (result or {}).get("status"), "valid": (result or {}).get("valid"), "size": len(data)})  # noqa: E501
    return render_template("licence/clerk_verify.html", form=ConfirmForm(), result=result, error=error)


_NUMBER_RUN = re.compile(r"[0-9A-Za-z][0-9A-Za-z\-:./]*[0-9A-Za-z]")


@bp.app_template_filter("nobreak")
def nobreak(text) -> Markup:
    """Text escaped, with numbers, dates and codes (J110105-2024-000123) kept on one line."""
    raw, out, pos = str(text), [], 0
    for m in _NUMBER_RUN.finditer(raw):  # on the raw text: every piece escaped on its own
        out.append(str(escape(raw[pos:m.start()])))
        out.append(f'<span class="nowrap">{escape(m.group(0))}</span>')
        pos = m.end()
    out.append(str(escape(raw[pos:])))
    return Markup("".join(out))  # noqa: S704 - built only from escaped pieces and a fixed tag


_CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _json_check(req: fastpath.Request) -> bool:
    """A machine's plain ``Accept: application/json`` check of a well-formed code: the lean kind."""
    return req.header("Accept") == _JSON and not req.query and bool(_CODE.fullmatch(req.path[3:]))


def fast_verify_code(req: fastpath.Request) -> fastpath.LeanResponse | None:
    """The lean path of ``GET /v/<code>`` as JSON (tongban.fastpath): the same lookup and view as
    ``verify_code``; an unknown code is the full stack's 404. Answers are kept in the hot cache
    (tongban.hotcache) until the licence row changes or its expiry date passes."""
    code = req.path[3:]
    cache = hotcache.for_app()
    if cache is None:
        row = services.lookup_code(code)
        return None if row is None else fastpath.LeanResponse(_public_json(row))
    key = ("v", code)
    position = cache.position()  # before the database is read: the store race (tongban.hotcache)
    hit = cache.get(key)
    if hit is not None:
        return fastpath.LeanResponse(hit.body)
    row = services.lookup_code(code)
    if row is None:
        return None
    body = _public_json(row)
    valid_until = row.valid_until
    # "valid" turns "expired" the day after valid_until (services.public_status): recheck on every hit
    still = (lambda: valid_until >= services.today()) if row.status == "valid" and valid_until else None
    cache.put(key, position, body, [f"vcode:{code}"], still)
    return fastpath.LeanResponse(body)


def _public_json(row) -> bytes:
    return json.dumps(services.public_view(row), ensure_ascii=False).encode()


def init_app(app) -> None:
    app.register_blueprint(bp)
    fastpath.register(app, "GET", "/v/", "/v/<code>", fast_verify_code, prefix=True, eligible=_json_check)
