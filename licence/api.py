"""The licence sharing API for department systems (GB/T 36906), under /api/v1.

Every call carries ``purpose`` (事由) and ``service_item`` (事项编码) and is logged:
in the audit log, and per licence in the access log the holder sees in the wallet.
Reading a person's licences needs a user token whose holder consented to
``licence:read`` for this system; client-credentials tokens only verify.
"""

from __future__ import annotations

import json

from authlib.integrations.flask_oauth2 import current_token
from flask import Blueprint, Response, current_app, request
from werkzeug.routing import BaseConverter

from idp.protection import consent_covers, get_client, require_acr, require_oauth
from people.accounts import get_user_by_sub
from seal.errors import BadPdf, PdfTooLarge
from tongban import ratelimit
from tongban.extensions import csrf, db

from . import services
from .errors import InvalidRequest, LicenceNotFound, NotPermitted

api = Blueprint("licence_api", __name__, url_prefix="/api/v1")
csrf.exempt(api)


class LicenceIdConverter(BaseConverter):
    """A path segment that is not one of the fixed names beside it (``GET /licences/verify`` is
    405 Allow: POST, not a read of a licence called "verify")."""

    regex = r"(?!(?:verify|status-list|offline|download)(?:/|$))[^/]+"


def _add_converter(state) -> None:
    state.app.url_map.converters.setdefault("licence_id", LicenceIdConverter)


api.record_once(_add_converter)
READ, VERIFY = "licence:read", "licence:verify"


def _json(data, status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=False), status, mimetype="application/json")


def _params() -> dict:
    if request.method == "GET":
        return request.args.to_dict()
    if request.is_json:
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else {}
    return request.form.to_dict()


def _caller() -> services.Caller:
    p = _params()
    purpose, item = str(p.get("purpose") or "").strip(), str(p.get("service_item") or "").strip()
    if not purpose or not item:
        raise InvalidRequest("every call must carry purpose (事由) and service_item (事项编码)")
    if len(purpose) > 500 or len(item) > 100:
        raise InvalidRequest("purpose or service_item is too long")
    client = get_client(current_token.client_id)
    return services.Caller(current_token.client_id, client.department if client else "",
                           client.name if client else "", purpose, item)


def _subject_user():
    """The consenting holder behind a user token; 403 for tokens without one."""
    if not current_token.is_user_token:
        raise NotPermitted("licence:read needs a token of a holder who consented (authorization code flow)")
    user = get_user_by_sub(current_token.sub)
    if user is None or user.disabled:
        raise NotPermitted("the token's user is not active")
    if not consent_covers(user, current_token.client_id, [READ]):
        raise NotPermitted("the holder has not consented to licence:read for this system")
    return user


@api.route("/licence-types")
@require_oauth([READ, VERIFY])
def licence_types():
    caller = _caller()
    services.audit_call(caller, "types")
    db.session.commit()
    return _json([services.type_dict(t) for t in services.list_types()])


@api.route("/licences")
@require_oauth(READ)
@require_acr("L2", config="TONGBAN_LICENCE_READ_ACR")  # RFC 9470
def list_licences():
    caller = _caller()
    user = _subject_user()
    holders = services.holder_ids_for(user)
    wanted = request.args.get("holder_id")
    if wanted:
        holders = [h for h in holders if h == wanted.strip().upper()]
    rows = services.licences_of(holders, request.args.get("type") or None) if holders else []
    for lic in rows:
        services.record_access(lic, caller, "list")
    services.audit_call(caller, "listed", f"user:{user.sub}", count=len(rows))
    db.session.commit()
    return _json([services.full_view(lic) for lic in rows])


def _readable(identifier: str):
    user = _subject_user()
    try:
        return services.licence_for_user(user, identifier)
    except LicenceNotFound:
        raise LicenceNotFound("no such licence among those the holder shared") from None


@api.route("/licences/<licence_id:identifier>")
@require_oauth(READ)
@require_acr("L2", config="TONGBAN_LICENCE_READ_ACR")  # RFC 9470
def get_licence(identifier: str):
    caller = _caller()
    lic = _readable(identifier)
    services.record_access(lic, caller, "read")
    services.audit_call(caller, "read", f"licence:{lic.identifier}")
    db.session.commit()
    return _json(services.full_view(lic))


@api.route("/licences/<identifier>/download", methods=["POST"])
@require_oauth(READ)
@require_acr("L2", config="TONGBAN_LICENCE_READ_ACR")  # RFC 9470
def download_link(identifier: str):
    caller = _caller()
    lic = _readable(identifier)
    raw, expires = services.create_download_link(lic, caller)
    services.record_access(lic, caller, "download")
    services.audit_call(caller, "download_link", f"licence:{lic.identifier}")
    db.session.commit()
    return _json({"url": f"{current_app.config['TONGBAN_ISSUER']}/api/v1/licences/download/{raw}",
                  "expires_at": expires.isoformat(timespec="seconds") + "Z"})


@api.route("/licences/download/<link>")
def fetch_download(link: str):
    fmt = request.args.get("format") or None  # pdf or ofd; by default the licence type's format
    if fmt not in (None, "pdf", "ofd"):
        raise InvalidRequest("format is pdf or ofd")
    lic, data = services.redeem_download_link(link, fmt)
    db.session.commit()
    ext = "ofd" if data[:4] == b"PK\x03\x04" else "pdf"
    resp = Response(data, mimetype="application/ofd" if ext == "ofd" else "application/pdf")
    resp.headers["Content-Disposition"] = f'attachment; filename="{lic.type_code}-{lic.serial}.{ext}"'
    return resp


def _throttled(client_id: str) -> Response | None:
    """``licence:verify`` lookups per client and minute (TONGBAN_LICENCE_VERIFY_RATE): 429 beyond."""
    limit = int(current_app.config.get("TONGBAN_LICENCE_VERIFY_RATE", 120))
    hit = ratelimit.hit(f"licence-verify:{client_id}", limit, 60)
    if hit.allowed:
        return None
    resp = _json({"error": "rate_limited",
                  "error_description": "too many licence verifications by this system; try again later"}, 429)
    resp.headers["Retry-After"] = str(hit.retry_after)
    return resp


def _uploaded(upload) -> bytes:
    limit = int(current_app.config.get("TONGBAN_SEAL_MAX_BYTES") or 20 * 1024 * 1024)
    data = upload.stream.read(limit + 1)
    if len(data) > limit:
        raise PdfTooLarge(f"the PDF is larger than {limit // (1024 * 1024) or 1} MB")
    if not data:
        raise BadPdf("the uploaded file is empty")
    return data


@api.route("/licences/verify", methods=["POST"])
@require_oauth([VERIFY, READ])
def verify():
    caller = _caller()
    throttled = _throttled(caller.client_id)
    if throttled is not None:
        return throttled
    upload = request.files.get("file")
    if upload is not None:
        result = services.verify_file(_uploaded(upload))
    else:
        ident = str(_params().get("id") or "").strip()
        if not ident:
            raise InvalidRequest("send JSON {\"id\"} or a multipart file")
        result = services.verify_identifier(ident)
    if result["licence"]:  # only a document bound to the licence, never a miss or a forgery
        lic = services.find(result["licence"]["id"])
        services.record_access(lic, caller, "verify")
    services.audit_call(caller, "verified", (result["licence"] or {}).get("id", ""), status=result["status"])
    db.session.commit()
    return _json(result)


def init_app(app) -> None:
    app.register_blueprint(api)
