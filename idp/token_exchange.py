"""Token exchange (RFC 8693) for department-to-department calls on behalf of a citizen.

Department A holds an access token Tongban issued to it for a citizen. To call
department B's system for that citizen it exchanges it at the token endpoint::

    grant_type=urn:ietf:params:oauth:grant-type:token-exchange
    subject_token=<A's access token>
    subject_token_type=urn:ietf:params:oauth:token-type:access_token
    audience=<B's client_id>            (or resource=<an absolute URI>, never both)
    scope=<optional, narrower>          purpose=<optional, for the audit log>

and receives an access token with ``sub`` the citizen, ``aud`` the target,
``client_id`` A and ``act: {"sub": A}`` (RFC 8693 §4.1; nested when the subject token
already had an ``act``: B exchanging it on to C gives ``{"sub": B, "act": {"sub": A}}``).

What binds the verdict to what it speaks of:

* the requesting system authenticates (confidential clients only) and is registered for
  the grant and for this target (``Client.exchange_targets``, strict string match);
* the subject token verifies (signature, issuer, type, expiry), is not revoked, its
  system is enabled, its log-in session is live, and it was issued *to the requesting
  system* (its ``aud``): a token stolen from another system cannot be exchanged;
* the new token's scope is at most the subject token's, and at most what the target
  system is registered for; it lives no longer than the subject token; it carries the
  subject token's ``sid`` so ending the citizen's session ends it too; no refresh token.
"""

from __future__ import annotations

import re

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
)
from flask import current_app
from sqlalchemy import select

from people.models import User
from people.sessions import is_live
from tongban import audit
from tongban.clock import epoch, token
from tongban.errors import ValidationError
from tongban.extensions import db

from . import clients as registry
from . import dpop, pairwise, tokens

GRANT_TYPE = registry.TOKEN_EXCHANGE
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
MAX_ACT_DEPTH = 4  # a chain A -> B -> C -> D -> E at most
PURPOSE_MAX = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class InvalidTargetError(OAuth2Error):
    """RFC 8693 §2.2.2: the audience/resource is unknown or not allowed for this client."""

    error = "invalid_target"


# ---------------------------------------------------------------- the register


def allow(from_client: str, to_target: str, actor: str = "admin") -> list[str]:
    """Add ``to_target`` to ``from_client``'s allow-list; returns the list."""
    row = registry.get_row(from_client)
    targets = list(row.exchange_targets or [])
    if to_target.strip() in targets:
        return targets
    registry.update_client(from_client, actor=actor, exchange_targets=[*targets, to_target])
    audit.record("client.exchange_allowed", actor=actor, object=f"client:{from_client}",
                 detail={"target": to_target.strip()})
    return list(row.exchange_targets)


def disallow(from_client: str, to_target: str, actor: str = "admin") -> list[str]:
    row = registry.get_row(from_client)
    targets = list(row.exchange_targets or [])
    if to_target.strip() not in targets:
        raise ValidationError(f"{to_target!r} is not an exchange target of {from_client}", "not_a_target")
    registry.update_client(from_client, actor=actor, exchange_targets=[t for t in targets if t != to_target.strip()])
    audit.record("client.exchange_disallowed", actor=actor, object=f"client:{from_client}",
                 detail={"target": to_target.strip()})
    return list(row.exchange_targets)


# ---------------------------------------------------------------- the grant


def _act_depth(act) -> int:
    depth = 0
    while isinstance(act, dict):
        depth += 1
        act = act.get("act")
    return depth


def _act_chain(act) -> list[str]:
    chain = []
    while isinstance(act, dict):
        chain.append(str(act.get("sub", "")))
        act = act.get("act")
    return chain


class TokenExchangeGrant(grants.BaseGrant, grants.TokenEndpointMixin):
    GRANT_TYPE = GRANT_TYPE
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def validate_token_request(self):
        client = self.authenticate_token_endpoint_client()
        self.request.client = client
        try:
            self._validate(client)
        except OAuth2Error as error:
            data = self.request.payload.data
            audit.record_later("token.exchange_refused", actor=f"client:{client.client_id}", outcome="failure",
                               object=f"target:{(data.get('audience') or data.get('resource') or '')[:100]}",
                               detail={"error": error.error, "reason": error.description or ""})
            raise

    def _validate(self, client):
        if client.is_public or not client.check_grant_type(GRANT_TYPE):
            raise UnauthorizedClientError("this system is not registered for token exchange")
        dpop.check_grant(client)  # a require_dpop system gets only DPoP-bound tokens (RFC 9449)
        data = self.request.payload.data
        subject, subject_type = data.get("subject_token"), data.get("subject_token_type")
        if not subject or not subject_type:
            raise InvalidRequestError("subject_token and subject_token_type are required")
        if subject_type != ACCESS_TOKEN_TYPE:
            raise InvalidRequestError(f"subject_token_type must be {ACCESS_TOKEN_TYPE}")
        if data.get("actor_token") or data.get("actor_token_type"):
            raise InvalidRequestError("actor_token is not supported: the authenticated client is the actor")
        if data.get("requested_token_type") not in (None, "", ACCESS_TOKEN_TYPE):
            raise InvalidRequestError(f"only {ACCESS_TOKEN_TYPE} can be requested")
        purpose = data.get("purpose") or ""
        if len(purpose) > PURPOSE_MAX or _CONTROL.search(purpose):
            raise InvalidRequestError(f"purpose: at most {PURPOSE_MAX} characters, no control characters")
        audience, resource = data.get("audience"), data.get("resource")
        if bool(audience) == bool(resource):
            raise InvalidTargetError("name the target system with exactly one of audience or resource")
        target = audience or resource
        if target not in client.exchange_targets:
            raise InvalidTargetError("this system may not exchange tokens for that target")
        target_client = None
        if audience:
            target_client = registry.get_client(audience)
            if target_client is None:
                raise InvalidTargetError("the target system is unknown or disabled")
        elif "://" not in resource:
            raise InvalidTargetError("resource must be an absolute URI")

        subj = tokens.decode_access_token(subject)
        if subj is None:
            raise InvalidGrantError("subject_token is invalid or expired")
        claims = subj.claims
        if subj.is_revoked() or not registry.is_enabled(subj.client_id):
            raise InvalidGrantError("subject_token is revoked")
        if claims.get("sid") and not is_live(claims["sid"]):
            raise InvalidGrantError("the citizen's log-in session has ended")
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if client.client_id not in auds:
            raise InvalidGrantError("subject_token was not issued to this system")
        if not subj.is_user_token:
            raise InvalidGrantError("subject_token does not act for a citizen")
        if _act_depth(claims.get("act")) >= MAX_ACT_DEPTH:
            raise InvalidGrantError("the delegation chain is too long")
        user = db.session.execute(select(User).where(User.sub == subj.sub)).scalar_one_or_none()
        if user is None or user.disabled:
            raise InvalidGrantError("the citizen's account is not active")
        remaining = int(claims["exp"]) - epoch()
        if remaining <= 0:
            raise InvalidGrantError("subject_token is expired")

        subject_scopes = (claims.get("scope") or "").split()
        ceiling = target_client.scope_set if target_client is not None else frozenset(client.scopes)
        allowed = [s for s in subject_scopes if s in ceiling]
        asked = (data.get("scope") or "").split()
        if asked:
            extra = [s for s in asked if s not in allowed]
            if extra:
                raise InvalidScopeError(f"not within the subject token's and the target's scope: {' '.join(extra)}")
            allowed = [s for s in allowed if s in asked]
        self.request.user = user
        self.exchange = {"subject": claims, "target": target, "scope": " ".join(allowed),
                         "lifetime": min(int(current_app.config["TONGBAN_ACCESS_TOKEN_LIFETIME"]), remaining),
                         "purpose": purpose}

    def create_token_response(self):
        client, user, ex = self.request.client, self.request.user, self.exchange
        subject = ex["subject"]
        now = epoch()
        act = {"sub": client.client_id}
        if isinstance(subject.get("act"), dict):
            act["act"] = subject["act"]
        claims = {"iss": current_app.config["TONGBAN_ISSUER"], "sub": user.sub, "aud": ex["target"],
                  "client_id": client.client_id, "iat": now, "exp": now + ex["lifetime"], "jti": token(16),
                  "act": act}
        target = registry.get_client(ex["target"]) if "://" not in ex["target"] else None
        if pairwise.is_pairwise(client):
            # the requesting system holds (and can read) this token: it names the citizen only by the
            # requester's own pairwise sub; the target learns its own view at introspection
            claims["sub"] = pairwise.subject_for(client, user.sub)
            claims[pairwise.REF_CLAIM] = pairwise.seal_ref(user.sub, client.client_id)
        elif target is not None and pairwise.is_pairwise(target):  # the target knows the citizen by its own sub
            claims["sub"] = pairwise.subject_for(target, user.sub)
            claims[pairwise.REF_CLAIM] = pairwise.seal_ref(user.sub, client.client_id)
        if ex["scope"]:
            claims["scope"] = ex["scope"]
        for k in ("auth_time", "acr", "sid"):
            if subject.get(k):
                claims[k] = subject[k]
        claims.update(dpop.access_token_claims())  # cnf.jkt when the request carried a DPoP proof
        raw = tokens.sign_jwt(claims, tokens.ACCESS_TOKEN_ALG, typ="at+jwt")
        body = {"access_token": raw, "issued_token_type": ACCESS_TOKEN_TYPE,
                "token_type": dpop.token_type() or "Bearer", "expires_in": ex["lifetime"]}
        if ex["scope"]:
            body["scope"] = ex["scope"]
        registry.record_usage(client.client_id, "token")
        audit.record("token.exchanged", actor=f"client:{client.client_id}", object=f"jti:{claims['jti']}",
                     detail={"from": client.client_id, "to": ex["target"], "citizen": user.id_number,
                             "subject_client": subject.get("client_id"), "act_chain": _act_chain(act),
                             "scope": ex["scope"], "purpose": ex["purpose"], "expires_in": ex["lifetime"]})
        return 200, body, self.TOKEN_RESPONSE_HEADER


def register(server) -> None:
    """Called once from ``idp.server.init_server``."""
    server.register_grant(TokenExchangeGrant)


__all__ = ["ACCESS_TOKEN_TYPE", "GRANT_TYPE", "InvalidTargetError", "TokenExchangeGrant", "allow", "disallow",
           "register"]


def is_audience(token, client) -> bool:
    """The target of an exchanged access token may introspect it (it is the token's ``aud``)."""
    if not isinstance(token, tokens.AccessToken) or "act" not in token.claims:
        return False
    aud = token.claims.get("aud")
    return client.client_id in (aud if isinstance(aud, list) else [aud])
