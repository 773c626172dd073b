"""Console pages of decision-point health (for owners): status, charts, drift, open alerts.

Charts are server-side SVG from warden.monitor.charts; the page needs no script and no CDN.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from warden.api.auth import require
from warden.api.routes import READERS
from warden.auth.tokens import Role
from warden.console.routes import (
    _check_csrf,
    _engine,
    _error_page,
    _form,
    _page,
    _session,
    _to_login,
)
from warden.errors import Forbidden, NotFound, WardenError
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
    try:
        require(session.principal, Role.OWNER, point)
        can_resolve = True
    except Forbidden:
        can_resolve = False
    monitoring = engine.points[point].spec.monitoring
    return _page(
        request,
        "point_health.html",
        session,
        health=health,
        charts=health_charts(health),
        can_resolve=can_resolve,
        correction=monitoring.drift.correction if monitoring else "holm",
        done=request.query_params.get("done"),
    )


@router.post("/alerts/{alert_id}/resolve")
async def resolve_alert_page(request: Request, alert_id: str) -> Response:
    """An owner resolves an alert from the Health page, as `warden monitor resolve` does."""
    from warden.monitor import store
    from warden.monitor.worker import resolve_alert

    session = await _session(request)
    if session is None:
        return _to_login(request)
    engine = _engine(request)
    form = await _form(request)

    def find() -> object:
        with engine.db.connect() as conn:
            return store.get_alert(conn, alert_id)

    try:
        _check_csrf(session, form)
        row = await run_in_threadpool(find)
        if row is None:
            raise NotFound(f"no alert with id '{alert_id}'", field="id")
        point = str(row.point)  # type: ignore[attr-defined]
        require(session.principal, Role.OWNER, point)
        await run_in_threadpool(
            resolve_alert,
            engine,
            alert_id,
            actor=session.principal.actor,
            reason=form.get("reason", ""),
        )
    except WardenError as error:
        return _error_page(request, session, error)
    return RedirectResponse(f"/console/points/{point}/health?done=resolved", status_code=303)
