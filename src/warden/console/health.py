"""Console pages of decision-point health (for owners): status, charts, drift, open alerts.

Charts are server-side SVG from warden.monitor.charts; the page needs no script and no CDN.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from warden.api.auth import require
from warden.api.routes import READERS
from warden.console.routes import _engine, _error_page, _page, _session, _to_login
from warden.errors import WardenError
from warden.monitor.charts import health_charts
from warden.monitor.health import point_health

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/health")
async def health_index(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    engine = _engine(request)
    names = sorted(p for p in engine.points if session.principal.may_see(p))

    def read() -> list[dict[str, object]]:
        return [point_health(engine, name, windows=1) for name in names]

    return _page(request, "health.html", session, points=await run_in_threadpool(read))


@router.get("/points/{point}/health")
async def health_page(request: Request, point: str) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    engine = _engine(request)
    try:
        engine._point(point)
        require(session.principal, READERS, point)
        health = await run_in_threadpool(point_health, engine, point)
    except WardenError as error:
        return _error_page(request, session, error)
    return _page(request, "point_health.html", session, health=health, charts=health_charts(health))
