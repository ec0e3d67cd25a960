"""HTTP of the brokering: the log-in buttons' target, the callback from the upstream, the
back-channel logout endpoint the upstream calls, and the page the upstream's logout returns to."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import session as flask_session
from flask_babel import gettext as _
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from people import sessions, signals
from people.models import LoginSession
from tongban import audit, ratelimit
from tongban.clock import token, utcnow
from tongban.extensions import csrf, db
from tongban.i18n import safe_next

from . import flow, metadata, registry
from .flow import LoginFailed
from .metadata import UpstreamUnavailable
from .models import FederatedSession, UsedLogoutToken
from .tokens import TokenRefused, validate_logout_token

bp = Blueprint("federation", __name__, url_prefix="/federation")

_LOGOUT_KEY = "tb_fed_logout"


def _failure_page(upstream_name: str, display: str, reason: str, next_url: str, status: int, detail: str = ""):
    audit.record_later("federation.login_failed", actor="anonymous", object=f"upstream:{upstream_name}",
                       outcome="failure", detail={"reason": reason, "detail": detail[:200]},
                       throttle=f"federation:{request.remote_addr or ''}")
    if reason in ("upstream_error",) and detail == "access_denied":
        message = _("The log-in at %(name)s was cancelled or refused.", name=display)
    elif reason in ("no_id_number", "id_number_not_verified", "bad_id_number"):
        message = _("%(name)s did not confirm your ID number, so Tongban cannot tell who you are.", name=display)
    elif reason in ("link_conflict", "id_number_changed"):
        message = _("This %(name)s account does not match the Tongban account of this ID number. Please bring "
                    "your identity card to a government service window.", name=display)
    elif reason == "account_disabled":
        message = _("This account is disabled. Please contact the service centre.")
    elif reason.startswith("state") or reason in ("bad_iss_parameter", "missing_iss_parameter", "no_code"):
        message = _("This log-in through %(name)s could not be matched to this browser or has expired. "
                    "Please start again.", name=display)
    else:
        message = _("Logging in with %(name)s is not possible right now. Please log in with your password.",
                    name=display)
    html = render_template("federation/error.html", message=message, display=display,
                           login_url=url_for("idp.login", next=next_url, force="1"))
    return Response(html, status, {"Cache-Control": "no-store"}, mimetype="text/html")


@bp.route("/<name>/login", methods=["POST"])
def start(name: str):
    """The log-in page's "log in with …" button (a CSRF-checked form)."""
    next_url = safe_next(request.form.get("next"), url_for("account.account"))
    upstream = registry.get(name)
    if upstream is None:
        return _failure_page(name[:40], name[:40], "unknown_upstream", next_url, 404)
    cfg = current_app.config
    hit = ratelimit.hit_client("fed-login-ip", request.remote_addr, cfg["TONGBAN_LOGIN_RATE_PER_IP"],
                               cfg["TONGBAN_LOGIN_RATE_WINDOW"])
    if not hit.allowed:
        page = _failure_page(upstream.name, upstream.display_name, "throttled", next_url, 429)
        page.headers["Retry-After"] = str(hit.retry_after)
        return page
    try:
        url = flow.start(upstream, next_url)
    except UpstreamUnavailable as e:
        return _failure_page(upstream.name, upstream.display_name, e.reason, next_url, 502, e.detail)
    return redirect(url, 303)


@bp.route("/<name>/callback")
def callback(name: str):
    upstream = registry.get(name)
    if upstream is None:
        return _failure_page(name[:40], name[:40], "unknown_upstream", "/", 404)
    next_url = url_for("account.account")
    try:
        proven, next_url = flow.finish(upstream)
        cookie: dict = {}
        try:
            flow.log_in(upstream, proven, cookie)
            db.session.commit()
        except IntegrityError:  # the same person arriving twice at once: the other one won
            db.session.rollback()
            raise LoginFailed("concurrent_login", status=409) from None
        except Exception:
            db.session.rollback()
            raise
    except LoginFailed as e:
        return _failure_page(upstream.name, upstream.display_name, e.reason, next_url, e.status, e.detail)
    except UpstreamUnavailable as e:
        return _failure_page(upstream.name, upstream.display_name, e.reason, next_url, 502, e.detail)
    response = redirect(safe_next(next_url, url_for("account.account")))
    sessions.set_cookie(response, cookie["value"])
    return response


def _bc_error(description: str, upstream_name: str, reason: str) -> Response:
    audit.record_later("federation.backchannel_logout", actor=f"upstream:{upstream_name}",
                       object=f"upstream:{upstream_name}", outcome="failure", detail={"reason": reason},
                       throttle=f"federation-bc:{request.remote_addr or ''}")
    body = json.dumps({"error": "invalid_request", "error_description": description})
    return Response(body, 400, {"Cache-Control": "no-store"}, mimetype="application/json")


@bp.route("/<name>/backchannel-logout", methods=["POST"])
@csrf.exempt  # the upstream calls it server to server; the signed logout token is the proof
def backchannel_logout(name: str):
    """OpenID Connect Back-Channel Logout 1.0 §2.5 from the upstream: end the Tongban sessions it
    started for that session (``sid``) or that person (``sub``), and log out everywhere."""
    upstream = registry.get(name, enabled_only=False)  # a disabled upstream still logs people out
    db.session.rollback()
    if upstream is None:
        return _bc_error("unknown upstream", name[:40], "unknown_upstream")
    try:
        claims = validate_logout_token(upstream, request.form.get("logout_token", ""))
    except TokenRefused as e:
        return _bc_error("the logout token is not valid", upstream.name, e.reason)
    except UpstreamUnavailable as e:
        body = json.dumps({"error": "temporarily_unavailable", "error_description": e.reason})
        return Response(body, 503, {"Cache-Control": "no-store"}, mimetype="application/json")
    now = utcnow()
    keep = int(current_app.config["TONGBAN_FEDERATION_LOGOUT_TOKEN_MAX_AGE"]) + \
        2 * int(current_app.config["TONGBAN_FEDERATION_CLOCK_SKEW"])
    db.session.execute(delete(UsedLogoutToken).where(UsedLogoutToken.expires_at < now))
    db.session.add(UsedLogoutToken(upstream_id=upstream.id, jti=claims["jti"],
                                   expires_at=now + timedelta(seconds=keep)))
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        return _bc_error("the logout token was used already", upstream.name, "jti_reused")
    stmt = select(FederatedSession.sid).where(FederatedSession.upstream_id == upstream.id)
    if claims.get("sid") is not None:
        stmt = stmt.where(FederatedSession.upstream_sid == claims["sid"])
    if claims.get("sub") is not None:
        stmt = stmt.where(FederatedSession.upstream_sub == claims["sub"])
    sids = list(db.session.execute(stmt).scalars())
    ended = 0
    for sess in db.session.execute(select(LoginSession).where(LoginSession.sid.in_(sids),
                                                              LoginSession.ended_at.is_(None))).scalars():
        sessions.end(sess, "upstream_logout", f"upstream:{upstream.name}")
        ended += 1
    audit.record("federation.backchannel_logout", actor=f"upstream:{upstream.name}",
                 object=f"upstream:{upstream.name}",
                 detail={"upstream_sub": claims.get("sub"), "upstream_sid": claims.get("sid"), "ended": ended})
    db.session.commit()
    return Response("", 200, {"Cache-Control": "no-store"})


def upstream_logout_url(sess, continue_to: str | None) -> str | None:
    """After a log-out at Tongban (its transaction committed): where the browser goes to log out
    at the upstream that authenticated ``sess`` (RP-Initiated Logout 1.0 with ``id_token_hint``
    and ``post_logout_redirect_uri`` back here), or None."""
    if "fed" not in (sess.amr or "").split():
        return None
    found = flow.id_token_of(sess.sid)
    if found is None:
        db.session.rollback()
        return None
    fed, id_token = found
    upstream = registry.get_by_id(fed.upstream_id)
    db.session.rollback()
    if upstream is None:
        return None
    try:
        end_session = metadata.discovery(upstream.issuer).get("end_session_endpoint")
    except UpstreamUnavailable:
        end_session = None
    if not isinstance(end_session, str) or not end_session:
        return None
    state = token(16)
    flask_session[_LOGOUT_KEY] = {"state": state, "continue": continue_to or ""}
    audit.record_later("federation.upstream_logout", actor=f"user:{sess.user.sub}", object=f"upstream:{upstream.name}",
                       detail={"session": sess.sid})
    params = {"id_token_hint": id_token, "client_id": upstream.client_id, "state": state,
              "post_logout_redirect_uri": f"{current_app.config['TONGBAN_ISSUER']}/federation/logged-out"}
    return end_session + ("&" if "?" in end_session else "?") + urlencode(params)


@bp.route("/logged-out")
def logged_out():
    """Back from the upstream's logout: on to where the system that asked wanted to go."""
    saved = flask_session.pop(_LOGOUT_KEY, None) or {}
    if saved.get("state") and saved.get("state") == request.args.get("state") and saved.get("continue"):
        return redirect(saved["continue"])
    return render_template("idp/logged_out.html", frames=[], continue_to=None)


def buttons() -> list[dict]:
    """For the log-in page: the enabled upstreams."""
    try:
        return [{"name": name, "display_name": display} for name, display in registry.login_buttons()]
    except Exception:  # the log-in page never fails because of this list
        current_app.logger.exception("federation: cannot list upstreams")
        return []


def _on_logged_out(sess, continue_to: str | None = None, **_) -> str | None:
    return upstream_logout_url(sess, continue_to)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    signals.logged_out.connect(_on_logged_out, weak=False)  # idempotent: one receiver per process

    @app.context_processor
    def _federation():
        return {"federation_buttons": buttons}
