"""Drift statistics between a reference sample and a window of recent values.

Each function returns the number SciPy returns for the same statistic (`ks_2samp` with its
default method, `wasserstein_distance`, `chi2_contingency(correction=False)`,
`distance.jensenshannon`), but takes the reference already sorted or binned: that work is done
once per reference, so a window costs O(m log n) for m current values instead of a sort of both.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import special, stats

Floats = NDArray[np.float64]
PSI_EPSILON = 1e-4  # empty bins: the smoothing Evidently and most PSI write-ups use
KS_EXACT_MAX_N = 10_000  # SciPy's `auto`: the exact p-value while both samples are this small


def ks_2samp(ref_sorted: Floats, current: Floats) -> tuple[float, float]:
    """Two-sided Kolmogorov-Smirnov statistic and p-value, by SciPy's default method: exact
    while neither sample has more than 10,000 values, asymptotic above (and where the exact
    computation fails, as SciPy falls back).

    The largest gap between the two empirical CDFs is found at a current value or just before
    one (between current values the current CDF is flat and the reference CDF only rises), so
    only the m current values are looked up in the sorted reference.
    """
    n1, n2 = ref_sorted.size, current.size
    d, i, j = _ks_gap(ref_sorted, current)
    if max(n1, n2) <= KS_EXACT_MAX_N:
        return d, _ks_pvalue(n1, n2, i, j)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    with np.errstate(divide="ignore", invalid="ignore"):  # one value each: SciPy's NaN too
        p = float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))
    return d, p


def ks_statistic(ref_sorted: Floats, current: Floats) -> float:
    """The KS statistic D alone, for callers that need no p-value (learned thresholds)."""
    return _ks_gap(ref_sorted, current)[0]


def _ks_gap(ref_sorted: Floats, current: Floats) -> tuple[float, int, int]:
    """D, and the counts of reference and current values at or before the point where it is."""
    n1, n2 = ref_sorted.size, current.size
    if n1 == 0 or n2 == 0:
        raise ValueError("ks_2samp needs values in both samples")
    cur = np.sort(current)
    below = np.concatenate(  # reference values at or before each candidate point
        [np.searchsorted(ref_sorted, cur, side="right"), np.searchsorted(ref_sorted, cur)]
    )
    seen = np.concatenate(  # current values at or before it
        [np.searchsorted(cur, cur, side="right"), np.searchsorted(cur, cur)]
    )
    gaps = np.abs(below / n1 - seen / n2)
    at = int(np.argmax(gaps))
    return float(gaps[at]), int(below[at]), int(seen[at])


def _ks_pvalue(n1: int, n2: int, i: int, j: int) -> float:
    """SciPy's own p-value for a largest ECDF gap of |i/n1 - j/n2|.

    The p-value depends only on the sizes and the gap, so it is SciPy's `ks_2samp` of two
    two-valued samples with that very gap (i of n1 and j of n2 values at 0, the rest at 1):
    public API, SciPy's exact algorithms and fallbacks, no sort of the real reference.
    """
    first = np.ones(n1)
    first[:i] = 0.0
    second = np.ones(n2)
    second[:j] = 0.0
    with warnings.catch_warnings():  # SciPy warns when it falls back to asymptotic
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ks_2samp(first, second).pvalue)


def wasserstein(ref_sorted: Floats, current: Floats) -> float:
    """First Wasserstein distance: the area between the two empirical CDFs.

    The pooled sorted sample is built by merging (no sort of the reference); between
    consecutive pooled values each CDF is the share of its sample seen so far.
    """
    n1, n2 = ref_sorted.size, current.size
    if n1 == 0 or n2 == 0:
        raise ValueError("wasserstein needs values in both samples")
    cur = np.sort(current)
    total = n1 + n2
    at = np.searchsorted(ref_sorted, cur, side="right") + np.arange(n2)
    is_cur = np.zeros(total, dtype=bool)
    is_cur[at] = True
    pooled = np.empty(total)
    pooled[at] = cur
    pooled[~is_cur] = ref_sorted
    deltas = np.diff(pooled)
    seen_cur = np.cumsum(is_cur[:-1], dtype=np.int64)
    # |seen_ref/n1 - seen_cur/n2| = |(k+1)*n2 - seen_cur*total| / (n1*n2), exact in integers
    gap = np.abs(np.arange(1, total, dtype=np.int64) * n2 - seen_cur * total)
    return float(np.sum(gap * deltas) / (n1 * n2))


def chi2_homogeneity(ref_counts: Floats, cur_counts: Floats) -> tuple[float, float]:
    """Pearson chi-square test that both samples come from one categorical distribution.

    The 2xk contingency table without Yates' correction; categories empty in both are dropped.
    """
    keep = (ref_counts + cur_counts) > 0
    table = np.vstack([ref_counts[keep], cur_counts[keep]]).astype(np.float64)
    k = table.shape[1]
    if k < 2 or table[0].sum() == 0 or table[1].sum() == 0:
        return 0.0, 1.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, k - 1))


def jensenshannon(p: Floats, q: Floats) -> float:
    """Jensen-Shannon distance (natural log, as SciPy's default) between two count vectors."""
    p = p / np.sum(p)
    q = q / np.sum(q)
    m = (p + q) / 2.0
    js = np.sum(special.rel_entr(p, m)) + np.sum(special.rel_entr(q, m))
    return float(np.sqrt(max(js, 0.0) / 2.0))


def psi(ref_counts: Floats, cur_counts: Floats, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index sum (a - e)*ln(a / e) over shares, empty shares set to epsilon."""
    expected = np.maximum(ref_counts / np.sum(ref_counts), epsilon)
    actual = np.maximum(cur_counts / np.sum(cur_counts), epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def quantile_edges(ref_sorted: Floats, bins: int) -> Floats:
    """Interior bin edges at the reference's quantiles; values beyond them fall in the end bins."""
    if ref_sorted.size == 0:
        return np.empty(0)
    inner = np.quantile(ref_sorted, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return np.unique(inner)


def bin_counts(values: Floats, edges: Floats) -> Floats:
    return np.bincount(
        np.searchsorted(edges, values, side="right"), minlength=edges.size + 1
    ).astype(np.float64)


def reject(pvalues: Sequence[float], alpha: float, method: str) -> list[bool]:
    """Which null hypotheses to reject when testing many columns at once.

    holm and bonferroni bound the chance of any false alarm per window by alpha; fdr_bh
    (Benjamini-Hochberg) bounds the expected share of false alarms among the alarms.
    """
    m = len(pvalues)
    if m == 0:
        return []
    if method == "none":
        return [p < alpha for p in pvalues]
    if method == "bonferroni":
        return [p < alpha / m for p in pvalues]
    order = sorted(range(m), key=lambda i: pvalues[i])
    rejected = [False] * m
    if method == "holm":
        for rank, index in enumerate(order):
            if pvalues[index] >= alpha / (m - rank):
                break
            rejected[index] = True
        return rejected
    if method == "fdr_bh":
        last = -1
        for rank, index in enumerate(order):
            if pvalues[index] <= (rank + 1) / m * alpha:
                last = rank
        for index in order[: last + 1]:
            rejected[index] = True
        return rejected
    raise ValueError(f"unknown correction '{method}'; use holm, bonferroni, fdr_bh or none")
