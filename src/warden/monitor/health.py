"""A decision point's health, from the database alone: the same answer from every replica."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from warden.monitor import store
from warden.store.queries import aware
from warden.store.schema import monitor_alerts

if TYPE_CHECKING:
    from warden.engine import Engine


def point_health(engine: Engine, point: str, *, windows: int = 48) -> dict[str, Any]:
    """Status, protections, the latest window, recent windows, open alerts and the reference.

    status: `critical` (killed, tightened or a critical alert firing), `warning` (another alert
    firing or without data), `no_data` (monitored but no window yet), `ok`, or `unmonitored`.
    """
    compiled = engine._point(point)
    spec = compiled.spec.monitoring
    with engine.db.connect() as conn:
        rows = store.windows(conn, point, limit=windows)
        active = list(
            conn.execute(
                sa.select(monitor_alerts)
                .where(
                    monitor_alerts.c.point == point,
                    monitor_alerts.c.state.in_(store.ACTIVE_STATES),
                )
                .order_by(monitor_alerts.c.id.desc())
            )
        )
        held = [p for p in store.protections(conn) if p.point == point]
        reference = store.latest_profile(conn, point)
    killed = engine._is_killed(point)
    firing = [a for a in active if a.state == "firing"]
    if killed or held or any(a.severity == "critical" for a in firing):
        status = "critical"
    elif firing or any(a.state == "no_data" for a in active):
        status = "warning"
    elif spec is None:
        status = "unmonitored"
    elif not rows:
        status = "no_data"
    else:
        status = "ok"
    latest = rows[-1] if rows else None
    return {
        "point": point,
        "owner": compiled.spec.owner,
        "policy_version": compiled.version,
        "model_version": compiled.spec.model.version,
        "monitored": spec is not None,
        "status": status,
        "killed": killed,
        "tightened": [
            {
                "rule": p.rule,
                "alert_id": p.alert_id,
                "reason": p.reason,
                "since": _iso(p.engaged_at),
            }
            for p in held
        ],
        "alerts": [store.alert_json(a) for a in active],
        "latest": window_json(latest) if latest is not None else None,
        "windows": [window_json(w) for w in rows],
        "accuracy_by_model": accuracy_by_model(rows),
        "reference": _reference_json(reference),
    }


def window_json(row: Any) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "opened_at": _iso(row.opened_at),
        "closed_at": _iso(row.closed_at),
        "decisions": row.decisions,
        "metrics": row.metrics,
        "drift": {
            "share": row.drift.get("share"),
            "columns": row.drift.get("columns", []),
            **({"error": row.drift["error"]} if "error" in row.drift else {}),
        },
        "routes": row.details.get("routes", {}),
    }


def accuracy_by_model(rows: list[Any]) -> dict[str, dict[str, float | int | None]]:
    """Realised accuracy per model version over the windows, weighted by outcomes received."""
    totals: dict[str, list[float]] = {}
    for row in rows:
        for version, item in row.details.get("by_model", {}).items():
            n = int(item.get("outcomes") or 0)
            if n and item.get("accuracy") is not None:
                entry = totals.setdefault(version, [0, 0.0, 0.0, 0])
                entry[0] += n
                entry[1] += item["accuracy"] * n
                if item.get("calibration_error") is not None:
                    entry[2] += item["calibration_error"] * n
                    entry[3] += n
    return {
        version: {
            "outcomes": int(n),
            "accuracy": correct / n,
            "calibration_error": ece / scored if scored else None,
        }
        for version, (n, correct, ece, scored) in sorted(totals.items())
    }


def _reference_json(profile: dict[str, Any] | None) -> dict[str, Any] | None:
    if profile is None:
        return None
    return {
        "fingerprint": profile.get("fingerprint"),
        "rows": profile.get("rows"),
        "plans": profile.get("plans", {}),
        "columns": profile.get("columns", {}),
        "notes": profile.get("notes", []),
    }


def _iso(value: Any) -> str | None:
    found = aware(value)
    return None if found is None else found.isoformat()
