"""Limits on requests enforced before any route runs: the body's size, enforced while reading so
an oversized body is never buffered whole, and no NUL character in the path, query or headers."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warden.api.errors import error_response


class RequestLimits:
    """Both limits in one pure ASGI layer with one pass over the headers: 400 for a NUL
    character anywhere in the path, the query string or a header (checked first), then 413
    for a body larger than `max_bytes` (declared, or seen while it is read).

    No id, cursor, name or token contains a NUL, and PostgreSQL refuses NUL in text: without
    this a NUL would reach a query and fail there as a server error.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        nul_header: bytes | None = None
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                declared = value
            if b"\x00" in value or b"\x00" in name:
                nul_header = name
                break
        where = _nul_in(scope, nul_header)
        if where is not None:
            response = error_response(
                400, "invalid_request", f"{where} contains a NUL character (%00); remove it", where
            )
            await response(scope, receive, send)
            return
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


def _nul_in(scope: Scope, nul_header: bytes | None) -> str | None:
    """Where the request holds a NUL: the path, a query parameter's name, or the header
    `nul_header` already found."""
    if "\x00" in scope["path"]:
        return "path"
    query: bytes = scope.get("query_string") or b""
    if b"\x00" in query or b"%00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return name.replace("\x00", "") or "query"
    if nul_header is not None:
        return nul_header.decode("latin-1").replace("\x00", "")
    return None
