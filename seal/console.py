"""The seal officers' web console: their organisations' seals with pictures, the usage log, sealing a PDF.

Officers hold role ``seal-admin`` in an organisation and see (and use) only its seals; the
operating authority's administrators see every seal, read-only. Everyone else gets 403.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections import OrderedDict

from flask import Blueprint, Response, abort, current_app, render_template, send_file
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from sqlalchemy import select
from wtforms import BooleanField, FloatField, HiddenField, IntegerField, SelectField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from people.accounts import is_authority_staff
from people.auth import login_required
from people.models import StaffRole, User
from people.sessions import current_user
from tongban.errors import NotFound, TongbanError, ValidationError
from tongban.extensions import db
from tongban.masking import mask_name, mask_text
from tongban.security import cacheable

from . import services
from .errors import BadPdf, LicenceSealReserved, NotAuthorised, PdfTooLarge, SealingRefused, SealNotUsable
from .models import Seal

bp = Blueprint("seal_console", __name__)

OFFICER_ROLE = "seal-admin"
KIND_LABELS = {"official": _l("Official seal"), "contract": _l("Contract seal"), "finance": _l("Finance seal"),
               "invoice": _l("Invoice seal"), "licence": _l("Licence-issuing seal")}
STATUS_LABELS = {"active": _l("Active"), "suspended": _l("Suspended"), "revoked": _l("Revoked")}
EVENT_LABELS = {"seal.used": _l("Sealed a document"), "seal.created": _l("Seal created"),
                "seal.suspended": _l("Seal suspended"), "seal.resumed": _l("Seal resumed"),
                "seal.revoked": _l("Seal revoked"), "seal.client_authorised": _l("System authorised"),
                "seal.client_withdrawn": _l("System authorisation withdrawn")}
POSITIONS = ("anchor", "point", "bottom-right", "bottom-left", "top-right")
_MARGIN_PT = 56  # as the default placement in services._placement


class SealPdfForm(FlaskForm):
    file = FileField(_l("PDF document"), validators=[FileRequired(_l("Choose a PDF file."))])
    purpose = StringField(_l("Purpose of use"), validators=[DataRequired(_l("Enter the purpose of use.")),
                                                            Length(max=200)])
    page = IntegerField(_l("Page number"), default=1, validators=[Optional(), NumberRange(min=1, max=100000)])
    position = SelectField(_l("Position of the seal"), default="anchor", choices=[
        ("anchor", _l("Over a text on the page (the organisation's name above the date)")),
        ("point", _l("Where I drag it on the page preview")),
        ("bottom-right", _l("Bottom right (default)")), ("bottom-left", _l("Bottom left")),
        ("top-right", _l("Top right"))])
    anchor = StringField(_l("Text to seal over"), validators=[Optional(), Length(max=100)])
    fx = FloatField(validators=[Optional(), NumberRange(min=0, max=1)], widget=HiddenField.widget)
    fy = FloatField(validators=[Optional(), NumberRange(min=0, max=1)], widget=HiddenField.widget)
    certify = BooleanField(_l("Certify: no changes allowed after sealing (for licences and other final documents)"))
    submit = SubmitField(_l("Apply the seal"))


# ---------------------------------------------------------------- who sees what


def _officer_org_ids(user: User) -> set[int]:
    return set(db.session.execute(select(StaffRole.org_id).where(
        StaffRole.user_id == user.id, StaffRole.role == OFFICER_ROLE)).scalars())


def _viewer() -> tuple[User, set[int], bool]:
    """(user, ids of the organisations they are seal officer of, whether they see every seal) or 403."""
    user = current_user()
    org_ids = _officer_org_ids(user)
    everything = is_authority_staff(user, ("admin",))
    if not org_ids and not everything:
        abort(403)
    return user, org_ids, everything


def _visible_seal(seal_id: str) -> tuple[User, Seal, bool]:
    """(user, seal, whether the user is an officer of it); 404 for a seal they may not see."""
    user, org_ids, everything = _viewer()
    try:
        seal = services.get_seal(seal_id)
    except NotFound:
        abort(404)
    officer = seal.org_id in org_ids
    if not officer and not everything:
        abort(404)  # another organisation's seal: as if it did not exist
    return user, seal, officer


# ---------------------------------------------------------------- the seal picture as PNG

_pngs: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_pngs_lock = threading.Lock()
_PNGS_KEPT = 256


def _render_png(picture_pdf: bytes) -> bytes:
    pdftoppm = shutil.which("pdftoppm")  # poppler-utils
    if pdftoppm is None:
        raise TongbanError("pdftoppm (poppler-utils) is not installed", "renderer_missing", 503)
    with tempfile.TemporaryDirectory(prefix="tongban-seal-") as tmp:
        src, out = os.path.join(tmp, "seal.pdf"), os.path.join(tmp, "seal")
        with open(src, "wb") as f:
            f.write(picture_pdf)
        # our own picture PDF and temporary paths: no outside input reaches the command line
        subprocess.run([pdftoppm, "-png", "-r", "150", "-singlefile", src, out],  # noqa: S603
                       check=True, capture_output=True, timeout=30)
        with open(out + ".png", "rb") as f:
            return f.read()


def picture_png(seal: Seal) -> bytes:
    """The seal picture rendered by pdftoppm at 150 dpi, cached in memory per seal id and code."""
    key = (seal.id, seal.code)
    with _pngs_lock:
        png = _pngs.get(key)
        if png is not None:
            _pngs.move_to_end(key)
            return png
    png = _render_png(seal.picture)
    with _pngs_lock:
        _pngs[key] = png
        while len(_pngs) > _PNGS_KEPT:
            _pngs.popitem(last=False)
    return png


# ---------------------------------------------------------------- the usage log


def _who(actor: str) -> str:
    """An audit actor as a person or system name, personal data masked."""
    kind, _sep, ident = (actor or "").partition(":")
    if kind == "user" and ident:
        user = db.session.execute(select(User).where(User.sub == ident)).scalar_one_or_none()
        return mask_name(user.name) if user else _("a former user")
    if kind == "client" and ident:
        from idp.protection import get_client

        try:
            client = get_client(ident)
        except TongbanError:
            client = None
        name = getattr(client, "name", None) if client else None
        return _("System: %(name)s", name=name or ident)
    if actor in ("admin", "system"):
        return _("Platform administration")
    return mask_text(actor)


def _log(seal: Seal) -> list[dict]:
    rows = []
    for row in services.uses(seal.id):
        try:
            detail = json.loads(row.detail or "{}")
        except ValueError:
            detail = {}
        rows.append({"at": row.at, "event": EVENT_LABELS.get(row.action, row.action), "used": row.action == "seal.used",
                     "who": _who(row.actor), "sha256": detail.get("document_sha256", ""),
                     "purpose": mask_text(detail.get("purpose") or detail.get("reason") or ""),
                     "certify": bool(detail.get("certify"))})
    return rows


# ---------------------------------------------------------------- sealing


def _upload(form: SealPdfForm) -> bytes:
    limit = int(current_app.config.get("TONGBAN_SEAL_MAX_BYTES") or 20 * 1024 * 1024)
    data = form.file.data.stream.read(limit + 1)
    if len(data) > limit:
        raise PdfTooLarge(_("The file is larger than %(mb)s MB.", mb=limit // (1024 * 1024) or 1))
    if not data:
        raise BadPdf(_("The uploaded file is empty."))
    return data


def _page_box(pdf: bytes, page_ix: int) -> tuple[float, float, float, float]:
    """The page's visible box (CropBox, else MediaBox, inherited); 400 for a page that does not exist."""
    from .pdfcheck import visible_box  # pyHanko: imported when a PDF is read

    reader, count = services.read_pdf(pdf)
    if not 0 <= page_ix < count:
        raise ValidationError(
            _("Page %(page)s does not exist: the document has %(count)s pages.", page=page_ix + 1, count=count),
            "invalid_page")
    return visible_box(reader, page_ix, count)


def _seal_box(pdf: bytes, page_ix: int, form: SealPdfForm) -> tuple[float, float, float, float] | None:
    """None for the default placement (bottom right, moved left for each seal already there)."""
    from . import placement

    box = _page_box(pdf, page_ix)
    x1, y1, x2, y2 = box
    position = form.position.data
    if position == "anchor":
        anchor = (form.anchor.data or "").strip()
        if not anchor:
            raise ValidationError(_("Enter the text to seal over, e.g. the organisation's name."), "anchor_required")
        centre = placement.find_anchor(pdf, page_ix, anchor, box)
        if centre is None:
            raise ValidationError(_("The text “%(text)s” is not on page %(page)s. Nothing was sealed.",
                                    text=anchor, page=page_ix + 1), "anchor_not_found")
        return placement.box_at(box, *centre)
    if position == "point":
        if form.fx.data is None or form.fy.data is None or not all(
                math.isfinite(v) and 0 <= v <= 1 for v in (form.fx.data, form.fy.data)):
            raise ValidationError(_("Drag the seal to its place on the page preview first."), "point_required")
        return placement.box_at(box, *placement.point_at(box, form.fx.data, form.fy.data))
    if position not in ("bottom-left", "top-right"):
        return None
    size = services.SEAL_SIZE_PT
    if position == "bottom-left":
        return x1 + _MARGIN_PT, y1 + _MARGIN_PT, x1 + _MARGIN_PT + size, y1 + _MARGIN_PT + size
    return x2 - _MARGIN_PT - size, y2 - _MARGIN_PT - size, x2 - _MARGIN_PT, y2 - _MARGIN_PT


def _message(e: TongbanError, seal: Seal) -> str:
    if isinstance(e, BadPdf):
        return _("The file is not a PDF document, or it is damaged. Nothing was sealed.")
    if isinstance(e, SealNotUsable):
        if seal.status == "suspended":
            return _("This seal is suspended and cannot be used. Nothing was sealed.")
        if seal.status == "revoked":
            return _("This seal is revoked and cannot be used. Nothing was sealed.")
        return _("This seal cannot be used: it is outside its validity period. Nothing was sealed.")
    if isinstance(e, NotAuthorised):
        return _("Only the seal officers of the seal's organisation may use this seal.")
    if isinstance(e, SealingRefused):
        return _("This document does not allow another seal (it was certified with no changes allowed).")
    if isinstance(e, LicenceSealReserved):
        return _("A licence seal only seals the e-licences Tongban issues. Nothing was sealed.")
    return e.message


def _download_name(filename: str | None) -> str:
    stem = os.path.basename((filename or "").replace("\\", "/"))
    stem = re.sub(r"\.pdf$", "", stem, flags=re.IGNORECASE)
    stem = re.sub(r'[\x00-\x1f\x7f"/\\;]', "", stem).strip(" .")[:100]
    return f"{stem or 'document'}-sealed.pdf"


# ---------------------------------------------------------------- pages


@bp.route("/seals/console")
@login_required
def home():
    _user, org_ids, everything = _viewer()
    seals = services.list_seals() if everything else [s for s in services.list_seals() if s.org_id in org_ids]
    seals.sort(key=lambda s: (s.org.name, s.created_at))
    return render_template("seal/console_home.html", seals=seals, officer_orgs=org_ids, everything=everything,
                           kinds=KIND_LABELS, statuses=STATUS_LABELS)


@bp.route("/seals/console/<seal_id>/picture.png")
@login_required
def picture(seal_id: str):
    _user, seal, _officer = _visible_seal(seal_id)
    resp = Response(picture_png(seal), mimetype="image/png")
    cacheable(3600, private=True)
    return resp


@bp.route("/seals/console/<seal_id>", methods=["GET", "POST"])
@login_required
def seal_page(seal_id: str):
    user, seal, officer = _visible_seal(seal_id)
    form = SealPdfForm()
    error, status = None, 200
    if not form.is_submitted():
        form.anchor.data = seal.org.name  # where Chinese practice puts it: over the name (and the date)
    if form.is_submitted():
        if not form.validate():
            error, status = _("Please correct the marked fields. Nothing was sealed."), 400
        else:
            try:
                services.check_officer(seal, user)
                pdf = _upload(form)
                page_ix = (form.page.data or 1) - 1
                box = _seal_box(pdf, page_ix, form)
                sealed = services.sign_pdf(seal, pdf, purpose=form.purpose.data, actor=f"user:{user.sub}",
                                           certify=bool(form.certify.data), page=page_ix, box=box)
                db.session.commit()
            except TongbanError as e:
                db.session.rollback()
                error, status = _message(e, seal), e.status
            else:
                return send_file(io.BytesIO(sealed), mimetype="application/pdf", as_attachment=True,
                                 download_name=_download_name(form.file.data.filename), max_age=0)
    return render_template("seal/console_seal.html", seal=seal, officer=officer, form=form, error=error,
                           log=_log(seal), kinds=KIND_LABELS, statuses=STATUS_LABELS,
                           max_mb=int(current_app.config.get("TONGBAN_SEAL_MAX_BYTES") or 20 * 1024 * 1024)
                           // (1024 * 1024) or 1), status


class PreviewForm(FlaskForm):
    file = FileField(validators=[FileRequired()])
    page = IntegerField(default=1, validators=[Optional(), NumberRange(min=1, max=100000)])


@bp.route("/seals/console/<seal_id>/preview", methods=["POST"])
@login_required
def preview(seal_id: str):
    """The chosen page of the uploaded PDF as a PNG, to drag the seal into place (officers only).

    JSON errors: 400 ``invalid_pdf`` / ``invalid_page``, 413 ``pdf_too_large``, 403 for others."""
    from . import placement

    _user, seal, officer = _visible_seal(seal_id)
    if not officer:
        abort(403)
    form = PreviewForm()
    if not form.validate_on_submit():
        return {"error": "invalid_request", "message": _("Choose a PDF file.")}, 400
    try:
        pdf = _upload(form)
        page_ix = (form.page.data or 1) - 1
        box = _page_box(pdf, page_ix)
        png = placement.page_preview(pdf, page_ix)
    except TongbanError as e:
        return {"error": e.code, "message": _message(e, seal)}, e.status
    resp = Response(png, mimetype="image/png")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Page-Ratio"] = f"{placement.page_size_ratio(box):.4f}"
    resp.headers["X-Page-Width-Pt"] = f"{box[2] - box[0]:.2f}"
    resp.headers["X-Seal-Size-Pt"] = f"{services.SEAL_SIZE_PT:.2f}"
    return resp


@bp.app_context_processor
def _seal_officer():
    """``is_seal_officer(user)`` for templates (the account page links to the console)."""

    def is_seal_officer(user) -> bool:
        return bool(user) and (user.has_role(OFFICER_ROLE) or is_authority_staff(user, ("admin",)))

    return {"is_seal_officer": is_seal_officer}


def init_console(app) -> None:
    if "seal_console" not in app.blueprints:
        app.register_blueprint(bp)
