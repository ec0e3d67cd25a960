"""The 好差评 API for department systems, under /api/v1/ratings (client credentials).

``rating:write`` registers completed services (办件) and reads back their rating;
``rating:export`` exports the month's GB/T 39735 records for the national platform.
Both scopes are restricted: the operator grants them to a system in the register.
"""

from __future__ import annotations

import json

from authlib.integrations.flask_oauth2 import current_token
from flask import Blueprint, Response, request

from idp.protection import get_client, require_oauth
from tongban.extensions import csrf, db

from . import services
from .errors import EventNotFound, InvalidEvent, NotYourEvent

api = Blueprint("rating_api", __name__, url_prefix="/api/v1/ratings")
csrf.exempt(api)
WRITE, EXPORT = "rating:write", "rating:export"


def _json(data, status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=False), status, mimetype="application/json")


def _system():
    """The calling system: client-credentials tokens only (a citizen's token registers nothing)."""
    if current_token.is_user_token:
        raise NotYourEvent("service events are registered by systems (client credentials), not for a user")
    client = get_client(current_token.client_id)
    if client is None or not client.enabled:
        raise NotYourEvent("the calling system is not in the register")
    return client


@api.route("/events", methods=["POST"])
@require_oauth(WRITE)
def register_event():
    client = _system()
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        raise InvalidEvent("send the service event as a JSON object")
    if not (body.get("sub") or body.get("id_number")):
        raise InvalidEvent("name the citizen: sub (account) or id_number (window services)")
    new = services.register_event(
        client_id=client.client_id, department_name=client.department,
        department_code=body.get("department_code"), service_item_code=body.get("service_item_code"),
        service_item_name=body.get("service_item_name"), channel=body.get("channel"), sub=body.get("sub"),
        id_number=body.get("id_number"), handled_at=body.get("handled_at"), window=body.get("window"),
        staff=body.get("staff"), case_no=body.get("case_no"))
    answer = {"event_id": new.event.public_id, "rating_url": new.url,
              "rate_until": services.iso_beijing(new.event.rate_until)}
    db.session.commit()  # before drawing the QR: no write lock held while computing
    from .views import qr_data_uri

    answer["rating_qr"] = qr_data_uri(new.url)
    return _json(answer, 201)


@api.route("/events/<event_id>")
@require_oauth(WRITE)
def event_status(event_id: str):
    client = _system()
    event = services.get_event(event_id[:64])
    if event.client_id != client.client_id:
        raise EventNotFound("no such service event")  # another system's events do not exist for you
    r = event.rating
    return _json({"event_id": event.public_id, "rated": r is not None,
                  "rate_until": services.iso_beijing(event.rate_until),
                  "rating": services.record(r) if r is not None else None})


@api.route("/export")
@require_oauth(EXPORT)
def export():
    _system()
    month = services.check_month(request.args.get("month"))
    if month is None:
        raise InvalidEvent("month=YYYY-MM is required")
    rows = services.export(month)
    services.audit.record("rating.exported", actor=f"client:{current_token.client_id}", object=f"month:{month}",
                          detail={"count": len(rows)})
    db.session.commit()
    return _json({"month": month, "standard": "GB/T 39735-2020", "records": rows})


def init_app(app) -> None:
    app.register_blueprint(api)
