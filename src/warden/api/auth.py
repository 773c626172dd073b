"""Bearer-token authentication for the API, with a short cache so the hot path skips the DB.

The cache is correct, not just fast: it keeps only successful lookups, drops each at the
credential's own expiry, and re-reads the credential epoch (bumped in the transaction of
every revocation, rotation or disabling, on any replica) at most every `EPOCH_SECONDS`;
when the epoch moved, everything cached is forgotten. A revoked token is therefore refused
everywhere within `EPOCH_SECONDS` plus one request.
"""

from __future__ import annotations

import difflib
import hmac
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Request

from warden.auth.principals import read_epoch
from warden.auth.tokens import Principal, Role, authenticate
from warden.decision import Decision
from warden.engine import Engine
from warden.errors import Forbidden, NotFound, Unauthenticated
from warden.store.recorder import GLOBAL_SCOPE

CACHE_SECONDS = 30.0
EPOCH_SECONDS = 0.25
MAX_ENTRIES = 10_000


def utc_now() -> datetime:
    return datetime.now(UTC)


class TokenCache:
    """Successful token lookups, least recently used evicted first, invalidated by the epoch."""

    def __init__(
        self,
        *,
        ttl: float = CACHE_SECONDS,
        epoch_interval: float = EPOCH_SECONDS,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.clock = clock
        self.ttl = ttl
        self.epoch_interval = epoch_interval
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()
        self._epoch: int | None = None
        self._epoch_checked = float("-inf")

    def lookup(self, engine: Engine, secret: str) -> Principal | None:
        now = time.monotonic()
        if now - self._epoch_checked >= self.epoch_interval:
            self._check_epoch(engine.db, now)
        with self._lock:
            hit = self._entries.get(secret)
            if hit is not None:
                if hit[0] > now and _alive(hit[1], self.clock()):
                    self._entries.move_to_end(secret)
                    return hit[1]
                del self._entries[secret]
        with engine.db.connect() as conn:
            principal = authenticate(conn, secret, self.clock())
        if principal is not None:
            with self._lock:
                self._entries[secret] = (now + self.ttl, principal)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return principal

    def _check_epoch(self, db: sa.Engine, now: float) -> None:
        with db.connect() as conn:
            epoch = read_epoch(conn)
        with self._lock:
            self._epoch_checked = now
            if epoch != self._epoch:
                self._entries.clear()
                self._epoch = epoch

    def __len__(self) -> int:
        return len(self._entries)


def _alive(principal: Principal, now: datetime) -> bool:
    return principal.expires_at is None or principal.expires_at > now


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
        raise Unauthenticated(
            "unknown, revoked or expired token; ask an admin for a new one (`warden token create`)",
            field="Authorization",
        )
    return found


def principal(request: Request) -> Principal:
    return authenticate_request(request)


Authenticated = Annotated[Principal, Depends(principal)]


def require(who: Principal, role: Role | tuple[Role, ...], point: str | None = None) -> None:
    """Raise 403 unless `who` holds one of the roles for `point`; 404 when the point is
    outside `who`'s scope, as for a point that does not exist (nothing outside is revealed)."""
    roles = role if isinstance(role, tuple) else (role,)
    if point is not None and point != GLOBAL_SCOPE and not who.may_see(point):
        raise NotFound(f"no decision point '{point}' among yours", field="point")
    if any(who.can(r, point) for r in roles):
        return
    names = " or ".join(r.value for r in roles)
    where = f" on point '{point}'" if point else ""
    raise Forbidden(f"this token lacks the {names} role{where}", field="Authorization")


def require_point(
    who: Principal, role: Role | tuple[Role, ...], point: str, known: Iterable[str]
) -> None:
    """404 for a point that does not exist or lies outside `who`'s scope — the same answer,
    with suggestions among `who`'s own points only; then 403 unless `who` holds the role."""
    if point not in known or not who.may_see(point):
        mine = sorted(p for p in known if who.may_see(p))
        close = difflib.get_close_matches(point, mine, n=3, cutoff=0.6)
        if close:
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?"
        else:
            hint = f"; your points: {', '.join(mine)}" if mine else ""
        raise NotFound(f"no decision point '{point}'{hint}", field="point")
    require(who, role, point)


def require_decision(who: Principal, role: Role | tuple[Role, ...], decision: Decision) -> None:
    """404, exactly as for an unknown id, when the decision's point is outside `who`'s scope;
    then 403 unless `who` holds the role."""
    if not who.may_see(decision.point):
        raise NotFound(f"no decision with id '{decision.id}'", field="id")
    require(who, role, decision.point)


METRICS_TOKEN_ENV = "WARDEN_METRICS_TOKEN"


def check_metrics_token(request: Request) -> None:
    """When `WARDEN_METRICS_TOKEN` is set, /metrics answers only to `Bearer <that token>`."""
    expected = os.environ.get(METRICS_TOKEN_ENV, "")
    if not expected:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), expected):
        raise Unauthenticated(
            "/metrics needs `Authorization: Bearer <WARDEN_METRICS_TOKEN>`; set it as the "
            "scrape job's bearer token",
            field="Authorization",
        )
