"""OpenAPI 3.0 paths of the 好差评 API (merged into /api/v1/openapi.json by ``rating.init_app``)."""

from __future__ import annotations

_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


SCHEMAS = {
    "RatingEvent": {"type": "object", "required": ["department_code", "service_item_code", "service_item_name",
                                                   "channel"], "properties": {
        "department_code": {"type": "string", "minLength": 18, "maxLength": 18,
                            "description": "USCC (统一社会信用代码) of the evaluated department; its name is the "
                                           "system's department in the register"},
        "service_item_code": {"type": "string", "maxLength": 64, "description": "事项编码"},
        "service_item_name": {"type": "string", "maxLength": 200, "description": "事项名称"},
        "channel": {"type": "string", "description": "评价渠道: 01 窗口 02 网上 03 移动端 04 自助终端 05 电话, "
                                                     "or window | online | app | kiosk | phone"},
        "sub": {"type": "string", "description": "the citizen's account (subject); or id_number"},
        "id_number": {"type": "string", "description": "the citizen's ID number (window services)"},
        "handled_at": {"type": "string", "format": "date-time",
                       "description": "办结时间 (default now; without an offset Beijing time)"},
        "case_no": {"type": "string", "maxLength": 100, "description": "办件编号, unique per system"},
        "window": {"type": "string", "maxLength": 100}, "staff": {"type": "string", "maxLength": 100}}},
    "RatingRecord": {"type": "object", "description": "GB/T 39735 data items of one evaluation", "properties": {
        "evaluation_id": {"type": "string"}, "service_event_id": {"type": "string"}, "case_no": {"type": "string"},
        "service_item_code": {"type": "string"}, "service_item_name": {"type": "string"},
        "department_code": {"type": "string"}, "department_name": {"type": "string"},
        "channel_code": {"type": "string"}, "channel_name": {"type": "string"},
        "level": {"type": "integer", "minimum": 1, "maximum": 5}, "level_name": {"type": "string"},
        "reasons": {"type": "array", "items": {"type": "object", "properties": {
            "code": {"type": "string"}, "name": {"type": "string"}}}},
        "comment": {"type": "string"}, "evaluator": {"type": "string", "description": "masked"},
        "evaluation_method": {"enum": ["link", "account"]}, "window": {"type": "string"},
        "handled_at": {"type": "string", "format": "date-time"},
        "evaluated_at": {"type": "string", "format": "date-time"}, "valid": {"type": "boolean"},
        "rectification": {"type": "object", "nullable": True}}},
}

PATHS: dict = {
    "/api/v1/ratings/events": {"post": {
        "tags": ["ratings"], "summary": "Register a completed service (办件); answers its one-time rating link",
        "security": [{"oauth2": ["rating:write"]}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/RatingEvent"}}}},
        "responses": {"201": _ok({"type": "object", "properties": {
            "event_id": {"type": "string"}, "rating_url": {"type": "string"},
            "rating_qr": {"type": "string", "description": "data: URI of an SVG QR code for the window's screen"},
            "rate_until": {"type": "string", "format": "date-time"}}}, "registered"),
            "400": _ERR, "401": _ERR, "403": _ERR, "409": _ERR}}},
    "/api/v1/ratings/events/{event_id}": {"get": {
        "tags": ["ratings"], "summary": "Whether one of the system's events has been rated, and how",
        "security": [{"oauth2": ["rating:write"]}],
        "parameters": [{"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": _ok({"type": "object", "properties": {
            "event_id": {"type": "string"}, "rated": {"type": "boolean"},
            "rate_until": {"type": "string", "format": "date-time"},
            "rating": {"allOf": [{"$ref": "#/components/schemas/RatingRecord"}], "nullable": True}}}),
            "401": _ERR, "403": _ERR, "404": _ERR}}},
    "/api/v1/ratings/export": {"get": {
        "tags": ["ratings"], "summary": "A month's evaluations as GB/T 39735 records (for the national platform)",
        "security": [{"oauth2": ["rating:export"]}],
        "parameters": [{"name": "month", "in": "query", "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$"}}],
        "responses": {"200": _ok({"type": "object", "properties": {
            "month": {"type": "string"}, "standard": {"type": "string"},
            "records": {"type": "array", "items": {"$ref": "#/components/schemas/RatingRecord"}}}}),
            "400": _ERR, "401": _ERR, "403": _ERR}}},
}

SCOPES = {"rating:write": "register completed services (办件) for 好差评 rating",
          "rating:export": "export 好差评 records (GB/T 39735) for the national platform"}
