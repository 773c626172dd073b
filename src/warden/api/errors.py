"""Every error leaves the API in one shape: {"error": {"type", "message", "field"}}."""

from __future__ import annotations

import logging
import math
import sqlite3
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match

from warden.api.responses import FastJSONResponse
from warden.errors import Unavailable, WardenError

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    """What went wrong, in words a person can act on, and where."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="Stable and machine-readable, e.g. `invalid_request`.")
    message: str = Field(description="What is wrong and how to fix it.")
    field: str | None = Field(description="The offending field, parameter or header, if any.")
    decision_id: str | None = Field(
        default=None, description="Set when the refused request was recorded as a decision."
    )


class ErrorResponse(BaseModel):
    """The one shape of every error the API returns."""

    error: ErrorDetail


def error_response(
    status: int, type_: str, message: str, field: str | None = None, **extra: Any
) -> FastJSONResponse:
    body: dict[str, Any] = {"type": type_, "message": message, "field": field, **extra}
    return FastJSONResponse({"error": body}, status_code=status)


def unavailable_response(error: Unavailable) -> FastJSONResponse:
    """503 with the error shape and `Retry-After` (whole seconds, at least 1)."""
    response = FastJSONResponse(error.to_dict(), status_code=error.http_status)
    response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return response


def _database_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """What a database raises on either backend (SQLAlchemy's wrappers, and the drivers' own
    errors from raw connections), and which of those mean it is down, restarting or busy."""
    errors: list[type[Exception]] = [sa.exc.DBAPIError, sa.exc.TimeoutError, sqlite3.Error]
    outages: list[type[Exception]] = [
        sa.exc.TimeoutError,
        sa.exc.OperationalError,
        sa.exc.InterfaceError,
        sqlite3.OperationalError,
        sqlite3.InterfaceError,
        TimeoutError,
        ConnectionError,
    ]
    try:
        import psycopg

        errors.append(psycopg.Error)
        outages += [psycopg.OperationalError, psycopg.InterfaceError]
    except ImportError:  # pragma: no cover - SQLite-only install
        pass
    return tuple(errors), tuple(outages)


DATABASE_ERRORS, OUTAGES = _database_errors()


def _is_outage(exc: BaseException) -> bool:
    """A database that cannot be reached or is busy — not a statement that is wrong."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OUTAGES)


def install(app: FastAPI) -> None:
    @app.exception_handler(WardenError)
    async def _warden(_: Request, exc: WardenError) -> FastJSONResponse:
        if isinstance(exc, Unavailable):
            return unavailable_response(exc)
        return FastJSONResponse(exc.to_dict(), status_code=exc.http_status)

    # Handlers for these classes (not for `Exception`) answer inside Starlette's exception
    # middleware, so the connection stays open; an error that reaches the outermost handler
    # is re-raised after the response, and the server then drops the keep-alive connection.
    async def _database(_: Request, exc: Exception) -> FastJSONResponse:
        if not _is_outage(exc):
            log.error("database error", exc_info=exc)
            return error_response(
                500, "internal_error", "unexpected server error; nothing was acknowledged"
            )
        log.warning("database unavailable: %s", exc)
        return unavailable_response(
            Unavailable(
                "the database is unavailable; nothing was acknowledged, retry after a moment "
                "(with the same Idempotency-Key for decisions)"
            )
        )

    for error_class in (*DATABASE_ERRORS, TimeoutError, ConnectionError):
        app.add_exception_handler(error_class, _database)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> FastJSONResponse:
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        return error_response(400, "invalid_request", message, field)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> FastJSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = error_response(exc.status_code, kind, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(allowed_methods(request))
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> FastJSONResponse:
        if isinstance(exc, TimeoutError | OSError | DATABASE_ERRORS):
            return unavailable_response(
                Unavailable(
                    "the decision could not be recorded; it was not acknowledged, retry "
                    "with the same Idempotency-Key"
                )
            )
        log.exception("unexpected error")
        return error_response(
            500, "internal_error", "unexpected server error; nothing was acknowledged"
        )


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in _routes(request.app.router.routes):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def _routes(routes: list[Any]) -> list[Any]:
    """The routes themselves, looking inside included routers (FastAPI wraps each one)."""
    found: list[Any] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found.extend(_routes(list(inner.routes)))
        elif getattr(route, "methods", None):
            found.append(route)
    return found
