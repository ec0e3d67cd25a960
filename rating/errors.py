"""Rating errors a caller can act on (mapped once to HTTP and CLI by ``tongban``)."""

from __future__ import annotations

from tongban.errors import Conflict, Forbidden, NotFound, TongbanError, ValidationError


class InvalidEvent(ValidationError):
    """A service event with a missing or malformed data item."""

    code = "invalid_event"


class UnknownCitizen(ValidationError):
    code = "unknown_citizen"


class DuplicateEvent(Conflict):
    """The system already registered this 办件编号."""

    code = "duplicate_event"


class DepartmentMismatch(Conflict):
    """The department code is already used by another department's events."""

    code = "department_mismatch"


class EventNotFound(NotFound):
    code = "rating_event_not_found"


class LinkInvalid(NotFound):
    """No event has this rating link (never issued, or mistyped)."""

    code = "invalid_rating_link"


class RatingClosed(TongbanError):
    """The rating period is over, or the one-time link was used already."""

    code = "rating_closed"
    status = 410


class AlreadyRated(Conflict):
    code = "already_rated"


class NotYourEvent(Forbidden):
    code = "not_your_event"


class InvalidRating(ValidationError):
    code = "invalid_rating"


class CaseNotFound(NotFound):
    code = "case_not_found"


class BadCaseStep(Conflict):
    code = "invalid_case_step"


class NotCaseHandler(Forbidden):
    code = "not_permitted"


class InvalidMonth(ValidationError):
    code = "invalid_month"


__all__ = ["AlreadyRated", "BadCaseStep", "CaseNotFound", "DepartmentMismatch", "DuplicateEvent",
           "EventNotFound", "InvalidEvent", "InvalidMonth", "InvalidRating", "LinkInvalid", "NotCaseHandler",
           "NotYourEvent", "RatingClosed", "UnknownCitizen"]
