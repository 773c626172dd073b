"""The background monitor: reads the ledger, closes windows, tests drift, runs alert rules.

It tails the `events` table rather than listening to the engine, so it sees every decision,
review and ground-truth outcome from every worker and replica, and resumes after a restart from
the last closed window. Exactly one process per database does this work, the holder of a lease;
the others only keep their engine's protections (`tighten`) in step with the database.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from warden.ids import new_id
from warden.ledger.lanes import lane_count, lane_of
from warden.monitor import actions, metrics, store
from warden.monitor.alerts import Change as AlertChange
from warden.monitor.alerts import RuleState, State, Transition, evaluate, resolve_by_person
from warden.monitor.reference import Profile, build_profile, column_kinds
from warden.monitor.sinks import Notice, Sink, sinks_for
from warden.monitor.sources import ReferenceError, file_fingerprint, first_decisions, load_file
from warden.monitor.store import utc
from warden.monitor.windows import Outcome, Window
from warden.policy.monitoring import MonitoringSpec
from warden.policy.point import CompiledPoint
from warden.store.queries import aware
from warden.store.schema import decisions, events

if TYPE_CHECKING:
    from warden.engine import Engine

log = logging.getLogger(__name__)
READ_BATCH = 2000
REMEMBERED_REVIEWS = 100_000
NOTIFY = {AlertChange.FIRING, AlertChange.NO_DATA}


def load_protections(engine: Engine) -> None:
    """Point -> why, for every point a firing `tighten` alert holds; the engine reads it per call."""
    try:
        with engine.db.connect() as conn:
            rows = store.protections(conn)
    except sa.exc.SQLAlchemyError:  # before `warden init` the table may not exist yet
        log.debug("cannot read protections", exc_info=True)
        return
    tightened: dict[str, str] = {}
    for row in rows:
        if row.point in engine.points:
            tightened.setdefault(
                row.point, f"{row.reason}; every decision goes to review until a person resolves it"
            )
    engine.tightened = tightened
    for point in engine.points:
        metrics.TIGHTENED.labels(point).set(1.0 if point in tightened else 0.0)


class PointMonitor:
    """One monitored point: its open window, reference profile, latest metrics and rule states."""

    def __init__(self, compiled: CompiledPoint, spec: MonitoringSpec, opened_at: datetime) -> None:
        self.compiled = compiled
        self.name = compiled.name
        self.spec = spec
        self.kinds = column_kinds(compiled.spec.input, spec)
        self.columns = list(self.kinds)
        self.window = Window(opened_at)
        self.skip_until = 0
        self.next_seq = 1
        self.profile: Profile | None = None
        self.profile_error: str | None = None
        self.reference_forming = spec.reference is not None and spec.reference.first_n is not None
        self.latest: dict[str, float | None] = {}
        self.latest_at: float | None = None
        self.rules = {rule.id: RuleState() for rule in spec.alerts}
        # rule -> window seq that must close before the rule is judged again: a person who
        # resolves an alert is not overruled by the very window they just looked at
        self.quiet: dict[str, int] = {}
        self.sinks: list[Sink] = sinks_for(spec.sinks)

    def rule(self, rule_id: str) -> Any:
        return next(r for r in self.spec.alerts if r.id == rule_id)


class Monitor:
    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], float] = time.time,
        interval: float = 1.0,
        lease_ttl: float = 15.0,
        holder: str | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.interval = interval
        self.lease_ttl = max(lease_ttl, 3 * interval)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"
        self.points: dict[str, PointMonitor] = {}
        self.cursor = 0  # with one lane; with several, each lane has its own in `cursors`
        self.cursors: dict[int, int] = {}
        self.lanes = 0  # the ledger's lanes, read when leading starts
        self.leading = False
        self.started_at = clock()
        self._reviews: deque[str] = deque()
        self._reviewed: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="warden-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.leading:
            store.release_lease(self.engine.db, self.holder)
        for point in self.points.values():
            for sink in point.sinks:
                sink.close()
        metrics.process_exited()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:
                log.exception("monitor cycle failed; retrying")
            self._stop.wait(self.interval)

    # -- one cycle ---------------------------------------------------------------------------

    def poll(self) -> None:
        """One cycle: lead or follow, read new events, close due windows, evaluate rules."""
        now = self.clock()
        cursor = min((p.skip_until for p in self.points.values()), default=self.cursor)
        if (
            store.acquire_lease(self.engine.db, self.holder, utc(now), self.lease_ttl, cursor)
            is None
        ):
            if self.leading:
                log.info("monitor lease lost to another process; following")
            self.leading = False
            for point in self.points.values():
                for sink in point.sinks:
                    sink.close()
            self.points = {}
            load_protections(self.engine)
            return
        if not self.leading:
            self._restore(now)
            self.leading = True
        self._read_events()
        for point in self.points.values():
            if point.window.due(utc(now), point.spec.window):
                self._close(point, now, self._cursor_of(point.name))
        self._reconcile()
        for point in self.points.values():
            self._evaluate(point, now)
        load_protections(self.engine)

    def _restore(self, now: float) -> None:
        """Become the leader: resume every point from its last closed window and open alerts."""
        self.points = {}
        with self.engine.db.connect() as conn:
            active = store.active_alerts(conn)
            for name, compiled in self.engine.points.items():
                spec = compiled.spec.monitoring
                if spec is None:
                    continue
                last = store.last_window(conn, name)
                opened = aware(last.closed_at) if last is not None else utc(now)
                assert opened is not None
                point = PointMonitor(compiled, spec, opened)
                if last is not None:
                    point.skip_until = int(last.last_event)
                    point.next_seq = int(last.seq) + 1
                    point.latest = dict(last.metrics)
                    point.latest_at = opened.timestamp()
                for rule_id in store.resolved_by_people_since(conn, name, opened):
                    point.quiet[rule_id] = point.next_seq
                for row in active:
                    if row.point == name and row.rule in point.rules:
                        state = point.rules[row.rule]
                        state.state = State(row.state)
                        state.alert_id = row.id
                        began = aware(row.fired_at or row.started_at)
                        state.since = began.timestamp() if began else now
                        state.value = row.value
                self.points[name] = point
        self.cursor = min((p.skip_until for p in self.points.values()), default=0)
        with self.engine.db.connect() as conn:
            self.lanes = lane_count(conn)
        self.cursors = {}
        if self.lanes > 1:  # a point's events are all in its lane, numbered within it
            for name, point in self.points.items():
                lane = lane_of(name, "", self.lanes)
                self.cursors[lane] = min(self.cursors.get(lane, point.skip_until), point.skip_until)
        self.started_at = now

    # -- reading the ledger ------------------------------------------------------------------

    def _read_events(self) -> None:
        if not self.points:
            return
        if self.lanes <= 1:
            self.cursor = self._read_lane(None, self.cursor)
            return
        for lane in sorted(self.cursors):
            self.cursors[lane] = self._read_lane(lane, self.cursors[lane])

    def _read_lane(self, lane: int | None, cursor: int) -> int:
        """Dispatch the events after `cursor` (of one lane, with several); the new cursor."""
        while True:
            with self.engine.db.connect() as conn:
                query = (
                    sa.select(events.c.seq, events.c.type, events.c.point, events.c.decision_id)
                    .add_columns(events.c.ts, events.c.body)
                    .where(events.c.seq > cursor)
                    .order_by(events.c.seq)
                    .limit(READ_BATCH)
                )
                if lane is not None:
                    query = query.where(events.c.lane == lane)
                rows = conn.execute(query).all()
                lookups = self._lookups(conn, rows)
            for row in rows:
                self._dispatch(row, lookups)
                cursor = int(row.seq)
            if len(rows) < READ_BATCH:
                return cursor

    def _cursor_of(self, name: str) -> int:
        """How far the ledger was read for a point: in its lane, with several."""
        if self.lanes <= 1:
            return self.cursor
        return self.cursors.get(lane_of(name, "", self.lanes), 0)

    def _lookups(self, conn: sa.Connection, rows: Iterable[Any]) -> dict[str, Any]:
        """Decision rows for ground truth and review events, fetched in one query per batch."""
        ids = {
            r.decision_id
            for r in rows
            if r.decision_id and r.type != "decision.created" and r.point in self.points
        }
        if not ids:
            return {}
        found = conn.execute(
            sa.select(
                decisions.c.id,
                decisions.c.route,
                decisions.c.status,
                decisions.c.outcome,
                decisions.c.proposed_outcome,
                decisions.c.confidence,
                decisions.c.model_version,
                decisions.c.ground_truth,
            ).where(decisions.c.id.in_(sorted(ids)))
        )
        return {r.id: r for r in found}

    def _dispatch(self, row: Any, lookups: dict[str, Any]) -> None:
        point = self.points.get(row.point) if row.point else None
        if point is None or row.seq <= point.skip_until:
            return
        window = point.window
        if row.type == "decision.created":
            payload = orjson.loads(row.body)["payload"]
            window.add_decision(row.seq, payload, point.columns)
            count = point.spec.window.count
            if count is not None and window.count >= count:
                closed_at = aware(row.ts)
                self._close(point, closed_at.timestamp() if closed_at else self.clock(), row.seq)
            return
        decision = lookups.get(row.decision_id) if row.decision_id else None
        if decision is None:
            return
        if row.type == "decision.outcome_received":
            if decision.ground_truth is not None and decision.proposed_outcome is not None:
                window.add_outcome(
                    row.seq,
                    Outcome(
                        decision.model_version,
                        decision.ground_truth == decision.proposed_outcome,
                        decision.confidence,
                    ),
                )
            return
        if decision.route == "review" and decision.status == "final":
            self._count_review(point, row, decision)

    def _count_review(self, point: PointMonitor, row: Any, decision: Any) -> None:
        """A reviewed decision counts once, at the first event after it became final. An SLA
        expiry applies the safe outcome without a person, so it is not an override."""
        if decision.id in self._reviewed:
            return
        self._reviewed.add(decision.id)
        self._reviews.append(decision.id)
        if len(self._reviews) > REMEMBERED_REVIEWS:
            self._reviewed.discard(self._reviews.popleft())
        if "expir" in row.type or decision.proposed_outcome is None:
            return
        overridden = decision.outcome != decision.proposed_outcome
        point.window.add_review(row.seq, overridden)
        if overridden:
            metrics.OVERRIDES.labels(point.name).inc()

    # -- windows -----------------------------------------------------------------------------

    def _close(self, point: PointMonitor, now: float, last_event: int) -> None:
        window = point.window
        values = window.metrics()
        drift: dict[str, Any] = {"columns": [], "share": None, "reference": None}
        tested = max((len(v) for v in window.values.values()), default=0)
        if point.spec.reference is not None and tested >= point.spec.window.min_count:
            profile = self._profile(point)
            if profile is not None:
                report = profile.compare(window.values)
                values["drift_share"] = report.share
                for column in report.columns:
                    values[f"drift.{column.column}"] = column.score
                drift = {
                    "columns": [c.to_json() for c in report.columns],
                    "share": report.share,
                    "reference": profile.fingerprint,
                }
        if point.profile_error:
            drift["error"] = point.profile_error
        closed_at = utc(now)
        row: dict[str, Any] = {
            "point": point.name,
            "seq": point.next_seq,
            "opened_at": window.opened_at,
            "closed_at": closed_at,
            "first_event": window.first_seq,
            "last_event": last_event,
            "decisions": window.count,
            "metrics": {k: _clean(v) for k, v in values.items()},
            "drift": drift,
            "details": {
                "routes": dict(window.routes),
                "errors": window.errors,
                "reviewed": window.reviewed,
                "overridden": window.overridden,
                "outcomes": len(window.outcomes),
                "by_model": window.by_model(),
                "policy_versions": dict(window.policy_versions),
                "model_versions": dict(window.model_versions),
            },
        }
        self.engine.recorder.record(store.window_closed(row))
        point.next_seq += 1
        point.skip_until = last_event
        point.latest = row["metrics"]
        point.latest_at = now
        point.window = Window(closed_at)
        _publish(point.name, row["metrics"], drift)
        metrics.WINDOW_CLOSED.labels(point.name).set(now)

    def _profile(self, point: PointMonitor) -> Profile | None:
        """The reference profile, built on first use; stored thresholds are reused."""
        if point.profile is not None:
            return point.profile
        spec = point.spec.reference
        assert spec is not None
        try:
            if spec.path is not None:
                path = point.compiled.base_dir / spec.path
                data = load_file(path, point.kinds)
                source = str(Path(spec.path))
                fingerprint = _fingerprint(file_fingerprint(path), point.spec)
            else:
                assert spec.first_n is not None
                with self.engine.db.connect() as conn:
                    found = first_decisions(conn, point.name, spec.first_n, point.columns)
                if found is None:
                    point.reference_forming = True
                    point.profile_error = (
                        f"waiting for the first {spec.first_n} decisions to form the reference"
                    )
                    return None
                data, digest = found
                source = f"first {spec.first_n} decisions"
                fingerprint = _fingerprint(digest, point.spec)
        except ReferenceError as exc:
            if point.profile_error != exc.message:
                log.error("reference for %s: %s", point.name, exc.message)
            point.profile_error = exc.message
            return None
        with self.engine.db.connect() as conn:
            plans = store.stored_plans(conn, point.name, fingerprint)
        profile = build_profile(data, point.kinds, point.spec, stored_plans=plans)
        profile.fingerprint = fingerprint
        if plans is None:
            self.engine.recorder.record(
                store.reference_built(
                    point.name, fingerprint, profile.to_json(), source, utc(self.clock())
                )
            )
        point.profile = profile
        point.profile_error = None
        point.reference_forming = False
        return profile

    # -- alerts ------------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Forget episodes a person resolved through the API or CLI since the last cycle."""
        with self.engine.db.connect() as conn:
            active = {row.id for row in store.active_alerts(conn)}
        for point in self.points.values():
            for rule_id, state in point.rules.items():
                if state.alert_id is not None and state.alert_id not in active:
                    state.state = State.INACTIVE
                    state.alert_id = None
                    point.quiet[rule_id] = point.next_seq

    def _evaluate(self, point: PointMonitor, now: float) -> None:
        stale = point.spec.stale_after
        if point.latest_at is None and now - self.started_at < stale:
            return  # a grace period after start: no window has closed yet
        fresh = point.latest_at is not None and now - point.latest_at <= stale
        for rule in point.spec.alerts:
            if point.reference_forming and rule.metric.startswith("drift"):
                continue  # the first N decisions are still becoming the reference
            if point.quiet.get(rule.id, 0) >= point.next_seq:
                continue  # resolved by a person; wait for a window they have not seen
            value = point.latest.get(rule.metric) if fresh else None
            for transition in evaluate(rule, point.rules[rule.id], value, now, new_id):
                self._apply(point, transition)
        _publish_alerts(point)

    def _apply(self, point: PointMonitor, transition: Transition) -> None:
        rule = transition.rule
        reason = actions.describe(point.name, rule, transition.value)
        written = self.engine.recorder.record(store.alert_changed(point.name, transition, reason))
        if not written:
            point.rules[rule.id].state = State.INACTIVE
            point.rules[rule.id].alert_id = None
            point.quiet[rule.id] = point.next_seq
            return
        notify = transition.change in NOTIFY or (
            transition.change is AlertChange.RESOLVED
            and transition.previous in (State.FIRING, State.NO_DATA)
        )
        if notify:
            notice = _notice(point.name, transition, reason)
            for sink in point.sinks:
                sink.send(notice)
        if transition.change is AlertChange.FIRING and rule.action == "kill":
            actions.kill(self.engine, point.name, rule, transition.value)


def resolve_alert(engine: Engine, alert_id: str, *, actor: str, reason: str) -> dict[str, Any]:
    """A person resolves an alert: closes the episode and lifts the `tighten` it holds."""
    from warden.errors import InvalidRequest, NotFound

    if not reason.strip():
        raise InvalidRequest("say why the alert is resolved; a reason is required", field="reason")
    with engine.db.connect() as conn:
        row = store.get_alert(conn, alert_id)
        held = [p for p in store.protections(conn) if p.alert_id == alert_id]
    if row is None:
        raise NotFound(f"no alert with id '{alert_id}'", field="id")
    compiled = engine.points.get(row.point)
    spec = compiled.spec.monitoring if compiled else None
    rule = next((r for r in spec.alerts if r.id == row.rule), None) if spec else None
    why = f"resolved by {actor}: {reason}"
    if row.state in store.ACTIVE_STATES and rule is not None:
        state = RuleState(State(row.state), alert_id=alert_id, value=row.value)
        transition = resolve_by_person(rule, state, time.time(), actor)
        assert transition is not None
        engine.recorder.record(store.alert_changed(row.point, transition, why))
    elif held:
        engine.recorder.record(store.protection_released(row.point, row.rule, alert_id, why, actor))
    load_protections(engine)
    with engine.db.connect() as conn:
        return store.alert_json(store.get_alert(conn, alert_id))


def _fingerprint(data_digest: str, spec: MonitoringSpec) -> str:
    """The stored plans hold while the data, the drift settings and the window size are the same."""
    import hashlib

    settings = orjson.dumps(
        {"drift": spec.drift.model_dump(mode="json"), "window": spec.window.count},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(data_digest.encode() + settings).hexdigest()


def _clean(value: float | None) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)


def _publish(point: str, values: dict[str, float | None], drift: dict[str, Any]) -> None:
    for name, value in values.items():
        if value is not None and not name.startswith("drift."):
            metrics.WINDOW_VALUE.labels(point, name).set(value)
    for column in drift.get("columns", []):
        if column["score"] is not None:
            metrics.DRIFT_SCORE.labels(point, column["column"]).set(column["score"])
    if drift.get("share") is not None:
        metrics.DRIFT_SHARE.labels(point).set(drift["share"])


def _publish_alerts(point: PointMonitor) -> None:
    counts = {
        (state, severity): 0.0
        for state in ("pending", "firing", "no_data")
        for severity in ("info", "warning", "critical")
    }
    for rule in point.spec.alerts:
        state = point.rules[rule.id].state
        if state is not State.INACTIVE:
            counts[(state.value, rule.severity)] += 1
    for (state_name, severity), count in counts.items():
        metrics.ALERTS_ACTIVE.labels(point.name, state_name, severity).set(count)


def _notice(point: str, transition: Transition, reason: str) -> Notice:
    rule = transition.rule
    return Notice(
        point=point,
        alert_id=transition.alert_id or "",
        rule=rule.id,
        change=transition.change.value,
        severity=rule.severity,
        metric=rule.metric,
        op=rule.op,
        threshold=rule.threshold,
        value=transition.value,
        action=rule.action,
        message=(rule.description + "\n" if rule.description else "") + reason,
        at=utc(transition.at).isoformat(),
    )
