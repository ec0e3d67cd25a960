"""Failures of the protocol layer's services and pages a caller can act on, one class per failure
(as ``seal/errors.py``); protocol endpoints answer OAuth errors (Authlib's ``OAuth2Error``
classes in ``idp.server``/``idp.stepup``). How each reaches the caller: docs/architecture-idp.md.
"""

from __future__ import annotations

from urllib.parse import quote

from flask_babel import lazy_gettext as _l

from tongban.errors import Forbidden, NotFound, TongbanError, ValidationError


def shown(value: object, limit: int = 40) -> str:
    """A request value (a parameter's name, a resource, an alg) fit for an OAuth error_description:
    RFC 6749 §5.2 allows printable ASCII but ``"`` and ``\\``; Authlib raises ValueError (a 500)
    for anything else, so the rest is percent-encoded. At most ``limit`` characters of the value."""
    return "".join(c if " " <= c <= "~" and c not in '"\\%' else quote(c, safe="", errors="backslashreplace")
                   for c in str(value)[:limit])


class _Page:
    """A page's failure with a default message, translated when raised."""

    default = _l("The request could not be handled.")

    def __init__(self, message: str | None = None):
        super().__init__(message or str(self.default))  # type: ignore[call-arg]


class FormExpired(_Page, TongbanError):
    """The form's CSRF token is missing, wrong or expired (Flask-WTF): nothing was changed."""

    code = "form_expired"
    status = 400
    default = _l("The form expired; please try again.")


class NotApplicable(_Page, TongbanError):
    """A request the page does not offer in this state (no passkey to use, a step not due)."""

    code = "bad_request"
    status = 400
    default = _l("This cannot be done here now.")


class RegistrationClosed(_Page, NotFound):
    """Public registration is switched off (TONGBAN_PUBLIC_REGISTRATION)."""

    code = "registration_closed"
    default = _l("The page you asked for does not exist.")


class PageNotFound(_Page, NotFound):
    """The thing the page is about does not exist (an enterprise, a claim, a pending factor)."""

    default = _l("The page you asked for does not exist.")


class NotStaff(_Page, Forbidden):
    """The page is for staff of the operating authority with another role."""

    code = "not_staff"
    default = _l("This page is for staff of the operating authority.")


class NoEnterpriseRole(_Page, Forbidden):
    """The logged-in person holds no role in this enterprise."""

    code = "no_enterprise_role"
    default = _l("You hold no role in this enterprise.")


class ReauthenticationRequired(_Page, Forbidden):
    """The step needs a fresh log-in (password or second factor within the last minutes)."""

    code = "reauthentication_required"
    default = _l("Log in again to do this.")


class NotClerk(ValidationError):
    """--clerk must be the ID number of a clerk of the operating authority."""

    code = "not_clerk"


class NoPassword(ValidationError):
    """Pass the owner's password on standard input with --password-stdin."""

    code = "no_password"


class UnknownUser(ValidationError):
    """No such account."""

    code = "unknown_user"


class NameMismatch(ValidationError):
    """The account with this ID number is in another name."""

    code = "name_mismatch"


class NoAccount(ValidationError):
    """No account has this ID number: give --name and --password-stdin to open one."""

    code = "no_account"


class InvalidDate(ValidationError):
    """--approval-date must be YYYY-MM-DD."""

    code = "invalid_date"


class InvalidRedirectUri(ValidationError):
    """A redirect URI that is not an absolute https URL (http only on loopback), or has a fragment."""

    code = "invalid_redirect_uri"


class InvalidAuthMethod(ValidationError):
    """Not a supported token endpoint authentication method."""

    code = "invalid_auth_method"


class InvalidAlg(ValidationError):
    """Not a supported ID token signing algorithm."""

    code = "invalid_alg"


class InvalidGrantType(ValidationError):
    """A public client cannot use client_credentials."""

    code = "invalid_grant_type"


class InvalidExchangeTarget(ValidationError):
    """A token-exchange target that is neither a registered system nor an absolute URI (RFC 8693)."""

    code = "invalid_exchange_target"


class InvalidDeliveryMode(ValidationError):
    """A CIBA token delivery mode Tongban does not offer (only poll)."""

    code = "invalid_delivery_mode"


class InvalidClientMetadata(ValidationError):
    """A system needs a name and a department."""

    code = "invalid_client_metadata"


class ClientExists(ValidationError):
    """The client_id is taken."""

    code = "client_exists"


class UnknownClient(NotFound):
    """No registered system has this client_id."""

    code = "unknown_client"


class InvalidScope(ValidationError):
    """Not a registered scope."""

    code = "invalid_scope"
