"""HTTP routes of safe change: model versions and aliases, and shadow/canary rollouts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from warden.api.auth import Authenticated, require_point
from warden.api.openapi import json_body
from warden.api.responses import FastJSONResponse
from warden.api.routes import READERS, _engine, _json_body, _parse
from warden.api.schemas import NOT_BLANK
from warden.auth.tokens import Role
from warden.rollout.comparison import compare
from warden.rollout.controller import RolloutController
from warden.rollout.plan import RolloutPlan
from warden.rollout.rollouts import Mode, Rollout

router = APIRouter(tags=["rollout"])


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    challenger: str = Field(description="A registered model version.")
    mode: Mode = Mode.CANARY
    plan: RolloutPlan = Field(default_factory=RolloutPlan)
    reason: str = ""


class AliasRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(description="A registered version, or null to clear.")
    reason: str = Field(min_length=1, pattern=NOT_BLANK)


class ReasonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, pattern=NOT_BLANK, description="Why; recorded in the ledger.")


def _rollout_body(request: Request, rollout: Rollout) -> dict[str, Any]:
    body = rollout.to_dict()
    if rollout.active:
        engine = _engine(request)
        controller = RolloutController(
            engine.db, engine.rollouts, breaker_open=engine.deployments.challenger_breaker_open
        )
        judgement = controller.judge(rollout)
        body["comparison"] = compare(engine.db, engine.points[rollout.point], rollout).to_dict()
        body["analysis"] = {
            "verdict": judgement.verdict.value,
            "next": judgement.action,
            "checks": [
                {
                    "metric": r.check.metric.value,
                    "value": r.value,
                    "low": r.low,
                    "high": r.high,
                    "verdict": r.verdict.value,
                }
                for r in judgement.results
            ],
        }
    return body


@router.get("/v1/points/{point}/models")
async def models(request: Request, point: str, who: Authenticated) -> Any:
    """Registered versions, current aliases and every alias move (which version was live when)."""
    engine = _engine(request)
    require_point(who, READERS, point, engine.points)
    registry = engine.registry

    def read() -> dict[str, Any]:
        return {
            "versions": [
                {
                    "version": v.version,
                    "sha256": v.sha256,
                    "registered_by": v.registered_by,
                    "registered_at": v.registered_at.isoformat(),
                    "metadata": v.metadata,
                }
                for v in registry.versions(point)
            ],
            "aliases": registry.aliases(point),
            "history": [
                {
                    "seq": m.seq,
                    "at": m.at.isoformat(),
                    "alias": m.alias,
                    "from": m.previous,
                    "to": m.version,
                    "actor": m.actor,
                    "reason": m.reason,
                }
                for m in registry.history(point)
            ],
        }

    return FastJSONResponse(await run_in_threadpool(read))


@router.put("/v1/points/{point}/models/aliases/{alias}", openapi_extra=json_body(AliasRequest))
async def move_alias(request: Request, point: str, alias: str, who: Authenticated) -> Any:
    """Point `champion` or `challenger` at a registered version (owner). Recorded."""
    engine = _engine(request)
    require_point(who, Role.OWNER, point, engine.points)
    body = _parse(AliasRequest, await _json_body(request))
    move = await run_in_threadpool(
        engine.registry.set_alias, point, alias, body.version, actor=who.actor, reason=body.reason
    )
    return FastJSONResponse({"alias": move.alias, "from": move.previous, "to": move.version})


@router.get("/v1/points/{point}/rollout")
async def rollout_status(request: Request, point: str, who: Authenticated) -> Any:
    """The latest rollout of the point, with the live analysis of its current step."""
    engine = _engine(request)
    require_point(who, READERS, point, engine.points)
    rollout = await run_in_threadpool(engine.rollouts.latest, point)
    return FastJSONResponse(await run_in_threadpool(_rollout_body, request, rollout))


@router.post("/v1/points/{point}/rollout", status_code=201, openapi_extra=json_body(StartRequest))
async def start_rollout(request: Request, point: str, who: Authenticated) -> Any:
    """Start a shadow or canary rollout of a registered version (owner)."""
    engine = _engine(request)
    require_point(who, Role.OWNER, point, engine.points)
    compiled = engine._point(point)
    body = _parse(StartRequest, await _json_body(request))
    rollout = await run_in_threadpool(
        engine.rollouts.start,
        compiled,
        challenger=body.challenger,
        mode=body.mode,
        plan=body.plan,
        actor=who.actor,
        reason=body.reason,
    )
    return FastJSONResponse(rollout.to_dict(), status_code=201)


async def _command(request: Request, point: str, who: Any, command: str) -> Any:
    engine = _engine(request)
    require_point(who, Role.OWNER, point, engine.points)
    body = _parse(ReasonRequest, await _json_body(request))
    action = getattr(engine.rollouts, command)
    rollout = await run_in_threadpool(action, point, actor=who.actor, reason=body.reason)
    return FastJSONResponse(rollout.to_dict())


@router.post("/v1/points/{point}/rollout/pause", openapi_extra=json_body(ReasonRequest))
async def pause(request: Request, point: str, who: Authenticated) -> Any:
    """Hold the rollout at its current share."""
    return await _command(request, point, who, "pause")


@router.post("/v1/points/{point}/rollout/resume", openapi_extra=json_body(ReasonRequest))
async def resume(request: Request, point: str, who: Authenticated) -> Any:
    """Resume analysis; the current step starts a fresh interval."""
    return await _command(request, point, who, "resume")


@router.post("/v1/points/{point}/rollout/promote", openapi_extra=json_body(ReasonRequest))
async def promote(request: Request, point: str, who: Authenticated) -> Any:
    """One step on now; at the last step the challenger becomes champion."""
    return await _command(request, point, who, "promote")


@router.post("/v1/points/{point}/rollout/abort", openapi_extra=json_body(ReasonRequest))
async def abort(request: Request, point: str, who: Authenticated) -> Any:
    """Stop now: the challenger decides nothing from the next decision on, on every replica."""
    return await _command(request, point, who, "abort")


@router.get("/v1/points/{point}/policies", tags=["policy"])
async def policy_versions(request: Request, point: str, who: Authenticated) -> Any:
    """Every stored version of the point's policy: live, pending approval or superseded."""
    engine = _engine(request)
    require_point(who, READERS, point, engine.points)
    versions = await run_in_threadpool(engine.policies.list, point)
    return FastJSONResponse(
        [
            {
                "version": v.version,
                "status": v.status,
                "author": v.author,
                "loaded_at": v.loaded_at.isoformat(),
                "approved_by": v.approved_by,
                "approved_at": v.approved_at.isoformat() if v.approved_at else None,
                "source": v.source,
            }
            for v in versions
        ]
    )


@router.post("/v1/points/{point}/policies/{version}/approve", tags=["policy"])
async def approve_policy(request: Request, point: str, version: str, who: Authenticated) -> Any:
    """A second person (owner) puts a pending version live; its author cannot."""
    engine = _engine(request)
    require_point(who, Role.OWNER, point, engine.points)
    approved = await run_in_threadpool(engine.approve_policy, point, version, actor=who.actor)
    return FastJSONResponse(
        {
            "version": approved.version,
            "status": approved.status,
            "author": approved.author,
            "approved_by": approved.approved_by,
        }
    )
