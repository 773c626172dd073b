"""The signed-in person's own console sessions: see where they are signed in, end any of them."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from warden.console.routes import (
    _check_csrf,
    _engine,
    _error_page,
    _form,
    _page,
    _session,
    _to_login,
)
from warden.console.sessions import COOKIE, end_sessions, list_sessions
from warden.errors import Forbidden

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/sessions")
async def sessions_page(request: Request, done: str | None = None) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    found = await run_in_threadpool(
        list_sessions, _engine(request).db, session.principal, request.cookies.get(COOKIE)
    )
    return _page(request, "sessions.html", session, sessions=found, done=done)


@router.post("/sessions/end")
async def end(request: Request) -> Response:
    """End one of your own sessions (`handle`), or all of them (`all`)."""
    session = await _session(request)
    if session is None:
        return _to_login(request)
    form = await _form(request)
    try:
        _check_csrf(session, form)
    except Forbidden as error:
        return _error_page(request, session, error)
    handle = None if form.get("all") else form.get("handle", "")
    ended = await run_in_threadpool(end_sessions, _engine(request).db, session.principal, handle)
    return RedirectResponse(f"/console/sessions?done={ended}", status_code=303)
