"""HTTP routes of human review: the queue, claims and verdicts.

Reviewers (with one of the point's reviewer groups) act; owners and auditors may read.
Every refused request is a 4xx in the one error shape and changes nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from warden.api.auth import Authenticated
from warden.api.openapi import json_body
from warden.api.responses import FastJSONResponse
from warden.api.routes import _json_body, _parse
from warden.review.desk import ReviewDesk
from warden.review.tasks import ReviewTask, TaskFilter, TaskStatus

router = APIRouter(prefix="/v1/reviews", tags=["reviews"])


class ClaimNextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    point: str | None = Field(default=None, description="Only tasks of this point.")


class ApproveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, description="Optional note, recorded.")


class RejectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, description="Why; required.")
    reason_code: str | None = Field(default=None, description="e.g. `missing_documents`.")


class OverrideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: str | None = Field(default=None, description="Another allowed outcome.")
    reason: str | None = Field(default=None, description="Why; required.")


class TaskPage(BaseModel):
    data: list[ReviewTask]
    next_cursor: str | None


def desk(request: Request) -> ReviewDesk:
    found: ReviewDesk = request.app.state.review_desk
    return found


def _task(task: ReviewTask) -> FastJSONResponse:
    return FastJSONResponse(task.model_dump(mode="json"))


async def _body(request: Request, model: type[BaseModel]) -> Any:
    raw = await request.body()
    return _parse(model, await _json_body(request) if raw.strip() else {})


@router.get("", response_model=TaskPage)
async def list_reviews(
    request: Request,
    who: Authenticated,
    point: str | None = None,
    status: Annotated[str, Query(pattern="^(open|decided|expired|all)$")] = "open",
    claimed: Annotated[str, Query(pattern="^(any|mine|free)$")] = "any",
    escalated: bool | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> FastJSONResponse:
    """Review tasks you may see, oldest first, paginated by `next_cursor`."""
    d = desk(request)
    now = d.clock()
    flt = TaskFilter(
        point=point,
        status=None if status == "all" else TaskStatus(status),
        claimed_by=who.actor if claimed == "mine" else None,
        unclaimed_at=now if claimed == "free" else None,
        escalated=escalated,
    )
    page, next_cursor = await run_in_threadpool(d.tasks, who, flt, cursor=cursor, limit=limit)
    return FastJSONResponse(
        {"data": [t.model_dump(mode="json") for t in page], "next_cursor": next_cursor}
    )


@router.get("/counts")
async def review_counts(request: Request, who: Authenticated) -> FastJSONResponse:
    """Open tasks per point: open, claimed, escalated, overdue, and the nearest deadline."""
    counts = await run_in_threadpool(desk(request).counts, who)
    return FastJSONResponse(
        [
            {
                "point": c.point,
                "open": c.open,
                "claimed": c.claimed,
                "escalated": c.escalated,
                "overdue": c.overdue,
                "next_due_at": c.next_due_at.isoformat() if c.next_due_at else None,
            }
            for c in counts
        ]
    )


@router.post(
    "/claim", response_model=ReviewTask, openapi_extra=json_body(ClaimNextRequest, required=False)
)
async def claim_next(request: Request, who: Authenticated) -> FastJSONResponse:
    """Claim the oldest open task you may take (optionally of one point)."""
    body = await _body(request, ClaimNextRequest)
    return _task(await run_in_threadpool(desk(request).claim_next, who, body.point))


@router.get("/{decision_id}", response_model=ReviewTask)
async def get_review(request: Request, decision_id: str, who: Authenticated) -> FastJSONResponse:
    """The task with its decision: input, proposal, confidence, reasons, versions and votes."""
    d = desk(request)
    task = await run_in_threadpool(d.task, decision_id, who)
    body = task.model_dump(mode="json")
    history = await run_in_threadpool(d.history, decision_id)
    body["history"] = [{**e, "ts": e["ts"].isoformat()} for e in history]
    return FastJSONResponse(body)


@router.post("/{decision_id}/claim", response_model=ReviewTask)
async def claim(request: Request, decision_id: str, who: Authenticated) -> FastJSONResponse:
    """Hold the task for its lease; claiming again renews your lease."""
    return _task(await run_in_threadpool(desk(request).claim, who, decision_id))


@router.post("/{decision_id}/release", response_model=ReviewTask)
async def release(request: Request, decision_id: str, who: Authenticated) -> FastJSONResponse:
    return _task(await run_in_threadpool(desk(request).release, who, decision_id))


@router.post(
    "/{decision_id}/approve",
    response_model=ReviewTask,
    openapi_extra=json_body(ApproveRequest, required=False),
)
async def approve(request: Request, decision_id: str, who: Authenticated) -> FastJSONResponse:
    """The proposed outcome stands (once enough reviewers agree)."""
    body = await _body(request, ApproveRequest)
    task = await run_in_threadpool(desk(request).approve, who, decision_id, reason=body.reason)
    return _task(task)


@router.post(
    "/{decision_id}/reject",
    response_model=ReviewTask,
    openapi_extra=json_body(RejectRequest, required=False),
)
async def reject(request: Request, decision_id: str, who: Authenticated) -> FastJSONResponse:
    """No outcome is applied; `reason` and `reason_code` are required."""
    body = await _body(request, RejectRequest)
    task = await run_in_threadpool(
        desk(request).reject, who, decision_id, reason=body.reason, reason_code=body.reason_code
    )
    return _task(task)


@router.post(
    "/{decision_id}/override",
    response_model=ReviewTask,
    openapi_extra=json_body(OverrideRequest, required=False),
)
async def override(request: Request, decision_id: str, who: Authenticated) -> FastJSONResponse:
    """Apply another allowed outcome instead of the proposal; `reason` is required."""
    body = await _body(request, OverrideRequest)
    task = await run_in_threadpool(
        desk(request).override, who, decision_id, outcome=body.outcome, reason=body.reason
    )
    return _task(task)
