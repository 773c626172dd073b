"""The ledger events of a tool call, beside the decision's own (`decision.created`, then
`review.*` for a held call):

- `tool_call.denied`    the call will not run (refused, rejected, expired, a binding mismatch, a
                        kill switch or a limit), and why;
- `tool_call.approved`  the gateway accepted the approval for this exact call (its binding);
- `tool_call.executed`  the call was handed to the tool — written with `approved`, in one
                        transaction, before the tool runs, and at most once per decision;
- `tool_call.result`    how it ended: success or error, the result's digest and size.

So an auditor can tell an approved call that never ran (no `executed`) from one that ran and
failed (`result` with `error`), and one whose gateway died mid-call (`executed`, no `result`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from warden.ledger.chain import EventDraft
from warden.store.recorder import Change, Recorder
from warden.store.schema import events, tool_executions

DENIED = "tool_call.denied"
APPROVED = "tool_call.approved"
EXECUTED = "tool_call.executed"
RESULT = "tool_call.result"


@dataclass(frozen=True, slots=True)
class Recorded:
    """A tool-call event as read back from the ledger."""

    type: str
    ts: datetime
    payload: dict[str, Any]


def denied_change(
    *,
    actor: str,
    point: str | None,
    decision_id: str | None,
    code: str,
    message: str,
    call: dict[str, Any],
) -> Change:
    payload = {"code": code, "message": message, **call}
    return Change(
        events=[
            EventDraft(DENIED, actor, payload, point=point, decision_id=decision_id, checked=True)
        ]
    )


def claim_change(
    *, actor: str, point: str, decision_id: str, binding: dict[str, Any], now: datetime
) -> Change:
    """`approved` + `executed` for one decision, with its `tool_executions` row: the row's
    primary key refuses a second claim (DuplicateKey) in the same transaction, so two gateways
    racing for one approval cannot both get it."""
    drafts = [
        EventDraft(APPROVED, actor, dict(binding), point=point, decision_id=decision_id, ts=now),
        EventDraft(
            EXECUTED,
            actor,
            {"server": binding["server"], "tool": binding["tool"]},
            point=point,
            decision_id=decision_id,
            ts=now,
            checked=True,
        ),
    ]
    row = {"decision_id": decision_id, "point": point, "actor": actor, "executed_at": now}
    return Change(events=drafts, rows=[(tool_executions, row)])


def result_change(
    *,
    actor: str,
    point: str,
    decision_id: str,
    ok: bool,
    digest: str,
    size: int,
    error: str | None,
    call: dict[str, Any] | None = None,
) -> Change:
    """`call`: the server and tool, and how long the call took in the tool and in the gateway
    before it (`tool_ms`, `governance_ms`), which the per-tool report reads."""
    payload: dict[str, Any] = {
        "status": "success" if ok else "error",
        "digest": digest,
        "size": size,
        **(call or {}),
    }
    if error is not None:
        payload["error"] = error[:500]
    return Change(
        events=[
            EventDraft(RESULT, actor, payload, point=point, decision_id=decision_id, checked=True)
        ]
    )


def history(db: sa.Engine, decision_id: str) -> list[Recorded]:
    """The tool-call events of a decision, oldest first."""
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.type, events.c.ts, events.c.body)
            .where(events.c.decision_id == decision_id, events.c.type.like("tool_call.%"))
            .order_by(events.c.seq)
        ).all()
    out = []
    for row in rows:
        body = orjson.loads(row.body)
        out.append(Recorded(row.type, row.ts, body.get("payload", {})))
    return out


def record(recorder: Recorder, change: Change) -> Any:
    return recorder.record(change)
