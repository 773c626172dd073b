"""The review desk: every review operation, for the API, the CLI, the console and the SDK.

Operations read the task, plan the change (pure functions in claims/actions/expiry), then commit
it through the recorder: the task update is conditional on the version that was read, and runs
in the ledger-locked transaction with its events and, when final, the decision row. A plan made
on stale data therefore fails with 409 and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from warden.auth.tokens import Principal, Role
from warden.decision import Decision
from warden.engine import Engine
from warden.errors import Conflict, Forbidden, NotFound, WardenError
from warden.ledger.chain import EventDraft
from warden.review import actions, claims, expiry
from warden.review.access import check_any_view, check_view, may_view
from warden.review.changes import TaskChange
from warden.review.finalize import settle
from warden.review.history import decision_events
from warden.review.tasks import (
    PointCounts,
    ReviewTask,
    TaskFilter,
    TaskStatus,
    Verdict,
    count_open,
    get_task_row,
    list_tasks,
    task_payload,
    to_task,
)
from warden.store import queries
from warden.store.recorder import Change
from warden.store.schema import decisions, review_tasks

Clock = Callable[[], datetime]
CANDIDATES = 50


def utc_now() -> datetime:
    return datetime.now(UTC)


class ReviewDesk:
    def __init__(self, engine: Engine, *, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.db = engine.db
        self.clock = clock
        self._skip_locked = engine.db.dialect.name == "postgresql"

    # -- reading -------------------------------------------------------------------------

    def task(self, decision_id: str, who: Principal | None = None) -> ReviewTask:
        """A task with its decision. With `who`, only if they may see its point."""
        with self.db.connect() as conn:
            row = get_task_row(conn, decision_id)
            decision = queries.get_decision(conn, decision_id)
        if row is None:
            if decision is None:
                raise NotFound(f"no decision with id '{decision_id}'", field="id")
            if who is not None:
                _check_visible(who, decision.point, decision_id)
            raise NotFound(
                f"decision '{decision_id}' was not routed to review (route "
                f"{decision.route.value}); it has no review task",
                field="id",
            )
        task = to_task(row)
        if who is not None:
            _check_visible(who, task.point, decision_id)
        task.decision = decision
        return task

    def tasks(
        self, who: Principal, flt: TaskFilter, *, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[ReviewTask], str | None]:
        if flt.point is not None:
            check_view(who, flt.point)  # first: a point outside the scope is 404, not 403
        check_any_view(who)
        allowed = self._visible_points(who)
        flt = TaskFilter(**{**flt.__dict__, "points_allowed": allowed})
        with self.db.connect() as conn:
            page, next_cursor = list_tasks(conn, flt, cursor=cursor, limit=limit)
            found = _decisions(conn, [t.decision_id for t in page])
        for task in page:
            task.decision = found.get(task.decision_id)
        return page, next_cursor

    def counts(self, who: Principal) -> list[PointCounts]:
        check_any_view(who)
        with self.db.connect() as conn:
            return count_open(conn, self.clock(), self._visible_points(who))

    def history(self, decision_id: str) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            return decision_events(conn, decision_id)

    def _visible_points(self, who: Principal) -> frozenset[str]:
        known = set(self.engine.points) | set(who.points)
        return frozenset(p for p in known if p != "*" and may_view(who, p))

    # -- claims --------------------------------------------------------------------------

    def claim(self, who: Principal, decision_id: str) -> ReviewTask:
        task = self.task(decision_id, who)
        return self._commit(task, claims.claim(task, who, self.clock()))

    def release(self, who: Principal, decision_id: str) -> ReviewTask:
        task = self.task(decision_id, who)
        return self._commit(task, claims.release(task, who, self.clock()))

    def claim_next(self, who: Principal, point: str | None = None) -> ReviewTask:
        """Claim the oldest open task `who` may take.

        The pick happens inside the writer's transaction, so concurrent reviewers (in one batch
        or on other replicas) each see the others' claims and never race for the same row; on
        PostgreSQL the candidates are read `FOR UPDATE SKIP LOCKED`, so a row another
        transaction holds is passed over rather than waited for.
        """
        if point is not None:
            check_view(who, point)  # first: a point outside the scope is 404, not 403
        if not who.roles & {Role.REVIEWER, Role.ADMIN}:
            raise Forbidden("claiming a task needs the reviewer role", field="Authorization")
        allowed = sorted(self._visible_points(who))
        t = review_tasks
        picked: list[ReviewTask] = []
        events: list[EventDraft] = []  # the change's list; a closure over the change itself
        # would make every claim a reference cycle

        def apply(conn: sa.Connection) -> None:
            picked.clear()
            events.clear()
            now = self.clock()
            query = (
                sa.select(t)
                .where(
                    t.c.status == TaskStatus.OPEN.value,
                    t.c.point.in_([point] if point else allowed),
                    sa.or_(t.c.lease_until.is_(None), t.c.lease_until <= now),
                )
                .order_by(t.c.decision_id)
                .limit(CANDIDATES)
            )
            if self._skip_locked:
                query = query.with_for_update(skip_locked=True)
            for row in conn.execute(query):
                task = to_task(row)
                if claims.claimable(task, who, now):
                    planned = claims.claim(task, who, now)
                    _update(conn, task, planned)
                    events.extend(planned.events)
                    picked.append(_updated(task, planned))
                    return

        self.engine.recorder.record(Change(events=events, apply=apply))
        if not picked:
            where = f" of point '{point}'" if point else ""
            raise NotFound(f"no open review task{where} is free for {who.actor}", field="point")
        return picked[0]

    # -- verdicts ------------------------------------------------------------------------

    def approve(self, who: Principal, decision_id: str, *, reason: str | None = None) -> ReviewTask:
        return self._decide(who, decision_id, Verdict.APPROVE, reason=reason)

    def reject(
        self, who: Principal, decision_id: str, *, reason: str | None, reason_code: str | None
    ) -> ReviewTask:
        return self._decide(
            who, decision_id, Verdict.REJECT, reason=reason, reason_code=reason_code
        )

    def override(
        self, who: Principal, decision_id: str, *, outcome: str | None, reason: str | None
    ) -> ReviewTask:
        return self._decide(who, decision_id, Verdict.OVERRIDE, outcome=outcome, reason=reason)

    def _decide(
        self, who: Principal, decision_id: str, verdict: Verdict, **fields: str | None
    ) -> ReviewTask:
        task = self.task(decision_id, who)
        assert task.decision is not None
        point = self.engine.points.get(task.point)
        outcomes = point.spec.outcomes if point else []
        change = actions.decide(
            task, task.decision, who, self.clock(), verdict, outcomes=outcomes, **fields
        )
        return self._commit(task, change)

    # -- expiry --------------------------------------------------------------------------

    def expire_due(self, limit: int = 100) -> int:
        """Apply every overdue task's expiry. Returns how many this call applied."""
        now = self.clock()
        t = review_tasks
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.select(t)
                .where(t.c.status == TaskStatus.OPEN.value, t.c.due_at <= now)
                .order_by(t.c.due_at)
                .limit(limit)
            ).all()
            pending = [(to_task(r), queries.get_decision(conn, r.decision_id)) for r in rows]
        futures: list[Future[Any]] = []
        for task, decision in pending:
            if decision is None:
                continue
            change = expiry.expire(task, decision, now)
            if change is not None:
                futures.append(self.engine.recorder.submit(self._change(task, change)))
        applied = 0
        for future in futures:
            try:
                self.engine.recorder.wait(future)
                applied += 1
            except WardenError:
                pass  # another replica, or a reviewer, got there first
        return applied

    # -- committing ----------------------------------------------------------------------

    def _commit(self, task: ReviewTask, change: TaskChange) -> ReviewTask:
        self.engine.recorder.record(self._change(task, change))
        return _updated(task, change)

    def _change(self, task: ReviewTask, change: TaskChange) -> Change:
        def apply(conn: sa.Connection) -> None:
            _update(conn, task, change)

        return Change(events=change.events, apply=apply)


def _update(conn: sa.Connection, task: ReviewTask, change: TaskChange) -> None:
    """The versioned write: it applies only if nobody changed the task since it was read."""
    t = review_tasks
    values = {**change.values, "version": task.version + 1}
    result = conn.execute(
        t.update()
        .where(t.c.decision_id == task.decision_id, t.c.version == task.version)
        .values(**values)
    )
    if result.rowcount != 1:
        raise Conflict(
            "the task changed while you were working on it (someone else claimed or "
            "decided it); reload it and try again",
            field="id",
        )
    if change.final is not None:
        settle(conn, change.final, task.callback_url)
    _record_values(change, values)


def _record_values(change: TaskChange, values: dict[str, Any]) -> None:
    """The change's last event carries the task columns it set and, when it settles the
    decision, the outcome and the reason appended: the rows follow from the ledger."""
    payload = change.events[-1].payload
    payload["task"] = task_payload(values)
    if change.final is not None:
        payload["settled"] = {
            "outcome": change.final.outcome,
            "reason": change.final.reasons[-1].model_dump(exclude_none=True),
        }


def _updated(task: ReviewTask, change: TaskChange) -> ReviewTask:
    """The task as the committed change left it, without reading it back."""
    data = {**task.model_dump(), **change.values, "version": task.version + 1}
    data["callback_url"] = task.callback_url
    data["decision"] = change.final or task.decision
    return ReviewTask.model_validate(data)


def _decisions(conn: sa.Connection, ids: list[str]) -> dict[str, Decision]:
    if not ids:
        return {}
    rows = conn.execute(sa.select(decisions).where(decisions.c.id.in_(ids))).all()
    return {r.id: queries.to_decision(r) for r in rows}


def _check_visible(who: Principal, point: str, decision_id: str) -> None:
    """Outside `who`'s scope a task is answered exactly like an unknown id (nothing leaks)."""
    if not who.may_see(point):
        raise NotFound(f"no decision with id '{decision_id}'", field="id")
    check_view(who, point)
