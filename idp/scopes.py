"""Scopes the provider knows; other packages register theirs (``seal:sign``, ``licence:read``)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

SCOPES: dict[str, object] = {
    "openid": _l("Sign you in"),
    "profile": _l("Your name, gender and date of birth"),
    "phone": _l("Your phone number"),
    "id_number": _l("Your full ID number"),
    "offline_access": _l("Keep access while you are logged out"),
}
# scopes a user never sees on the consent screen (machine-to-machine)
SILENT = {"openid"}
# scopes that must be granted to the system explicitly in the register
RESTRICTED = {"id_number"}


def register_scope(name: str, description, *, restricted: bool = False) -> None:
    SCOPES[name] = description
    if restricted:
        RESTRICTED.add(name)


def describe(scope: str) -> str:
    return str(SCOPES.get(scope, scope))
