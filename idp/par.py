"""Pushed Authorization Requests (RFC 9126) and how the authorization endpoint reads
``request_uri`` / ``request`` (docs/oidc-modern.md).

POST /oauth/par: an authenticated client pushes its authorization request (plain parameters, or
a signed request object in ``request``); the answer is a one-time
``urn:ietf:params:oauth:request_uri:<random>`` valid TONGBAN_PAR_LIFETIME seconds. Only its
SHA-256 is stored (the database: every server sees it).

GET /oauth/authorize?client_id=...&request_uri=...: the pushed parameters, and nothing else,
make the request. The first browser that presents the request_uri claims it (a random value in
its session cookie, stored hashed), and may come back with it for TONGBAN_PAR_INTERACTION_LIFETIME
while it logs in and consents; it is spent when the authorization response (code or error) is
sent back to the client. Any other request_uri is ``request_uri_not_supported``: no URL is fetched.
"""

from __future__ import annotations

import json
from datetime import timedelta

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidRequestError, UnsupportedResponseTypeError
from authlib.oauth2.rfc9101.errors import InvalidRequestUriError
from flask import Blueprint, Response, current_app, g, render_template
from flask import request as flask_request
from flask import session as flask_session
from sqlalchemy import delete, select, update
from werkzeug.datastructures import ImmutableMultiDict

from tongban import audit
from tongban.clock import digest, token, utcnow
from tongban.extensions import csrf, db

from . import clients as registry
from . import fapi, jar
from .client_auth import ALGS, METHOD
from .errors import shown
from .models import PushedAuthorizationRequest

URN = "urn:ietf:params:oauth:request_uri:"
PAR_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
# client authentication parameters: never part of the pushed authorization request
_AUTH_PARAMS = ("client_secret", "client_assertion", "client_assertion_type")
_BROWSER_KEY = "tb_par"
MAX_PARAMS_BYTES = 16 * 1024  # a pushed request's parameters, as stored

bp = Blueprint("par", __name__)


class RequestUriNotSupportedError(OAuth2Error):
    error = "request_uri_not_supported"


def _json_error(error: OAuth2Error) -> Response:
    body = {"error": error.error}
    if error.description:
        body["error_description"] = error.description
    headers = {"Cache-Control": "no-store"}
    if error.status_code == 401:
        headers["WWW-Authenticate"] = 'Basic realm="tongban"'
    return Response(json.dumps(body), error.status_code, headers, mimetype="application/json")


# ---------------------------------------------------------------- POST /oauth/par


@bp.route("/oauth/par", methods=["POST"])
@csrf.exempt
def push():
    server = current_app.extensions["tongban.authorization_server"]  # idp.server (it imports this module)
    if flask_request.args:
        return _json_error(InvalidRequestError("send the parameters in the form body, not the query string"))
    for key, values in flask_request.form.lists():
        if len(values) > 1:
            return _json_error(InvalidRequestError(f"{shown(key)} given more than once"))
    try:
        client = server.authenticate_client(server.create_oauth2_request(None), PAR_AUTH_METHODS, "par")
    except OAuth2Error as error:
        db.session.rollback()
        return _json_error(error)
    form = flask_request.form
    try:
        params = _pushed_params(client, form)
    except OAuth2Error as error:
        audit.record_later("par.refused", actor=f"client:{client.client_id}", outcome="failure",
                           detail={"error": error.error, "reason": (error.description or "")[:200]})
        return _json_error(error)
    raw = token(32)
    now = utcnow()
    lifetime = int(current_app.config["TONGBAN_PAR_LIFETIME"])
    # spent or expired pushed requests are of no use after a while (the index keeps this cheap)
    db.session.execute(delete(PushedAuthorizationRequest).where(
        PushedAuthorizationRequest.expires_at < now - timedelta(hours=1)))
    db.session.add(PushedAuthorizationRequest(
        uri_hash=digest(URN + raw), client_id=client.client_id, params=params, created_at=now,
        expires_at=now + timedelta(seconds=lifetime)))
    audit.record("par.pushed", actor=f"client:{client.client_id}",
                 detail={"signed": "request" in form, "scope": params.get("scope", "")[:200]})
    db.session.commit()
    body = json.dumps({"request_uri": URN + raw, "expires_in": lifetime})
    return Response(body, 201, {"Cache-Control": "no-store"}, mimetype="application/json")


def _pushed_params(client, form) -> dict[str, str]:
    """The authorization request the client pushed: checked now, so that its errors go back to
    the client directly (RFC 9126 §2.3)."""
    if "request_uri" in form:
        raise InvalidRequestError("request_uri cannot be pushed")
    if form.get("client_id") not in (None, client.client_id):
        raise InvalidRequestError("client_id does not match the authenticated client")
    if "request" in form:
        outside = [k for k in form if k not in ("request", "client_id", *_AUTH_PARAMS)]
        if outside:
            raise InvalidRequestError(f"{shown(outside[0])} must be inside the request object, not next to it")
        params = jar.decode(form["request"], client)
    else:
        if client.require_signed_request_object:
            raise InvalidRequestError("this client must send a signed request object")
        params = {k: v for k, v in form.items() if k not in _AUTH_PARAMS}
        params["client_id"] = client.client_id
    if params.get("response_type") != "code":
        raise UnsupportedResponseTypeError(shown(params.get("response_type", ""), 20))
    uri = params.get("redirect_uri")
    if uri is not None and not client.check_redirect_uri(uri):
        raise InvalidRequestError("redirect_uri is not registered for this client")
    if uri is None and client.get_default_redirect_uri() is None:
        raise InvalidRequestError("redirect_uri is required")
    error = fapi.check_pushed(client, params)
    if error is not None:
        raise error
    if len(json.dumps(params)) > MAX_PARAMS_BYTES:
        raise InvalidRequestError("the authorization request is too large")
    return params


# ---------------------------------------------------------------- the authorization endpoint


def _error_page(error: OAuth2Error, client_id: str = ""):
    """Shown to the user, never redirected: the redirect URI is not trusted yet."""
    audit.record_later("authorize.rejected", actor="anonymous", outcome="failure",
                       detail={"error": error.error, "client_id": (client_id or "")[:64],
                               "reason": (error.description or "")[:200]},
                       throttle=flask_request.remote_addr or "")
    return render_template("idp/oauth_error.html", error=error.error,
                           description=error.description or error.error), error.status_code


def _use_params(params: dict[str, str]) -> None:
    """From here on, the authorization request is ``params``: Flask's ``request.args`` and
    ``request.values`` (what the Authlib grant and the views read) are replaced for this request;
    ``g.authorize_args`` keeps the original query (the URL to come back to after logging in)."""
    req = flask_request._get_current_object()  # type: ignore[attr-defined]
    g.authorize_args = req.args
    args = ImmutableMultiDict(list(params.items()))
    req.__dict__["args"] = args
    req.__dict__.pop("values", None)
    if req.method != "POST":
        req.__dict__["values"] = args


def prepare_authorization_request():
    """Called first by the authorization endpoint: resolve ``request_uri`` (PAR) or ``request``
    (JAR) into the request's parameters, and enforce the clients' "PAR / signed request object
    required". Returns an error page, or None to go on."""
    args = flask_request.args
    client_id = args.get("client_id") or ""
    if "request_uri" in args and any(u.startswith(URN) for u in args.getlist("request_uri")):
        return _from_pushed(args, client_id)
    # any other request_uri is never fetched: the grant answers request_uri_not_supported (redirected
    # to a registered redirect_uri of a known client, as every other error)
    client = registry.get_client(client_id) if len(args.getlist("client_id")) == 1 else None
    if "request" in args and client is not None and (client.jwks_json or client.jwks_uri):
        # (a client without registered keys cannot sign: the grant answers request_not_supported)
        if fapi.par_required(client):
            return _error_page(InvalidRequestError("this client must push its authorization requests "
                                                   "(PAR, RFC 9126)"), client_id)
        if len(args.getlist("request")) != 1:
            return _error_page(InvalidRequestError("request given more than once"), client_id)
        try:
            params = jar.decode(args["request"], client, outer_client_id=client_id)
        except OAuth2Error as error:
            return _error_page(error, client_id)
        outside = jar.check_outside(args, params)
        if outside is not None:
            return _error_page(outside, client_id)
        _use_params(params)
        return None
    if client is not None and fapi.par_required(client):
        audit.record_later("authorize.par_required", actor=f"client:{client.client_id}", outcome="failure",
                           throttle=flask_request.remote_addr or "")
        return _error_page(InvalidRequestError("this client must push its authorization requests "
                                               "(PAR, RFC 9126)"), client_id)
    if client is not None and client.require_signed_request_object:
        return _error_page(InvalidRequestError("this client must send a signed request object"), client_id)
    return None


def _from_pushed(args, client_id: str):
    others = [k for k in args if k not in ("request_uri", "client_id")]
    if others or any(len(args.getlist(k)) > 1 for k in args):
        return _error_page(InvalidRequestError("only client_id may accompany request_uri"), client_id)
    uri = args["request_uri"]
    if not uri.startswith(URN):
        return _error_page(RequestUriNotSupportedError("only request_uri values from the PAR endpoint "
                                                       "are accepted"), client_id)
    client = registry.get_client(client_id)
    if client is None:
        return _error_page(InvalidRequestError("client_id is missing or unknown"), client_id)
    row = db.session.execute(select(PushedAuthorizationRequest).where(
        PushedAuthorizationRequest.uri_hash == digest(uri))).scalar_one_or_none()
    now = utcnow()
    if row is None or row.client_id != client.client_id:
        if row is not None:
            audit.record_later("par.wrong_client", actor=f"client:{client.client_id}", outcome="failure",
                               object=f"par:{row.id}")
        return _error_page(InvalidRequestUriError(description="unknown request_uri"), client_id)
    if row.used_at is not None or row.expires_at <= now:
        return _error_page(InvalidRequestUriError(
            description="the request_uri was already used" if row.used_at else "the request_uri has expired"),
            client_id)
    mark = flask_session.get(_BROWSER_KEY, {}).get(str(row.id))
    revisit = row.browser_hash is not None
    if not revisit:
        mark = token(16)
        lifetime = int(current_app.config["TONGBAN_PAR_INTERACTION_LIFETIME"])
        claimed = db.session.execute(  # type: ignore[attr-defined]
            update(PushedAuthorizationRequest)
            .where(PushedAuthorizationRequest.id == row.id, PushedAuthorizationRequest.browser_hash.is_(None),
                   PushedAuthorizationRequest.used_at.is_(None))
            .values(browser_hash=digest(mark), expires_at=now + timedelta(seconds=lifetime))
            .execution_options(synchronize_session=False)).rowcount
        db.session.commit()  # one short write; the page goes on reading
        if not claimed:
            return _error_page(InvalidRequestUriError(description="the request_uri was already used"), client_id)
        marks = {k: v for k, v in flask_session.get(_BROWSER_KEY, {}).items()}
        marks = dict(list(marks.items())[-4:])  # a few authorization requests at once, no more
        marks[str(row.id)] = mark
        flask_session[_BROWSER_KEY] = marks
    elif not mark or digest(mark) != row.browser_hash:
        audit.record_later("par.other_browser", actor=f"client:{client.client_id}", outcome="failure",
                           object=f"par:{row.id}", throttle=flask_request.remote_addr or "")
        return _error_page(InvalidRequestUriError(description="the request_uri was already used"), client_id)
    g.par_request_id = row.id
    params = dict(row.params)
    if revisit and "select_account" in params.get("prompt", "").split():
        # the chooser was shown on the first visit (a plain request drops the prompt from the URL
        # it comes back to; a pushed request cannot)
        params["prompt"] = " ".join(p for p in params["prompt"].split() if p != "select_account")
        if not params["prompt"]:
            del params["prompt"]
    _use_params(params)
    return None


def spend() -> bool:
    """The authorization response for the pushed request is being sent: the request_uri is spent
    (atomically: of two concurrent responses only one is sent). True if there was nothing to
    spend or it was spent now."""
    par_id = g.pop("par_request_id", None)
    if par_id is None:
        return True
    spent = db.session.execute(  # type: ignore[attr-defined]
        update(PushedAuthorizationRequest)
        .where(PushedAuthorizationRequest.id == par_id, PushedAuthorizationRequest.used_at.is_(None))
        .values(used_at=utcnow()).execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    if spent:
        marks = dict(flask_session.get(_BROWSER_KEY, {}))
        if marks.pop(str(par_id), None) is not None:
            flask_session[_BROWSER_KEY] = marks
    return bool(spent)


def discovery_additions(doc: dict) -> dict:
    """What this module adds to /.well-known/openid-configuration: only what works."""
    iss = current_app.config["TONGBAN_ISSUER"]
    out: dict = {}
    for key in ("token_endpoint_auth_methods_supported", "revocation_endpoint_auth_methods_supported",
                "introspection_endpoint_auth_methods_supported"):
        methods = list(doc.get(key) or [])
        out[key] = methods if METHOD in methods else [*methods, METHOD]
        out[key.replace("_methods_", "_signing_alg_values_")] = list(ALGS)
    out.update({
        "pushed_authorization_request_endpoint": f"{iss}/oauth/par",
        "require_pushed_authorization_requests": bool(current_app.config["TONGBAN_REQUIRE_PAR"]),
        "request_parameter_supported": True,
        "request_uri_parameter_supported": False,  # only the PAR endpoint's request_uri values
        "request_object_signing_alg_values_supported": list(ALGS),
        "require_signed_request_object": False,  # per client: --require-signed-request-object
    })
    return out


def init_app(app) -> None:
    app.register_blueprint(bp)
