"""Passwords: argon2id (argon2-cffi's RFC 9106 low-memory profile) and the policy."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from flask_babel import lazy_gettext as _l

from tongban.i18n import localised

from .errors import WeakPassword

_hasher = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4
# verified against when the account does not exist, so timing does not tell
_DUMMY = _hasher.hash("tongban-dummy-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _hasher.check_needs_rehash(stored)


def check_policy(password: str, *, id_number: str = "", phone: str = "") -> None:
    """At least N characters with three of: lower, upper, digit, symbol; not the ID or phone."""
    minimum = current_app.config["TONGBAN_PASSWORD_MIN_LENGTH"]
    if len(password) < minimum:
        raise WeakPassword(localised(_l("Password must be at least %(n)d characters long.", n=minimum)))
    if len(password) > 128:
        raise WeakPassword(localised(_l("Password must be at most 128 characters long.")))
    classes = sum(bool(re.search(p, password)) for p in (r"[a-z]", r"[A-Z]", r"\d", r"[^A-Za-z0-9]"))
    if classes < 3:
        raise WeakPassword(localised(_l(
            "Password must contain three of: lower-case letters, upper-case letters, digits, symbols.")))
    lowered = password.lower()
    for secret in (id_number, phone):
        if secret and (secret.lower() in lowered or lowered in secret.lower()):
            raise WeakPassword(localised(_l("Password must not contain your ID number or phone number.")))
