"""Console pages: login, the queue, the task page with its actions, decision search and detail.

Every page is plain HTML that works without JavaScript; the script only adds shortcuts. Form
posts carry the session's CSRF token and answer with a redirect (post/redirect/get).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from warden.api.auth import require
from warden.api.routes import READERS
from warden.auth.tokens import Role, authenticate
from warden.auth.users import verify_password
from warden.console.render import templates
from warden.console.sessions import COOKIE, Session, close_session, load_session, open_session
from warden.console.throttle import LoginThrottle
from warden.decision import Route, Status
from warden.engine import Engine
from warden.errors import Forbidden, NotFound, WardenError
from warden.review.access import may_view
from warden.review.claims import claimable
from warden.review.desk import ReviewDesk
from warden.review.tasks import ReviewTask, TaskFilter, TaskStatus
from warden.store.queries import DecisionFilter, list_decisions

router = APIRouter(prefix="/console", include_in_schema=False)
LOGIN_CSRF = "warden_login_csrf"
PAGE = 50
CONSOLE_ROLES = frozenset({Role.REVIEWER, Role.OWNER, Role.AUDITOR, Role.ADMIN})
SORTED_LIMIT = 1000  # tasks read to sort the queue by an input field


def _desk(request: Request) -> ReviewDesk:
    desk: ReviewDesk = request.app.state.review_desk
    return desk


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the console sends nothing else); last value of each key wins."""
    raw = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


async def _session(request: Request) -> Session | None:
    return await run_in_threadpool(load_session, _engine(request).db, request.cookies.get(COOKIE))


def _to_login(request: Request) -> RedirectResponse:
    target = urlencode({"next": request.url.path})
    return RedirectResponse(f"/console/login?{target}", status_code=303)


def _page(
    request: Request, name: str, session: Session | None, status_code: int = 200, **context: Any
) -> Response:
    return templates.TemplateResponse(
        request,
        name,
        {"session": session, "who": session.principal if session else None, **context},
        status_code=status_code,
    )


def _check_csrf(session: Session, form: dict[str, str]) -> None:
    if not hmac.compare_digest(form.get("csrf", ""), session.csrf):
        raise Forbidden(
            "the form's security token is missing or stale; reload the page and try again",
            field="csrf",
        )


def _cookie_flags(request: Request) -> dict[str, Any]:
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/console",
    }


# -- login ------------------------------------------------------------------------------


@router.get("")
@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/console/queue", status_code=303)


@router.get("/login")
async def login_page(request: Request, next: str = "/console/queue") -> Response:
    csrf = secrets.token_urlsafe(24)
    response = _page(request, "login.html", None, csrf=csrf, next=_safe_next(next), error=None)
    response.set_cookie(LOGIN_CSRF, csrf, max_age=3600, **_cookie_flags(request))
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    expected = request.cookies.get(LOGIN_CSRF, "")
    next_url = _safe_next(form.get("next", "/console/queue"))
    if not expected or not hmac.compare_digest(form.get("csrf", ""), expected):
        return _login_error(request, next_url, "The login form expired; please try again.", 403)
    db = _engine(request).db
    token = form.get("token", "").strip()
    username = None if token else form.get("username", "").strip().lower() or None
    address = request.client.host if request.client else None
    throttle: LoginThrottle = request.app.state.login_throttle
    blocked = throttle.blocked(username, address)
    if blocked is not None:
        wait, which = blocked
        minutes = max(1, round(wait / 60))
        return _login_error(
            request,
            next_url,
            f"Too many failed sign-ins {'for this user' if which == 'user' else 'from your address'}"
            f"; try again in about {minutes} minute{'s' if minutes != 1 else ''}.",
            429,
        )
    if token:
        method = "console-token"

        def by_token() -> Any:
            with db.connect() as conn:
                return authenticate(conn, token)

        principal = await run_in_threadpool(by_token)
    else:
        method = "password"
        username, password = form.get("username", "").strip(), form.get("password", "")
        if not username or not password:
            return _login_error(request, next_url, "Enter a token, or a username and password.")

        def by_password() -> Any:
            with db.connect() as conn:
                return verify_password(conn, username, password)

        principal = await run_in_threadpool(by_password)
    if principal is None:
        throttle.failed(username, address)
        what = "token" if token else "username or password"
        return _login_error(request, next_url, f"That {what} is not valid.", 401)
    throttle.succeeded(username)
    if not set(principal.roles) & CONSOLE_ROLES:
        return _login_error(
            request,
            next_url,
            "That token is valid but has only the caller role, which sends decisions to the "
            "API; the console is for people. Log in with a reviewer, owner, auditor or admin "
            "token (`warden token create --role reviewer ...`) or a console user "
            "(`warden user create`).",
            403,
        )
    secret, _ = await run_in_threadpool(open_session, db, principal, method)
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(COOKIE, secret, max_age=12 * 3600, **_cookie_flags(request))
    response.delete_cookie(LOGIN_CSRF, path="/console")
    return response


def _login_error(request: Request, next_url: str, message: str, status: int = 400) -> Response:
    csrf = secrets.token_urlsafe(24)
    response = _page(
        request, "login.html", None, status_code=status, csrf=csrf, next=next_url, error=message
    )
    response.set_cookie(LOGIN_CSRF, csrf, max_age=3600, **_cookie_flags(request))
    return response


def _safe_next(target: str) -> str:
    """Only redirect within the console, never to another site."""
    return (
        target
        if target.startswith("/console/") and not target.startswith("//")
        else "/console/queue"
    )


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = await _session(request)
    if session is not None:
        try:
            _check_csrf(session, await _form(request))
        except Forbidden as error:
            return _error_page(request, session, error)
        await run_in_threadpool(close_session, _engine(request).db, request.cookies.get(COOKIE))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


# -- queue ------------------------------------------------------------------------------


@router.get("/queue")
async def queue(
    request: Request,
    point: str | None = None,
    status: str = "open",
    claimed: str = "any",
    cursor: str | None = None,
    done: str | None = None,
    sort: str | None = None,
    order: str = "desc",
) -> Response:
    """The queue, oldest first; or sorted by an input field a point names in `review.display`
    (then the first SORTED_LIMIT matching tasks, sorted, on one page)."""
    session = await _session(request)
    if session is None:
        return _to_login(request)
    who = session.principal
    desk = _desk(request)
    engine = _engine(request)
    points = sorted(p for p in engine.points if may_view(who, p))
    shown = [p for p in ([point] if point in engine.points else points)]
    display = list(dict.fromkeys(f for p in shown for f in engine.points[p].spec.review.display))
    if sort not in display:
        sort = None
    order = "asc" if order == "asc" else "desc"
    now = desk.clock()
    if status not in ("open", "decided", "expired", "all"):
        status = "open"
    flt = TaskFilter(
        point=point or None,
        status=None if status == "all" else TaskStatus(status),
        claimed_by=who.actor if claimed == "mine" else None,
        unclaimed_at=now if claimed == "free" else None,
    )
    try:
        tasks, next_cursor = await run_in_threadpool(
            desk.tasks,
            who,
            flt,
            cursor=None if sort else cursor,
            limit=SORTED_LIMIT if sort else PAGE,
        )
        counts = await run_in_threadpool(desk.counts, who)
    except WardenError as error:
        return _error_page(request, session, error)
    if sort:
        tasks = sort_tasks(tasks, sort, descending=order == "desc")
        next_cursor = None
    filters = {"point": point or "", "status": status, "claimed": claimed}
    next_link = (
        f"/console/queue?{urlencode({**filters, 'cursor': next_cursor})}" if next_cursor else None
    )
    return _page(
        request,
        "queue.html",
        session,
        tasks=tasks,
        counts=counts,
        points=points,
        filters=filters,
        next_link=next_link,
        now=now,
        done=done,
        display=display,
        sort=sort,
        order=order,
        sort_link=lambda field: (
            "/console/queue?"
            + urlencode(
                {
                    **filters,
                    "sort": field,
                    "order": "asc" if field == sort and order == "desc" else "desc",
                }
            )
        ),
    )


def sort_tasks(tasks: list[ReviewTask], field: str, *, descending: bool) -> list[ReviewTask]:
    """Tasks by an input field: numbers by value, then text; tasks without it always last."""

    def value(task: ReviewTask) -> Any:
        raw = task.decision.input.get(field) if task.decision else None
        return raw if isinstance(raw, int | float | str) and not isinstance(raw, bool) else None

    present = [t for t in tasks if value(t) is not None]
    numbers = sorted(
        (t for t in present if not isinstance(value(t), str)), key=value, reverse=descending
    )
    texts = sorted((t for t in present if isinstance(value(t), str)), key=value, reverse=descending)
    return numbers + texts + [t for t in tasks if value(t) is None]


@router.post("/queue/claim-next")
async def claim_next(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    form = await _form(request)
    try:
        _check_csrf(session, form)
        task = await run_in_threadpool(
            _desk(request).claim_next, session.principal, form.get("point") or None
        )
    except NotFound:
        return RedirectResponse("/console/queue?done=none-free", status_code=303)
    except WardenError as error:
        return _error_page(request, session, error)
    return RedirectResponse(f"/console/tasks/{task.decision_id}", status_code=303)


# -- task page and actions ----------------------------------------------------------------


@router.get("/tasks/{decision_id}")
async def task_page(
    request: Request, decision_id: str, done: str | None = None, after: str | None = None
) -> Response:
    """`after`: the verdict just given on the previous task, when this is the next one."""
    session = await _session(request)
    if session is None:
        return _to_login(request)
    return await _render_task(
        request, session, decision_id, done=done, after=after if after in VERDICTS else None
    )


async def _render_task(
    request: Request,
    session: Session,
    decision_id: str,
    *,
    done: str | None = None,
    after: str | None = None,
    error: WardenError | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    desk = _desk(request)
    try:
        task = await run_in_threadpool(desk.task, decision_id, session.principal)
    except WardenError as exc:
        return _error_page(request, session, exc)
    history = await run_in_threadpool(desk.history, decision_id)
    who = session.principal
    now = desk.clock()
    point = _engine(request).points.get(task.point)
    return _page(
        request,
        "task.html",
        session,
        status_code=error.http_status if error else 200,
        task=task,
        decision=task.decision,
        history=history,
        now=now,
        holder=task.holder(now),
        mine=task.holder(now) == who.actor,
        can_claim=claimable(task, who, now) and task.holder(now) != who.actor,
        outcomes=[
            o
            for o in (point.spec.outcomes if point else [])
            if task.decision and o != task.decision.proposed_outcome
        ],
        done=done,
        after=after,
        error=error,
        form=form or {},
    )


ACTIONS = ("claim", "release", "approve", "reject", "override")


@router.post("/tasks/{decision_id}/{action}")
async def task_action(request: Request, decision_id: str, action: str) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    if action not in ACTIONS:
        return _error_page(request, session, NotFound(f"no console action '{action}'"))
    form = await _form(request)
    desk = _desk(request)
    who = session.principal
    try:
        _check_csrf(session, form)
        if action == "claim":
            await run_in_threadpool(desk.claim, who, decision_id)
        elif action == "release":
            await run_in_threadpool(desk.release, who, decision_id)
        elif action == "approve":
            await run_in_threadpool(
                desk.approve, who, decision_id, reason=form.get("reason") or None
            )
        elif action == "reject":
            await run_in_threadpool(
                desk.reject,
                who,
                decision_id,
                reason=form.get("reason"),
                reason_code=form.get("reason_code") or None,
            )
        else:
            await run_in_threadpool(
                desk.override,
                who,
                decision_id,
                outcome=form.get("outcome") or None,
                reason=form.get("reason"),
            )
    except WardenError as error:
        return await _render_task(
            request, session, decision_id, error=error, form={**form, "action": action}
        )
    if action in ("approve", "reject", "override"):
        return await _next_task(request, who, DONE[action])
    return RedirectResponse(f"/console/tasks/{decision_id}?done={DONE[action]}", status_code=303)


DONE = {
    "claim": "claimed",
    "release": "released",
    "approve": "approved",
    "reject": "closed without an outcome",
    "override": "overridden",
}
VERDICTS = frozenset(DONE[a] for a in ("approve", "reject", "override"))


async def _next_task(request: Request, who: Any, verdict: str) -> Response:
    """After a verdict, straight on to the next free task (claimed), or the queue if none."""
    try:
        task = await run_in_threadpool(_desk(request).claim_next, who, None)
    except WardenError:  # none free (NotFound), or none this reviewer may take
        return RedirectResponse(f"/console/queue?{urlencode({'done': verdict})}", status_code=303)
    query = urlencode({"after": verdict})
    return RedirectResponse(f"/console/tasks/{task.decision_id}?{query}", status_code=303)


# -- decisions ----------------------------------------------------------------------------


@router.get("/decisions")
async def decisions_page(
    request: Request,
    q: str | None = None,
    point: str | None = None,
    route: str | None = None,
    status: str | None = None,
    cursor: str | None = None,
) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    who = session.principal
    query = (q or "").strip()
    if query:
        return RedirectResponse(f"/console/decisions/{query}", status_code=303)
    engine = _engine(request)
    points = sorted(p for p in engine.points if who.may_see(p))
    flt = DecisionFilter(
        point=point or None,
        route=Route(route) if route in {r.value for r in Route} else None,
        status=Status(status) if status in {s.value for s in Status} else None,
        points_allowed=None if who.all_points else who.points,
    )
    if point and not who.may_see(point):
        return _error_page(request, session, Forbidden(f"you may not see point '{point}'"))

    def read() -> Any:
        with engine.db.connect() as conn:
            return list_decisions(conn, flt, cursor=cursor, limit=PAGE)

    rows, next_cursor = await run_in_threadpool(read)
    filters = {"point": point or "", "route": route or "", "status": status or ""}
    next_link = (
        f"/console/decisions?{urlencode({**filters, 'cursor': next_cursor})}"
        if next_cursor
        else None
    )
    return _page(
        request,
        "decisions.html",
        session,
        decisions=rows,
        points=points,
        filters=filters,
        next_link=next_link,
        routes=[r.value for r in Route],
    )


@router.get("/decisions/{decision_id}")
async def decision_page(request: Request, decision_id: str) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    engine = _engine(request)
    desk = _desk(request)
    who = session.principal
    try:
        decision = await run_in_threadpool(engine.get, decision_id)
        require(who, READERS, decision.point)
    except WardenError as error:
        return _error_page(request, session, error)
    task: ReviewTask | None
    try:
        task = await run_in_threadpool(desk.task, decision_id)
    except NotFound:
        task = None
    history = await run_in_threadpool(desk.history, decision_id)
    return _page(request, "decision.html", session, decision=decision, task=task, history=history)


def _error_page(request: Request, session: Session | None, error: WardenError) -> Response:
    return _page(request, "error.html", session, status_code=error.http_status, error=error)
