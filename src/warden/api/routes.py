"""HTTP routes: decisions, ground truth, points, kill switches, health."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette import routing
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from warden import jsonlimits
from warden.api.auth import (
    Authenticated,
    authenticate_request,
    require,
    require_decision,
    require_point,
)
from warden.api.openapi import json_body
from warden.api.responses import (
    FastJSONResponse,
    decision_json,
    decisions_page_json,
    json_bytes_response,
)
from warden.api.schemas import (
    DecisionPage,
    DecisionRequest,
    GroundTruthRequest,
    KillSwitchInfo,
    ModelInfo,
    PointInfo,
    ReasonRequest,
)
from warden.auth.tokens import Role
from warden.decision import Decision, Route, Status
from warden.engine import Engine, Proposal
from warden.errors import InvalidRequest
from warden.review.waiting import MAX_WAIT_SECONDS, await_final
from warden.store.queries import DecisionFilter, KillSwitch, list_decisions
from warden.store.recorder import GLOBAL_SCOPE

router = APIRouter()
READERS = (Role.CALLER, Role.REVIEWER, Role.OWNER, Role.AUDITOR)


def _deciding_points(engine: Engine) -> set[str]:
    """Points a caller may name when deciding: the loaded ones, and those whose file did not
    load — deciding on one of those is a 503 that says why, not a 404 that hides it."""
    return {*engine.points, *engine.broken}


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


# Caller data recorded as given (a proposal's output and confidence are judged by the
# engine): NUL characters are allowed inside, as JSON stores them.
FREE_FORM = frozenset({"input", "context", "inputs", "contexts", "output", "confidence"})


async def _json_body(request: Request, *, per_item: frozenset[str] = frozenset()) -> Any:
    """The body as JSON, within the depth limit and with no NUL in a name, reason or id.

    Keys in `per_item` hold lists whose items the engine checks one by one (a batch refuses a
    bad item in its place rather than failing the whole request).
    """
    raw = await request.body()
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object", field="body")
    try:
        body = orjson.loads(raw)  # rejects NaN/Infinity, unlike the standard library
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}", field="body") from None
    max_depth = _engine(request).max_json_depth
    # Walk the value only when the bytes allow a problem: no more brackets than the limit
    # means no deeper nesting, and JSON can only carry a NUL as the escape \u0000.
    if raw.count(b"{") + raw.count(b"[") > max_depth or b"\\u0000" in raw:
        check_body(body, max_depth, per_item)
    return body


def check_body(body: Any, max_depth: int, per_item: frozenset[str] = frozenset()) -> None:
    """Raise 400 for a value nested deeper than `max_depth` (each top-level field is measured
    on its own, as the engine measures an input) or a NUL outside the caller's own data."""
    fields = body.items() if isinstance(body, dict) else [("body", body)]
    for name, value in fields:
        if name not in per_item:
            deep = jsonlimits.too_deep(value, max_depth, name)
            if deep is not None:
                raise InvalidRequest(jsonlimits.depth_message(deep, max_depth), field=deep)
        nul = None if name in FREE_FORM else jsonlimits.nul_at(value, name)
        if nul is not None or "\x00" in name:
            where = nul or "body"
            raise InvalidRequest(f"{where} contains a NUL character; remove it", field=where)


def _parse(model: type[Any], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(
            f"{field}: {first['msg']}" if field else first["msg"], field=field
        ) from None


def _decision_response(decision: Decision) -> Response:
    status = 202 if decision.status is Status.PENDING else 200
    return json_bytes_response(decision_json(decision), status)


@router.post(
    "/v1/decisions",
    tags=["decisions"],
    response_model=Decision,
    responses={202: {"model": Decision, "description": "Pending human review"}},
    openapi_extra={
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": "A retry with the same key returns the first decision.",
            },
        ],
        **json_body(DecisionRequest),
    },
)
async def create_decision(request: Request) -> Response:
    """Run one governed decision. 200 when final, 202 when it waits for review.

    Send `Authorization: Bearer <token>` (caller role for the point) and, to make retries safe,
    an `Idempotency-Key` header: a retried request returns the first decision.
    """
    who = authenticate_request(request)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 255:
        raise InvalidRequest("Idempotency-Key must be 1 to 255 characters", field="Idempotency-Key")
    body = _parse(DecisionRequest, await _json_body(request))
    require_point(who, Role.CALLER, body.point, _deciding_points(_engine(request)))
    proposal = None
    if body.output is not None or body.confidence is not None:
        proposal = Proposal(body.output, body.confidence, body.model_version)
    engine = _engine(request)
    decision = await engine.decide_async(
        body.point,
        body.input,
        context=body.context,
        idempotency_key=idempotency_key,
        actor=who.actor,
        proposal=proposal,
        callback_url=body.callback_url,
    )
    return _decision_response(decision)


def hot_routes() -> list[routing.BaseRoute]:
    """`POST /v1/decisions` as a plain Starlette route, to be placed before FastAPI's routes.

    The endpoint reads its request itself (no parameters, no dependencies, a response it
    renders), so FastAPI's request handling and its walk through the included routers are
    pure cost on the hot path (py-spy put it near a tenth of the server's CPU). The FastAPI
    route stays registered, never reached for POST, to describe the endpoint in the OpenAPI
    document; errors still pass through the app's exception handlers.
    """
    return [
        routing.Route("/v1/decisions", create_decision, methods=["POST"], include_in_schema=False)
    ]


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    point: str
    inputs: list[dict[str, Any]] = Field(min_length=1, max_length=1000)
    contexts: list[dict[str, Any]] | None = None


@router.post(
    "/v1/decisions/batch",
    tags=["decisions"],
    response_model=DecisionPage,
    openapi_extra=json_body(BatchRequest),
)
async def create_decisions(request: Request) -> Response:
    """Up to 1,000 decisions of one point in one request: one model call where the model
    allows, one group commit, each decision governed and recorded as by `POST /v1/decisions`.
    Inputs that fail the schema come back as refused decisions, in their place."""
    who = authenticate_request(request)
    body = _parse(
        BatchRequest, await _json_body(request, per_item=frozenset({"inputs", "contexts"}))
    )
    require_point(who, Role.CALLER, body.point, _deciding_points(_engine(request)))
    engine = _engine(request)
    decisions = await run_in_threadpool(
        engine.decide_many, body.point, body.inputs, contexts=body.contexts, actor=who.actor
    )
    return json_bytes_response(decisions_page_json(decisions, None))


@router.get("/v1/decisions/{decision_id}", tags=["decisions"], response_model=Decision)
async def get_decision(
    request: Request,
    decision_id: str,
    who: Authenticated,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = 0,
) -> Response:
    """A decision. With `wait=N` a pending one is held up to N seconds until it is final."""
    engine = _engine(request)
    decision = await run_in_threadpool(engine.get, decision_id)
    require_decision(who, READERS, decision)
    if wait > 0 and not decision.is_final:
        decision = await await_final(lambda: run_in_threadpool(engine.get, decision_id), wait)
    return json_bytes_response(decision_json(decision))


@router.get("/v1/decisions", tags=["decisions"], response_model=DecisionPage)
async def list_decisions_route(
    request: Request,
    who: Authenticated,
    point: str | None = None,
    route: Route | None = None,
    status: Status | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Newest first, paginated by `next_cursor`."""
    if point is not None:
        require_point(who, READERS, point, _engine(request).points)
    allowed = None if who.all_points else who.points
    flt = DecisionFilter(
        point=point, route=route, status=status, since=since, until=until, points_allowed=allowed
    )
    engine = _engine(request)

    def read() -> tuple[list[Decision], str | None]:
        with engine.db.connect() as conn:
            return list_decisions(conn, flt, cursor=cursor, limit=limit)

    page, next_cursor = await run_in_threadpool(read)
    return json_bytes_response(decisions_page_json(page, next_cursor))


@router.post(
    "/v1/decisions/{decision_id}/outcome",
    tags=["decisions"],
    response_model=Decision,
    openapi_extra=json_body(GroundTruthRequest),
)
async def record_outcome(request: Request, decision_id: str, who: Authenticated) -> Response:
    """Ground truth for a decision, once it is known (for realised accuracy)."""
    body = _parse(GroundTruthRequest, await _json_body(request))
    engine = _engine(request)
    decision = await run_in_threadpool(engine.get, decision_id)
    require_decision(who, (Role.CALLER, Role.OWNER), decision)
    updated = await run_in_threadpool(
        engine.record_ground_truth, decision_id, body.outcome, actor=who.actor
    )
    return json_bytes_response(decision_json(updated))


@router.get("/v1/points", tags=["points"], response_model=list[PointInfo])
async def list_points(request: Request, who: Authenticated) -> list[PointInfo]:
    engine = _engine(request)
    names = sorted({*engine.points, *(n for n, b in engine.broken.items() if b.spec)})
    return [_point_info(engine, name) for name in names if who.may_see(name)]


@router.get("/v1/points/{point}", tags=["points"], response_model=PointInfo)
async def get_point(request: Request, point: str, who: Authenticated) -> PointInfo:
    engine = _engine(request)
    known = set(engine.points) | {n for n, b in engine.broken.items() if b.spec}
    require_point(who, READERS, point, known)
    return _point_info(engine, point)


def _point_info(engine: Engine, name: str) -> PointInfo:
    """A serving point, or one whose file validated but whose model did not load."""
    from warden.policy.loader import policy_version

    compiled = engine.points.get(name)
    broken = engine.broken.get(name) if compiled is None else None
    spec = compiled.spec if compiled is not None else broken.spec if broken else None
    assert spec is not None
    model = engine.models.get(name)
    return PointInfo(
        point=name,
        owner=spec.owner,
        description=spec.description,
        policy_version=compiled.version if compiled is not None else policy_version(spec),
        outcomes=spec.outcomes,
        model=ModelInfo(
            kind=spec.model.kind.value,
            version=spec.model.version,
            breaker=model.breaker.state.value if model else None,
        ),
        killed=engine._is_killed(name),
        rules={
            kind: [r.model_dump(exclude_none=True) for r in getattr(spec.rules, kind)]
            for kind in ("refuse", "review", "auto")
        },
        status="serving" if broken is None else "unavailable",
        error=None if broken is None else str(broken.error),
    )


def _kill_info(switch: KillSwitch) -> KillSwitchInfo:
    return KillSwitchInfo(
        scope=switch.scope,
        engaged=switch.engaged,
        actor=switch.actor,
        reason=switch.reason,
        changed_at=switch.changed_at.isoformat() if switch.changed_at else None,
    )


@router.get("/v1/kill-switches", tags=["kill switch"], response_model=list[KillSwitchInfo])
async def list_kill_switches(request: Request, who: Authenticated) -> list[KillSwitchInfo]:
    switches = await run_in_threadpool(_engine(request).kill_switches)
    return [_kill_info(s) for s in switches if s.scope == GLOBAL_SCOPE or who.may_see(s.scope)]


async def _toggle(
    request: Request, who: Authenticated, scope: str, engaged: bool
) -> KillSwitchInfo:
    body = _parse(ReasonRequest, await _json_body(request))
    engine = _engine(request)
    if scope == GLOBAL_SCOPE:
        require(who, Role.ADMIN)
        if not who.all_points:
            require(who, Role.ADMIN, GLOBAL_SCOPE)
    else:
        require_point(who, Role.OWNER, scope, engine.points)
    switch = await run_in_threadpool(
        engine.set_kill, scope, engaged, actor=who.actor, reason=body.reason
    )
    return _kill_info(switch)


@router.post(
    "/v1/points/{point}/kill",
    tags=["kill switch"],
    response_model=KillSwitchInfo,
    openapi_extra=json_body(ReasonRequest),
)
async def kill_point(request: Request, point: str, who: Authenticated) -> KillSwitchInfo:
    """No decision of this point is AUTO from the next one on, on every replica."""
    return await _toggle(request, who, point, True)


@router.post(
    "/v1/points/{point}/resume",
    tags=["kill switch"],
    response_model=KillSwitchInfo,
    openapi_extra=json_body(ReasonRequest),
)
async def resume_point(request: Request, point: str, who: Authenticated) -> KillSwitchInfo:
    return await _toggle(request, who, point, False)


@router.post(
    "/v1/kill",
    tags=["kill switch"],
    response_model=KillSwitchInfo,
    openapi_extra=json_body(ReasonRequest),
)
async def kill_all(request: Request, who: Authenticated) -> KillSwitchInfo:
    """The global kill switch (admin): no decision of any point is AUTO."""
    return await _toggle(request, who, GLOBAL_SCOPE, True)


@router.post(
    "/v1/resume",
    tags=["kill switch"],
    response_model=KillSwitchInfo,
    openapi_extra=json_body(ReasonRequest),
)
async def resume_all(request: Request, who: Authenticated) -> KillSwitchInfo:
    return await _toggle(request, who, GLOBAL_SCOPE, False)


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
async def readyz(request: Request) -> FastJSONResponse:
    """Readiness: the database answers and the recorder is running. Point files that did not
    load are listed under `unavailable` (`file:line: problem`); the other points serve."""
    engine = _engine(request)

    def check() -> None:
        with engine.db.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    try:
        await run_in_threadpool(check)
    except Exception as exc:
        return FastJSONResponse(
            {"status": "unavailable", "reason": str(exc)[:200]}, status_code=503
        )
    if not engine.recorder.alive:
        return FastJSONResponse(
            {"status": "unavailable", "reason": "recorder stopped"}, status_code=503
        )
    body: dict[str, Any] = {"status": "ok", "points": sorted(engine.points)}
    broken = [*engine.broken.values(), *engine.unnamed_broken]
    if broken:
        body["status"] = "degraded"
        body["unavailable"] = [b.to_dict() for b in broken]
    return FastJSONResponse(body)
