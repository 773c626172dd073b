"""The console's per-tool page: agents' tool calls through `warden mcp` per server and tool,
over a chosen window (the same report as GET /v1/tools). Server-rendered; no script, no CDN."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from warden.console.routes import _engine, _error_page, _page, _session, _to_login
from warden.errors import WardenError
from warden.mcp.report import report_window, tool_report, visible_to

router = APIRouter(prefix="/console", include_in_schema=False)
WINDOWS = ("15m", "1h", "24h", "7d")


@router.get("/tools")
async def tools_page(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    window = request.query_params.get("window") or "1h"
    try:
        since, until = report_window(window, None)
        report = await run_in_threadpool(
            tool_report,
            _engine(request).db,
            since,
            until,
            visible=visible_to(session.principal),
        )
    except WardenError as error:
        return _error_page(request, session, error)
    return _page(request, "tools.html", session, report=report, window=window, windows=WINDOWS)
