"""A decision's history: its ledger events in order, with their payloads."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from warden.store.queries import aware
from warden.store.schema import events


def decision_events(conn: sa.Connection, decision_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(events.c.seq, events.c.type, events.c.actor, events.c.ts, events.c.body)
        .where(events.c.decision_id == decision_id)
        .order_by(events.c.seq)
    ).all()
    return [
        {
            "seq": r.seq,
            "type": r.type,
            "actor": r.actor,
            "ts": aware(r.ts),
            "payload": orjson.loads(r.body).get("payload", {}),
        }
        for r in rows
    ]
