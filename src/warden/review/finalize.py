"""Making a pending decision final: the decision row, and its callback, in one transaction."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from warden.decision import Decision, Reason, Status
from warden.errors import Conflict
from warden.review.notify import delivery_row
from warden.store.schema import decisions, webhook_deliveries


def final_decision(
    decision: Decision, outcome: str | None, reason: Reason, now: datetime
) -> Decision:
    """The decision as it reads once final: the outcome applied and why, appended to reasons."""
    return decision.model_copy(
        update={
            "status": Status.FINAL,
            "outcome": outcome,
            "decided_at": now,
            "reasons": [*decision.reasons, reason],
        }
    )


def settle(conn: sa.Connection, final: Decision, callback_url: str | None) -> None:
    """Write `final` over the pending row; enqueue its callback. Runs inside the writer."""
    result = conn.execute(
        decisions.update()
        .where(decisions.c.id == final.id, decisions.c.status == Status.PENDING.value)
        .values(
            status=Status.FINAL.value,
            outcome=final.outcome,
            decided_at=final.decided_at,
            reasons=[r.model_dump(exclude_none=True) for r in final.reasons],
        )
    )
    if result.rowcount != 1:
        raise Conflict(f"decision '{final.id}' is already final", field="id")
    if callback_url:
        assert final.decided_at is not None
        conn.execute(
            webhook_deliveries.insert().values(delivery_row(final, callback_url, final.decided_at))
        )
