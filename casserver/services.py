"""CAS 3.0 (Apereo CAS Protocol 3.0): service registration and matching, service tickets,
their validation, and single logout through the outbox.

Tickets are ``ST-`` + 256 random bits, stored as SHA-256 digests, valid for
``TONGBAN_CAS_TICKET_SECONDS`` (10 s), one validation attempt whatever its outcome (CAS §3.1.1),
and bound to the exact service URL they were issued for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import unquote, urlsplit

from flask import current_app
from sqlalchemy import delete, select, update

from idp import clients as registry
from people.models import LoginSession, User
from tongban import audit, outbox
from tongban.clock import digest, token, utcnow
from tongban.errors import ValidationError
from tongban.extensions import db

from .models import CasLogin, CasTicket, LegacyService

SLO_KIND = "cas_slo"


# ---------------------------------------------------------------- service URLs


def _origin(parts) -> tuple[str, str, int]:
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


def _bad_path(path: str) -> bool:
    decoded = unquote(unquote(path))
    segments = decoded.replace("\\", "/").split("/")
    # "..;" is ".." to Tomcat and other servlet containers (path parameters)
    return any(s.split(";")[0] in (".", "..") for s in segments) or "\\" in path


def check_prefix(url: str) -> str:
    """A registered service URL prefix: https (http on loopback), no credentials, query or fragment."""
    url = registry.check_uri(url, "CAS service URL")
    parts = urlsplit(url)
    if parts.query or _bad_path(parts.path):
        raise ValidationError(f"a CAS service URL prefix has no query and no dot segments: {url!r}",
                              "invalid_service_url")
    return url


def matches(service: str, prefix: str) -> bool:
    """Strict matching: scheme, host and port exact; the path under the prefix's path on a
    segment boundary; no credentials, fragment, dot segments, backslashes or control characters."""
    if not service or len(service) > 2000 or any(ord(c) < 33 or c == "\x7f" for c in service):
        return False
    try:
        s, p = urlsplit(service), urlsplit(prefix)
        if _origin(s) != _origin(p):
            return False
    except ValueError:  # a port that is not a number
        return False
    if s.username is not None or s.password is not None or "@" in s.netloc or s.fragment or "#" in service:
        return False
    if _bad_path(s.path):
        return False
    base = p.path or "/"
    path = s.path or "/"
    if base.endswith("/"):
        return path.startswith(base)
    return path == base or path.startswith(base + "/")


@dataclass(frozen=True)
class CasService:
    client: registry.RegisteredClient
    prefixes: tuple[str, ...]
    proxy_allowed: bool


def _cas_rows() -> list[LegacyService]:
    return list(db.session.execute(select(LegacyService).where(LegacyService.protocol == "cas")).scalars())


def find_service(service: str | None) -> CasService | None:
    """The enabled CAS service whose registered prefix ``service`` falls under (the longest)."""
    if not service:
        return None
    best: tuple[int, CasService] | None = None
    for row in _cas_rows():
        client = registry.get_client(row.client_id)
        if client is None:
            continue
        for prefix in row.service_urls or ():
            if matches(service, prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), CasService(client, tuple(row.service_urls), row.proxy_allowed))
    return best[1] if best else None


def register_service(*, service_urls: list[str], proxy_allowed: bool = False, actor: str = "admin",
                     **register_fields) -> LegacyService:
    """Register a CAS service in the register of systems (no OAuth grants, no secret)."""
    if not service_urls:
        raise ValidationError("a CAS service needs at least one --service-url", "invalid_service_url")
    prefixes = list(dict.fromkeys(check_prefix(u) for u in service_urls))
    row, _ = registry.create_client(redirect_uris=[], grant_types=[], token_endpoint_auth_method="none",
                                    actor=actor, **register_fields)
    svc = LegacyService(client_id=row.client_id, protocol="cas", service_urls=prefixes,
                        proxy_allowed=proxy_allowed, created_at=utcnow())
    db.session.add(svc)
    db.session.flush()
    audit.record("cas.service_registered", actor=actor, object=f"client:{row.client_id}",
                 detail={"service_urls": prefixes, "proxy_allowed": proxy_allowed})
    return svc


# ---------------------------------------------------------------- tickets


def issue_ticket(sess: LoginSession, service: CasService, service_url: str, from_new_login: bool) -> str:
    raw = "ST-" + token(32)
    now = utcnow()
    db.session.add(CasTicket(ticket_hash=digest(raw), client_id=service.client.client_id, service=service_url,
                             sid=sess.sid, user_id=sess.user_id, from_new_login=from_new_login, created_at=now,
                             expires_at=now + timedelta(seconds=current_app.config["TONGBAN_CAS_TICKET_SECONDS"])))
    from people import sessions

    sessions.note_client(sess, service.client.client_id)
    registry.record_usage(service.client.client_id, "login")
    audit.record("cas.ticket_issued", actor=f"user:{sess.user.sub}", object=f"client:{service.client.client_id}",
                 detail={"sid": sess.sid, "new_login": from_new_login})
    return raw


class CasFailure(Exception):
    def __init__(self, code: str, description: str):
        super().__init__(description)
        self.code, self.description = code, description


@dataclass
class Validated:
    user: User
    session: LoginSession
    service: CasService
    from_new_login: bool


def validate(ticket: str | None, service_url: str | None, *, renew: bool, proxy: bool) -> Validated:
    """Redeem ``ticket`` for ``service_url`` (CAS §2.5/2.6); raises CasFailure with the spec's code."""
    if not ticket or not service_url:
        raise CasFailure("INVALID_REQUEST", "ticket and service are required")
    if not ticket.startswith("ST-"):
        if ticket.startswith("PT-") and proxy:
            svc = find_service(service_url)
            if svc is None or not svc.proxy_allowed:
                _refused(service_url, "UNAUTHORIZED_SERVICE_PROXY")
                raise CasFailure("UNAUTHORIZED_SERVICE_PROXY", "the service is not allowed to use proxy tickets")
            raise CasFailure("INVALID_TICKET", f"ticket {ticket[:40]} not recognized")
        if ticket.startswith("PT-"):
            raise CasFailure("INVALID_TICKET_SPEC", "proxy tickets are validated at /cas/proxyValidate")
        raise CasFailure("INVALID_TICKET", f"ticket {ticket[:40]} not recognized")
    now = utcnow()
    h = digest(ticket)
    # one validation attempt, whatever its outcome: the first to mark it used has it
    used = db.session.execute(update(CasTicket).where(CasTicket.ticket_hash == h, CasTicket.used_at.is_(None))  # type: ignore[attr-defined]
                              .values(used_at=now).execution_options(synchronize_session=False)).rowcount
    row = db.session.execute(select(CasTicket).where(CasTicket.ticket_hash == h)).scalar_one_or_none()
    db.session.commit()
    if row is None or used != 1:
        _refused(service_url, "INVALID_TICKET", reason="unknown" if row is None else "replayed")
        raise CasFailure("INVALID_TICKET", f"ticket {ticket[:40]} not recognized")
    if row.expires_at <= now:
        _refused(service_url, "INVALID_TICKET", reason="expired", client_id=row.client_id)
        raise CasFailure("INVALID_TICKET", f"ticket {ticket[:40]} has expired")
    svc = find_service(service_url)
    if svc is None or svc.client.client_id != row.client_id or service_url != row.service:
        _refused(service_url, "INVALID_SERVICE", reason="service mismatch", client_id=row.client_id)
        raise CasFailure("INVALID_SERVICE", "the ticket was not issued for this service")
    if renew and not row.from_new_login:
        _refused(service_url, "INVALID_TICKET", reason="renew", client_id=row.client_id)
        raise CasFailure("INVALID_TICKET", "renew was asked for but the ticket came from single sign-on")
    from people import sessions

    sess = db.session.execute(select(LoginSession).where(LoginSession.sid == row.sid)).scalar_one_or_none()
    if sess is None or not sessions.is_live(row.sid) or sess.user.disabled:
        _refused(service_url, "INVALID_TICKET", reason="session ended", client_id=row.client_id)
        raise CasFailure("INVALID_TICKET", "the log-in session has ended")
    db.session.add(CasLogin(sid=row.sid, client_id=row.client_id, service=row.service, session_index=ticket,
                            created_at=now))
    registry.record_usage(row.client_id, "token")
    audit.record("cas.ticket_validated", actor=f"client:{row.client_id}", object=f"user:{sess.user.sub}",
                 detail={"sid": row.sid})
    db.session.commit()
    return Validated(sess.user, sess, svc, row.from_new_login)


def _refused(service_url: str, code: str, reason: str = "", client_id: str | None = None) -> None:
    audit.record("cas.validation_refused", actor=f"client:{client_id}" if client_id else "anonymous",
                 object=(service_url or "")[:200], outcome="failure", detail={"code": code, "reason": reason})
    db.session.commit()


def purge_tickets() -> int:
    """Drop tickets past their lifetime (a chore; they can no longer be redeemed anyway)."""
    n = db.session.execute(delete(CasTicket).where(CasTicket.expires_at < utcnow() - timedelta(minutes=5))).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    return n


# ---------------------------------------------------------------- attributes


def attributes(v: Validated) -> dict[str, str]:
    """The attributes released to the service (p3 and JSON): by the scopes of its register entry."""
    from tongban.clock import to_epoch
    from tongban.masking import mask_number

    user, sess = v.user, v.session
    scopes = v.service.client.scope_set
    out: dict[str, str] = {}
    if "profile" in scopes:
        out["name"] = user.name
    if "id_number" in scopes:
        out["id_number"] = user.id_number
    elif "profile" in scopes:
        out["id_number"] = mask_number(user.id_number)
    out["acr"] = sess.acr
    out["assurance_level"] = sess.acr
    from datetime import UTC, datetime

    out["authenticationDate"] = datetime.fromtimestamp(to_epoch(sess.auth_time), UTC).isoformat().replace(
        "+00:00", "Z")
    out["isFromNewLogin"] = "true" if v.from_new_login else "false"
    out["longTermAuthenticationRequestTokenUsed"] = "false"
    return out


# ---------------------------------------------------------------- single logout


def session_ended(sess: LoginSession) -> None:
    """Queue a CAS single-logout POST to each CAS service the session signed in to."""
    rows = db.session.execute(select(CasLogin).where(CasLogin.sid == sess.sid).order_by(CasLogin.id)).scalars()
    for row in rows:
        if registry.get_client(row.client_id) is None:
            continue
        outbox.enqueue(SLO_KIND, row.service, {"client_id": row.client_id, "session_index": row.session_index},
                       subject=f"cas:{row.client_id} session:{sess.sid[:8]}")


def logout_request(session_index: str) -> str:
    from lxml import etree

    samlp = "urn:oasis:names:tc:SAML:2.0:protocol"
    saml = "urn:oasis:names:tc:SAML:2.0:assertion"
    root = etree.Element(f"{{{samlp}}}LogoutRequest", nsmap={"samlp": samlp, "saml": saml})
    root.set("ID", "LR-" + uuid.uuid4().hex)
    root.set("Version", "2.0")
    root.set("IssueInstant", utcnow().isoformat(timespec="seconds") + "Z")
    etree.SubElement(root, f"{{{saml}}}NameID").text = "@NOT_USED@"
    etree.SubElement(root, f"{{{samlp}}}SessionIndex").text = session_index
    return etree.tostring(root, encoding="unicode")


@outbox.handler(SLO_KIND)
def _deliver(item: outbox.OutboxItem) -> None:
    import requests  # imported by the first delivery, not at start-up

    data = item.data
    if registry.get_client(data["client_id"]) is None:
        raise outbox.DeliveryError("the service is disabled or no longer registered")
    timeout = current_app.config["TONGBAN_OUTBOX_TIMEOUT"]
    try:
        resp = requests.post(item.target, data={"logoutRequest": logout_request(data["session_index"])},
                             timeout=(min(3, timeout), timeout), allow_redirects=False)
    except requests.RequestException as e:
        raise outbox.DeliveryError(f"{type(e).__name__}: {e}"[:500]) from None
    if not 200 <= resp.status_code < 400:
        raise outbox.DeliveryError(f"HTTP {resp.status_code}: {resp.text[:200]}")


def on_session_ended(sess, **_) -> None:
    """``people.signals.session_ended`` receiver: queue this protocol's single-logout messages."""
    session_ended(sess)
