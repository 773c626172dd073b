"""Bearer-token authentication for the API, with a short cache so the hot path skips the DB."""

from __future__ import annotations

import threading
import time
from typing import Annotated

from fastapi import Depends, Request

from warden.auth.tokens import Principal, Role, authenticate
from warden.engine import Engine
from warden.errors import Forbidden, Unauthenticated

CACHE_SECONDS = 5.0


class TokenCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def lookup(self, engine: Engine, secret: str) -> Principal | None:
        now = time.monotonic()
        hit = self._entries.get(secret)
        if hit is not None and hit[0] > now:
            return hit[1]
        with engine.db.connect() as conn:
            principal = authenticate(conn, secret)
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[secret] = (now + CACHE_SECONDS, principal)
        return principal


def authenticate_request(request: Request) -> Principal:
    """The caller's principal from `Authorization: Bearer <token>`.

    Read straight from the headers rather than through a FastAPI dependency: the decision
    endpoint is the hot path, and dependency resolution costs more than the lookup itself.
    """
    authorization = request.headers.get("authorization")
    if not authorization:
        raise Unauthenticated(
            "missing Authorization header; send `Authorization: Bearer "
            "<token>` (create one with `warden token create`)",
            field="Authorization",
        )
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated(
            "the Authorization header must be `Bearer <token>`", field="Authorization"
        )
    state = request.app.state
    found: Principal | None = state.tokens.lookup(state.engine, secret.strip())
    if found is None:
        raise Unauthenticated("unknown or revoked token", field="Authorization")
    return found


def principal(request: Request) -> Principal:
    return authenticate_request(request)


Authenticated = Annotated[Principal, Depends(principal)]


def require(who: Principal, role: Role | tuple[Role, ...], point: str | None = None) -> None:
    """Raise 403 unless `who` holds one of the roles for `point`."""
    roles = role if isinstance(role, tuple) else (role,)
    if any(who.can(r, point) for r in roles):
        return
    names = " or ".join(r.value for r in roles)
    where = f" on point '{point}'" if point else ""
    raise Forbidden(f"this token lacks the {names} role{where}", field="Authorization")
