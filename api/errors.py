"""One JSON error shape for every 4xx: ``{"code", "message", "field"?, "request_id"}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.request_context import request_id_var
from services.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, QuotaExceeded, Unavailable

log = logging.getLogger("mlcp.api")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An answer only HTTP has (401 and the like); services raise DomainError, which maps the same way."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers


# What each domain refusal (services/errors.py) answers over HTTP.
DOMAIN_STATUS = {
    NotFound: 404,
    QuotaExceeded: 409,
    Conflict: 409,
    Invalid: 422,
    Forbidden: 403,
    Unavailable: 503,
}


def status_of(error: DomainError) -> int:
    return next(status for kind, status in DOMAIN_STATUS.items() if isinstance(error, kind))


def error_body(code: str, message: str, field: str | None = None) -> dict[str, str]:
    body = {"code": code, "message": message, "request_id": request_id_var.get()}
    if field:
        body["field"] = field
    return body


def _field_path(loc: tuple[int | str, ...]) -> str:
    # ("body", "quota", "gpu") -> "quota.gpu"; query/path parameters keep their name only.
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "form", "cookie"}:
        parts = parts[1:]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.field), exc.status, headers=exc.headers)

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.field), status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field_path(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        body = error_body("validation_error", f"{field}: {message}", field)
        if len(errors) > 1:
            body["errors"] = [  # type: ignore[assignment]
                {"field": _field_path(tuple(e.get("loc", ()))), "message": str(e.get("msg"))} for e in errors
            ]
        return JSONResponse(body, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSONResponse(error_body(code, message), exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("internal_error", "internal error; quote the request_id"), 500)
