"""HTTP routes for credentials: admins manage everyone's, a principal may end its own.

Managing tokens, users and principals needs the admin role for every point (`*`): a point
admin could otherwise mint a token for points beyond their own. Any authenticated principal
may list, rotate and revoke its own tokens. Secrets are returned once, at creation or
rotation, and never again.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from warden.api.auth import Authenticated
from warden.api.openapi import json_body
from warden.api.responses import FastJSONResponse
from warden.api.routes import _json_body, _parse
from warden.api.schemas import NO_NUL, NOT_BLANK
from warden.auth import lifecycle
from warden.auth.tokens import Principal, Role, create_token, parse_expiry
from warden.engine import Engine
from warden.errors import Forbidden, InvalidRequest, NotFound
from warden.policy.durations import parse_duration
from warden.store.recorder import GLOBAL_SCOPE

router = APIRouter(prefix="/v1", tags=["credentials"])


# What the parsers accept, stated in the schema so that clients (and schemathesis) know it: a
# lifetime is positive and bounded (a timedelta of 10^7 days overflows), a grace may be zero.
LIFETIME = r"^\s*(never|0*[1-9]\d{0,5}(\.\d+)?\s*(ms|s|m|h|d))\s*$"
GRACE = r"^\s*\d{1,6}(\.\d+)?\s*(ms|s|m|h|d)\s*$"
LIFETIME_HELP = "is not a lifetime; write e.g. 90d, 12h or 30m (or never)"
GRACE_HELP = "is not a grace period; write e.g. 24h, 30m or 0s"
Point = Annotated[str, Field(min_length=1, max_length=255, pattern=NOT_BLANK)]


def _checked(value: str | None, pattern: str, help: str) -> str | None:
    """The pattern the schema states, with a message a person can act on."""
    if value is not None and not re.match(pattern, value):
        raise ValueError(f"{value!r} {help}")
    return value


class TokenCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=255, pattern=NOT_BLANK, description="Who or what uses the token."
    )
    roles: list[Role] = Field(min_length=1, max_length=5)
    points: list[Point] = Field(min_length=1, max_length=1000)
    groups: list[Point] = Field(default_factory=list, max_length=100)
    principal: str | None = Field(
        default=None,
        max_length=255,
        pattern=NOT_BLANK,
        description="Name or id; default: the one named `name`.",
    )
    kind: Literal["person", "service"] = Field(
        default="person", description="person or service, for a new principal."
    )
    expires: str | None = Field(
        default=None,
        max_length=32,
        json_schema_extra={"pattern": LIFETIME},
        description="e.g. 90d, 12h, 30m; or never.",
    )

    _lifetime = field_validator("expires")(lambda value: _checked(value, LIFETIME, LIFETIME_HELP))


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000, pattern=NO_NUL)


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace: str = Field(
        default="24h",
        max_length=32,
        json_schema_extra={"pattern": GRACE},
        description="Old secret works this long.",
    )
    expires: str | None = Field(
        default=None, max_length=32, json_schema_extra={"pattern": LIFETIME}
    )

    _grace = field_validator("grace")(lambda value: _checked(value, GRACE, GRACE_HELP))
    _lifetime = field_validator("expires")(lambda value: _checked(value, LIFETIME, LIFETIME_HELP))


def _engine(request: Request) -> Engine:
    found: Engine = request.app.state.engine
    return found


def _admin(who: Principal) -> bool:
    return Role.ADMIN in who.roles and GLOBAL_SCOPE in who.points


def require_admin(who: Principal) -> None:
    if not _admin(who):
        raise Forbidden(
            "managing credentials needs the admin role for all points ('*')",
            field="Authorization",
        )


async def _body(request: Request, model: type[BaseModel]) -> Any:
    raw = await request.body()
    return _parse(model, await _json_body(request) if raw.strip() else {})


def _own_token(engine: Engine, who: Principal, token_id: str) -> None:
    """Admins may act on any token; others only on their own principal's (404 otherwise, so
    token ids of other people are not revealed)."""
    if _admin(who):
        return
    with engine.db.connect() as conn:
        mine = {t.id for t in lifecycle.list_tokens(conn, principal=who.principal_id or "-")}
    if not who.principal_id or token_id not in mine:
        raise NotFound(f"no token '{token_id}' of yours", field="id")


@router.get("/tokens")
async def list_tokens(request: Request, who: Authenticated, all: bool = False) -> FastJSONResponse:
    """Tokens (never secrets): every token for an admin, else the caller's principal's own."""
    engine = _engine(request)
    principal = None if _admin(who) else (who.principal_id or "-")

    def read() -> list[lifecycle.TokenInfo]:
        with engine.db.connect() as conn:
            return lifecycle.list_tokens(conn, principal=principal, include_dead=all)

    found = await run_in_threadpool(read)
    now = datetime.now(UTC)
    return FastJSONResponse({"data": [t.as_dict(now) for t in found]})


@router.post("/tokens", status_code=201, openapi_extra=json_body(TokenCreateRequest))
async def create(request: Request, who: Authenticated) -> FastJSONResponse:
    """Create a token (admins); the secret is in this answer only."""
    require_admin(who)
    body: TokenCreateRequest = await _body(request, TokenCreateRequest)
    engine = _engine(request)
    secret, made = await run_in_threadpool(
        lambda: create_token(
            engine.recorder,
            name=body.name,
            roles=[role.value for role in body.roles],
            points=body.points,
            groups=body.groups,
            actor=who.actor,
            principal=body.principal,
            kind=body.kind,
            expires=parse_expiry(body.expires),
        )
    )
    return FastJSONResponse(
        {
            "id": made.token_id,
            "secret": secret,
            "principal": made.principal_name,
            "principal_id": made.principal_id,
            "expires_at": made.expires_at.isoformat() if made.expires_at else None,
        },
        status_code=201,
    )


@router.post("/tokens/{token_id}/revoke", openapi_extra=json_body(RevokeRequest, required=False))
async def revoke(request: Request, token_id: str, who: Authenticated) -> FastJSONResponse:
    """Revoke a token now (admins, or the principal it belongs to)."""
    engine = _engine(request)
    await run_in_threadpool(_own_token, engine, who, token_id)
    body: RevokeRequest = await _body(request, RevokeRequest)
    info = await run_in_threadpool(
        lambda: lifecycle.revoke_token(
            engine.recorder, token_id, actor=who.actor, reason=body.reason
        )
    )
    return FastJSONResponse(info.as_dict(datetime.now(UTC)))


@router.post("/tokens/{token_id}/rotate", openapi_extra=json_body(RotateRequest, required=False))
async def rotate(request: Request, token_id: str, who: Authenticated) -> FastJSONResponse:
    """A new secret; the old one works for `grace` (admins, or the token's principal)."""
    engine = _engine(request)
    await run_in_threadpool(_own_token, engine, who, token_id)
    body: RotateRequest = await _body(request, RotateRequest)
    try:
        grace = timedelta(seconds=parse_duration(body.grace))
    except ValueError as exc:
        raise InvalidRequest(f"grace: {exc}", field="grace") from None
    secret, info = await run_in_threadpool(
        lambda: lifecycle.rotate_token(
            engine.recorder,
            token_id,
            actor=who.actor,
            grace=grace,
            expires=parse_expiry(body.expires),
        )
    )
    return FastJSONResponse({**info.as_dict(datetime.now(UTC)), "secret": secret})


@router.post("/users/{username}/disable", openapi_extra=json_body(RevokeRequest, required=False))
async def disable_user(request: Request, username: str, who: Authenticated) -> FastJSONResponse:
    """Disable a console user (admins): no more logins, and their sessions end now."""
    require_admin(who)
    body: RevokeRequest = await _body(request, RevokeRequest)
    engine = _engine(request)
    await run_in_threadpool(
        lambda: lifecycle.disable_user(
            engine.recorder, username, actor=who.actor, reason=body.reason
        )
    )
    return FastJSONResponse({"username": username, "disabled": True})


@router.post("/principals/{name}/disable", openapi_extra=json_body(RevokeRequest, required=False))
async def disable_principal(request: Request, name: str, who: Authenticated) -> FastJSONResponse:
    """Disable a person or service (admins): every credential of theirs is refused."""
    require_admin(who)
    body: RevokeRequest = await _body(request, RevokeRequest)
    engine = _engine(request)
    pid = await run_in_threadpool(
        lambda: lifecycle.disable_principal(
            engine.recorder, name, actor=who.actor, reason=body.reason
        )
    )
    return FastJSONResponse({"principal_id": pid, "disabled": True})
