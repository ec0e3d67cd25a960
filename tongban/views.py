"""The shell's own pages: home, health, error pages."""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from .errors import TongbanError

bp = Blueprint("tongban", __name__)


@bp.route("/")
def index():
    return render_template("tongban/index.html")


@bp.route("/healthz")
def healthz():
    return jsonify(status="ok")


def wants_json() -> bool:
    if request.path.startswith(("/api/", "/oauth/", "/.well-known/")):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.errorhandler(TongbanError)
    def _domain_error(e: TongbanError):
        from .extensions import db

        db.session.rollback()
        # an error that says when to come back (a busy verifier) says it in Retry-After too
        retry_after = getattr(e, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after else {}
        if wants_json():
            return jsonify(e.to_dict()), e.status, headers
        return render_template("tongban/error.html", code=e.status, message=e.message), e.status, headers

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        # keep the exception's own headers (405's Allow, 401's WWW-Authenticate, 429's Retry-After)
        headers = [(k, v) for k, v in e.get_headers() if k.lower() != "content-type"]
        if wants_json():
            body = jsonify(error=e.name.lower().replace(" ", "_"), error_description=e.description)
            return body, e.code, headers
        # Werkzeug's own description is English and technical: the page says it in its own words
        message = None if e.description == type(e).description else e.description
        return render_template("tongban/error.html", code=e.code, message=message), e.code, headers
