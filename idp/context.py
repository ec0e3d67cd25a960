"""The one typed per-request context the Authlib grant hooks share.

Authlib calls the grant's hooks in turn (``authenticate_user``, the token generator,
``save_token``, the error path) without a place to pass things between them. They share one
``GrantContext`` per request, created on first use by :func:`grant_context` (the only code
that touches ``flask.g`` for it), instead of loose ``g.<name>`` attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import g

_KEY = "_tongban_grant_context"


@dataclass(frozen=True)
class TokenContext:
    """What the tokens issued by this grant inherit from the authentication behind it."""

    auth_time: int | None
    acr: str | None
    sid: str | None
    amr: str | None
    family_id: str | None  # the refresh-token family (a new one for a code or device code)
    offline: bool = False


@dataclass(frozen=True)
class ReplayedCode:
    """An authorization code presented a second time (RFC 6749 §4.1.2): what it was exchanged for."""

    id: int
    client_id: str
    family_id: str | None
    access_jti: str | None
    access_exp: int | None


@dataclass(frozen=True)
class ReusedRefresh:
    """A rotated (or concurrently claimed) refresh token presented again."""

    family_id: str
    client_id: str


@dataclass
class GrantContext:
    token: TokenContext | None = None  # set by authenticate_user; read by the generator and save_token
    issued_access_claims: dict = field(default_factory=dict)  # the access token's claims, for save_token
    replayed_code: ReplayedCode | None = None  # handled after the failed request rolled back
    reused_refresh: ReusedRefresh | None = None  # likewise
    logout_initiator: str | None = None  # the system that asked for this logout (not notified)
    dpop_jkt: str | None = None  # the token request's verified DPoP key thumbprint (idp.dpop, RFC 9449)
    token_audience: list | str | None = None  # the access token's aud from resource indicators (RFC 8707)
    grant_resources: list | None = None  # the resources the grant covers (kept on the refresh token)
    token_client_id: str | None = None  # the client the tokens are being issued to (pairwise sub)
    # the code grant: (sid, client_id, EnterpriseActing or None) as read with the code, for the ID
    # token's enterprise claims; the refresh-token family started by the exchange, for the claim
    code_acting: tuple | None = None
    code_family: str | None = None
    # (sid, client_id, scope, code id) of a code whose enterprise authority ended: the session is
    # ended and the code marked used after the failed exchange rolled back (``_after_error``)
    ended_authority: tuple | None = None


def grant_context() -> GrantContext:
    """This request's context (created on first use)."""
    ctx = g.get(_KEY)
    if ctx is None:
        ctx = GrantContext()
        setattr(g, _KEY, ctx)
    return ctx


__all__ = ["GrantContext", "ReplayedCode", "ReusedRefresh", "TokenContext", "grant_context"]
