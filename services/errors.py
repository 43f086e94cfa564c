"""Domain errors: what a service refuses and why, with the field at fault where there is one.

Services, activities and workflows raise these; the API turns each code into its HTTP answer (api/errors.py),
so nothing below the routers knows about HTTP.
"""

from __future__ import annotations


class DomainError(Exception):
    code = "error"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field


class NotFound(DomainError):
    """Also for what the caller may not see: it does not exist for them."""

    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class QuotaExceeded(Conflict):
    code = "quota_exceeded"


class Invalid(DomainError):
    code = "validation_error"


class Forbidden(DomainError):
    code = "forbidden"


class Unavailable(DomainError):
    """A system the request needs is down or too slow; trying again later may work."""

    code = "unavailable"


def not_found(kind: str, ident: str) -> NotFound:
    return NotFound(f"{kind} {ident!r} does not exist")


def conflict(message: str, field: str | None = None) -> Conflict:
    return Conflict(message, field)


def invalid(field: str, message: str) -> Invalid:
    return Invalid(f"{field}: {message}", field)


def forbidden(message: str) -> Forbidden:
    return Forbidden(message)
