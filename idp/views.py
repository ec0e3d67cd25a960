"""HTTP for the provider: discovery, authorize (log-in, consent), token, userinfo,
revocation, introspection, end-session. Thin: the work is in services and server.py."""

from __future__ import annotations

import io
import json
import logging
import re
from urllib.parse import urlencode

from authlib.oauth2 import OAuth2Error
from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import session as flask_session
from flask.globals import request_ctx
from flask_babel import format_datetime
from flask_babel import gettext as _
from werkzeug.exceptions import HTTPException

from people import accounts, sessions, signals
from people.forms import ConfirmForm, LoginForm
from people.mfa import has_second_factor
from tongban import audit
from tongban.clock import epoch, to_epoch
from tongban.errors import TongbanError
from tongban.extensions import csrf, db
from tongban.i18n import safe_next
from tongban.security import cacheable, check_input

from . import clients as registry
from . import consents, dpop, par
from . import logout as everywhere
from .dpop import ALGS
from .enterprise_views import acting_step
from .errors import FormExpired
from .mfa_views import mark_fresh, start_login
from .pairwise import subject_for
from .scopes import SCOPES, SILENT, describe
from .server import require_oauth, server, userinfo_claims
from .stepup import enforce as stepup

bp = Blueprint("idp", __name__)
log = logging.getLogger(__name__)


# ---------------------------------------------------------------- discovery


def discovery_document() -> dict:
    iss = current_app.config["TONGBAN_ISSUER"]
    doc = {
        "issuer": iss,
        "authorization_endpoint": f"{iss}/oauth/authorize",
        "token_endpoint": f"{iss}/oauth/token",
        "userinfo_endpoint": f"{iss}/oauth/userinfo",
        "jwks_uri": f"{iss}/jwks.json",
        "revocation_endpoint": f"{iss}/oauth/revoke",
        "introspection_endpoint": f"{iss}/oauth/introspect",
        "end_session_endpoint": f"{iss}/oauth/logout",
        "device_authorization_endpoint": f"{iss}/oauth/device_authorization",
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": True,
        "frontchannel_logout_session_supported": True,
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials",
                                  "urn:ietf:params:oauth:grant-type:device_code",
                                  "urn:ietf:params:oauth:grant-type:token-exchange",
                                  "urn:openid:params:grant-type:ciba"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid",
                             "azp", "at_hash", "name", "gender", "birthdate", "locale", "phone_number",
                             "phone_number_verified", "id_number", "id_number_verified",
                             "assurance_level", "org_uscc", "org_name", "org_role", "org_authorised_until"],
        "acr_values_supported": ["L1", "L2", "L3", "L4", "L5"],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "claims_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "ui_locales_supported": ["zh-CN", "en"],
        "access_token_signing_alg_values_supported": ["ES256"],
        # CIBA Core §4, poll mode (idp.ciba); token exchange (RFC 8693) is a grant type below
        "backchannel_authentication_endpoint": f"{iss}/oauth/bc-authorize",
        "backchannel_token_delivery_modes_supported": ["poll"],
        "backchannel_user_code_parameter_supported": False,
        **_modern_discovery(),
    }
    doc.update(par.discovery_additions(doc))  # private_key_jwt, PAR, JAR (docs/oidc-modern.md)
    return doc


def _modern_discovery() -> dict:
    """DPoP (RFC 9449 §5.1), pairwise subjects (OIDC Core §8), resource indicators (RFC 8707)."""
    return {"subject_types_supported": ["public", "pairwise"], "dpop_signing_alg_values_supported": list(ALGS)}


_DISCOVERY_CACHE: dict[int, tuple[str, bytes]] = {}


def discovery_body() -> str:
    """The discovery document, serialised once per application (the view and the lean path)."""
    key = id(current_app.config)  # one per application
    cached = _DISCOVERY_CACHE.get(key)
    if cached is None:
        body = json.dumps(discovery_document(), separators=(",", ":"))
        cached = _DISCOVERY_CACHE[key] = (body, body.encode())
    return cached[0]


def discovery_bytes_if_cached(app) -> bytes | None:
    """``discovery_body()`` of ``app``, encoded, once it was serialised (no application context)."""
    cached = _DISCOVERY_CACHE.get(id(app.config))
    return cached[1] if cached is not None else None


@bp.route("/.well-known/openid-configuration")
def discovery():
    cacheable(300)
    return Response(discovery_body(), mimetype="application/json")


@bp.route("/.well-known/oauth-authorization-server")
def oauth_metadata():
    return discovery()


# ---------------------------------------------------------------- authorize


def _authorize_error(error: OAuth2Error):
    """Errors before the redirect URI is trusted are shown here, never redirected."""
    if getattr(error, "redirect_uri", None):
        return server.handle_error_response(None, error)
    audit.record("authorize.rejected", actor="anonymous", outcome="failure",
                 detail={"error": error.error, "client_id": request.values.get("client_id", "")[:64]})
    db.session.commit()
    return render_template("idp/oauth_error.html", error=error.error,
                           description=error.description or error.error), error.status_code


def _without_login_prompt() -> str:
    """The authorize URL to come back to after logging in, minus prompt=login."""
    args = g.get("authorize_args") or request.args  # as sent (a PAR request_uri, not its parameters)
    params = [(k, v) for k, v in args.items(multi=True) if k != "prompt"]
    prompts = [p for p in request.args.get("prompt", "").split() if p != "login"]
    if prompts and g.get("authorize_args") is None:  # a pushed or signed request keeps its own prompt
        params.append(("prompt", " ".join(prompts)))
    return url_for("idp.authorize") + "?" + urlencode(params)


def _is_authorization_post() -> bool:
    """A POSTed authorization request (OIDC Core §3.1.2.1), as opposed to the consent form, which
    posts only its CSRF token and the decision to the authorization request's URL."""
    return request.method == "POST" and any(k in request.form for k in ("client_id", "response_type"))


@bp.route("/oauth/authorize", methods=["GET", "POST"])
@csrf.exempt  # a POSTed authorization request carries no CSRF token; the consent form is checked below
def authorize():
    if request.method == "POST" and "password" in request.form:
        # the log-in form of the log-in page this URL shows, posted back to the page's own URL
        # (its action is /login; a client that posts a page's form to the page is answered
        # the same). Never treated as an authorization request: a password goes in no URL.
        # The same CSRF protection as /login's (its HTTPS Referer check included).
        if current_app.config.get("WTF_CSRF_ENABLED", True):
            csrf.protect()
        return login()
    if _is_authorization_post():
        # the same request as a GET (parameters from the query and the body, all of them, so that a
        # repeated one is still refused): every later step (log-in, step-up, chooser, consent)
        # comes back to the authorization request's URL
        params = list(request.args.items(multi=True)) + list(request.form.items(multi=True))
        return redirect(url_for("idp.authorize") + "?" + urlencode(params), 303)
    refused = par.prepare_authorization_request()  # PAR request_uri, JAR request (docs/oidc-modern.md)
    if refused is not None:
        return refused
    if request.method == "POST" and current_app.config.get("WTF_CSRF_ENABLED", True):
        csrf.protect()  # the consent form
    sess = sessions.current_session()
    user = sess.user if sess else None
    try:
        grant = server.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        return _authorize_error(error)
    client = grant.request.client
    redirect_uri = grant.redirect_uri
    data = grant.request.payload.data
    prompts = set((data.get("prompt") or "").split())

    fresh = sess is not None and (_fresh_login(sess) or _answered_before_consent(sess))
    stale = False
    max_age = data.get("max_age")
    if max_age not in (None, ""):
        try:
            max_age = int(max_age)
        except ValueError:
            max_age = -1
        if max_age < 0:
            return server.handle_error_response(None, _invalid("max_age must be a number of seconds",
                                                               redirect_uri))
        # max_age=0 is a log-in now, whatever the clock says (OIDC Core §3.1.2.1)
        stale = sess is not None and not fresh and (max_age == 0 or epoch() - to_epoch(sess.auth_time) > max_age)
    hint = data.get("id_token_hint")
    other_user = False
    if hint:
        claims = _decode_id_token_hint(hint)
        aud = (claims or {}).get("aud")
        if claims is None or client.client_id not in (aud if isinstance(aud, list) else [aud]):
            return server.handle_error_response(None, _invalid("the id_token_hint is not valid for this client",
                                                               redirect_uri))
        # the person the system expects is not the one logged in here (OIDC Core §3.1.2.1)
        other_user = user is not None and claims.get("sub") != subject_for(client, user.sub) and not fresh
    if user is None or ("login" in prompts and not fresh) or stale or other_user:
        if "none" in prompts:
            return server.handle_error_response(None, LoginRequiredError(redirect_uri=redirect_uri,
                                                                          state=data.get("state")))
        # remember that a log-in was asked for, so the one that answers it satisfies max_age
        # even if a clock second passes before the request continues (max_age=0)
        flask_session[_REAUTH_KEY] = {"sid": sess.sid if sess else "", "auth": _auth_mark(sess), "at": epoch()}
        # the log-in page itself, as GET /login?next=…&login_hint=… shows it (no round trip
        # through a redirect); its form posts to /login, which answers this request
        return _login_page(LoginForm(formdata=None), _without_login_prompt(), data.get("login_hint"))

    stepped = stepup(sess, data, redirect_uri, prompts)
    if stepped is not None:
        return stepped
    scopes = client.get_allowed_scope(data.get("scope")).split()

    chooser = acting_step(sess, client, scopes, prompts, redirect_uri, data.get("state"))
    if chooser is not None:
        return chooser
    if request.method == "POST":
        form = ConfirmForm()
        if not form.validate_on_submit():
            raise FormExpired()
        if request.form.get("decision") != "approve":
            audit.record("consent.denied", actor=f"user:{user.sub}", object=f"client:{client.client_id}")
            db.session.commit()
            return server.create_authorization_response(grant=grant, grant_user=None)
        consents.grant(user, client.client_id, scopes)
        return _issue(grant, sess, client)

    if client.first_party or ("consent" not in prompts and consents.covers(user, client.client_id, scopes)):
        return _issue(grant, sess, client)
    if "none" in prompts:
        return server.handle_error_response(None, ConsentRequiredError(redirect_uri=redirect_uri,
                                                                        state=data.get("state")))
    if fresh:  # the consent form of this request (its URL may still ask for the log-in: PAR, max_age=0)
        flask_session[_ANSWERED_KEY] = {"sid": sess.sid, "auth": _auth_mark(sess), "at": epoch(),
                                        "path": request.full_path}
    visible = [(s, describe(s)) for s in scopes if s not in SILENT]
    return render_template("idp/consent.html", client=client, scopes=visible, user=user, form=ConfirmForm(),
                           action=request.full_path)


_REAUTH_KEY = "tb_reauth"
_REAUTH_WITHIN = 600  # seconds a log-in page may stay open and still answer the request


def _auth_mark(sess) -> str:
    """Changes whenever the session authenticates again (a log-in replaces the cookie value)."""
    from tongban.clock import digest

    return digest(sess.token_hash)[:16] if sess is not None else ""


def _fresh_login(sess) -> bool:
    """True once, for the log-in this browser was just sent to (a new session, or the same
    session authenticated again)."""
    asked = flask_session.pop(_REAUTH_KEY, None)
    if not asked or (asked.get("sid") == sess.sid and asked.get("auth") == _auth_mark(sess)):
        return False
    return epoch() - int(asked.get("at", 0)) <= _REAUTH_WITHIN


_ANSWERED_KEY = "tb_reauth_answered"


def _answered_before_consent(sess) -> bool:
    """True once, for the consent form POSTed for the same request (same URL, same session and
    log-in) whose consent page a fresh log-in led to: that log-in answered prompt=login or max_age."""
    answered = flask_session.pop(_ANSWERED_KEY, None)
    if request.method != "POST" or not answered:
        return False
    if (answered.get("sid"), answered.get("auth"), answered.get("path")) != (sess.sid, _auth_mark(sess),
                                                                            request.full_path):
        return False
    return epoch() - int(answered.get("at", 0)) <= _REAUTH_WITHIN


def _invalid(message: str, redirect_uri: str):
    from authlib.oauth2.rfc6749.errors import InvalidRequestError

    return InvalidRequestError(message, redirect_uri=redirect_uri)


def _issue(grant, sess, client):
    sessions.note_client(sess, client.client_id)
    response = server.create_authorization_response(grant=grant, grant_user=sess.user)
    db.session.commit()
    return response


# ---------------------------------------------------------------- token endpoints


@bp.route("/oauth/token", methods=["POST"])
@csrf.exempt
def issue_token():
    if request.args:
        # RFC 6749 §3.2/§4: the parameters are form fields of the body. Authlib would read the query
        # string too, so a grant_type or code there would count; this endpoint has no query part.
        body = {"error": "invalid_request",
                "error_description": "send the token request's parameters in the form body, not the query string"}
        return Response(json.dumps(body), 400, {"Cache-Control": "no-store"}, mimetype="application/json")
    refused = dpop.before_token_request()  # RFC 9449: the DPoP proof, before any grant runs
    if refused is not None:
        return refused
    response = server.create_token_response()
    dpop.after_token_response(response)
    session = db.session()
    if session.in_transaction():  # client_credentials touches no table: nothing to commit
        if response.status_code == 200:
            session.commit()
        else:
            session.rollback()
    return response


@bp.route("/oauth/revoke", methods=["POST"])
@csrf.exempt
def revoke_token():
    response = server.create_endpoint_response("revocation")
    db.session.commit()
    return response


@bp.route("/oauth/introspect", methods=["POST"])
@csrf.exempt
def introspect_token():
    return server.create_endpoint_response("introspection")


@bp.route("/oauth/userinfo", methods=["GET", "POST"])
@csrf.exempt
@require_oauth("openid")
def userinfo():
    from authlib.integrations.flask_oauth2 import current_token

    claims, problem = userinfo_claims(current_token)
    if claims is None:
        return Response(json.dumps({"error": "invalid_token", "error_description": problem}), 401,
                        {"WWW-Authenticate": 'Bearer error="invalid_token"', "Content-Type": "application/json"})
    return Response(json.dumps(claims, ensure_ascii=False), mimetype="application/json")


# ---------------------------------------------------------------- log in / log out


def _throttled_response(retry_after: int, form: LoginForm):
    resp = current_app.make_response((render_template(
        "idp/login.html", form=form, error=_("Too many attempts from your network. Try again in %(s)d "
                                             "seconds.", s=retry_after)), 429))
    resp.headers["Retry-After"] = str(retry_after)
    return resp


def _login_page(form: LoginForm, next_url: str, login_hint: str | None):
    """The log-in page, its form to come back to ``next_url`` (a login_hint fills the ID field)."""
    form.next.data = next_url
    if login_hint and not form.login.data:
        form.login.data = login_hint[:32]
    return render_template("idp/login.html", form=form)


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    next_url = safe_next(request.values.get("next"), url_for("account.account"))
    if request.method == "GET":
        if sessions.current_session() is not None and not request.args.get("force"):
            return redirect(next_url)
        return _login_page(form, next_url, request.args.get("login_hint"))
    if not form.validate_on_submit():
        return render_template("idp/login.html", form=form), 400
    cfg = current_app.config
    # the per-address rate limit's count and the try's slot: one short transaction before Argon2
    attempt = accounts.reserve(form.login.data, ip=request.remote_addr or "", rate=accounts.RateLimit(
        "login-ip", cfg["TONGBAN_LOGIN_RATE_PER_IP"], cfg["TONGBAN_LOGIN_RATE_WINDOW"]))
    if attempt.throttled is not None:
        audit.record("login.throttled", actor=request.remote_addr or "", outcome="failure")
        db.session.commit()
        return _throttled_response(attempt.throttled.retry_after, form)
    result = accounts.authenticate(form.login.data, form.password.data, ip=request.remote_addr or "",
                                   user_agent=request.user_agent.string or "", attempt=attempt)
    if not result.ok:
        db.session.commit()
        if result.reason == "busy":  # other tries of this account from this address still running
            return _throttled_response(1, form)
        kind, help_text = "bad", ""
        if result.reason == "locked":
            kind = "locked"
            msg = _("This account is locked after too many failed log-ins until %(t)s.",
                    t=format_datetime(result.locked_until, "short") if result.locked_until else "")
            help_text = _("Wait until then and try again, or reset the password with a code sent to your "
                          "verified phone (this also ends the lock), or bring your identity card to a "
                          "government service window.")
        elif result.reason == "disabled":
            kind = "disabled"
            msg = _("This account is disabled. Please contact the service centre.")
        else:
            msg = _("Wrong ID number/phone or password.")
            # the same words for every account, known or not: the page must not tell which exist
            help_text = _("After %(n)d wrong passwords in a row from this network the account is locked "
                          "for a while. Not sure of the password? Reset it instead of guessing.",
                          n=cfg["TONGBAN_LOCKOUT_THRESHOLD"])
        return render_template("idp/login.html", form=form, error=msg, error_kind=kind,
                               help=help_text), (423 if result.reason == "locked" else 401)

    if has_second_factor(result.user):  # the password was right; the second factor comes next
        db.session.commit()
        return start_login(result.user, form.next.data)
    cookie: dict = {}
    sid = sessions.start(result.user, cookie).sid
    _commit_keeping_loaded()

    mark_fresh(sid, password=True)
    target = safe_next(form.next.data, url_for("account.account"))
    response = _continue_authorization(target) or redirect(target)
    sessions.set_cookie(response, cookie["value"])
    return response


def _commit_keeping_loaded() -> None:
    """Commit without expiring what the session holds: the log-in session and its account were
    just written by this transaction, so what is in memory is what is stored (columns the
    database fills in are expired at the flush as always), and the authorization request that
    continues in this response reads them without loading them again."""
    session = db.session()
    before = session.expire_on_commit
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = before


# ``g`` entries of one request's own: the outer POST's are set aside while the authorization
# view runs (Flask-WTF's "this request passed CSRF"), the inner run's dropped if it fails
_REQUEST_FLAGS = ("csrf_valid",)
_INNER_FLAGS = ("authorize_args", "par_request_id")

# A target the browser would send as it is: ASCII, no fragment, nothing to percent-encode (what
# url_for builds); and short enough for any server's request line (gunicorn's is 4094 bytes).
_AS_SENT = re.compile(r"[A-Za-z0-9\-._~:/?@!$&'()*+,;=%]{1,4000}")


def _continue_authorization(target: str):
    """The answer to the authorization request a log-in was for, in the log-in's own response.

    Without this the browser is sent back to ``target`` (the authorization request's URL) and
    asks for it again: one more round trip doing the same work. Here the authorization view
    runs for that URL inside this request, exactly as for the browser's GET: the same view, the
    same checks (the request is validated again, prompt/max_age/id_token_hint, step-up, the
    enterprise chooser, consent), the same session (just started) and the same signed cookie
    session. Whatever it answers — the redirect with the code or an error for the client, the
    consent page, a chooser, a step-up — is this response (a page's forms post to their own
    absolute URLs). None when ``target`` is not an authorization request, or when the request as
    a GET would be refused before any view runs (then the browser asks for it and is refused
    as before)."""
    if not _AS_SENT.fullmatch(target):
        return None
    path, _sep, query = target.partition("?")
    if path != url_for("idp.authorize"):
        return None
    outer_ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
    outer = outer_ctx.request
    environ = dict(outer.environ)
    root = outer.script_root
    environ.update({
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path[len(root):],  # ASCII: as WSGI's latin-1 text of the raw bytes
        "QUERY_STRING": query,
        "CONTENT_LENGTH": "0",
        "wsgi.input": io.BytesIO(b""),
    })
    environ.pop("CONTENT_TYPE", None)
    inner = current_app.request_class(environ)
    try:
        inner.url_rule, inner.view_args = outer_ctx.url_adapter.match(  # the GET's route, as Flask routes it
            inner.path, method="GET", return_rule=True)
    except HTTPException:
        return None
    if inner.url_rule.endpoint != "idp.authorize":
        return None
    # what this request's CSRF check left in ``g`` is not the GET's (it would let a form pass)
    outer_g = {k: g.pop(k) for k in _REQUEST_FLAGS if k in g}
    fresh_state = {k: flask_session.get(k) for k in (_REAUTH_KEY, _ANSWERED_KEY)}
    outer_ctx.request = inner
    try:
        try:
            check_input()  # what the GET would meet first: its query decoded
        except (HTTPException, TongbanError):
            return None
        response = current_app.make_response(authorize())
        if response.status_code in (307, 308):  # would make the browser POST the password there
            raise RuntimeError(f"the authorization view answered {response.status_code}")
        return response
    except Exception as error:
        # the GET will meet the same failure and answer it as any request's (with the session's
        # cookie set by this response, and this log-in still counting as the fresh one it asked for)
        if not isinstance(error, (HTTPException, TongbanError)):
            log.exception("the authorization request could not continue in the log-in's response")
        db.session.rollback()
        for k, v in fresh_state.items():
            if v is None:
                flask_session.pop(k, None)
            else:
                flask_session[k] = v
        for k in _INNER_FLAGS:
            g.pop(k, None)
        return None
    finally:
        outer_ctx.request = outer
        for k, v in outer_g.items():
            setattr(g, k, v)


@bp.route("/logout", methods=["GET", "POST"])
@bp.route("/oauth/logout", methods=["GET", "POST"])
@csrf.exempt  # relying parties POST here (RP-Initiated Logout §2); without a valid
# id_token_hint nothing happens unless the CSRF-checked confirmation form is submitted
def logout():
    """RP-Initiated Logout 1.0, with back-channel and front-channel logout of the other systems."""

    hint = request.values.get("id_token_hint")
    target = request.values.get("post_logout_redirect_uri")
    state = request.values.get("state")
    client_id = request.values.get("client_id")
    if request.values.get("ui_locales"):
        g.ui_locales = request.values["ui_locales"]
    hint_claims = _decode_id_token_hint(hint) if hint else None
    if hint and hint_claims is None:
        return render_template("idp/oauth_error.html", error="invalid_request",
                               description=_("The id_token_hint is not valid.")), 400
    if hint_claims:
        aud = hint_claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if client_id and client_id not in audiences:
            return render_template("idp/oauth_error.html", error="invalid_request",
                                   description=_("The client_id does not match the id_token_hint.")), 400
        client_id = hint_claims.get("azp") if hint_claims.get("azp") in audiences else audiences[0]
    client = registry.get_client(client_id) if client_id else None
    redirect_to = None
    if target and client and target in client.post_logout_redirect_uris:
        redirect_to = target + (("&" if "?" in target else "?") + urlencode({"state": state}) if state else "")
    sess = sessions.current_session()
    # a hint names who asked; if it names someone else than this browser's user, ask
    hint_ok = bool(hint_claims) and (sess is None or hint_claims.get("sub") == subject_for(client, sess.user.sub))
    confirmed = request.method == "POST" and ConfirmForm().validate_on_submit()
    if sess is not None and not hint_ok and not confirmed:
        return render_template("idp/logout_confirm.html", form=ConfirmForm(), action=request.full_path,
                               client=client)
    frames: list[dict] = []
    if sess is not None:
        initiator = client.client_id if hint_ok and client else None
        everywhere.initiated_by(initiator)
        frames = everywhere.frontchannel_frames(sess.sid, except_client=initiator)
        sessions.end(sess, "logout")
        db.session.commit()
        redirect_to = signals.logout_detour(sess, redirect_to) or redirect_to  # e.g. the upstream's logout
    if redirect_to and not frames:
        response = redirect(redirect_to)
        sessions.clear_cookie(response)
        return response
    return logged_out_page(frames, redirect_to)


def logged_out_page(frames: list[dict], continue_to: str | None = None, everywhere: int = 0):
    """The "you are logged out" page: front-channel logout iframes (their origins allowed by the
    CSP, nothing else), and the session cookie cleared. ``everywhere``: how many sessions
    "log out everywhere" ended (0: this one only)."""
    response = current_app.make_response(render_template("idp/logged_out.html", frames=frames,
                                                         continue_to=continue_to, everywhere=everywhere))
    if frames:
        from tongban.security import CSP

        origins = " ".join(sorted({f["origin"] for f in frames}))
        response.headers["Content-Security-Policy"] = f"{CSP}; frame-src {origins}"
    sessions.clear_cookie(response)
    return response


def _decode_id_token_hint(raw: str) -> dict | None:
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jws import extract_compact

    from keys.services import keyring

    try:
        header = extract_compact(raw.encode()).headers()
        key = keyring().find(header.get("kid", ""))
        if key is None:
            return None
        claims = jwt.decode(raw, key.signer, algorithms=[key.alg]).claims
    except (JoseError, ValueError, RecursionError):  # RecursionError: a hint of nested "["
        return None
    if claims.get("iss") != current_app.config["TONGBAN_ISSUER"]:
        return None
    return claims  # an expired hint is still a valid hint (OIDC RP-Initiated Logout §2)


# ---------------------------------------------------------------- wiring


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.context_processor
    def _current_user():
        return {"sso_user": sessions.current_user() if g.get("_sso_ok", True) else None,
                "fmt_dt": lambda d: format_datetime(d, "short") if d else ""}


__all__ = ["bp", "discovery_document", "init_app"]
