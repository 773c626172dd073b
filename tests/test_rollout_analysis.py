"""Sticky assignment and step analysis: no data never passes, clear failures roll back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy.stats import binomtest

from warden.rollout.analysis import Arm, StepEvidence, Verdict, judge_step, psi, wilson
from warden.rollout.assignment import in_canary
from warden.rollout.plan import Check, Metric, RolloutPlan

PLAN = RolloutPlan(
    steps=[5, 25, 100],
    min_decisions=200,
    checks=[Check(metric=Metric.ERROR_RATE, max=0.05), Check(metric=Metric.AGREEMENT, min=0.9)],
)


@settings(max_examples=200, deadline=None)
@given(key=st.text(max_size=40), low=st.floats(0, 100), high=st.floats(0, 100))
def test_a_key_in_a_smaller_share_stays_in_a_larger_one(key: str, low: float, high: float) -> None:
    small, large = sorted((low, high))
    if in_canary(key, small):
        assert in_canary(key, large)


def test_shares_are_close_to_the_percentage_and_zero_means_zero() -> None:
    keys = [f"customer-{i}" for i in range(20_000)]
    for percent in (5, 25, 50):
        share = sum(in_canary(k, percent) for k in keys) / len(keys)
        assert abs(share - percent / 100) < 0.01
    assert not any(in_canary(k, 0) for k in keys)
    assert all(in_canary(k, 100) for k in keys)


@settings(max_examples=100, deadline=None)
@given(trials=st.integers(1, 5000), data=st.data())
def test_wilson_agrees_with_scipy(trials: int, data: st.DataObject) -> None:
    hits = data.draw(st.integers(0, trials))
    low, high = wilson(hits, trials, 0.95)
    ref = binomtest(hits, trials).proportion_ci(0.95, method="wilson")
    assert low == pytest.approx(ref.low, abs=1e-9)
    assert high == pytest.approx(ref.high, abs=1e-9)


def _evidence(decisions: int, errors: int, agreed: int) -> StepEvidence:
    arm = Arm(decisions=decisions, errors=errors)
    return StepEvidence(
        challenger=arm, champion=Arm(decisions=decisions), compared=decisions, agreed=agreed
    )


def test_good_challenger_passes() -> None:
    verdict, _ = judge_step(PLAN, _evidence(2000, 20, 1950))
    assert verdict is Verdict.PASS


def test_clearly_bad_challenger_fails_early() -> None:
    verdict, results = judge_step(PLAN, _evidence(300, 60, 290))
    assert verdict is Verdict.FAIL
    assert results[0].verdict is Verdict.FAIL


def test_no_data_is_never_a_pass() -> None:
    verdict, results = judge_step(PLAN, _evidence(0, 0, 0))
    assert verdict is Verdict.NO_DATA
    assert all(r.verdict is Verdict.NO_DATA for r in results)
    assert judge_step(PLAN, _evidence(199, 0, 199))[0] is Verdict.NO_DATA


def test_borderline_is_inconclusive() -> None:
    verdict, _ = judge_step(PLAN, _evidence(250, 12, 240))  # 4.8 % errors, limit 5 %
    assert verdict is Verdict.INCONCLUSIVE


def test_review_rate_against_the_champion() -> None:
    plan = RolloutPlan(
        min_decisions=100, checks=[Check(metric=Metric.REVIEW_RATE, max_increase=0.05)]
    )
    champion = Arm(decisions=1000, reviews=100)
    worse = StepEvidence(challenger=Arm(decisions=1000, reviews=300), champion=champion)
    same = StepEvidence(challenger=Arm(decisions=1000, reviews=100), champion=champion)
    assert judge_step(plan, worse)[0] is Verdict.FAIL
    assert judge_step(plan, same)[0] is Verdict.PASS


def test_output_drift_by_psi() -> None:
    plan = RolloutPlan(min_decisions=50, checks=[Check(metric=Metric.OUTPUT_DRIFT, max=0.1)])
    champion = Arm(decisions=500, outcomes={"approve": 250, "decline": 250})
    shifted = Arm(decisions=500, outcomes={"approve": 450, "decline": 50})
    assert judge_step(plan, StepEvidence(shifted, champion))[0] is Verdict.FAIL
    assert judge_step(plan, StepEvidence(champion, champion))[0] is Verdict.PASS
    assert psi({"a": 1}, {"a": 1}) == 0.0


@pytest.mark.parametrize(
    "bad",
    [
        {"steps": [25, 5, 100]},
        {"steps": [5, 50]},
        {"checks": [{"metric": "error_rate"}]},
        {"checks": [{"metric": "agreement", "max_increase": 0.1}]},
        {"checks": [{"metric": "error_rate", "min": 0.1}]},
        {"sticky_key": "customer"},
    ],
)
def test_bad_plans_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RolloutPlan.model_validate(bad)
