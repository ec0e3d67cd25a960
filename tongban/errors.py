"""Errors a caller can act on; mapped once to HTTP (JSON) and to CLI exit codes."""

from __future__ import annotations


class TongbanError(Exception):
    """Base class: ``code`` is machine-readable, the message is for people."""

    code = "error"
    status = 400

    def __init__(self, message: str, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status

    def to_dict(self) -> dict:
        return {"error": self.code, "error_description": self.message}


class ValidationError(TongbanError):
    code = "invalid_input"


class NotFound(TongbanError):
    code = "not_found"
    status = 404


class Conflict(TongbanError):
    code = "conflict"
    status = 409


class Forbidden(TongbanError):
    code = "forbidden"
    status = 403
