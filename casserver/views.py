"""CAS 3.0 endpoints: /cas/login, /cas/logout, /cas/serviceValidate, /cas/p3/serviceValidate,
/cas/proxyValidate, /cas/p3/proxyValidate (Apereo CAS Protocol 3.0 §2)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from flask import session as flask_session
from flask_babel import gettext as _

from people import sessions
from tongban import audit
from tongban.clock import epoch
from tongban.extensions import csrf, db

from . import services

bp = Blueprint("cas", __name__, url_prefix="/cas")

CAS_NS = "http://www.yale.edu/tp/cas"
_LOGIN_KEY = "tb_cas_login"
_LOGIN_WITHIN = 600  # seconds a log-in page may stay open and still count as a new log-in


def _true(name: str) -> bool:
    return (request.args.get(name) or "").lower() in ("true", "1")


def _with_ticket(service: str, ticket: str) -> str:
    return service + ("&" if "?" in service else "?") + urlencode({"ticket": ticket})


def _refuse(description: str, status: int = 400):
    return render_template("idp/oauth_error.html", error="INVALID_SERVICE", description=description), status


def _mark(sess) -> str:
    from idp.views import _auth_mark

    return _auth_mark(sess)


def _new_login(sess, service: str) -> bool:
    """True once, for the log-in this browser was sent to for ``service``."""
    asked = flask_session.pop(_LOGIN_KEY, None)
    if not asked or asked.get("service") != service:
        return False
    if asked.get("sid") == sess.sid and asked.get("auth") == _mark(sess):
        return False
    return epoch() - int(asked.get("at", 0)) <= _LOGIN_WITHIN


@bp.route("/login", methods=["GET"])
def login():
    service_url = request.args.get("service")
    sess = sessions.current_session()
    if not service_url:
        return redirect(url_for("account.account") if sess else url_for("idp.login"))
    service = services.find_service(service_url)
    if service is None:
        audit.record("cas.login_refused", actor=f"user:{sess.user.sub}" if sess else "anonymous",
                     object=service_url[:200], outcome="failure", detail={"reason": "unregistered service"})
        db.session.commit()
        return _refuse(_("This address is not registered as a CAS service."))
    renew = _true("renew")
    new_login = sess is not None and _new_login(sess, service_url)
    if sess is None or (renew and not new_login):
        if _true("gateway") and not renew:
            return redirect(service_url)  # never a log-in page: back without a ticket (CAS §2.1.1)
        flask_session[_LOGIN_KEY] = {"sid": sess.sid if sess else "", "auth": _mark(sess), "at": epoch(),
                                     "service": service_url}
        args = {"next": request.full_path}
        if sess is not None:
            args["force"] = "1"
        return redirect(url_for("idp.login", **args))
    ticket = services.issue_ticket(sess, service, service_url, from_new_login=new_login)
    db.session.commit()
    return redirect(_with_ticket(service_url, ticket))


@bp.route("/logout", methods=["GET"])
def logout():
    """Ends the single-sign-on session (and with it every system's, CAS §2.3); goes on to
    ``service`` only if it is a registered CAS service."""
    from idp import logout as everywhere

    service_url = request.args.get("service")
    target = service_url if service_url and services.find_service(service_url) else None
    sess = sessions.current_session()
    frames: list[dict] = []
    if sess is not None:
        frames = everywhere.frontchannel_frames(sess.sid)
        sessions.end(sess, "logout")
        db.session.commit()
    if target and not frames:
        response = redirect(target)
    else:
        response = current_app.make_response(render_template("idp/logged_out.html", frames=frames,
                                                             continue_to=target))
        if frames:
            from tongban.security import CSP

            origins = " ".join(sorted({f["origin"] for f in frames}))
            response.headers["Content-Security-Policy"] = f"{CSP}; frame-src {origins}"
    sessions.clear_cookie(response)
    return response


# ---------------------------------------------------------------- validation


def _xml(root) -> Response:
    from lxml import etree  # lxml: imported by the first CAS answer, not at start-up

    body = etree.tostring(root, encoding="UTF-8", xml_declaration=False)
    return Response(body, mimetype="application/xml", headers={"Cache-Control": "no-store"})


def _json(data: dict) -> Response:
    return Response(json.dumps(data, ensure_ascii=False), mimetype="application/json",
                    headers={"Cache-Control": "no-store"})


def _failure(fmt: str, code: str, description: str) -> Response:
    from lxml import etree

    if fmt == "JSON":
        return _json({"serviceResponse": {"authenticationFailure": {"code": code, "description": description}}})
    root = etree.Element(f"{{{CAS_NS}}}serviceResponse", nsmap={"cas": CAS_NS})
    fail = etree.SubElement(root, f"{{{CAS_NS}}}authenticationFailure", code=code)
    fail.text = description
    return _xml(root)


def _success(fmt: str, user: str, attrs: dict[str, str] | None) -> Response:
    from lxml import etree

    if fmt == "JSON":
        body: dict = {"user": user}
        if attrs is not None:
            body["attributes"] = attrs
        return _json({"serviceResponse": {"authenticationSuccess": body}})
    root = etree.Element(f"{{{CAS_NS}}}serviceResponse", nsmap={"cas": CAS_NS})
    ok = etree.SubElement(root, f"{{{CAS_NS}}}authenticationSuccess")
    etree.SubElement(ok, f"{{{CAS_NS}}}user").text = user
    if attrs is not None:
        el = etree.SubElement(ok, f"{{{CAS_NS}}}attributes")
        for k, v in attrs.items():
            etree.SubElement(el, f"{{{CAS_NS}}}{k}").text = v
    return _xml(root)


def _validate(*, p3: bool, proxy: bool) -> Response:
    fmt = (request.args.get("format") or "XML").upper()
    if fmt not in ("XML", "JSON"):
        return _failure("XML", "INVALID_REQUEST", "format must be XML or JSON")
    try:
        v = services.validate(request.args.get("ticket"), request.args.get("service"),
                              renew=_true("renew"), proxy=proxy)
    except services.CasFailure as f:
        return _failure(fmt, f.code, f.description)
    # pgtUrl: proxy-granting tickets are not issued (the validation itself succeeds, CAS §2.5.4)
    return _success(fmt, v.user.sub, services.attributes(v) if p3 else None)


@bp.route("/serviceValidate")
def service_validate():
    return _validate(p3=False, proxy=False)


@bp.route("/p3/serviceValidate")
def p3_service_validate():
    return _validate(p3=True, proxy=False)


@bp.route("/proxyValidate")
def proxy_validate():
    return _validate(p3=False, proxy=True)


@bp.route("/p3/proxyValidate")
def p3_proxy_validate():
    return _validate(p3=True, proxy=True)


@bp.route("/proxy")
def proxy():
    from lxml import etree

    fmt = (request.args.get("format") or "XML").upper()
    root = etree.Element(f"{{{CAS_NS}}}serviceResponse", nsmap={"cas": CAS_NS})
    fail = etree.SubElement(root, f"{{{CAS_NS}}}proxyFailure", code="INVALID_REQUEST")
    fail.text = "proxy-granting tickets are not issued by this server"
    if fmt == "JSON":
        return _json({"serviceResponse": {"proxyFailure": {"code": "INVALID_REQUEST",
                                                           "description": fail.text}}})
    return _xml(root)


def init_app(app) -> None:
    csrf.exempt(bp)
    app.register_blueprint(bp)
