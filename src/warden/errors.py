"""One error shape for every interface: a type, a human message and the offending field."""

from __future__ import annotations

from typing import Any


class WardenError(Exception):
    """Base error. `type` is stable and machine-readable; `message` says what and how to fix."""

    type = "warden_error"
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "message": self.message, "field": self.field}
        body.update(self.extra)
        return {"error": body}


class InvalidRequest(WardenError):
    type = "invalid_request"
    http_status = 400


class InvalidInput(WardenError):
    """The input does not match the decision point's schema."""

    type = "invalid_input"
    http_status = 422


class NotFound(WardenError):
    type = "not_found"
    http_status = 404


class Conflict(WardenError):
    type = "conflict"
    http_status = 409


class Unauthenticated(WardenError):
    type = "unauthenticated"
    http_status = 401


class Forbidden(WardenError):
    type = "forbidden"
    http_status = 403


class PayloadTooLarge(WardenError):
    type = "payload_too_large"
    http_status = 413


class PolicyError(WardenError):
    """A decision point file is invalid. `location` is `file:line`."""

    type = "policy_error"
    http_status = 500

    def __init__(self, message: str, *, file: str, line: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class PointUnavailable(WardenError):
    """The decision point's file exists but could not load; the message says where and why."""

    type = "point_unavailable"
    http_status = 503


class Unavailable(WardenError):
    """Warden cannot take the request now (the write queue is full, the database is
    unreachable); nothing was acknowledged. Retry after `retry_after` seconds — with the same
    Idempotency-Key, so a retry can never decide twice."""

    type = "unavailable"
    http_status = 503

    def __init__(
        self, message: str, *, field: str | None = None, retry_after: float = 1.0, **extra: Any
    ) -> None:
        super().__init__(message, field=field, **extra)
        self.retry_after = retry_after
