"""SAML 2.0 endpoints: /saml/metadata, /saml/sso (HTTP-Redirect and HTTP-POST), /saml/continue
(after log-in), /saml/slo (LogoutRequest from an SP: ends the session everywhere)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for
from flask import session as flask_session
from flask_babel import gettext as _
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from idp import clients as registry
from people import sessions
from tongban import audit, ratelimit
from tongban.clock import digest, epoch, to_epoch, token, utcnow
from tongban.extensions import csrf, db

from . import services
from .constants import (
    BINDING_HTTP_POST,
    BINDING_HTTP_REDIRECT,
    DIGEST_SHA256,
    NAMEID_FORMAT_PERSISTENT,
    SIG_RSA_SHA256,
    STATUS_NO_PASSIVE,
)
from .models import SamlLogin, SamlNameId, SamlRequest

bp = Blueprint("saml", __name__, url_prefix="/saml")
_PENDING = "tb_saml"
_LOGIN = "tb_saml_login"


def _refuse(description: str, status: int = 400, reason: str = ""):
    audit.record("saml.request_refused", actor="anonymous", object=description[:200], outcome="failure",
                 detail={"reason": reason or description[:100]})
    db.session.commit()
    return render_template("idp/oauth_error.html", error="saml_request_refused", description=description), status


# ---------------------------------------------------------------- metadata


_metadata_cache: dict[tuple, tuple[float, str]] = {}


@bp.route("/metadata")
def metadata():
    """Signed once per key set and five minutes per process (anyone may ask; signing runs xmlsec1)."""
    import time

    from keys import saml as samlkeys

    cache_key = (tuple(r.kid for r in samlkeys.published()), current_app.config["TONGBAN_ISSUER"])
    hit = _metadata_cache.get(cache_key)
    if hit is None or hit[0] < time.monotonic():
        _metadata_cache.clear()
        _metadata_cache[cache_key] = hit = (time.monotonic() + 300, _signed_metadata())
    return Response(hit[1], mimetype="application/samlmetadata+xml", headers={"Cache-Control": "max-age=300"})


def _signed_metadata() -> str:
    from keys import saml as samlkeys

    srv = services.server()  # first: loads pysaml2 with its import-time warning silenced (saml/pysaml.py)
    from saml2.metadata import do_key_descriptor, entity_descriptor, sign_entity_descriptor

    srv.config.valid_for = 24  # hours: validUntil, service providers refresh it daily
    ed = entity_descriptor(srv.config)
    active = samlkeys.active()
    for row in samlkeys.published():
        if row.kid != active.kid:  # rotated in, not signing yet: trusted before it is used
            ed.idpsso_descriptor.key_descriptor.extend(do_key_descriptor(cert=[samlkeys.cert_body(row)],
                                                                         use="signing"))
    _eid, xml = sign_entity_descriptor(ed, None, srv.sec, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256)
    return xml


# ---------------------------------------------------------------- single sign-on


def _parse(srv, enc: str, binding: str, must: bool, relay_state, sigalg, signature):
    from saml2.request import AuthnRequest

    receivers = srv.config.endpoint("single_sign_on_service", binding, "idp")
    req = AuthnRequest(srv.sec, receivers, srv.config.attribute_converters,
                       timeslack=srv.config.accepted_time_diff or 0)
    xml = srv.unravel(enc, binding, AuthnRequest.msgtype)
    req = req.loads(xml, binding, origdoc=enc, must=must, relay_state=relay_state, sigalg=sigalg,
                    signature=signature)
    req.verify()
    return req


def _acs(srv, sp: services.SP, msg) -> str | None:
    """The ACS URL to answer at: the one asked for only if the SP's metadata lists it (HTTP-POST)."""
    acs = srv.metadata.assertion_consumer_service(sp.entity_id, BINDING_HTTP_POST)
    urls = [a["location"] for a in acs]
    if msg.protocol_binding and msg.protocol_binding != BINDING_HTTP_POST:
        return None
    if msg.assertion_consumer_service_url:
        return msg.assertion_consumer_service_url if msg.assertion_consumer_service_url in urls else None
    if msg.assertion_consumer_service_index is not None:
        for a in acs:
            if str(a.get("index")) == str(msg.assertion_consumer_service_index):
                return a["location"]
        return None
    default = [a["location"] for a in acs if str(a.get("is_default", "")).lower() == "true"]
    return (default or urls or [None])[0]


@bp.route("/sso", methods=["GET", "POST"])
@csrf.exempt  # the HTTP-POST binding: an SP's form, checked by its signature and the register
def sso():
    values = request.form if request.method == "POST" else request.args
    binding = BINDING_HTTP_POST if request.method == "POST" else BINDING_HTTP_REDIRECT
    enc = values.get("SAMLRequest")
    relay_state = values.get("RelayState")
    if not enc:
        return _refuse(_("The request has no SAMLRequest."), reason="no SAMLRequest")
    cfg = current_app.config
    hit = ratelimit.hit_client("saml-sso-ip", request.remote_addr, cfg["TONGBAN_LOGIN_RATE_PER_IP"],
                               cfg["TONGBAN_LOGIN_RATE_WINDOW"])
    if not hit.allowed:  # each checked request costs a signature check and a row
        response = current_app.make_response(_refuse(_("Too many requests. Try again in %(s)d seconds.",
                                                       s=hit.retry_after), 429, reason="throttled"))
        response.headers["Retry-After"] = str(hit.retry_after)
        return response
    if relay_state and len(relay_state) > 1024:
        return _refuse(_("The RelayState is too long."), reason="RelayState too long")
    sps = services.service_providers()
    srv = services.server(sps)
    sigalg, signature = values.get("SigAlg"), values.get("Signature")
    try:
        req = _parse(srv, enc, binding, False, relay_state, sigalg, signature)
        issuer = req.message.issuer.text if req.message.issuer is not None else None
        sp = sps.get(issuer or "")
        if sp is None:
            return _refuse(_("This service provider is not registered."), reason=f"unregistered SP {issuer}"[:100])
        if sp.wants_signed_requests:  # AuthnRequestsSigned="true" in its metadata: verify, or refuse
            req = _parse(srv, enc, binding, True, relay_state, sigalg, signature)
    except Exception as e:  # pysaml2 raises many kinds: bad encoding, XML, signature, version, destination
        return _refuse(_("The SAML request is not valid."), reason=f"{type(e).__name__}: {e}"[:100])
    msg = req.message
    try:
        issued = datetime.fromtimestamp(_ts(msg.issue_instant), UTC).replace(tzinfo=None)
    except (TypeError, ValueError):
        return _refuse(_("The SAML request is not valid."), reason="bad IssueInstant")
    max_age = current_app.config["TONGBAN_SAML_REQUEST_MAX_AGE"]
    now = utcnow()
    if issued < now - timedelta(seconds=max_age) or issued > now + timedelta(seconds=60):
        return _refuse(_("The SAML request is too old."), reason="late request")
    acs = _acs(srv, sp, msg)
    if acs is None:
        return _refuse(_("The AssertionConsumerServiceURL is not in the service provider's metadata."),
                       reason="ACS not in metadata")
    raw = token(24)
    db.session.add(SamlRequest(key_hash=digest(raw), client_id=sp.client.client_id, request_id=msg.id[:200],
                               acs_url=acs, relay_state=relay_state, force_authn=str(msg.force_authn).lower() == "true",
                               is_passive=str(msg.is_passive).lower() == "true", created_at=now,
                               expires_at=now + timedelta(seconds=max_age)))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return _refuse(_("This SAML request was used already."), reason="replayed request")
    pending = [*[k for k in flask_session.get(_PENDING, []) if k][-4:], raw]
    flask_session[_PENDING] = pending
    return redirect(url_for("saml.resume", k=raw))


def _ts(instant: str) -> float:
    import calendar

    from saml2 import time_util

    return calendar.timegm(time_util.str_to_time(instant))


@bp.route("/continue")
def resume():
    raw = request.args.get("k", "")
    if not raw or raw not in flask_session.get(_PENDING, []):
        return _refuse(_("This sign-in request was not started in this browser."), reason="unknown key")
    pending = db.session.execute(select(SamlRequest).where(SamlRequest.key_hash == digest(raw))).scalar_one_or_none()
    if pending is None or pending.answered_at is not None or pending.expires_at <= utcnow():
        return _refuse(_("This sign-in request has expired. Please start again at the system."), reason="expired")
    sps = services.service_providers()
    sp = next((s for s in sps.values() if s.client.client_id == pending.client_id), None)
    if sp is None:
        return _refuse(_("This service provider is not registered."), reason="SP disabled")
    srv = services.server(sps)
    sess = sessions.current_session()
    fresh = sess is not None and _new_login(sess, raw)
    if sess is None or (pending.force_authn and not fresh):
        if pending.is_passive:
            return _answer(srv, sp, pending, None, status=STATUS_NO_PASSIVE)
        flask_session[_LOGIN] = {"k": raw, "sid": sess.sid if sess else "", "auth": _mark(sess), "at": epoch()}
        args = {"next": url_for("saml.resume", k=raw)}
        if sess is not None:
            args["force"] = "1"
        return redirect(url_for("idp.login", **args))
    return _answer(srv, sp, pending, sess)


def _mark(sess) -> str:
    from idp.views import _auth_mark

    return _auth_mark(sess)


def _new_login(sess, raw: str) -> bool:
    asked = flask_session.pop(_LOGIN, None)
    if not asked or asked.get("k") != raw:
        return False
    if asked.get("sid") == sess.sid and asked.get("auth") == _mark(sess):
        return False
    return epoch() - int(asked.get("at", 0)) <= 600


def _claim(pending: SamlRequest) -> bool:
    """Mark the request answered; of two tabs racing, one wins."""
    return db.session.execute(update(SamlRequest).where(SamlRequest.id == pending.id,  # type: ignore[attr-defined]
                                                        SamlRequest.answered_at.is_(None))
                              .values(answered_at=utcnow()).execution_options(synchronize_session=False)).rowcount == 1


def _answer(srv, sp: services.SP, pending: SamlRequest, sess, status: str | None = None):
    # the response is signed (xmlsec1, a subprocess) before any write: SQLite's write lock is
    # taken only for the short transaction that records it
    from lxml import etree

    if status is not None:
        response = srv.create_error_response(pending.request_id, pending.acs_url, (status, "no session"), sign=True,
                                             sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256)
        if not _claim(pending):
            db.session.rollback()
            return _refuse(_("This sign-in request was answered already."), reason="answered")
        db.session.commit()
        return _post_form(sp, pending.acs_url, str(response), pending.relay_state)
    from saml2.saml import NameID

    user = sess.user
    nid_text, new_nid = services.name_id_for(user.id, sp.client.client_id)
    name_id = NameID(format=NAMEID_FORMAT_PERSISTENT, text=nid_text, name_qualifier=services.entity_id(),
                     sp_name_qualifier=sp.entity_id)
    authn = {"class_ref": services.ACR_CLASS + sess.acr, "authn_auth": services.entity_id(),
             "authn_instant": to_epoch(sess.auth_time)}
    response = srv.create_authn_response(
        services.attributes(user, sess, sp.client), pending.request_id, pending.acs_url, sp.entity_id,
        name_id=name_id, authn=authn, sign_response=True, sign_assertion=True, sign_alg=SIG_RSA_SHA256,
        digest_alg=DIGEST_SHA256)
    xml = str(response)
    root = etree.fromstring(xml.encode())
    index = root.find(".//{urn:oasis:names:tc:SAML:2.0:assertion}AuthnStatement")
    if not _claim(pending):
        db.session.rollback()
        return _refuse(_("This sign-in request was answered already."), reason="answered")
    if new_nid:
        db.session.add(SamlNameId(user_id=user.id, client_id=sp.client.client_id, name_id=nid_text,
                                  created_at=utcnow()))
    db.session.add(SamlLogin(sid=sess.sid, client_id=sp.client.client_id, name_id=nid_text,
                             session_index=(index.get("SessionIndex") if index is not None else "")[:100],
                             created_at=utcnow()))
    sessions.note_client(sess, sp.client.client_id)
    audit.record("saml.assertion_issued", actor=f"user:{user.sub}", object=f"client:{sp.client.client_id}",
                 detail={"sid": sess.sid, "acr": sess.acr})
    try:
        db.session.commit()
    except IntegrityError:  # the person's first log-in to this SP, twice at once: the other won
        db.session.rollback()
        return _refuse(_("This sign-in request was answered already."), reason="name id race")
    registry.record_usage(sp.client.client_id, "login")
    return _post_form(sp, pending.acs_url, xml, pending.relay_state)


def _post_form(sp: services.SP, action: str, xml: str, relay_state: str | None, field: str = "SAMLResponse"):
    from tongban.security import CSP

    value = base64.b64encode(xml.encode("utf-8")).decode()
    resp = current_app.make_response(render_template("saml/post.html", sp_name=sp.client.name, action=action,
                                                     field=field, value=value, relay_state=relay_state))
    parts = urlsplit(action)
    resp.headers["Content-Security-Policy"] = f"{CSP}; form-action 'self' {parts.scheme}://{parts.netloc}"
    resp.headers["Cache-Control"] = "no-store"
    return resp


# ---------------------------------------------------------------- single logout


@bp.route("/slo", methods=["GET", "POST"])
@csrf.exempt  # a signed LogoutRequest from a registered SP (HTTP-Redirect or HTTP-POST binding)
def slo():
    values = request.form if request.method == "POST" else request.args
    binding = BINDING_HTTP_POST if request.method == "POST" else BINDING_HTTP_REDIRECT
    sps = services.service_providers()
    srv = services.server(sps)
    if values.get("SAMLResponse"):  # an SP answering a logout we sent through the browser: nothing to do
        return redirect(url_for("tongban.index"))
    enc = values.get("SAMLRequest")
    if not enc:
        return _refuse(_("The request has no SAMLRequest."), reason="no SAMLRequest")
    relay_state = values.get("RelayState")
    try:
        req = srv.parse_logout_request(enc, binding, relay_state=relay_state, sigalg=values.get("SigAlg"),
                                       signature=values.get("Signature"))
        msg = req.message
        issuer = msg.issuer.text if msg.issuer is not None else ""
        sp = sps.get(issuer)
        if sp is None:
            return _refuse(_("This service provider is not registered."), reason="unregistered SP")
        # a LogoutRequest must be signed (SAML Bindings §3.4.5.2 / §3.5.5.2): verify it for every SP
        if binding == BINDING_HTTP_REDIRECT:
            from saml2.request import LogoutRequest

            receivers = srv.config.endpoint("single_logout_service", binding, "idp")
            checked = LogoutRequest(srv.sec, receivers)
            checked.loads(srv.unravel(enc, binding, LogoutRequest.msgtype), binding, origdoc=enc, must=True,
                          relay_state=relay_state, sigalg=values.get("SigAlg"), signature=values.get("Signature"))
        elif msg.signature is None:
            raise ValueError("unsigned LogoutRequest")
    except Exception as e:
        return _refuse(_("The SAML logout request is not valid."), reason=f"{type(e).__name__}: {e}"[:100])
    name_id = msg.name_id.text if msg.name_id is not None else ""
    sess = sessions.current_session()
    ended = 0
    rows = db.session.execute(select(SamlLogin).where(SamlLogin.client_id == sp.client.client_id,
                                                      SamlLogin.name_id == name_id)).scalars().all()
    indexes = {si.text for si in (msg.session_index or [])}
    sids = {r.sid for r in rows if not indexes or r.session_index in indexes}
    from people.models import LoginSession

    g.saml_logout_initiator = sp.client.client_id
    for sid in sids:
        row = db.session.execute(select(LoginSession).where(LoginSession.sid == sid)).scalar_one_or_none()
        if row is not None and row.ended_at is None:
            sessions.end(row, "logout", actor=f"client:{sp.client.client_id}")
            ended += 1
    audit.record("saml.logout", actor=f"client:{sp.client.client_id}", object=f"sessions:{ended}")
    db.session.commit()
    dest = srv.metadata.single_logout_service(sp.entity_id, BINDING_HTTP_POST, "spsso")
    dest_url = dest[0]["location"] if dest else None
    from saml2.s_utils import success_status_factory

    frames = []
    if sess is not None and sess.sid in sids:
        from idp import logout as everywhere

        frames = everywhere.frontchannel_frames(sess.sid)
    if dest_url:
        resp_msg = srv.create_logout_response(msg, [BINDING_HTTP_POST], status=success_status_factory(),
                                              sign=True, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256)
        response = _post_form(sp, dest_url, str(resp_msg), relay_state, field="SAMLResponse")
    else:
        response = current_app.make_response(render_template("idp/logged_out.html", frames=frames, continue_to=None))
    if sess is not None and sess.sid in sids:
        sessions.clear_cookie(response)
    return response


def init_app(app) -> None:
    app.register_blueprint(bp)
