"""Windows: what a point did over a run of decisions, closed by count or by time.

A window collects the monitored column values of its decisions (for drift), the route mix,
model errors, reviewer overrides and ground truth that arrived while it was open, and turns
them into the metrics alert rules watch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from warden.decision import Route
from warden.models.base import (
    BREAKER_OPEN,
    INVALID_OUTPUT,
    MODEL_ERROR,
    MODEL_SATURATED,
    MODEL_TIMEOUT,
)
from warden.monitor.sources import decision_columns
from warden.policy.monitoring import WindowSpec

MODEL_FAILURES = frozenset(
    {MODEL_ERROR, MODEL_TIMEOUT, INVALID_OUTPUT, BREAKER_OPEN, MODEL_SATURATED}
)
CALIBRATION_BINS = 10


@dataclass(frozen=True, slots=True)
class Outcome:
    """Ground truth for one decision, with what the model had proposed."""

    model_version: str | None
    correct: bool
    confidence: float | None


@dataclass
class Window:
    opened_at: datetime
    first_seq: int | None = None
    last_seq: int = 0
    count: int = 0
    routes: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    confidence_sum: float = 0.0
    confidence_n: int = 0
    values: dict[str, list[Any]] = field(default_factory=dict)
    reviewed: int = 0
    overridden: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    policy_versions: Counter[str] = field(default_factory=Counter)
    model_versions: Counter[str] = field(default_factory=Counter)

    def seen(self, seq: int) -> None:
        if self.first_seq is None:
            self.first_seq = seq
        self.last_seq = max(self.last_seq, seq)

    def add_decision(self, seq: int, payload: Mapping[str, Any], columns: Collection[str]) -> None:
        self.seen(seq)
        self.count += 1
        route = payload.get("route")
        self.routes[str(route)] += 1
        reasons = payload.get("reasons") or ()
        if any(r.get("kind") == "failure" and r.get("code") in MODEL_FAILURES for r in reasons):
            self.errors += 1
        self.policy_versions[str(payload.get("policy_version"))] += 1
        self.model_versions[str(payload.get("model_version"))] += 1
        confidence = payload.get("confidence")
        if isinstance(confidence, int | float):
            self.confidence_sum += float(confidence)
            self.confidence_n += 1
        if any(r.get("code") == "invalid_input" for r in reasons):
            return  # refused input is not a sample of the population the model serves
        row = decision_columns(
            payload.get("input") or {}, payload.get("proposed_outcome"), confidence, columns
        )
        for name in columns:
            self.values.setdefault(name, []).append(row.get(name))

    def add_review(self, seq: int, overridden: bool) -> None:
        self.seen(seq)
        self.reviewed += 1
        self.overridden += overridden

    def add_outcome(self, seq: int, outcome: Outcome) -> None:
        self.seen(seq)
        self.outcomes.append(outcome)

    def due(self, now: datetime, spec: WindowSpec) -> bool:
        if spec.count is not None and self.count >= spec.count:
            return True
        return spec.every is not None and (now - self.opened_at).total_seconds() >= spec.every

    def metrics(self) -> dict[str, float | None]:
        """The window's rates; None where the window has nothing to measure them on."""
        n = self.count
        metrics: dict[str, float | None] = {"volume": float(n)}
        for route in Route:
            metrics[f"{route.value}_rate"] = self.routes[route.value] / n if n else None
        metrics["error_rate"] = self.errors / n if n else None
        metrics["override_rate"] = self.overridden / self.reviewed if self.reviewed else None
        metrics["confidence_mean"] = (
            self.confidence_sum / self.confidence_n if self.confidence_n else None
        )
        metrics["accuracy"] = accuracy(self.outcomes)
        metrics["calibration_error"] = calibration_error(self.outcomes)
        return metrics

    def by_model(self) -> dict[str, dict[str, float | int | None]]:
        """Realised accuracy and calibration per model version, from the ground truth received."""
        groups: dict[str, list[Outcome]] = {}
        for outcome in self.outcomes:
            groups.setdefault(str(outcome.model_version), []).append(outcome)
        return {
            version: {
                "outcomes": len(items),
                "accuracy": accuracy(items),
                "calibration_error": calibration_error(items),
            }
            for version, items in sorted(groups.items())
        }


def accuracy(outcomes: list[Outcome]) -> float | None:
    return sum(o.correct for o in outcomes) / len(outcomes) if outcomes else None


def calibration_error(outcomes: list[Outcome]) -> float | None:
    """Expected calibration error: how far stated confidence is from realised accuracy.

    Ten equal-width confidence bins, each weighted by its share of the outcomes.
    """
    scored = [o for o in outcomes if o.confidence is not None]
    if not scored:
        return None
    bins: dict[int, list[Outcome]] = {}
    for o in scored:
        assert o.confidence is not None
        bins.setdefault(min(int(o.confidence * CALIBRATION_BINS), CALIBRATION_BINS - 1), []).append(
            o
        )
    total = 0.0
    for items in bins.values():
        confidence = sum(o.confidence or 0.0 for o in items) / len(items)
        realised = sum(o.correct for o in items) / len(items)
        total += len(items) / len(scored) * abs(realised - confidence)
    return total
