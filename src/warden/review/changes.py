"""A planned change to a review task: new column values, the events that record it, and the
final decision when the change settles it. Planning is pure; `ReviewDesk` commits plans."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from warden.decision import Decision
from warden.ledger.chain import EventDraft
from warden.review.tasks import ReviewTask

POLICY_ACTOR = "policy"
CLEAR_CLAIM: dict[str, Any] = {
    "claimed_by": None,
    "claim_method": None,
    "claimed_at": None,
    "lease_until": None,
}


@dataclass
class TaskChange:
    values: dict[str, Any]
    events: list[EventDraft]
    final: Decision | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def event(
    kind: str, task: ReviewTask, actor: str, now: datetime, payload: dict[str, Any]
) -> EventDraft:
    return EventDraft(
        type=kind,
        actor=actor,
        point=task.point,
        decision_id=task.decision_id,
        payload=payload,
        ts=now,
    )


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
