"""Every error leaves the API in one shape: {"error": {"type", "message", "field"}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from warden.api.responses import FastJSONResponse
from warden.errors import Unavailable, WardenError

log = logging.getLogger(__name__)


def error_response(
    status: int, type_: str, message: str, field: str | None = None, **extra: Any
) -> FastJSONResponse:
    body: dict[str, Any] = {"type": type_, "message": message, "field": field, **extra}
    return FastJSONResponse({"error": body}, status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(WardenError)
    async def _warden(_: Request, exc: WardenError) -> FastJSONResponse:
        return FastJSONResponse(exc.to_dict(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> FastJSONResponse:
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        return error_response(400, "invalid_request", message, field)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> FastJSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> FastJSONResponse:
        if isinstance(exc, TimeoutError | OSError):
            error = Unavailable(
                "the decision could not be recorded in time; it was not "
                "acknowledged, retry with the same Idempotency-Key"
            )
            return FastJSONResponse(error.to_dict(), status_code=error.http_status)
        log.exception("unexpected error")
        return error_response(
            500, "internal_error", "unexpected server error; nothing was acknowledged"
        )
