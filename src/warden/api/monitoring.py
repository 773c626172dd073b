"""HTTP routes of monitoring: Prometheus metrics, point health, alerts and their resolution."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from warden.api.auth import Authenticated, check_metrics_token, require, require_point
from warden.api.openapi import json_body
from warden.api.responses import FastJSONResponse
from warden.api.routes import READERS, _engine, _json_body, _parse
from warden.api.schemas import NOT_BLANK
from warden.auth.tokens import Role
from warden.errors import NotFound
from warden.mcp.report import DURATION, tool_report, visible_to
from warden.mcp.report import report_window as tool_report_window
from warden.monitor import metrics, store
from warden.monitor.health import point_health
from warden.monitor.worker import resolve_alert

router = APIRouter(tags=["monitoring"])


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1, pattern=NOT_BLANK, description="Why the alert is resolved; recorded."
    )


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus text exposition; no label names a decision or an input. With
    `WARDEN_METRICS_TOKEN` set, scrapers must send it as `Authorization: Bearer <token>`."""
    check_metrics_token(request)
    engine = _engine(request)
    collector = metrics.ReviewQueueCollector(engine.db, engine.points)
    body, content_type = await run_in_threadpool(metrics.exposition, [collector])
    return Response(body, media_type=content_type)


@router.get("/v1/points/{point}/health")
async def health(request: Request, point: str, who: Authenticated, windows: int = 48) -> Any:
    """Status, protections, the latest window with drift per column, recent windows, open alerts,
    realised accuracy per model version and the reference in use."""
    engine = _engine(request)
    require_point(who, READERS, point, engine.points)
    found = await run_in_threadpool(point_health, engine, point, windows=min(max(windows, 1), 500))
    return FastJSONResponse(found)


@router.get("/v1/tools")
async def tools(
    request: Request,
    who: Authenticated,
    window: Annotated[
        str, Query(pattern=DURATION, max_length=32, description="A duration: 15m, 1h, 7d.")
    ] = "1h",
    until: Annotated[datetime | None, Query(description="End of the window (default now).")] = None,
) -> Any:
    """Agents' tool calls through `warden mcp` per upstream server and tool over a window: calls
    by route, denials by code, reviewers' override rate, tool and governance latency (p50, p99).
    Only tools governed by points the token may read."""
    since, end = tool_report_window(window, until)
    engine = _engine(request)
    found = await run_in_threadpool(tool_report, engine.db, since, end, visible=visible_to(who))
    return FastJSONResponse(found)


@router.get("/v1/alerts")
async def list_alerts(
    request: Request,
    who: Authenticated,
    point: str | None = None,
    state: Annotated[
        str | None, Query(pattern="^(active|pending|firing|no_data|resolved)$")
    ] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Any:
    """Alert episodes, newest first; `state=active` for pending, firing and no-data ones."""
    if point is not None:
        require(who, READERS, point)
    flt = store.AlertFilter(
        point=point, state=state, points_allowed=None if who.all_points else who.points
    )
    engine = _engine(request)

    def read() -> tuple[list[Any], str | None]:
        with engine.db.connect() as conn:
            return store.list_alerts(conn, flt, cursor=cursor, limit=limit)

    page, next_cursor = await run_in_threadpool(read)
    return FastJSONResponse(
        {"data": [store.alert_json(a) for a in page], "next_cursor": next_cursor}
    )


@router.get("/v1/alerts/{alert_id}")
async def get_alert(request: Request, alert_id: str, who: Authenticated) -> Any:
    row = await run_in_threadpool(_alert, request, alert_id)
    require(who, READERS, row.point)
    return FastJSONResponse(store.alert_json(row))


@router.post("/v1/alerts/{alert_id}/resolve", openapi_extra=json_body(ResolveRequest))
async def resolve(request: Request, alert_id: str, who: Authenticated) -> Any:
    """A person resolves an alert (owner role): the episode closes and a `tighten` it holds is
    lifted. If the condition still holds, the rule starts a new episode."""
    body = _parse(ResolveRequest, await _json_body(request))
    row = await run_in_threadpool(_alert, request, alert_id)
    require(who, Role.OWNER, row.point)
    resolved = await run_in_threadpool(
        resolve_alert, _engine(request), alert_id, actor=who.actor, reason=body.reason
    )
    return FastJSONResponse(resolved)


def _alert(request: Request, alert_id: str) -> Any:
    with _engine(request).db.connect() as conn:
        row = store.get_alert(conn, alert_id)
    if row is None:
        raise NotFound(f"no alert with id '{alert_id}'", field="alert_id")
    return row
