"""HTTP: the public verify API and page, and the department sealing API (thin; services do the work)."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from flask_babel import gettext as _

from tongban import ratelimit
from tongban.errors import TongbanError, ValidationError
from tongban.extensions import csrf, db

from . import services
from .errors import BadPdf, PdfTooLarge
from .ofd import verify_document

bp = Blueprint("seal", __name__)


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
    verdict = verify_document(_uploaded_pdf())  # PDF or OFD
    db.session.commit()
    return jsonify(verdict)


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
        verdict = verify_document(_uploaded_pdf())
        db.session.commit()
    except TongbanError as e:
        db.session.rollback()
        headers = {"Retry-After": str(e.retry_after)} if getattr(e, "retry_after", None) else {}
        return render_template("seal/verify.html", verdict=None, error=e.message), e.status, headers
    return render_template("seal/verify.html", verdict=verdict, error=None,
                           filename=(request.files["file"].filename or "")[:200])


def init_views(app: Flask) -> None:
    from idp.server import require_oauth

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
        "signatures": {"type": "array", "items": {"$ref": "#/components/schemas/SealSignature"}}}},
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
