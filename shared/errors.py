"""Typed domain errors, each carrying its HTTP status; one handler renders them.

Every error answer has the shape ``{"error": <code>, "detail": <what is wrong / how to fix>}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class DomainError(Exception):
    status_code = 400
    error = "bad_request"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}


class NotFound(DomainError):
    status_code = 404
    error = "not_found"


class Conflict(DomainError):
    status_code = 409
    error = "conflict"


class Unprocessable(DomainError):
    status_code = 422
    error = "unprocessable"


class Unauthorized(DomainError):
    status_code = 401
    error = "unauthorized"


class Forbidden(DomainError):
    status_code = 403
    error = "forbidden"


class ServiceUnavailable(DomainError):
    status_code = 503
    error = "service_unavailable"


def error_body(error: str, detail: Any, **extra: Any) -> dict[str, Any]:
    return {"error": error, "detail": detail, **extra}


def _field_name(loc: tuple[Any, ...]) -> str:
    # ("body", "amount") -> "amount"; keeps nested paths readable: "items.0.amount"
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(
            error_body(exc.error, exc.detail, **exc.extra),
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                return JSONResponse(
                    error_body("malformed_json", f"request body is not valid JSON: {err['msg']}"),
                    status_code=400,
                )
            problems.append({"field": _field_name(tuple(err["loc"])), "message": err["msg"]})
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return JSONResponse(
            jsonable_encoder(error_body("validation_error", summary, fields=problems)),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, exc.detail), status_code=exc.status_code)
