"""HTTP: the public verify API and page, and the department sealing API (thin; services do the work)."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from flask_babel import gettext as _

from tongban import ratelimit
from tongban.errors import TongbanError, ValidationError
from tongban.extensions import csrf, db

from . import services
from .errors import BadPdf, PdfTooLarge

bp = Blueprint("seal", __name__)

# What a sealed PDF is besides sealed, added next to the seal verdict by the packages that know
# (licence: a Tongban e-licence and its current status, under the key it names). seal knows none
# of them: they register here (licence/__init__.py), seal never imports them.
_DOCUMENT_RECOGNISERS: dict[str, Callable[[bytes, dict], dict | None]] = {}


def recognise_documents(key: str, fn: Callable[[bytes, dict], dict | None]) -> None:
    """Register ``fn(pdf, seal_verdict)``: None, or what goes under ``verdict[key]``."""
    _DOCUMENT_RECOGNISERS[key] = fn


def _too_large() -> None:
    limit = int(current_app.config["TONGBAN_SEAL_MAX_BYTES"])
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise PdfTooLarge(f"the upload is larger than {limit // (1024 * 1024) or 1} MB")


def _uploaded_pdf() -> bytes:
    _too_large()
    upload = request.files.get("file")
    if upload is None:
        raise ValidationError("upload the PDF as the multipart field 'file'", "invalid_request")
    limit = int(current_app.config["TONGBAN_SEAL_MAX_BYTES"])
    data = upload.stream.read(limit + 1)
    if len(data) > limit:
        raise PdfTooLarge(f"the PDF is larger than {limit // (1024 * 1024) or 1} MB")
    if not data:
        raise BadPdf("the uploaded file is empty")
    return data


def _throttled() -> Response | None:
    limit = int(current_app.config["TONGBAN_SEAL_VERIFY_RATE"])
    hit = ratelimit.hit_client("seal-verify", request.remote_addr, limit, 60)
    if hit.allowed:
        return None
    resp = jsonify(error="rate_limited", error_description="too many verifications; try again later")
    resp.status_code = 429
    resp.headers["Retry-After"] = str(hit.retry_after)
    return resp


@bp.route("/api/v1/seals/verify", methods=["POST"])
def api_verify():
    """Public: the verdict on an uploaded PDF's seals."""
    throttled = _throttled()
    if throttled is not None:
        return throttled
    data = _uploaded_pdf()
    verdict = _verify_document(data)  # PDF or OFD
    _add_licence(data, verdict)
    db.session.commit()
    return jsonify(verdict)


def _verify_document(data: bytes) -> dict:
    # seal/ofd.py (lxml, the 国密 code) and pyHanko are imported by the first verification, not at start-up
    from .ofd import verify_document

    return verify_document(data)


def _add_licence(data: bytes, verdict: dict) -> None:
    """A PDF that presents itself as a Tongban e-licence: its status next to the seal verdict
    (key ``licence``, added only then), so a sealed licence that was revoked is not taken as valid."""
    if bytes(data[:4]) == b"PK\x03\x04":  # an OFD (seal.ofd.is_ofd): no licence PDF
        return
    for key, recognise in _DOCUMENT_RECOGNISERS.items():
        found = recognise(data, verdict)
        if found is not None:
            verdict[key] = found


def _sign_api(seal_id: str):
    from authlib.integrations.flask_oauth2 import current_token

    seal = services.get_seal(seal_id)
    client_id = current_token.client_id
    services.check_client(seal, client_id)
    purpose = (request.form.get("purpose") or "").strip()
    if not purpose:
        raise ValidationError("purpose (事由) is required", "invalid_request")
    pdf = _uploaded_pdf()
    page = request.form.get("page", "0")
    try:
        page_ix = int(page)
    except ValueError:
        raise ValidationError("page must be an integer", "invalid_request") from None
    if seal.alg == "sm2":  # 国密 seals seal OFD documents (seal/ofd.py)
        from .ofd import sign_ofd

        sealed = sign_ofd(seal, pdf, purpose=purpose, actor=f"client:{client_id}", page=page_ix,
                          anchor=request.form.get("anchor") or None)
        db.session.commit()
        resp = Response(sealed, mimetype="application/ofd")
        resp.headers["Content-Disposition"] = 'attachment; filename="sealed.ofd"'
        resp.headers["Cache-Control"] = "no-store"
        return resp
    certify = (request.form.get("certify") or "").lower() in ("1", "true", "yes")
    sealed = services.sign_pdf(seal, pdf, purpose=purpose, actor=f"client:{client_id}", certify=certify,
                               page=page_ix, field_name=request.form.get("field") or None)
    db.session.commit()
    resp = Response(sealed, mimetype="application/pdf")
    resp.headers["Content-Disposition"] = 'attachment; filename="sealed.pdf"'
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.route("/seals/verify", methods=["GET", "POST"])
def verify_page():
    """Anyone uploads a PDF and sees each seal's verdict."""
    if request.method == "GET":
        return render_template("seal/verify.html", verdict=None, error=None)
    throttled = _throttled()
    if throttled is not None:
        return render_template("seal/verify.html", verdict=None,
                               error=_("Too many verifications; please try again in a minute.")), 429
    try:
        data = _uploaded_pdf()
        verdict = _verify_document(data)
        _add_licence(data, verdict)
        db.session.commit()
    except TongbanError as e:
        db.session.rollback()
        headers = {"Retry-After": str(e.retry_after)} if getattr(e, "retry_after", None) else {}
        return render_template("seal/verify.html", verdict=None, error=_page_message(e)), e.status, headers
    return render_template("seal/verify.html", verdict=verdict, error=None,
                           filename=(request.files["file"].filename or "")[:200], when=beijing_time,
                           dn=readable_name)


# X.509 attribute names as pyHanko spells them in a signer's name, and in Chinese
_DN_WORDS = (("Organizational Unit", "部门"), ("Organization Identifier", "组织标识"), ("Organization", "组织"),
             ("Common Name", "名称"), ("Country", "国家"), ("State/Province", "省份"), ("Locality", "城市"),
             ("Serial Number", "序列号"), ("Email Address", "电子邮件"), ("Title", "职务"))


def readable_name(name: str | None) -> str:
    """A certificate's name for people: "Common Name: X, Organization: Y" -> "名称：X，组织：Y"."""
    if not name:
        return ""
    from flask_babel import get_locale

    if not str(get_locale() or "").startswith("zh"):
        return name
    parts = []
    for part in name.split(", "):
        key, sep, value = part.partition(": ")
        word = dict(_DN_WORDS).get(key) if sep else None
        parts.append(f"{word}：{value}" if word else part)
    return "，".join(parts)


def beijing_time(value: str | None) -> str:
    """An ISO time from a verdict (UTC) in Beijing time, to the second; '' when absent or unreadable."""
    from datetime import UTC, datetime

    from flask_babel import format_datetime

    if not value:
        return ""
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return format_datetime(dt, _("yyyy-MM-dd HH:mm:ss")) + " " + _("(Beijing time)")


def _page_message(e: TongbanError) -> str:
    """The page's words for an upload it cannot check (the API keeps the service's own text)."""
    limit = int(current_app.config["TONGBAN_SEAL_MAX_BYTES"]) // (1024 * 1024) or 1
    return {"invalid_pdf": _("The file is not a PDF document, or it is damaged."),
            "invalid_ofd": _("The file is not a valid OFD document, or it is damaged."),
            "too_large": _("The file is larger than %(mb)s MB.", mb=limit),
            "invalid_request": _("Choose a PDF or OFD file to check."),
            }.get(e.code, e.message)


def init_views(app: Flask) -> None:
    from idp.protection import require_oauth

    if "seal" in app.blueprints:
        return
    if "seal.api_sign" not in _ADDED:  # the blueprint is shared by every app of the process
        sign = require_oauth("seal:sign")(lambda seal_id: _sign_api(seal_id))
        sign.__name__ = "api_sign"
        bp.add_url_rule("/api/v1/seals/<seal_id>/sign", "api_sign", sign, methods=["POST"])
        csrf.exempt(api_verify)
        csrf.exempt(sign)
        _ADDED.add("seal.api_sign")
    app.register_blueprint(bp)


_ADDED: set[str] = set()


_SIGNATURE = {"type": "object", "required": ["seal_name", "seal_code", "organisation", "signer", "signed_at",
                                             "intact", "covers_whole_document", "trusted", "revoked"],
              "properties": {
                  "seal_name": {"type": "string"},
                  "seal_code": {"type": "string", "pattern": "^[0-9]{13}$", "nullable": True,
                                "description": "null when the signature names no seal code (a foreign or "
                                               "broken signature)"},
                  "organisation": {"type": "string"}, "organisation_uscc": {"type": "string"},
                  "signer": {"type": "string"}, "signed_at": {"type": "string", "format": "date-time",
                                                             "nullable": True},
                  "intact": {"type": "boolean"}, "covers_whole_document": {"type": "boolean"},
                  "changes_after": {"type": "string"}, "trusted": {"type": "boolean"},
                  "revoked": {"type": "boolean"}, "valid": {"type": "boolean"}, "certified": {"type": "boolean"},
                  "timestamped": {"type": "boolean"}, "field": {"type": "string"}, "is_last": {"type": "boolean"},
                  "error": {"type": "string", "description": "why a signature could not be evaluated"}}}
_ERR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_RETRY = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 1}}}
_PDF_UPLOAD = {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}

OPENAPI_SCHEMAS = {
    "SealSignature": _SIGNATURE,
    "SealVerdict": {"type": "object", "required": ["valid", "signatures"], "properties": {
        "valid": {"type": "boolean"}, "message": {"type": "string"},
        "signatures": {"type": "array", "items": {"$ref": "#/components/schemas/SealSignature"}},
        "licence": {"type": "object", "description": "Present only when the PDF presents itself as a Tongban "
                    "e-licence (a licence identifier in its sealed document information): whether it is one "
                    "we issued (is_licence), its current status (valid, status, state, status_changed_at, "
                    "superseded_by), the licence as on /v/ (null unless is_licence), and the failed checks. "
                    "The seal verdict above says nothing about the licence's status.",
                    "properties": {"is_licence": {"type": "boolean"}, "valid": {"type": "boolean"},
                                   "status": {"type": "string"}, "state": {"type": "string"},
                                   "status_changed_at": {"type": "string", "format": "date-time",
                                                         "nullable": True},
                                   "superseded_by": {"type": "string"},
                                   "licence": {"type": "object", "nullable": True},
                                   "failed": {"type": "array", "items": {"type": "string"}},
                                   "messages": {"type": "array", "items": {"type": "string"}}}}}},
}

OPENAPI_PATHS = {
    "/api/v1/seals/verify": {"post": {
        "summary": "Verify the e-seals of a PDF (public, rate-limited)",
        "description": "Bounded per request: at most TONGBAN_VERIFY_MAX_SIGNATURES signatures (default 20), "
                       "TONGBAN_VERIFY_MAX_SECONDS of work (default 20), TONGBAN_VERIFY_CONCURRENCY "
                       "verifications at once per server process (default 2). Copies of one signature are "
                       "validated once and reported as not valid.",
        "operationId": "verifySeals", "tags": ["seals"], "security": [],
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _PDF_UPLOAD}}},
        "responses": {
            "200": {"description": "The verdict", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/SealVerdict"}}}},
            "400": {"description": "No file, not a PDF, or damaged (invalid_pdf)", **_ERR},
            "413": {"description": "Larger than TONGBAN_SEAL_MAX_BYTES (too_large)", **_ERR},
            "422": {"description": "Too many signatures (too_many_signatures) or too long to verify "
                                   "(verification_too_long)", **_ERR},
            "429": {"description": "Too many requests from this address (rate_limited)", "headers": _RETRY,
                    **_ERR},
            "503": {"description": "The verifier is busy (verifier_busy)", "headers": _RETRY, **_ERR},
        }}},
    "/api/v1/seals/{seal_id}/sign": {"post": {
        "summary": "Apply an e-seal to a PDF (PAdES B-LT, visible seal); logged as a use of the seal",
        "operationId": "signWithSeal", "tags": ["seals"], "security": [{"oauth2": ["seal:sign"]}],
        "parameters": [{"name": "seal_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file", "purpose"], "properties": {
                "file": {"type": "string", "format": "binary"},
                "purpose": {"type": "string", "minLength": 1, "description": "Why the seal is used (事由)"},
                "page": {"type": "integer", "default": 0, "description": "Page index; -1 = last"},
                "field": {"type": "string", "description": "An empty signature field to sign"},
                "certify": {"type": "boolean", "default": False,
                            "description": "DocMDP: no changes allowed afterwards"}}}}}},
        "responses": {
            "200": {"description": "The sealed PDF", "content": {"application/pdf": {
                "schema": {"type": "string", "format": "binary"}}}},
            "400": {"description": "Missing purpose or file, no such page, not a PDF, or damaged (invalid_pdf)",
                    **_ERR},
            "401": {"description": "No or bad access token", **_ERR},
            "403": {"description": "Scope seal:sign missing, or the system is not authorised for this seal",
                    **_ERR},
            "404": {"description": "Unknown seal", **_ERR},
            "409": {"description": "The seal is suspended, revoked or expired; or the document forbids "
                                   "further signatures (a certification)", **_ERR},
            "413": {"description": "Larger than TONGBAN_SEAL_MAX_BYTES (too_large)", **_ERR},
        }}},
}
OPENAPI_SCOPES = {"seal:sign": "Apply the organisation's e-seal to documents"}
