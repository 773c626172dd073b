"""The per-tool report: for each upstream server and tool, over a time window, how its calls
were routed, why calls were denied, how often reviewers overrode them, and how long the tool
and the gateway took.

Read from the database, so it covers every gateway process sharing it (Prometheus counters
cover one process each): decisions whose input is a gateway proposal (it names `server`, `tool`
and `arguments_digest`), and the `tool_call.*` events of the window.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from warden.auth.tokens import Principal, Role
from warden.errors import InvalidRequest
from warden.mcp import ledger as tool_events
from warden.policy.durations import parse_duration
from warden.store.schema import decisions, events

ROUTES = ("auto", "review", "refused", "fallback")
READERS = (Role.CALLER, Role.REVIEWER, Role.OWNER, Role.AUDITOR)
MAX_ROWS = 200_000  # decisions or events read per report; beyond, the report says so


@dataclass
class ToolStats:
    server: str
    tool: str
    point: str | None
    routes: Counter[str] = field(default_factory=Counter)
    gateway_refusals: int = 0  # refused before a decision (kill switch, limit, ungoverned)
    denials: Counter[str] = field(default_factory=Counter)
    reviewed: int = 0  # held calls a person decided
    overridden: int = 0  # ... and rejected
    executed: int = 0
    failed: int = 0
    tool_ms: list[float] = field(default_factory=list)
    governance_ms: list[float] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        decided = sum(self.routes.values())
        return {
            "server": self.server,
            "tool": self.tool,
            "point": self.point,
            "calls": decided + self.gateway_refusals,
            "routes": {r: self.routes.get(r, 0) for r in ROUTES},
            "refused_by_gateway": self.gateway_refusals,
            "denials": dict(sorted(self.denials.items())),
            "reviewed": self.reviewed,
            "overridden": self.overridden,
            "override_rate": round(self.overridden / self.reviewed, 4) if self.reviewed else None,
            "executed": self.executed,
            "failed": self.failed,
            "latency_ms": {
                "tool": {
                    "p50": percentile(self.tool_ms, 0.5),
                    "p99": percentile(self.tool_ms, 0.99),
                },
                "governance": {
                    "p50": percentile(self.governance_ms, 0.5),
                    "p99": percentile(self.governance_ms, 0.99),
                },
            },
        }


DURATION = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h|d)$"  # a window, as the API declares it


def report_window(window: str | None, until: datetime | str | None) -> tuple[datetime, datetime]:
    """[since, until) from a duration (`1h`, `15m`, `7d`; default 1h) ending at `until` (ISO
    8601, default now). A bad value is an error naming the parameter and a good example; a
    window longer than the calendar reaches back to its start."""
    end = datetime.now(UTC)
    if isinstance(until, str) and until:
        try:
            end = datetime.fromisoformat(until)
        except ValueError:
            raise InvalidRequest(
                f"until: '{until}' is not an ISO 8601 time; e.g. 2026-12-06T15:00:00Z",
                field="until",
            ) from None
    elif isinstance(until, datetime):
        end = until
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    try:
        seconds = parse_duration(window or "1h")
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"window: {exc}", field="window") from None
    try:
        return end - timedelta(seconds=seconds), end
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC), end


def visible_to(who: Principal) -> Callable[[str | None], bool]:
    """The points whose tool calls `who` may read (any reading role); calls no point governs
    only for principals who see every point."""

    def visible(point: str | None) -> bool:
        if point is None:
            return who.all_points
        return any(who.can(role, point) for role in READERS)

    return visible


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank: the smallest value with at least `q` of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def tool_report(
    db: sa.Engine,
    since: datetime,
    until: datetime,
    *,
    visible: Callable[[str | None], bool] = lambda point: True,
) -> dict[str, Any]:
    """Rows per (server, tool), busiest first, for calls in [since, until); `visible` says which
    points' tools the reader may see (a call no point governs has point None)."""
    stats: dict[tuple[str, str], ToolStats] = {}
    truncated = False

    def row(server: str, tool: str, point: str | None) -> ToolStats:
        found = stats.get((server, tool))
        if found is None:
            found = stats[(server, tool)] = ToolStats(server, tool, point)
        elif found.point is None:
            found.point = point
        return found

    with db.connect() as conn:
        picked = conn.execute(
            sa.select(
                decisions.c.point,
                decisions.c.route,
                decisions.c.outcome,
                decisions.c.reasons,
                decisions.c.input,
            )
            .where(decisions.c.created_at >= since, decisions.c.created_at < until)
            .limit(MAX_ROWS + 1)
        ).all()
        recorded = conn.execute(
            sa.select(events.c.type, events.c.point, events.c.decision_id, events.c.body)
            .where(
                events.c.type.in_([tool_events.DENIED, tool_events.RESULT]),
                events.c.ts >= since,
                events.c.ts < until,
            )
            .limit(MAX_ROWS + 1)
        ).all()
    truncated = len(picked) > MAX_ROWS or len(recorded) > MAX_ROWS
    for d in picked[:MAX_ROWS]:
        data = d.input if isinstance(d.input, dict) else {}
        if not _is_tool_call(data) or not visible(d.point):
            continue
        entry = row(str(data["server"]), str(data["tool"]), d.point)
        entry.routes[d.route] += 1
        person = _last_person_verdict(d.reasons)
        if d.route == "review" and person is not None:
            entry.reviewed += 1
            entry.overridden += person == "reject"
    for e in recorded[:MAX_ROWS]:
        if not visible(e.point):
            continue
        payload = orjson.loads(e.body).get("payload", {})
        server, tool = payload.get("server"), payload.get("tool")
        if not isinstance(server, str) or not isinstance(tool, str):
            continue  # a result recorded before results named their tool
        entry = row(server, tool, e.point)
        if e.type == tool_events.DENIED:
            entry.denials[str(payload.get("code", "denied"))] += 1
            entry.gateway_refusals += e.decision_id is None  # answered before deciding
            continue
        entry.executed += 1
        entry.failed += payload.get("status") == "error"
        for name, into in (("tool_ms", entry.tool_ms), ("governance_ms", entry.governance_ms)):
            value = payload.get(name)
            if isinstance(value, int | float):
                into.append(float(value))
    rows = sorted(stats.values(), key=lambda s: (-s.as_json()["calls"], s.server, s.tool))
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "truncated": truncated,
        "data": [s.as_json() for s in rows],
    }


def _is_tool_call(data: dict[str, Any]) -> bool:
    return all(k in data for k in ("server", "tool", "arguments_digest"))


def _last_person_verdict(reasons: Iterable[Any] | None) -> str | None:
    last = list(reasons or [])[-1:] or [None]
    kind = last[0].get("kind") if isinstance(last[0], dict) else None
    return kind if kind in ("approve", "reject") else None
