"""Drift statistics agree with SciPy; drift is found when it is there and not when it is not."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats
from scipy.spatial import distance

from warden.monitor import drift
from warden.monitor.reference import build_profile
from warden.policy.monitoring import MonitoringSpec

TOLERANCE = 1e-9
# SciPy warns computing a p-value for two single values; Warden returns the same NaN quietly
pytestmark = [
    pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:ks_2samp. Exact calculation unsuccessful:RuntimeWarning"),
]

samples = st.lists(
    st.one_of(
        st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
        st.integers(-5, 5).map(float),  # ties
    ),
    min_size=1,
    max_size=300,
)
counts = st.lists(st.integers(0, 1000), min_size=2, max_size=12)


def close(a: float, b: float) -> bool:
    if math.isnan(a) and math.isnan(b):  # SciPy's p-value when both samples have one value
        return True
    return math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=1e-12)


@settings(max_examples=300, deadline=None)
@given(samples, samples)
def test_ks_matches_scipy(ref: list[float], cur: list[float]) -> None:
    """SciPy's default method: exact p-values for samples of these sizes."""
    expected = stats.ks_2samp(ref, cur)
    d, p = drift.ks_2samp(np.sort(np.array(ref)), np.array(cur))
    assert close(d, expected.statistic) and close(p, expected.pvalue)


def test_ks_small_samples_have_the_exact_p_value() -> None:
    """n = m = 10 with D = 0.3: exact 0.787, where the asymptotic formula says 0.664."""
    ref, cur = np.arange(10.0), np.arange(10.0) + 2.5
    d, p = drift.ks_2samp(ref, cur)
    assert d == pytest.approx(0.3)
    assert p == pytest.approx(0.7869297884777761, rel=1e-12)
    assert p == pytest.approx(stats.ks_2samp(ref, cur).pvalue, rel=1e-12)
    assert stats.ks_2samp(ref, cur, method="asymp").pvalue == pytest.approx(0.66, abs=0.01)


@settings(max_examples=15, deadline=None)
@given(
    st.integers(9_000, 12_000),
    st.integers(1, 12_000),
    st.floats(0.0, 0.3),
    st.randoms(use_true_random=False),
)
def test_ks_matches_scipy_around_its_exact_limit(
    n1: int, n2: int, shift: float, random: Any
) -> None:
    """Either side of SciPy's 10,000-value switch from exact to asymptotic."""
    rng = np.random.default_rng(random.getrandbits(32))
    ref, cur = rng.normal(size=n1), rng.normal(shift, size=n2)
    expected = stats.ks_2samp(ref, cur)
    d, p = drift.ks_2samp(np.sort(ref), cur)
    assert close(d, expected.statistic) and close(p, expected.pvalue)


@settings(max_examples=300, deadline=None)
@given(samples, samples)
def test_wasserstein_matches_scipy(ref: list[float], cur: list[float]) -> None:
    expected = stats.wasserstein_distance(ref, cur)
    assert close(drift.wasserstein(np.sort(np.array(ref)), np.array(cur)), expected)


@settings(max_examples=300, deadline=None)
@given(counts, st.data())
def test_chi_square_matches_scipy(ref: list[int], data: st.DataObject) -> None:
    cur = data.draw(st.lists(st.integers(0, 1000), min_size=len(ref), max_size=len(ref)))
    statistic, p = drift.chi2_homogeneity(np.array(ref, float), np.array(cur, float))
    table = np.array([ref, cur])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or table[0].sum() == 0 or table[1].sum() == 0:
        assert (statistic, p) == (0.0, 1.0)
        return
    expected = stats.chi2_contingency(table, correction=False)
    assert close(statistic, expected.statistic) and close(p, expected.pvalue)


@settings(max_examples=300, deadline=None)
@given(counts, st.data())
def test_jensen_shannon_matches_scipy(ref: list[int], data: st.DataObject) -> None:
    cur = data.draw(st.lists(st.integers(0, 1000), min_size=len(ref), max_size=len(ref)))
    if sum(ref) == 0 or sum(cur) == 0:
        return
    expected = distance.jensenshannon(np.array(ref, float), np.array(cur, float))
    assert close(drift.jensenshannon(np.array(ref, float), np.array(cur, float)), expected)


@settings(max_examples=200, deadline=None)
@given(counts, st.data())
def test_psi_is_symmetric_kl_of_smoothed_shares(ref: list[int], data: st.DataObject) -> None:
    """SciPy has no PSI; it is KL(a||e) + KL(e||a) of the smoothed shares."""
    cur = data.draw(st.lists(st.integers(0, 1000), min_size=len(ref), max_size=len(ref)))
    if sum(ref) == 0 or sum(cur) == 0:
        return
    e = np.maximum(np.array(ref, float) / sum(ref), drift.PSI_EPSILON)
    a = np.maximum(np.array(cur, float) / sum(cur), drift.PSI_EPSILON)
    expected = np.sum(special.rel_entr(a, e)) + np.sum(special.rel_entr(e, a))
    assert close(drift.psi(np.array(ref, float), np.array(cur, float)), float(expected))


def test_corrections() -> None:
    pvalues = [0.001, 0.012, 0.02, 0.04, 0.9]
    assert drift.reject(pvalues, 0.05, "bonferroni") == [True, False, False, False, False]
    assert drift.reject(pvalues, 0.05, "holm") == [True, True, False, False, False]
    assert drift.reject(pvalues, 0.05, "fdr_bh") == [True, True, True, True, False]
    assert drift.reject(pvalues, 0.05, "none") == [True, True, True, True, False]
    assert drift.reject([], 0.05, "holm") == []


def _spec(**drift_settings: object) -> MonitoringSpec:
    return MonitoringSpec.model_validate(
        {"window": {"count": 500}, "drift": drift_settings, "reference": {"first_n": 100}}
    )


def _reference(rng: np.random.Generator, n: int) -> dict[str, list[object]]:
    data: dict[str, list[object]] = {f"x{i}": list(rng.normal(i, 1 + i / 10, n)) for i in range(8)}
    data["country"] = list(rng.choice(["DE", "FR", "IT", "ES"], n, p=[0.4, 0.3, 0.2, 0.1]))
    data["grade"] = list(rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]))
    return data


KINDS = {**{f"x{i}": "numeric" for i in range(8)}, "country": "categorical", "grade": "categorical"}


def test_no_false_alarms_on_resampled_reference_at_alpha() -> None:
    """Holm's correction: windows drawn from the reference's own distribution raise an alarm in
    any of the ten columns at most at alpha = 0.05."""
    rng = np.random.default_rng(42)
    profile = build_profile(_reference(rng, 20_000), KINDS, _spec(correction="holm"))
    trials = 200
    alarms = sum(
        any(c.drifted for c in profile.compare(_reference(rng, 500)).columns) for _ in range(trials)
    )
    assert alarms / trials <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)  # binomial 3-sigma


def test_learned_thresholds_rarely_flag_a_column_and_never_the_dataset() -> None:
    """mean + 3 sd of the reference's chunk scores: a skewed statistic puts a little more than
    the normal 0.13% above it, so the per-column rate is stated as at most 2.5%; the share rule
    (half the columns) keeps the dataset-level alarm at zero."""
    rng = np.random.default_rng(42)
    spec = _spec(threshold="learned", k=3)
    profile = build_profile(_reference(rng, 20_000), KINDS, spec)
    trials = 200
    flagged = 0
    dataset = 0
    for _ in range(trials):
        report = profile.compare(_reference(rng, 500))
        flagged += sum(c.drifted for c in report.columns)
        dataset += (report.share or 0) >= spec.drift.share
    assert flagged / (trials * len(KINDS)) <= 0.025
    assert dataset == 0


@pytest.mark.parametrize("settings_", [{}, {"threshold": "learned"}], ids=["fixed", "learned"])
def test_shift_is_detected_in_the_shifted_columns_only(settings_: dict[str, object]) -> None:
    rng = np.random.default_rng(7)
    profile = build_profile(_reference(rng, 20_000), KINDS, _spec(**settings_))
    window = _reference(rng, 500)
    window["x3"] = [float(v) + 0.5 * 1.3 for v in window["x3"]]  # half a standard deviation
    window["country"] = list(rng.choice(["DE", "FR", "IT", "ES"], 500, p=[0.1, 0.2, 0.3, 0.4]))
    report = profile.compare(window)
    drifted = {c.column for c in report.columns if c.drifted}
    assert drifted == {"x3", "country"}
    assert report.share == pytest.approx(2 / 10)


def test_auto_picks_distances_for_large_windows_and_stored_plans_skip_learning() -> None:
    rng = np.random.default_rng(3)
    reference = _reference(rng, 20_000)
    spec = MonitoringSpec.model_validate(
        {
            "window": {"count": 5000},
            "drift": {"threshold": "learned"},
            "reference": {"first_n": 100},
        }
    )
    profile = build_profile(reference, KINDS, spec)
    assert profile.plans["x0"].test == "wasserstein" and profile.plans["country"].test == (
        "jensenshannon"
    )
    stored = profile.to_json()["plans"]
    again = build_profile(reference, KINDS, spec, stored_plans=stored)
    assert again.plans_json() == profile.plans_json()
