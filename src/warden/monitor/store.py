"""Monitoring state in the database: profiles, windows, alert episodes, protections, the lease.

Every change that matters to an auditor — a reference built, a window closed, an alert changing
state, a protection engaged or released — is a recorder `Change`, so its ledger event commits in
the same transaction. The lease is bookkeeping between replicas and writes no event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from warden.ledger.chain import EventDraft
from warden.monitor.alerts import Change as AlertChange
from warden.monitor.alerts import State, Transition
from warden.store.database import write_connection
from warden.store.queries import aware
from warden.store.recorder import Change
from warden.store.schema import (
    monitor_alerts,
    monitor_leases,
    monitor_protections,
    monitor_references,
    monitor_windows,
)

ACTOR = "monitor"
LEASE = "monitor"
ACTIVE_STATES = (State.PENDING.value, State.FIRING.value, State.NO_DATA.value)


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# -- references ------------------------------------------------------------------------------


def stored_plans(conn: sa.Connection, point: str, fingerprint: str) -> dict[str, Any] | None:
    row = conn.execute(
        sa.select(monitor_references.c.profile).where(
            monitor_references.c.point == point, monitor_references.c.fingerprint == fingerprint
        )
    ).first()
    return None if row is None else dict(row.profile.get("plans", {}))


def latest_profile(conn: sa.Connection, point: str) -> dict[str, Any] | None:
    row = conn.execute(
        sa.select(monitor_references.c.profile, monitor_references.c.fingerprint)
        .where(monitor_references.c.point == point)
        .order_by(monitor_references.c.built_at.desc())
        .limit(1)
    ).first()
    return None if row is None else {**row.profile, "fingerprint": row.fingerprint}


def reference_built(
    point: str, fingerprint: str, profile: dict[str, Any], source: str, now: datetime
) -> Change:
    row = {
        "point": point,
        "fingerprint": fingerprint,
        "rows": profile["rows"],
        "profile": profile,
        "built_at": now,
    }

    def apply(conn: sa.Connection) -> None:
        exists = conn.execute(
            sa.select(monitor_references.c.point).where(
                monitor_references.c.point == point,
                monitor_references.c.fingerprint == fingerprint,
            )
        ).first()
        if exists is None:
            conn.execute(monitor_references.insert().values(**row))

    draft = EventDraft(
        type="monitor.reference_built",
        actor=ACTOR,
        point=point,
        payload={
            "fingerprint": fingerprint,
            "source": source,
            "rows": profile["rows"],
            "plans": profile["plans"],
        },
        ts=now,
    )
    return Change(events=[draft], apply=apply)


# -- windows ---------------------------------------------------------------------------------


def last_window(conn: sa.Connection, point: str) -> Any:
    return conn.execute(
        sa.select(monitor_windows)
        .where(monitor_windows.c.point == point)
        .order_by(monitor_windows.c.seq.desc())
        .limit(1)
    ).first()


def window_closed(row: dict[str, Any]) -> Change:
    draft = EventDraft(
        type="monitor.window_closed",
        actor=ACTOR,
        point=row["point"],
        payload={
            "window": row["seq"],
            "opened_at": row["opened_at"].isoformat(),
            "decisions": row["decisions"],
            "metrics": row["metrics"],
            "drifted": [c["column"] for c in row["drift"].get("columns", []) if c["drifted"]],
        },
        ts=row["closed_at"],
    )

    def apply(conn: sa.Connection) -> None:
        conn.execute(monitor_windows.insert().values(**row))

    return Change(events=[draft], apply=apply)


def windows(
    conn: sa.Connection, point: str, *, since: datetime | None = None, limit: int = 200
) -> list[Any]:
    """The newest `limit` windows of a point, oldest first."""
    query = sa.select(monitor_windows).where(monitor_windows.c.point == point)
    if since is not None:
        query = query.where(monitor_windows.c.closed_at >= since)
    rows = conn.execute(query.order_by(monitor_windows.c.seq.desc()).limit(limit)).all()
    return list(reversed(rows))


# -- alerts ----------------------------------------------------------------------------------


def active_alerts(conn: sa.Connection) -> list[Any]:
    return list(
        conn.execute(sa.select(monitor_alerts).where(monitor_alerts.c.state.in_(ACTIVE_STATES)))
    )


@dataclass(frozen=True)
class AlertFilter:
    point: str | None = None
    state: str | None = None
    points_allowed: frozenset[str] | None = None


def list_alerts(
    conn: sa.Connection, flt: AlertFilter, *, cursor: str | None = None, limit: int = 50
) -> tuple[list[Any], str | None]:
    """Newest first; `cursor` is the last id of the previous page (ids sort by time)."""
    query = sa.select(monitor_alerts).order_by(monitor_alerts.c.id.desc()).limit(limit + 1)
    if flt.point:
        query = query.where(monitor_alerts.c.point == flt.point)
    if flt.state == "active":
        query = query.where(monitor_alerts.c.state.in_(ACTIVE_STATES))
    elif flt.state:
        query = query.where(monitor_alerts.c.state == flt.state)
    if flt.points_allowed is not None:
        query = query.where(monitor_alerts.c.point.in_(sorted(flt.points_allowed)))
    if cursor:
        query = query.where(monitor_alerts.c.id < cursor)
    rows = list(conn.execute(query))
    page = rows[:limit]
    return page, page[-1].id if len(rows) > limit and page else None


def resolved_by_people_since(conn: sa.Connection, point: str, since: datetime) -> set[str]:
    """Rules whose alert a person resolved after `since` (the last window's close)."""
    rows = conn.execute(
        sa.select(monitor_alerts.c.rule).where(
            monitor_alerts.c.point == point,
            monitor_alerts.c.resolved_by != ACTOR,
            monitor_alerts.c.resolved_at >= since,
        )
    )
    return {row.rule for row in rows}


def get_alert(conn: sa.Connection, alert_id: str) -> Any:
    return conn.execute(sa.select(monitor_alerts).where(monitor_alerts.c.id == alert_id)).first()


def alert_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "point": row.point,
        "rule": row.rule,
        "state": row.state,
        "severity": row.severity,
        "metric": row.metric,
        "op": row.op,
        "threshold": row.threshold,
        "value": row.value,
        "action": row.action,
        "started_at": _iso(row.started_at),
        "fired_at": _iso(row.fired_at),
        "resolved_at": _iso(row.resolved_at),
        "resolved_by": row.resolved_by,
    }


def _iso(value: datetime | None) -> str | None:
    value = aware(value)
    return None if value is None else value.isoformat()


def alert_changed(point: str, transition: Transition, reason: str) -> Change:
    """The episode row and its `alert.<change>` event; a firing `tighten` also engages its
    protection and a person's resolve releases it, in the same transaction.
    """
    rule = transition.rule
    now = utc(transition.at)
    alert_id = transition.alert_id
    assert alert_id is not None
    change = transition.change
    events = [
        EventDraft(
            type=f"alert.{change.value}",
            actor=transition.by,
            point=point,
            payload={
                "alert_id": alert_id,
                "rule": rule.id,
                "metric": rule.metric,
                "op": rule.op,
                "threshold": rule.threshold,
                "value": transition.value,
                "severity": rule.severity,
                "action": rule.action,
                "previous": transition.previous.value,
            },
            ts=now,
        )
    ]
    tighten = rule.action == "tighten" and change is AlertChange.FIRING
    release = change is AlertChange.RESOLVED and transition.by != ACTOR
    if tighten:
        events.append(
            _protection_event("protection.engaged", point, rule.id, alert_id, reason, now, ACTOR)
        )
    if release:
        events.append(
            _protection_event(
                "protection.released", point, rule.id, alert_id, reason, now, transition.by
            )
        )

    def apply(conn: sa.Connection) -> bool:
        updated = _write_alert(conn, point, transition, now)
        if tighten and updated:
            conn.execute(
                monitor_protections.delete().where(
                    monitor_protections.c.point == point, monitor_protections.c.rule == rule.id
                )
            )
            conn.execute(
                monitor_protections.insert().values(
                    point=point, rule=rule.id, alert_id=alert_id, reason=reason, engaged_at=now
                )
            )
        if release:
            conn.execute(
                monitor_protections.delete().where(monitor_protections.c.alert_id == alert_id)
            )
        return updated

    return Change(events=events, apply=apply)


def _write_alert(conn: sa.Connection, point: str, transition: Transition, now: datetime) -> bool:
    """Insert or advance the episode row; False when a person already closed the episode."""
    rule = transition.rule
    change = transition.change
    values: dict[str, Any] = {"value": transition.value, "updated_at": now}
    if change is AlertChange.RESOLVED:
        values.update(state="resolved", resolved_at=now, resolved_by=transition.by)
    elif change is AlertChange.FIRING:
        values.update(state="firing", fired_at=now)
    else:
        values.update(state=change.value)
    updated = conn.execute(
        monitor_alerts.update()
        .where(
            monitor_alerts.c.id == transition.alert_id,
            monitor_alerts.c.state.in_(ACTIVE_STATES),
        )
        .values(**values)
    ).rowcount
    if updated:
        return True
    if change is AlertChange.RESOLVED:
        return False
    exists = conn.execute(
        sa.select(monitor_alerts.c.id).where(monitor_alerts.c.id == transition.alert_id)
    ).first()
    if exists is not None:
        return False
    conn.execute(
        monitor_alerts.insert().values(
            id=transition.alert_id,
            point=point,
            rule=rule.id,
            severity=rule.severity,
            metric=rule.metric,
            op=rule.op,
            threshold=rule.threshold,
            action=rule.action,
            started_at=now,
            **values,
        )
    )
    return True


def protection_released(point: str, rule: str, alert_id: str, reason: str, actor: str) -> Change:
    """A person lifts a `tighten` whose alert already resolved by itself."""
    now = datetime.now(UTC)

    def apply(conn: sa.Connection) -> int:
        return int(
            conn.execute(
                monitor_protections.delete().where(monitor_protections.c.alert_id == alert_id)
            ).rowcount
        )

    event = _protection_event("protection.released", point, rule, alert_id, reason, now, actor)
    return Change(events=[event], apply=apply)


def _protection_event(
    kind: str, point: str, rule: str, alert_id: str, reason: str, now: datetime, actor: str
) -> EventDraft:
    return EventDraft(
        type=kind,
        actor=actor,
        point=point,
        payload={"action": "tighten", "rule": rule, "alert_id": alert_id, "reason": reason},
        ts=now,
    )


def protections(conn: sa.Connection) -> list[Any]:
    return list(conn.execute(sa.select(monitor_protections).order_by(monitor_protections.c.point)))


# -- the lease -------------------------------------------------------------------------------


def acquire_lease(db: sa.Engine, holder: str, now: datetime, ttl: float, cursor: int) -> int | None:
    """Take or renew the single monitor lease; the stored restart cursor when held, else None.

    One process per database tails the ledger and evaluates alerts, so `warden serve --workers N`
    and several replicas never double-count a window or fire an alert twice.
    """
    expires = now + timedelta(seconds=ttl)
    with db.connect() as conn:  # a plain read first: no write lock while all is well
        held = conn.execute(sa.select(monitor_leases).where(monitor_leases.c.name == LEASE)).first()
    if held is not None:
        until = aware(held.expires_at) or now
        if held.holder != holder and until > now:
            return None
        if held.holder == holder and (until - now).total_seconds() > ttl / 2:
            return cursor
    try:
        with write_connection(db) as conn, conn.begin():
            row = conn.execute(
                sa.select(monitor_leases).where(monitor_leases.c.name == LEASE).with_for_update()
            ).first()
            if row is None:
                conn.execute(
                    monitor_leases.insert().values(
                        name=LEASE, holder=holder, expires_at=expires, cursor=cursor
                    )
                )
                return cursor
            expired = (aware(row.expires_at) or now) <= now
            if row.holder != holder and not expired:
                return None
            stored = int(row.cursor) if row.holder != holder else cursor
            conn.execute(
                monitor_leases.update()
                .where(monitor_leases.c.name == LEASE)
                .values(holder=holder, expires_at=expires, cursor=stored)
            )
            return stored
    except sa.exc.IntegrityError:
        return None


def release_lease(db: sa.Engine, holder: str) -> None:
    with write_connection(db) as conn, conn.begin():
        conn.execute(
            monitor_leases.update()
            .where(monitor_leases.c.name == LEASE, monitor_leases.c.holder == holder)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
