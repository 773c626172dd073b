"""Rollout state: start, step, pause, resume, promote, roll back, abort — every change an event.

State lives in the `rollouts` table, so a rollout survives restarts, and every transition is a
conditional update (`WHERE state = … AND step = …`): when several replicas judge the same step,
exactly one transition wins and is recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from warden.errors import Conflict, InvalidRequest, NotFound
from warden.ids import new_id
from warden.ledger.chain import EventDraft
from warden.policy.point import CompiledPoint
from warden.rollout.plan import RolloutPlan
from warden.rollout.registry import Registry
from warden.store.queries import aware
from warden.store.recorder import Change, GuardState, Recorder
from warden.store.schema import model_aliases, rollouts


class State(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


class Mode(StrEnum):
    CANARY = "canary"  # the challenger decides for a sticky share of traffic
    SHADOW = "shadow"  # the challenger only answers a copy of live traffic, never applied


ACTIVE = (State.RUNNING, State.PAUSED)


@dataclass(frozen=True)
class Rollout:
    id: str
    point: str
    mode: Mode
    champion: str
    challenger: str
    plan: RolloutPlan
    state: State
    step: int
    step_started_at: datetime
    started_by: str
    started_at: datetime
    updated_at: datetime
    reason: str

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def percent(self) -> float:
        """Share of traffic the challenger decides: 0 unless an active canary."""
        if self.mode is not Mode.CANARY or not self.active:
            return 0.0
        return self.plan.steps[self.step]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "point": self.point,
            "mode": self.mode.value,
            "champion": self.champion,
            "challenger": self.challenger,
            "state": self.state.value,
            "step": self.step,
            "percent": self.percent,
            "step_started_at": self.step_started_at.isoformat(),
            "started_by": self.started_by,
            "started_at": self.started_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "reason": self.reason,
            "plan": self.plan.model_dump(mode="json"),
        }


def _row_to_rollout(row: Any) -> Rollout:
    return Rollout(
        id=row.id,
        point=row.point,
        mode=Mode(row.mode),
        champion=row.champion,
        challenger=row.challenger,
        plan=RolloutPlan.model_validate(row.plan),
        state=State(row.state),
        step=row.step,
        step_started_at=aware(row.step_started_at) or row.step_started_at,
        started_by=row.started_by,
        started_at=aware(row.started_at) or row.started_at,
        updated_at=aware(row.updated_at) or row.updated_at,
        reason=row.reason,
    )


class Rollouts:
    def __init__(
        self,
        db: sa.Engine,
        recorder: Recorder,
        registry: Registry,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.recorder = recorder
        self.registry = registry
        self.clock = clock

    def active(self, point: str | None = None) -> list[Rollout]:
        query = sa.select(rollouts).where(rollouts.c.state.in_([s.value for s in ACTIVE]))
        if point is not None:
            query = query.where(rollouts.c.point == point)
        with self.db.connect() as conn:
            return [_row_to_rollout(r) for r in conn.execute(query.order_by(rollouts.c.id))]

    def latest(self, point: str) -> Rollout:
        with self.db.connect() as conn:
            row = conn.execute(
                sa.select(rollouts)
                .where(rollouts.c.point == point)
                .order_by(rollouts.c.id.desc())
                .limit(1)
            ).first()
        if row is None:
            raise NotFound(
                f"no rollout for '{point}'; start one with `warden rollout start`", field="point"
            )
        return _row_to_rollout(row)

    def start(
        self,
        point: CompiledPoint,
        *,
        challenger: str,
        mode: Mode,
        plan: RolloutPlan,
        actor: str,
        reason: str = "",
    ) -> Rollout:
        """Begin a rollout of a registered version against the current champion."""
        self.registry.get(point.name, challenger)
        if self.active(point.name):
            raise Conflict(
                f"'{point.name}' already has an active rollout; finish or abort it first",
                field="point",
            )
        champion = self.registry.aliases(point.name).get("champion") or point.spec.model.version
        if champion is None:
            raise InvalidRequest(f"'{point.name}' has no champion version", field="point")
        if champion == challenger:
            raise InvalidRequest(f"'{challenger}' is already the champion", field="challenger")
        now = self.clock()
        row = {
            "id": new_id(),
            "point": point.name,
            "mode": mode.value,
            "champion": champion,
            "challenger": challenger,
            "plan": plan.model_dump(mode="json"),
            "state": State.RUNNING.value,
            "step": 0,
            "step_started_at": now,
            "started_by": actor,
            "started_at": now,
            "updated_at": now,
            "reason": reason or "started",
        }

        def apply(conn: sa.Connection) -> None:
            busy = conn.execute(
                sa.select(rollouts.c.id).where(
                    rollouts.c.point == point.name, rollouts.c.state.in_([s.value for s in ACTIVE])
                )
            ).first()
            if busy is not None:
                raise Conflict(f"'{point.name}' already has an active rollout", field="point")
            conn.execute(rollouts.insert().values(**row))

        draft = EventDraft(
            type="rollout.started",
            actor=actor,
            point=point.name,
            ts=now,
            payload={
                "rollout": row["id"],
                "mode": mode.value,
                "champion": champion,
                "challenger": challenger,
                "plan": row["plan"],
                "percent": self._percent(mode, plan, 0),
                "reason": row["reason"],
            },
        )
        self.recorder.record(Change(events=[draft], apply=apply))
        self.registry.set_alias(
            point.name, "challenger", challenger, actor=actor, reason=f"rollout {row['id']} started"
        )
        return self.latest(point.name)

    @staticmethod
    def _percent(mode: Mode, plan: RolloutPlan, step: int) -> float:
        return plan.steps[step] if mode is Mode.CANARY else 0.0

    def transition(
        self,
        rollout: Rollout,
        *,
        state: State,
        step: int | None = None,
        actor: str,
        reason: str,
        event: str,
    ) -> Rollout | None:
        """Move a rollout on, if nobody else moved it first. None when another replica did."""
        now = self.clock()
        new_step = rollout.step if step is None else step
        values: dict[str, Any] = {
            "state": state.value,
            "step": new_step,
            "updated_at": now,
            "reason": reason,
        }
        if new_step != rollout.step or (
            state is State.RUNNING and rollout.state is not State.RUNNING
        ):
            values["step_started_at"] = now

        def apply(conn: sa.Connection) -> None:
            moved = conn.execute(
                rollouts.update()
                .where(
                    rollouts.c.id == rollout.id,
                    rollouts.c.state == rollout.state.value,
                    rollouts.c.step == rollout.step,
                )
                .values(**values)
            )
            if moved.rowcount != 1:
                raise _Lost
            if state is State.PROMOTED:
                promoted = f"rollout {rollout.id} promoted"  # as its alias event says
                _move_alias(
                    conn, rollout.point, "champion", rollout.challenger, actor, now, promoted
                )
            if state not in ACTIVE:
                conn.execute(
                    model_aliases.delete().where(
                        model_aliases.c.point == rollout.point,
                        model_aliases.c.alias == "challenger",
                    )
                )

        payload: dict[str, Any] = {
            "rollout": rollout.id,
            "from": rollout.state.value,
            "to": state.value,
            "step": new_step,
            "reason": reason,
            "percent": self._percent(rollout.mode, rollout.plan, new_step)
            if state in ACTIVE
            else 0.0,
        }
        drafts = [EventDraft(type=event, actor=actor, point=rollout.point, ts=now, payload=payload)]
        if state is State.PROMOTED:
            drafts.append(
                EventDraft(
                    type="model.alias_moved",
                    actor=actor,
                    point=rollout.point,
                    ts=now,
                    payload={
                        "alias": "champion",
                        "from": rollout.champion,
                        "to": rollout.challenger,
                        "reason": f"rollout {rollout.id} promoted",
                        "rollout": rollout.id,
                    },
                )
            )
        if state not in ACTIVE:
            drafts.append(
                EventDraft(
                    type="model.alias_moved",
                    actor=actor,
                    point=rollout.point,
                    ts=now,
                    payload={
                        "alias": "challenger",
                        "from": rollout.challenger,
                        "to": None,
                        "reason": f"rollout {rollout.id} {state}",
                    },
                )
            )

        def guard(state_now: GuardState) -> GuardState:
            return state_now if state in ACTIVE else state_now.without_rollout(rollout.id)

        try:
            self.recorder.record(Change(events=drafts, apply=apply, guard_update=guard))
        except _Lost:
            return None
        return self.latest(rollout.point)

    # -- commands a person gives -----------------------------------------------------------

    def pause(self, point: str, *, actor: str, reason: str) -> Rollout:
        rollout = self._running(point, State.RUNNING)
        return self._done(
            self.transition(
                rollout, state=State.PAUSED, actor=actor, reason=reason, event="rollout.paused"
            )
        )

    def resume(self, point: str, *, actor: str, reason: str) -> Rollout:
        rollout = self._running(point, State.PAUSED)
        return self._done(
            self.transition(
                rollout, state=State.RUNNING, actor=actor, reason=reason, event="rollout.resumed"
            )
        )

    def promote(self, point: str, *, actor: str, reason: str) -> Rollout:
        """One step on (a person's override of the analysis), or promotion at the last step."""
        rollout = self._running(point, *ACTIVE)
        return self._done(self.advance(rollout, actor=actor, reason=reason))

    def abort(self, point: str, *, actor: str, reason: str) -> Rollout:
        rollout = self._running(point, *ACTIVE)
        return self._done(
            self.transition(
                rollout, state=State.ABORTED, actor=actor, reason=reason, event="rollout.aborted"
            )
        )

    def advance(self, rollout: Rollout, *, actor: str, reason: str) -> Rollout | None:
        last = rollout.mode is Mode.SHADOW or rollout.step + 1 >= len(rollout.plan.steps)
        if last:
            return self.transition(
                rollout, state=State.PROMOTED, actor=actor, reason=reason, event="rollout.promoted"
            )
        return self.transition(
            rollout,
            state=State.RUNNING,
            step=rollout.step + 1,
            actor=actor,
            reason=reason,
            event="rollout.step",
        )

    def _running(self, point: str, *states: State) -> Rollout:
        found = self.active(point)
        if not found:
            raise NotFound(f"'{point}' has no active rollout", field="point")
        rollout = found[0]
        if rollout.state not in states:
            raise Conflict(
                f"the rollout of '{point}' is {rollout.state}; this needs {' or '.join(states)}",
                field="point",
            )
        return rollout

    @staticmethod
    def _done(rollout: Rollout | None) -> Rollout:
        if rollout is None:
            raise Conflict(
                "the rollout changed meanwhile (another replica moved it); "
                "check `warden rollout status` and retry",
                field="point",
            )
        return rollout


class _Lost(Exception):
    """Another replica moved the rollout first."""


def _move_alias(
    conn: sa.Connection,
    point: str,
    alias: str,
    version: str,
    actor: str,
    now: datetime,
    reason: str,
) -> None:
    conn.execute(
        model_aliases.delete().where(model_aliases.c.point == point, model_aliases.c.alias == alias)
    )
    conn.execute(
        model_aliases.insert().values(
            point=point, alias=alias, version=version, moved_by=actor, moved_at=now, reason=reason
        )
    )
