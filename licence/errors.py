"""Licence errors a caller can act on (mapped once to HTTP and CLI by ``tongban``)."""

from __future__ import annotations

from tongban.errors import Conflict, Forbidden, NotFound, TongbanError, ValidationError


class UnknownType(ValidationError):
    code = "unknown_licence_type"


class InvalidField(ValidationError):
    code = "invalid_licence_data"


class NoLicenceSeal(TongbanError):
    """The issuing organisation has no active licence-issuing seal."""

    code = "no_licence_seal"
    status = 409


class LicenceNotFound(NotFound):
    code = "licence_not_found"


class BadTransition(Conflict):
    code = "invalid_status_change"


class InvalidRequest(TongbanError):
    """A sharing-API call without its purpose or service item (GB/T 36906)."""

    code = "invalid_request"
    status = 400


class NotPermitted(Forbidden):
    code = "forbidden"


class NotDelegated(Forbidden):
    """A department without its own licence seal issues under another's only with a delegation."""

    code = "not_delegated"


class LicenceNotValid(Conflict):
    """The holder asks for the sealed file of a licence that is no longer valid."""

    code = "licence_not_valid"


__all__ = [
    "BadTransition",
    "InvalidField",
    "InvalidRequest",
    "LicenceNotFound",
    "LicenceNotValid",
    "NoLicenceSeal",
    "NotDelegated",
    "NotPermitted",
    "UnknownType",
]
