"""The evidence for judging a rollout step, read from recorded decisions and shadow results."""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa

from warden.models.base import MODEL_FAILURES
from warden.rollout.analysis import Arm, StepEvidence
from warden.rollout.rollouts import Rollout
from warden.store.schema import decisions, shadow_results


def collect(db: sa.Engine, rollout: Rollout) -> StepEvidence:
    """Counts for champion and challenger since the current step began."""
    since = rollout.step_started_at
    versions = (rollout.champion, rollout.challenger)
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(
                decisions.c.id,
                decisions.c.model_version,
                decisions.c.route,
                decisions.c.status,
                decisions.c.outcome,
                decisions.c.proposed_outcome,
                decisions.c.reasons,
            ).where(
                decisions.c.point == rollout.point,
                decisions.c.created_at >= since,
                decisions.c.model_version.in_(versions),
            )
        ).all()
        shadows = conn.execute(
            sa.select(
                shadow_results.c.decision_id,
                shadow_results.c.model_version,
                shadow_results.c.outcome,
                shadow_results.c.failure,
            ).where(shadow_results.c.point == rollout.point, shadow_results.c.created_at >= since)
        ).all()
    arms = {v: _ArmCounter() for v in versions}
    challenger_outcomes: dict[str, str | None] = {}
    for row in rows:
        arms[row.model_version].add(row)
        if row.model_version == rollout.challenger:
            challenger_outcomes[row.id] = row.proposed_outcome
    compared = agreed = 0
    shadow_arm = _ArmCounter()
    for shadow in shadows:
        if shadow.model_version == rollout.champion and shadow.decision_id in challenger_outcomes:
            mine = challenger_outcomes[shadow.decision_id]
            if shadow.outcome is not None and mine is not None:
                compared += 1
                agreed += shadow.outcome == mine
        if shadow.model_version == rollout.challenger:  # shadow mode: challenger vs champion
            shadow_arm.add_shadow(shadow)
    challenger = arms[rollout.challenger]
    if shadow_arm.decisions:
        challenger = shadow_arm
        champion_outcome = {
            r.id: r.proposed_outcome for r in rows if r.model_version == rollout.champion
        }
        for shadow in shadows:
            if shadow.model_version == rollout.challenger and shadow.outcome is not None:
                theirs = champion_outcome.get(shadow.decision_id)
                if theirs is not None:
                    compared += 1
                    agreed += shadow.outcome == theirs
    return StepEvidence(
        challenger=challenger.freeze(),
        champion=arms[rollout.champion].freeze(),
        compared=compared,
        agreed=agreed,
    )


class _ArmCounter:
    def __init__(self) -> None:
        self.decisions = self.errors = self.reviews = self.reviewed = self.overrides = 0
        self.outcomes: Counter[str] = Counter()

    def add(self, row: Any) -> None:
        self.decisions += 1
        if any(r.get("code") in MODEL_FAILURES for r in row.reasons):
            self.errors += 1
        if row.proposed_outcome is not None:
            self.outcomes[row.proposed_outcome] += 1
        if row.route == "review":
            self.reviews += 1
            if row.status == "final" and row.proposed_outcome is not None:
                self.reviewed += 1
                self.overrides += row.outcome != row.proposed_outcome

    def add_shadow(self, row: Any) -> None:
        self.decisions += 1
        if row.failure is not None:
            self.errors += 1
        if row.outcome is not None:
            self.outcomes[row.outcome] += 1

    def freeze(self) -> Arm:
        return Arm(
            decisions=self.decisions,
            errors=self.errors,
            reviews=self.reviews,
            reviewed=self.reviewed,
            overrides=self.overrides,
            outcomes=dict(self.outcomes),
        )
