"""Judging one rollout step from the evidence so far.

A check passes only when the evidence says so with the plan's confidence (the Wilson interval
of a rate lies inside its limit) and fails as soon as the evidence says it fails. Anything in
between is inconclusive, and too few decisions is *no data* — which is never a pass: at the
end of the interval both pause the rollout for a person instead of promoting it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import NormalDist

from warden.rollout.plan import Check, Metric, RolloutPlan


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    NO_DATA = "no_data"


@dataclass(frozen=True)
class Arm:
    """Counts for one model over the step's window."""

    decisions: int = 0
    errors: int = 0
    reviews: int = 0
    reviewed: int = 0  # reviews that have been decided by a person
    overrides: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StepEvidence:
    challenger: Arm
    champion: Arm
    compared: int = 0  # challenger decisions for which the champion's outcome is known too
    agreed: int = 0


@dataclass(frozen=True)
class CheckResult:
    check: Check
    verdict: Verdict
    value: float | None
    low: float | None = None
    high: float | None = None

    def describe(self) -> str:
        if self.value is None:
            return f"{self.check.metric}: no data"
        interval = "" if self.low is None else f" [{self.low:.3f}, {self.high:.3f}]"
        return f"{self.check.metric} = {self.value:.3f}{interval}: {self.verdict}"


def wilson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a proportion: honest at small n and near 0 or 1."""
    if trials == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def judge_check(check: Check, evidence: StepEvidence, plan: RolloutPlan) -> CheckResult:
    challenger, champion = evidence.challenger, evidence.champion
    if check.metric is Metric.OUTPUT_DRIFT:
        if challenger.decisions < plan.min_decisions or champion.decisions < plan.min_decisions:
            return CheckResult(check, Verdict.NO_DATA, None)
        value = psi(challenger.outcomes, champion.outcomes)
        verdict = Verdict.FAIL if value > (check.max or 0.0) else Verdict.PASS
        return CheckResult(check, verdict, value)
    hits, trials = _counts(check.metric, challenger, evidence)
    if trials < plan.min_decisions:
        return CheckResult(check, Verdict.NO_DATA, hits / trials if trials else None)
    low, high = wilson(hits, trials, plan.confidence)
    value = hits / trials
    if check.min is not None:  # agreement: higher is better
        verdict = _verdict(bad=high < check.min, good=low >= check.min)
    else:
        limit = check.max
        if check.max_increase is not None:
            base_hits, base_trials = _counts(check.metric, champion, evidence)
            if base_trials < plan.min_decisions:
                return CheckResult(check, Verdict.NO_DATA, value, low, high)
            limit = base_hits / base_trials + check.max_increase
        assert limit is not None
        verdict = _verdict(bad=low > limit, good=high <= limit)
    return CheckResult(check, verdict, value, low, high)


def judge_step(plan: RolloutPlan, evidence: StepEvidence) -> tuple[Verdict, list[CheckResult]]:
    """FAIL if any check fails; PASS if all pass; else NO_DATA or INCONCLUSIVE."""
    results = [judge_check(check, evidence, plan) for check in plan.checks]
    verdicts = {r.verdict for r in results}
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL, results
    if verdicts == {Verdict.PASS}:
        return Verdict.PASS, results
    if Verdict.NO_DATA in verdicts:
        return Verdict.NO_DATA, results
    return Verdict.INCONCLUSIVE, results


def psi(actual: dict[str, int], expected: dict[str, int], floor: float = 1e-4) -> float:
    """Population stability index of two categorical distributions."""
    total_a, total_e = sum(actual.values()), sum(expected.values())
    if total_a == 0 or total_e == 0:
        return 0.0
    value = 0.0
    for key in actual.keys() | expected.keys():
        a = max(actual.get(key, 0) / total_a, floor)
        e = max(expected.get(key, 0) / total_e, floor)
        value += (a - e) * math.log(a / e)
    return value


def _counts(metric: Metric, arm: Arm, evidence: StepEvidence) -> tuple[int, int]:
    if metric is Metric.ERROR_RATE:
        return arm.errors, arm.decisions
    if metric is Metric.REVIEW_RATE:
        return arm.reviews, arm.decisions
    if metric is Metric.OVERRIDE_RATE:
        return arm.overrides, arm.reviewed
    if metric is Metric.AGREEMENT:
        return evidence.agreed, evidence.compared
    raise ValueError(f"{metric} is not a rate")


def _verdict(*, bad: bool, good: bool) -> Verdict:
    if bad:
        return Verdict.FAIL
    return Verdict.PASS if good else Verdict.INCONCLUSIVE
