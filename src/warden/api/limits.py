"""Limits on requests enforced before any route runs: the body's size, enforced while reading so
an oversized body is never buffered whole, and no NUL character in the path, query or headers."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warden.api.errors import error_response


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "payload_too_large",
            f"the request body is larger than {self.max_bytes} bytes; send less, or raise "
            "WARDEN_MAX_BODY_BYTES on the server",
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class NoNul:
    """400 for a NUL character anywhere in the path, the query string or a header.

    No id, cursor, name or token contains one, and PostgreSQL refuses NUL in text: without
    this a NUL would reach a query and fail there as a server error.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where = _nul_in(scope)
            if where is not None:
                response = error_response(
                    400,
                    "invalid_request",
                    f"{where} contains a NUL character (%00); remove it",
                    where,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _nul_in(scope: Scope) -> str | None:
    if "\x00" in scope["path"]:
        return "path"
    query: bytes = scope.get("query_string") or b""
    if b"\x00" in query or b"%00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return name.replace("\x00", "") or "query"
    headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
    for raw_name, raw_value in headers:
        if b"\x00" in raw_value or b"\x00" in raw_name:
            return raw_name.decode("latin-1").replace("\x00", "")
    return None
