"""The log-in helpers every page needs: who is logged in, log-in required, staff roles.

``seal/``, ``licence/``, ``rating/`` and the pages of ``idp/`` take these from here. The
log-in page itself is the protocol layer's (endpoint ``idp.login``); these helpers only
name it, they do not import it.
"""

from __future__ import annotations

from functools import wraps

from flask import g, redirect, render_template, request, url_for
from flask_babel import gettext as _

from tongban import audit
from tongban.extensions import db

from .accounts import ROLES, is_authority_staff
from .models import LoginSession, User
from .sessions import current_session, current_user

ADMIN = ("admin",)  # administrators of the operating authority: may change things
READERS = ("admin", "auditor")  # ... and its auditors: may read the register and the audit log
CLERK = ("clerk",)  # window clerks of the operating authority


def _here() -> str:
    return request.full_path.rstrip("?")


def _to_login():
    return redirect(url_for("idp.login", next=_here()))


def login_required(view):
    """A log-in session is needed; without one the browser goes to the log-in page and back."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if current_session() is None:
            return redirect(url_for("idp.login", next=request.full_path))
        return view(*args, **kwargs)

    return wrapper


def _refused(user: User, event: str, message: str):
    audit.record(event, actor=f"user:{user.sub}", object=request.path[:300], outcome="failure")
    db.session.commit()
    return render_template("tongban/error.html", code=403, message=message), 403


def role_required(*roles: str, message: str | None = None):
    """Log-in required; then one of ``roles`` in the operating authority (TONGBAN_AUTHORITY_USCC),
    else a 403 page and an ``access_denied`` audit event."""

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            user = current_user()
            if user is None:
                return _to_login()
            if not is_authority_staff(user, roles):
                return _refused(user, "staff.access_denied",
                                message or _("This page is for staff of the operating authority."))
            return view(*args, **kwargs)

        return wrapper

    return decorator


def staff_only(roles: tuple[str, ...]):
    """The administrators' console check: log-in required; then one of ``roles`` in the operating
    authority, else 403. Administrators pass every ``roles``; ``g.admin_user`` and
    ``g.admin_can_edit`` tell the console's pages who it is and whether they may change things."""

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            user = current_user()
            if user is None:
                return _to_login()
            can_edit = is_authority_staff(user, ADMIN)
            if not can_edit and (roles == ADMIN or not is_authority_staff(user, roles)):
                return _refused(user, "admin.access_denied",
                                _("This page is for administrators of the operating authority."))
            g.admin_user = user
            g.admin_can_edit = can_edit
            return view(*args, **kwargs)

        return wrapper

    return decorator


__all__ = ["ADMIN", "CLERK", "READERS", "ROLES", "LoginSession", "current_session", "current_user",
           "is_authority_staff", "login_required", "role_required", "staff_only"]
