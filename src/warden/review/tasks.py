"""Review tasks: the row written beside a REVIEW decision, and how it reads back.

A task snapshots what its review needs from the policy at decision time (groups, approvals,
SLA, the expiry outcome), so a later policy change never alters a review already under way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field

from warden.decision import Decision
from warden.outbound.egress import check_url
from warden.policy.point import CompiledPoint
from warden.policy.rules import bind
from warden.store.queries import aware
from warden.store.schema import review_tasks


class TaskStatus(StrEnum):
    OPEN = "open"
    DECIDED = "decided"
    EXPIRED = "expired"


class Verdict(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    OVERRIDE = "override"


class Vote(BaseModel):
    """One reviewer's verdict, with who they are, how they signed in and the time they took."""

    reviewer: str
    auth: str
    verdict: Verdict
    outcome: str | None = Field(description="What the vote would apply; null for a reject.")
    reason: str | None = None
    reason_code: str | None = None
    level: int = 0
    opened_at: datetime
    submitted_at: datetime
    seconds: float = Field(description="Time spent between claim and verdict.")


class ReviewTask(BaseModel):
    decision_id: str
    point: str
    status: TaskStatus
    level: int = Field(description="0, or 1 once escalated (disagreement or first SLA expiry).")
    groups: list[str] = Field(description="Reviewer groups that may act now; empty: any.")
    escalate_to: list[str] = Field(default_factory=list)
    required: int = Field(description="Agreeing votes needed at this level.")
    escalation_required: int | None = Field(
        default=None, description="Agreeing votes needed once escalated; null: `required`."
    )
    four_eyes: bool
    votes: list[Vote]
    excluded: list[str] = Field(description="Reviewers who may not act again on this task.")
    submitted_by: str | None
    on_expiry: str | None
    sla_seconds: float | None
    lease_seconds: float
    created_at: datetime
    due_at: datetime | None
    claimed_by: str | None
    claim_method: str | None
    claimed_at: datetime | None
    lease_until: datetime | None
    decided_at: datetime | None
    outcome: str | None
    version: int
    callback_url: str | None = Field(default=None, exclude=True)
    decision: Decision | None = None

    def claimed(self, now: datetime) -> bool:
        return (
            self.claimed_by is not None and self.lease_until is not None and self.lease_until > now
        )

    def holder(self, now: datetime) -> str | None:
        return self.claimed_by if self.claimed(now) else None

    def level_votes(self) -> list[Vote]:
        return [v for v in self.votes if v.level == self.level]

    def required_after_escalation(self) -> int:
        """The policy's `escalation_approvals` when set, else as many votes as now: escalation
        never quietly turns four eyes into two."""
        return self.escalation_required or self.required

    def escalate_to_groups(self) -> list[str]:
        """Escalation goes to `escalate_to` when configured, else stays with the same groups."""
        return list(self.escalate_to) or list(self.groups)


def check_callback_url(url: str) -> None:
    """Refuse, before anything is stored, a callback the egress policy would never send."""
    check_url(url, field="callback_url")


def new_task_row(
    compiled: CompiledPoint, decision: dict[str, Any], callback_url: str | None
) -> dict[str, Any]:
    """The task for a decision routed to review, written in the decision's transaction."""
    spec = compiled.spec.review
    four_eyes = _four_eyes(compiled, decision)
    created: datetime = decision["created_at"]
    required = max(spec.approvals, 2 if four_eyes else 1)
    return {
        "decision_id": decision["id"],
        "point": compiled.name,
        "status": TaskStatus.OPEN.value,
        "level": 0,
        "groups": list(spec.reviewers),
        "escalate_to": list(spec.escalate_to),
        "required": required,
        "escalation_required": spec.escalation_approvals or required,
        "four_eyes": four_eyes,
        "votes": [],
        "excluded": [],
        "submitted_by": decision["actor"],
        "on_expiry": spec.on_expiry,
        "sla_seconds": spec.sla,
        "lease_seconds": spec.lease,
        "callback_url": callback_url or spec.callback_url,
        "created_at": created,
        "due_at": created + timedelta(seconds=spec.sla) if spec.sla is not None else None,
        "claimed_by": None,
        "claim_method": None,
        "claimed_at": None,
        "lease_until": None,
        "decided_at": None,
        "outcome": None,
        "version": 1,
    }


# Columns a task's event implies already: its decision, point, time and submitter.
_FROM_EVENT = frozenset({"decision_id", "point", "created_at", "submitted_by"})


def task_payload(values: dict[str, Any]) -> dict[str, Any]:
    """Task columns as the ledger records them (times as ISO text, the callback URL — which may
    carry a secret — as its SHA-256), so the task row is derivable from its events
    (`warden.ledger.folds`)."""
    recorded = {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in values.items()
        if name not in _FROM_EVENT
    }
    url = recorded.get("callback_url")
    if isinstance(url, str):
        recorded["callback_url"] = hashlib.sha256(url.encode()).hexdigest()
    return recorded


def _four_eyes(compiled: CompiledPoint, decision: dict[str, Any]) -> bool:
    """Whether two reviewers must agree. A rule that cannot be evaluated errs on two."""
    if compiled.four_eyes is None:
        return False
    bound = bind(
        decision["input"], decision["proposed_outcome"], decision["confidence"], decision["context"]
    )
    try:
        return compiled.four_eyes.matches(bound)
    except Exception:
        return True


def _utc(value: datetime) -> datetime:
    stamp = aware(value)
    assert stamp is not None
    return stamp


def to_task(row: Any) -> ReviewTask:
    m = row._mapping if hasattr(row, "_mapping") else row
    return ReviewTask(
        decision_id=m["decision_id"],
        point=m["point"],
        status=TaskStatus(m["status"]),
        level=m["level"],
        groups=m["groups"],
        escalate_to=m["escalate_to"],
        required=m["required"],
        escalation_required=m.get("escalation_required"),
        four_eyes=m["four_eyes"],
        votes=[Vote.model_validate(v) for v in m["votes"]],
        excluded=m["excluded"],
        submitted_by=m["submitted_by"],
        on_expiry=m["on_expiry"],
        sla_seconds=m["sla_seconds"],
        lease_seconds=m["lease_seconds"],
        created_at=_utc(m["created_at"]),
        due_at=aware(m["due_at"]),
        claimed_by=m["claimed_by"],
        claim_method=m["claim_method"],
        claimed_at=aware(m["claimed_at"]),
        lease_until=aware(m["lease_until"]),
        decided_at=aware(m["decided_at"]),
        outcome=m["outcome"],
        version=m["version"],
        callback_url=m["callback_url"],
    )


def get_task_row(conn: sa.Connection, decision_id: str) -> Any:
    return conn.execute(
        sa.select(review_tasks).where(review_tasks.c.decision_id == decision_id)
    ).first()


@dataclass(frozen=True)
class TaskFilter:
    point: str | None = None
    status: TaskStatus | None = TaskStatus.OPEN
    points_allowed: frozenset[str] | None = None
    claimed_by: str | None = None
    unclaimed_at: datetime | None = None
    escalated: bool | None = None
    due_before: datetime | None = None


def list_tasks(
    conn: sa.Connection, flt: TaskFilter, *, cursor: str | None, limit: int
) -> tuple[list[ReviewTask], str | None]:
    """Oldest first (first in, first reviewed); `cursor` is the last id of the previous page."""
    t = review_tasks
    query = sa.select(t).order_by(t.c.decision_id).limit(limit + 1)
    if flt.status is not None:
        query = query.where(t.c.status == flt.status.value)
    if flt.point:
        query = query.where(t.c.point == flt.point)
    if flt.points_allowed is not None:
        query = query.where(t.c.point.in_(sorted(flt.points_allowed)))
    if flt.claimed_by is not None:
        query = query.where(t.c.claimed_by == flt.claimed_by)
    if flt.unclaimed_at is not None:
        query = query.where(sa.or_(t.c.lease_until.is_(None), t.c.lease_until <= flt.unclaimed_at))
    if flt.escalated is not None:
        query = query.where(t.c.level > 0 if flt.escalated else t.c.level == 0)
    if flt.due_before is not None:
        query = query.where(t.c.due_at <= flt.due_before)
    if cursor:
        query = query.where(t.c.decision_id > cursor)
    rows = conn.execute(query).all()
    page = [to_task(r) for r in rows[:limit]]
    next_cursor = page[-1].decision_id if len(rows) > limit and page else None
    return page, next_cursor


@dataclass(frozen=True)
class PointCounts:
    point: str
    open: int
    claimed: int
    escalated: int
    overdue: int
    next_due_at: datetime | None


def count_open(
    conn: sa.Connection, now: datetime, points_allowed: frozenset[str] | None
) -> list[PointCounts]:
    """Open tasks per point: how many, claimed, escalated, overdue and the nearest deadline."""
    t = review_tasks
    query = (
        sa.select(
            t.c.point,
            sa.func.count(),
            sa.func.sum(sa.case((t.c.lease_until > now, 1), else_=0)),
            sa.func.sum(sa.case((t.c.level > 0, 1), else_=0)),
            sa.func.sum(sa.case((t.c.due_at <= now, 1), else_=0)),
            sa.func.min(t.c.due_at),
        )
        .where(t.c.status == TaskStatus.OPEN.value)
        .group_by(t.c.point)
        .order_by(t.c.point)
    )
    if points_allowed is not None:
        query = query.where(t.c.point.in_(sorted(points_allowed)))
    return [
        PointCounts(p, int(n), int(c or 0), int(e or 0), int(o or 0), aware(d))
        for p, n, c, e, o, d in conn.execute(query).all()
    ]
