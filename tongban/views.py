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
        if wants_json():
            return jsonify(e.to_dict()), e.status
        return render_template("tongban/error.html", code=e.status, message=e.message), e.status

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        if wants_json():
            return jsonify(error=e.name.lower().replace(" ", "_"), error_description=e.description), e.code
        return render_template("tongban/error.html", code=e.code, message=e.description), e.code
