"""Step-up before a code is issued, and RFC 9470 for APIs (the levels are people.assurance).

What a session's ``acr`` means (the levels, the caps by factor): ``people.assurance``.

``acr_values`` (space-separated, in order of preference) and an essential ``acr`` in the
``claims`` request parameter name the levels a system accepts. Levels are ordered: a session
at or above one of the named levels satisfies the request; the ID token says the level the
session actually has. When no named level is met the browser is sent to the step-up page
(``/mfa/verify``) for the first named level this service can reach (≤ L3): phone
verification for L2, identity verification and a second factor for L3; then the request
continues. With ``prompt=none`` the system gets ``interaction_required`` instead. A level
that cannot be reached online (only L4/L5 asked) is ignored when voluntary — the token is
issued with the session's level, the system decides — and answered with
``unmet_authentication_requirements`` when the ``acr`` claim was requested as essential.

APIs use :func:`require_acr` (RFC 9470): a token below the level gets 401 with
``WWW-Authenticate: Bearer error="insufficient_user_authentication"`` and ``acr_values``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import wraps
from urllib.parse import urlencode

from authlib.oauth2 import OAuth2Error
from authlib.oidc.core.errors import InteractionRequiredError
from flask import Response, current_app, redirect, request, url_for
from flask import session as flask_session

from people.assurance import (  # noqa: F401 (the levels, re-exported for the protocol's callers)
    KNOWLEDGE,
    LEVELS,
    ONLINE_MAX,
    POSSESSION,
    add_factor,
    level_of,
    refresh,
    session_acr,
    session_level,
    with_factor,
)
from people.models import LoginSession
from tongban import audit
from tongban.clock import epoch
from tongban.extensions import db

from .server import server

_CANCEL_KEY = "tb_stepup_cancel"


# ---------------------------------------------------------------- what was asked


@dataclass
class Request:
    levels: list[int]  # requested, in order of preference
    essential: bool

    @property
    def asked(self) -> bool:
        return bool(self.levels)

    def satisfied_by(self, level: int) -> bool:
        return any(level >= n for n in self.levels)

    def target(self) -> int | None:
        """The first named level reachable online, or None."""
        return next((n for n in self.levels if n <= ONLINE_MAX), None)


def requested(data) -> Request:
    levels = [level_of(v) for v in (data.get("acr_values") or "").split()]
    essential = False
    raw = data.get("claims")
    if raw:
        try:
            acr = (json.loads(raw).get("id_token") or {}).get("acr")
        except (ValueError, AttributeError, RecursionError):  # not JSON, not an object, or nested
            acr = None  # past what the parser can take (thousands of "[")
        if isinstance(acr, dict):
            values = acr.get("values") or ([acr["value"]] if acr.get("value") else [])
            if isinstance(values, list) and values:
                levels = [level_of(v) if isinstance(v, str) else 0 for v in values] + levels
            essential = bool(acr.get("essential")) and bool(values)
    seen: list[int] = []
    for n in levels:
        if n and n not in seen:
            seen.append(n)
    return Request(seen, essential and bool(seen))


# ---------------------------------------------------------------- the authorize step


class UnmetAuthenticationRequirementsError(OAuth2Error):
    """OpenID Connect Core Error Code unmet_authentication_requirements 1.0."""

    error = "unmet_authentication_requirements"


def enforce(sess: LoginSession, data, redirect_uri: str, prompts: set[str]):
    """None when the session meets the requested level; else the response to send."""
    refresh(sess)  # the account's level may have changed since the log-in (either way)
    req = requested(data)
    if not req.asked:
        return None
    level = level_of(sess.acr)
    if req.satisfied_by(level):
        return None
    state = data.get("state")
    cancelled = flask_session.pop(_CANCEL_KEY, None) == sess.sid
    target = req.target()
    if target is None or cancelled:
        if req.essential or cancelled:
            audit.record("stepup.unmet", actor=f"user:{sess.user.sub}", outcome="failure",
                         detail={"asked": [LEVELS[n - 1] for n in req.levels], "acr": sess.acr})
            return server.handle_error_response(None, UnmetAuthenticationRequirementsError(
                description="the requested authentication level cannot be reached", redirect_uri=redirect_uri,
                state=state))
        return None  # voluntary and unreachable: issue at the session's level
    if "none" in prompts:
        return server.handle_error_response(None, InteractionRequiredError(
            description=f"{LEVELS[target - 1]} needs a step-up", redirect_uri=redirect_uri, state=state))
    from flask import g

    args = g.get("authorize_args") or request.args  # as sent (a PAR request_uri, not its parameters)
    params = [(k, v) for k, v in args.items(multi=True)]
    back = url_for("idp.authorize") + "?" + urlencode(params)
    return redirect(url_for("mfa.verify", acr=LEVELS[target - 1], next=back))


def cancel(sess: LoginSession) -> None:
    """The user gave up stepping up: the pending request ends with an error to the system."""
    flask_session[_CANCEL_KEY] = sess.sid


# ---------------------------------------------------------------- APIs: RFC 9470


def insufficient_response(acr: str, max_age: int | None = None, description: str | None = None) -> Response:
    desc = description or f"A stronger authentication is required ({acr} or above)"
    parts = ['Bearer error="insufficient_user_authentication"', f'error_description="{desc}"',
             f'acr_values="{acr}"']
    if max_age is not None:
        parts.append(f'max_age="{max_age}"')
    body: dict[str, object] = {"error": "insufficient_user_authentication", "error_description": desc,
                               "acr_values": acr}
    if max_age is not None:
        body["max_age"] = max_age
    return Response(json.dumps(body), 401, {"WWW-Authenticate": ", ".join(parts)},
                    mimetype="application/json")


def require_acr(acr: str = "L2", *, config: str | None = None, max_age: int | None = None):
    """Below ``require_oauth``: refuse user tokens whose ``acr`` is below ``acr`` (or the level in
    ``app.config[config]`` when set), or whose ``auth_time`` is older than ``max_age`` seconds.
    Tokens without a user (client credentials) are not affected."""

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            from authlib.integrations.flask_oauth2 import current_token

            needed = (current_app.config.get(config) if config else None) or acr
            claims = getattr(current_token, "claims", {}) or {}
            if getattr(current_token, "is_user_token", False):
                if level_of(claims.get("acr")) < level_of(needed):
                    audit.record("api.insufficient_acr", actor=f"client:{claims.get('client_id', '')}",
                                 object=request.path[:300], outcome="failure",
                                 detail={"acr": claims.get("acr"), "needed": needed})
                    db.session.commit()
                    return insufficient_response(needed, max_age)
                if max_age is not None and epoch() - int(claims.get("auth_time") or 0) > max_age:
                    return insufficient_response(needed, max_age, "The authentication is too old")
            return view(*args, **kwargs)

        return wrapper

    return decorator


__all__ = ["LEVELS", "add_factor", "enforce", "requested", "require_acr", "session_acr", "session_level"]
