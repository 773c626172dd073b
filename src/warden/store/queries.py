"""Reads of state rows, shared by the engine, the API and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from pydantic import BaseModel

from warden.decision import Decision, Reason, Route, Status
from warden.heap import collector_paused
from warden.store.schema import decisions, kill_switches, policies


def aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything Warden stores is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def as_utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive time is read as UTC.

    SQLite keeps timestamps as UTC text and compares text: a bound time with another offset
    must be converted first, or the same instant would select different rows than on
    PostgreSQL.
    """
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def to_decision(row: Any) -> Decision:
    """A Decision from a stored row. The row was validated on the way in, so skip validation."""
    m = row._mapping if hasattr(row, "_mapping") else row
    return trusted(
        Decision,
        {  # every field, in declared order
            "id": m["id"],
            "point": m["point"],
            "route": Route(m["route"]),
            "status": Status(m["status"]),
            "outcome": m["outcome"],
            "proposed_outcome": m["proposed_outcome"],
            "confidence": m["confidence"],
            "reasons": [_reason(r) for r in m["reasons"]],
            "policy_version": m["policy_version"],
            "model_version": m["model_version"],
            "input": m["input"],
            "context": m["context"],
            "idempotency_key": m["idempotency_key"],
            "actor": m["actor"],
            "created_at": _utc(m["created_at"]),
            "decided_at": aware(m["decided_at"]),
            "ground_truth": m["ground_truth"],
            "ground_truth_at": aware(m["ground_truth_at"]),
        },
    )


def _reason(stored: dict[str, Any]) -> Reason:
    return trusted(
        Reason,
        {
            "code": stored["code"],
            "kind": stored["kind"],
            "message": stored.get("message", ""),
            "when": stored.get("when"),
            "field": stored.get("field"),
        },
    )


M = TypeVar("M", bound=BaseModel)


def trusted(model: type[M], values: dict[str, Any]) -> M:
    """`model.model_construct(**values)` for `values` that name every field of `model` in its
    declared order: the same object, without model_construct's walk over each field's aliases
    and defaults (`to_decision` in 5 µs instead of 12; it runs once per decision)."""
    made = model.__new__(model)
    object.__setattr__(made, "__dict__", values)
    object.__setattr__(made, "__pydantic_fields_set__", set(values))
    object.__setattr__(made, "__pydantic_extra__", None)
    object.__setattr__(made, "__pydantic_private__", None)
    return made


def get_decision(conn: sa.Connection, decision_id: str) -> Decision | None:
    row = conn.execute(sa.select(decisions).where(decisions.c.id == decision_id)).first()
    return to_decision(row) if row else None


def find_by_idempotency_key(conn: sa.Connection, point: str, key: str) -> Any:
    return conn.execute(
        sa.select(decisions).where(decisions.c.point == point, decisions.c.idempotency_key == key)
    ).first()


@dataclass(frozen=True)
class DecisionFilter:
    point: str | None = None
    route: Route | None = None
    status: Status | None = None
    since: datetime | None = None
    until: datetime | None = None
    points_allowed: frozenset[str] | None = None


def list_decisions(
    conn: sa.Connection, flt: DecisionFilter, *, cursor: str | None, limit: int
) -> tuple[list[Decision], str | None]:
    """Newest first. `cursor` is the last id of the previous page; ids sort by creation time."""
    query = sa.select(decisions).order_by(decisions.c.id.desc()).limit(limit + 1)
    if flt.point:
        query = query.where(decisions.c.point == flt.point)
    if flt.points_allowed is not None:
        query = query.where(decisions.c.point.in_(sorted(flt.points_allowed)))
    if flt.route:
        query = query.where(decisions.c.route == flt.route.value)
    if flt.status:
        query = query.where(decisions.c.status == flt.status.value)
    if flt.since:
        query = query.where(decisions.c.created_at >= as_utc(flt.since))
    if flt.until:
        query = query.where(decisions.c.created_at < as_utc(flt.until))
    if cursor:
        query = query.where(decisions.c.id < cursor)
    rows = conn.execute(query).all()
    page = [to_decision(r) for r in rows[:limit]]
    next_cursor = page[-1].id if len(rows) > limit and page else None
    return page, next_cursor


@dataclass(frozen=True)
class KillSwitch:
    scope: str
    engaged: bool
    actor: str
    reason: str
    changed_at: datetime | None


def kill_switch_rows(conn: sa.Connection) -> list[KillSwitch]:
    rows = conn.execute(sa.select(kill_switches).order_by(kill_switches.c.scope)).all()
    return [KillSwitch(r.scope, r.engaged, r.actor, r.reason, aware(r.changed_at)) for r in rows]


def recent_decisions(conn: sa.Connection, point: str, last: int) -> list[Decision]:
    """The `last` most recent decisions of a point, oldest first (for replay)."""
    rows = conn.execute(
        sa.select(decisions)
        .where(decisions.c.point == point)
        .order_by(decisions.c.id.desc())
        .limit(last)
    ).all()
    return [to_decision(r) for r in reversed(rows)]


def stored_policy(conn: sa.Connection, point: str | None, version_prefix: str) -> Any:
    """A stored policy version by (a prefix of) its hash; None when no single one matches."""
    from warden.store.schema import policies

    query = sa.select(policies).where(policies.c.version.startswith(version_prefix))
    if point is not None:
        query = query.where(policies.c.point == point)
    rows = conn.execute(query.limit(2)).all()
    return rows[0] if len(rows) == 1 else None


@dataclass(frozen=True, slots=True)
class RecordedReason:
    code: str
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class RecordedDecision:
    """The parts of a recorded decision that replay needs, without building a full Decision."""

    id: str
    route: str
    policy_version: str
    input: dict[str, Any]
    context: dict[str, Any]
    proposed_outcome: str | None
    confidence: float | None
    reasons: list[RecordedReason]


def replay_rows(conn: sa.Connection, point: str, last: int) -> list[RecordedDecision]:
    """The `last` most recent decisions of a point, oldest first, read lean for replay.

    A plain DBAPI cursor, JSON decoded here, and the cyclic garbage collector paused while the
    rows become objects: through SQLAlchemy's typed results, and with the collector walking
    the growing list again and again, reading cost more than re-routing.
    """
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    cursor = conn.connection.cursor()
    try:
        cursor.execute(
            "SELECT id, route, policy_version, input, context, proposed_outcome, confidence, "
            f"reasons FROM decisions WHERE point = {mark} ORDER BY id DESC LIMIT {mark}",
            (point, last),
        )
        rows = cursor.fetchall()
    finally:
        cursor.close()
    with collector_paused():  # only acyclic objects are made here
        return [
            RecordedDecision(
                r[0],
                r[1],
                r[2],
                _json(r[3]),
                _json(r[4]),
                r[5],
                r[6],
                [RecordedReason(x["code"], x["kind"], x.get("message", "")) for x in _json(r[7])],
            )
            for r in reversed(rows)
        ]


def input_schemas(conn: sa.Connection, point: str) -> dict[str, Any]:
    """Each stored policy version of a point, with its input schema."""
    rows = conn.execute(
        sa.select(policies.c.version, policies.c.content).where(policies.c.point == point)
    ).all()
    return {version: content.get("input") for version, content in rows}


def _json(value: Any) -> Any:
    """JSON columns come back as text from SQLite and already decoded from PostgreSQL."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value
