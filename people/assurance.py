"""Assurance levels of accounts and of log-in sessions (account data; no protocol here).

What a session's ``acr`` means
------------------------------
An account has a proven level (``User.assurance_level``, STANDARDS.md): L1 self-registered,
L2 phone verified by SMS, L3 name + ID number confirmed by the population register, L4 L3 +
face match, L5 certificate or in person. A *session* is worth the account's level capped by
how the session authenticated:

* one factor (the password alone) → at most **L2**;
* the password and a second factor of another kind in this session (authenticator app
  code or recovery code ``otp``, SMS code ``sms``, passkey ``swk``/``hwk``) → at most **L3**;
* **L4 and L5 are never reached online**: face match and in-person checks do not happen
  in this service, so even an L4/L5 account's sessions are at most L3.

So L3 needs the identity-verified account *and* a second factor in this session.

The protocol uses these in ``idp.stepup`` (``acr_values``, step-up, RFC 9470).
"""

from __future__ import annotations

from collections.abc import Iterable

from tongban import audit
from tongban.clock import utcnow

from .models import LoginSession, User

LEVELS = ("L1", "L2", "L3", "L4", "L5")
ONLINE_MAX = 3  # L4/L5 need a face match or a visit: not reachable here
KNOWLEDGE = frozenset({"pwd", "pin"})
POSSESSION = frozenset({"otp", "sms", "swk", "hwk"})


def level_of(acr: str | None) -> int:
    """1..5 for "L1".."L5"; 0 for anything else."""
    return LEVELS.index(acr) + 1 if acr in LEVELS else 0


def session_level(account_level: int, amr: Iterable[str]) -> int:
    methods = set(amr)
    two_factors = bool(methods & KNOWLEDGE) and bool(methods & POSSESSION)
    cap = ONLINE_MAX if two_factors else 2
    return max(1, min(account_level, cap))


def session_acr(user: User, amr: str | Iterable[str]) -> str:
    methods = amr.split() if isinstance(amr, str) else list(amr)
    return LEVELS[session_level(user.assurance_level, methods) - 1]


def with_factor(amr: str, methods: Iterable[str]) -> str:
    """``amr`` plus the new methods, and ``mfa`` once more than one factor kind was used."""
    out = [m for m in amr.split() if m != "mfa"]
    for m in methods:
        if m not in out:
            out.append(m)
    if set(out) & KNOWLEDGE and set(out) & POSSESSION:
        out.append("mfa")
    return " ".join(out)


def add_factor(sess: LoginSession, methods: Iterable[str]) -> None:
    """A second factor was proven in this session: record it; it is a fresh authentication."""
    sess.amr = with_factor(sess.amr or "pwd", methods)
    sess.acr = session_acr(sess.user, sess.amr)
    sess.auth_time = utcnow()
    audit.record("session.stepped_up", actor=f"user:{sess.user.sub}", object=f"session:{sess.sid}",
                 detail={"acr": sess.acr, "amr": sess.amr})


def refresh(sess: LoginSession | None) -> None:
    """The account's level changed: the session's level follows (within its cap)."""
    if sess is not None and "fed" in (sess.amr or "").split():
        return  # an upstream provider vouched for this session's level (federation/): it stands
    if sess is not None:
        acr = session_acr(sess.user, sess.amr or "pwd")
        if sess.acr != acr:
            sess.acr = acr
