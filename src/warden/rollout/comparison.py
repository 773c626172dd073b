"""Challenger against champion on the same inputs: agreement, route changes, confidence, cost.

Shadow results hold what the other model answered for a recorded decision. Re-routing that
answer under the decision's own policy shows how routes would have changed had it decided.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from warden.policy.point import CompiledPoint
from warden.policy.router import Failure, route
from warden.rollout.rollouts import Rollout
from warden.store.queries import to_decision
from warden.store.schema import decisions, shadow_results


@dataclass
class Comparison:
    compared: int = 0
    agreed: int = 0
    challenger_errors: int = 0
    route_changes: Counter[tuple[str, str]] = field(default_factory=Counter)
    confidence_shift: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "agreement": self.agreed / self.compared if self.compared else None,
            "challenger_error_rate": (
                self.challenger_errors / self.compared if self.compared else None
            ),
            "route_changes": [
                {"from": a, "to": b, "count": n} for (a, b), n in self.route_changes.most_common()
            ],
            "confidence_shift": self.confidence_shift,
            "shadow_latency_ms": {"p50": self.latency_ms_p50, "p99": self.latency_ms_p99},
        }


def compare(
    db: sa.Engine, point: CompiledPoint, rollout: Rollout, limit: int = 20_000
) -> Comparison:
    """Pairs of (recorded decision, the other model's shadow answer) since the rollout began."""
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(
                decisions,
                shadow_results.c.model_version.label("shadow_version"),
                shadow_results.c.outcome.label("shadow_outcome"),
                shadow_results.c.confidence.label("shadow_confidence"),
                shadow_results.c.failure.label("shadow_failure"),
                shadow_results.c.latency_ms,
            )
            .join(shadow_results, shadow_results.c.decision_id == decisions.c.id)
            .where(
                decisions.c.point == rollout.point,
                decisions.c.created_at >= rollout.started_at,
                shadow_results.c.model_version.in_([rollout.champion, rollout.challenger]),
            )
            .order_by(decisions.c.id.desc())
            .limit(limit)
        ).all()
    result = Comparison()
    shifts: list[float] = []
    latencies: list[float] = []
    for row in rows:
        decision = to_decision(row)
        challenger_is_shadow = row.shadow_version == rollout.challenger
        latencies.append(row.latency_ms)
        result.compared += 1
        mine_failed = (
            row.shadow_failure is not None
            if challenger_is_shadow
            else any(r.kind == "failure" for r in decision.reasons)
        )
        result.challenger_errors += mine_failed
        if challenger_is_shadow:  # how this decision would have been routed by the challenger
            alternative = route(
                point,
                decision_id=decision.id,
                input=decision.input,
                context=decision.context,
                outcome=row.shadow_outcome,
                confidence=row.shadow_confidence,
                failure=Failure(row.shadow_failure, "") if row.shadow_failure else None,
            )
            result.route_changes[(decision.route.value, alternative.route.value)] += 1
        if row.shadow_outcome is None or decision.proposed_outcome is None:
            continue
        result.agreed += row.shadow_outcome == decision.proposed_outcome
        challenger_conf = row.shadow_confidence if challenger_is_shadow else decision.confidence
        champion_conf = decision.confidence if challenger_is_shadow else row.shadow_confidence
        if challenger_conf is not None and champion_conf is not None:
            shifts.append(challenger_conf - champion_conf)
    if shifts:
        result.confidence_shift = float(np.mean(shifts))
    if latencies:
        result.latency_ms_p50 = float(np.percentile(latencies, 50))
        result.latency_ms_p99 = float(np.percentile(latencies, 99))
    return result
