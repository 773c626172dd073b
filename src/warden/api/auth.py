"""Bearer-token authentication for the API, through the token cache (`warden.auth.cache`)
so the hot path skips the database."""

from __future__ import annotations

import difflib
import hmac
import os
from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, Request

from warden.auth.tokens import Principal, Role
from warden.decision import Decision
from warden.errors import Forbidden, NotFound, Unauthenticated
from warden.store.recorder import GLOBAL_SCOPE


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
