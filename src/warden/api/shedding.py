"""Turning decisions away at capacity before they cost anything.

Under overload most requests are refused, so what a refusal costs decides how much of the
interpreter is left for the decisions accepted. The engine refuses a decision when every place
in flight is taken (`WARDEN_MAX_IN_FLIGHT`), but a request reaches it only after routing, the
token check, reading and validating the body. This layer, the outermost of the application,
answers the same 503 first: no route is matched, no token looked up, no body read.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from warden.api.errors import unavailable_response
from warden.engine import Engine
from warden.monitor.metrics import WRITES_REFUSED

# The endpoints that take a place in flight for each request.
DECIDING = frozenset({"/v1/decisions", "/v1/decisions/batch"})


class Shedding:
    """A pure ASGI layer: a `POST` to a deciding endpoint while the engine is at capacity is
    answered 503 with `Retry-After` and the error body the engine's own refusal has (the
    response is rendered once). Everything else passes straight through.

    The capacity is read without a lock: a request let through a moment before the last
    place is taken is refused by the engine, exactly as before this layer existed; one turned
    away a moment after a place came free is told to retry, as it would have been a moment
    earlier.
    """

    def __init__(self, app: ASGIApp, engine: Engine, paths: Iterable[str] = DECIDING) -> None:
        self.app = app
        self.engine = engine
        self.paths = frozenset(paths)
        self._refusal = unavailable_response(engine.capacity_error())
        self._refused = WRITES_REFUSED.labels("at_capacity")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.engine.at_capacity and scope["type"] == "http" and self._deciding(scope):
            self._refused.inc()
            await self._refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _deciding(self, scope: Scope) -> bool:
        if scope["method"] != "POST":
            return False
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return path in self.paths
