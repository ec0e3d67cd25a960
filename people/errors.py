"""Failures of the people layer a caller can act on, one class per failure (as ``seal/errors.py``).

Each has a machine-readable ``code`` and an HTTP ``status``; ``tongban.views`` maps them to a JSON
answer or an error page, a form shows the message next to its fields, the CLI exits 1.
Older classes kept where they were defined: ``people.mfa.SecondFactorError``,
``people.recovery.CodeRefused``/``Throttled``, ``people.identity.RecoveryRefused``,
``people.enterprise.ProofingRequired``/``DisputeRefused``.
"""

from __future__ import annotations

from tongban.errors import Conflict, Forbidden, NotFound, TongbanError, ValidationError


class InvalidPhone(ValidationError):
    """Phone number must be an 11-digit mainland mobile number."""

    code = "invalid_phone"


class InvalidName(ValidationError):
    """Name is required (at most 100 characters)."""

    code = "invalid_name"


class AccountExists(Conflict):
    """An account with this ID number already exists."""

    code = "account_exists"


class PhoneTaken(Conflict):
    """This phone number is already used by another account."""

    code = "phone_taken"


class BadPassword(ValidationError):
    """The current password is wrong."""

    code = "bad_password"


class UnknownOrg(NotFound):
    """No organisation has this USCC."""

    code = "unknown_org"


class OrgExists(Conflict):
    """An organisation with this USCC already exists."""

    code = "org_exists"


class InvalidRole(ValidationError):
    """Not one of the staff roles (``people.accounts.ROLES``)."""

    code = "invalid_role"


class UnknownUser(NotFound):
    """The legal representative must be an existing citizen account."""

    code = "unknown_user"


class NoAccount(ValidationError):
    """No account has this ID number: give --name and --password-stdin to open one."""

    code = "no_account"


class NotLegalRep(Forbidden):
    """The register does not list you as the legal representative of this."""

    code = "not_legal_rep"


class UnknownClaim(NotFound):
    """No such claim."""

    code = "unknown_claim"


class ClaimUndone(Conflict):
    """This claim was undone already."""

    code = "claim_undone"


class ReasonRequired(ValidationError):
    """Give the reason (what was checked in person)."""

    code = "reason_required"


class NotPermitted(Forbidden):
    """You may not do this for this enterprise."""

    code = "forbidden"


class NotVerified(Forbidden):
    """An administrator's identity must be verified (L3) first: ask them to confirm."""

    code = "not_verified"


class IsLegalRep(Conflict):
    """The legal representative manages the enterprise already."""

    code = "is_legal_rep"


class AlreadyAdmin(Conflict):
    """This person is an administrator already."""

    code = "already_admin"


class TooManyAdmins(Conflict):
    """An enterprise has at most %(n)d administrators."""

    code = "too_many_admins"


class UnknownAdmin(NotFound):
    """No such administrator."""

    code = "unknown_admin"


class NoSystems(ValidationError):
    """Choose at least one system."""

    code = "no_systems"


class UnknownClient(ValidationError):
    """Unknown system."""

    code = "unknown_client"


class InvalidPeriod(ValidationError):
    """The period must end after it starts, and in the future."""

    code = "invalid_period"


class UnknownAuthorisation(NotFound):
    """No such authorisation."""

    code = "unknown_authorisation"


class NoAuthority(Forbidden):
    """You may not act for this enterprise at this system."""

    code = "no_authority"


class RecoveredBefore(Conflict):
    """This account received the ID number at a counter after an identity check; it."""

    code = "recovered_before"


class IdNumberMovedMeanwhile(Conflict):
    """This ID number changed hands meanwhile; start again."""

    code = "changed"


class TotpExists(ValidationError):
    """An authenticator app is already set up."""

    code = "totp_exists"


class NoPendingTotp(ValidationError):
    """Start setting up the authenticator app first."""

    code = "no_pending_totp"


class NoPhone(ValidationError):
    """There is no mobile phone number on this account."""

    code = "no_phone"


class WeakPassword(ValidationError):
    """Password must be at least %(n)d characters long."""

    code = "weak_password"


class NotSealedMessage(TongbanError, ValueError):
    """An outbox body that is not a sealed SMS (only the gateway reads them)."""

    code = "not_sealed_message"
    status = 500
