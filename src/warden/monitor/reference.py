"""A reference profile: what each monitored column looked like when the point was known to be good.

Sorting, binning and learning thresholds happen once per reference; the learned thresholds (the
expensive part) are stored with the profile's fingerprint so restarts and replicas reuse them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from warden.monitor import drift
from warden.monitor.drift import Floats
from warden.policy.monitoring import (
    CONFIDENCE_COLUMN,
    OUTPUT_COLUMN,
    DriftSpec,
    DriftTest,
    MonitoringSpec,
)

MISSING = "(missing)"
MAX_CHUNKS = 50
MIN_CHUNKS = 5
# Below this effective sample size a p-value test is informative; above it, every tiny shift is
# "significant", so `auto` switches to a distance (Evidently's rule, on the effective size).
AUTO_PVALUE_MAX_N = 1000
FIXED_THRESHOLDS = {
    DriftTest.WASSERSTEIN: 0.1,  # in reference standard deviations
    DriftTest.JENSENSHANNON: 0.1,
    DriftTest.PSI: 0.2,
}
PVALUE_TESTS = frozenset({DriftTest.KS, DriftTest.CHISQUARE})

ColumnData = Mapping[str, Sequence[Any]]


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift in one window."""

    column: str
    kind: str
    test: str
    score: float
    pvalue: float | None
    threshold: float
    drifted: bool
    n: int
    by_pvalue: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "kind": self.kind,
            "test": self.test,
            "score": _finite(self.score),
            "pvalue": None if self.pvalue is None else _finite(self.pvalue),
            "threshold": _finite(self.threshold),
            "drifted": self.drifted,
            "n": self.n,
            "by_pvalue": self.by_pvalue,
        }


@dataclass(frozen=True)
class DriftReport:
    columns: list[ColumnDrift]

    @property
    def share(self) -> float | None:
        if not self.columns:
            return None
        return sum(c.drifted for c in self.columns) / len(self.columns)


def column_kinds(
    input_schema: Mapping[str, Any], spec: MonitoringSpec, *, with_model: bool = True
) -> dict[str, str]:
    """numeric or categorical for each monitored column, from the JSON Schema and overrides."""
    properties = input_schema.get("properties")
    kinds: dict[str, str] = {}
    if isinstance(properties, Mapping):
        for name, prop in properties.items():
            kind = _schema_kind(prop)
            if kind is not None:
                kinds[name] = kind
    if with_model:
        kinds[OUTPUT_COLUMN] = "categorical"
        kinds[CONFIDENCE_COLUMN] = "numeric"
    for name, override in spec.drift.tests.items():
        if override.kind is not None:
            kinds[name] = override.kind
    if spec.drift.columns is not None:
        kinds = {name: kinds.get(name, "categorical") for name in spec.drift.columns}
    return kinds


def _schema_kind(prop: Any) -> str | None:
    if not isinstance(prop, Mapping):
        return None
    if "enum" in prop:
        return "categorical"
    types = prop.get("type")
    types = set(types) if isinstance(types, list) else {types}
    if types & {"number", "integer"}:
        return "numeric"
    if types & {"string", "boolean"}:
        return "categorical"
    return None


def numeric_values(values: Sequence[Any]) -> Floats:
    """Floats, with anything missing or not a number dropped."""
    try:  # the common case, all numbers: one C-level conversion
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        out = np.fromiter(
            (
                float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan
                for v in values
            ),
            dtype=np.float64,
            count=len(values),
        )
    if out.ndim != 1:
        out = out.reshape(-1)
    return out[~np.isnan(out)]


def category_counts(values: Sequence[Any]) -> Counter[str]:
    """Counts per category: counted on the raw values first, so each distinct value is named once."""
    raw = Counter(values.tolist() if isinstance(values, np.ndarray) else values)
    counts: Counter[str] = Counter()
    for value, n in raw.items():
        counts[category(value)] += n
    return counts


def category(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class NumericColumn:
    kind = "numeric"

    def __init__(self, values: Floats, bins: int) -> None:
        self.values = values  # in reference order, for chunking
        self.sorted = np.sort(values)
        self.std = float(np.std(self.sorted)) if values.size else 0.0
        self.edges = drift.quantile_edges(self.sorted, bins)
        self.counts = drift.bin_counts(self.sorted, self.edges)

    @property
    def n(self) -> int:
        return int(self.sorted.size)

    def measure(self, test: DriftTest, current: Sequence[Any]) -> tuple[float, float | None, int]:
        cur = numeric_values(current)
        return (*self._measure(test, self.sorted, self.counts, cur), int(cur.size))

    def _measure(
        self, test: DriftTest, ref_sorted: Floats, ref_counts: Floats, cur: Floats
    ) -> tuple[float, float | None]:
        if cur.size == 0 or ref_sorted.size == 0:
            return math.nan, None
        if test is DriftTest.KS:
            return drift.ks_2samp(ref_sorted, cur)
        if test is DriftTest.WASSERSTEIN:
            return drift.wasserstein(ref_sorted, cur) / (self.std or 1.0), None
        cur_counts = drift.bin_counts(cur, self.edges)
        if test is DriftTest.JENSENSHANNON:
            return drift.jensenshannon(ref_counts, cur_counts), None
        if test is DriftTest.PSI:
            return drift.psi(ref_counts, cur_counts), None
        raise ValueError(f"test '{test}' does not apply to a numeric column")

    def chunk_scores(self, test: DriftTest, size: int) -> list[float]:
        """Each chunk of the reference against the rest of it: the reference's own variability."""
        order = np.argsort(self.values, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        scores = []
        for start in _chunk_starts(self.values.size, size):
            chunk = self.values[start : start + size]
            rest = np.delete(self.sorted, rank[start : start + size])
            if test is DriftTest.KS:  # the score alone: no p-value per chunk
                scores.append(drift.ks_statistic(rest, chunk))
                continue
            rest_counts = self.counts - drift.bin_counts(chunk, self.edges)
            score, _ = self._measure(test, rest, rest_counts, chunk)
            scores.append(score)
        return scores


class CategoricalColumn:
    kind = "categorical"

    def __init__(self, values: Sequence[Any]) -> None:
        self.values = [category(v) for v in values]
        counted = Counter(self.values)
        self.categories = sorted(counted, key=lambda c: (-counted[c], c))
        self.counts = np.array([counted[c] for c in self.categories], dtype=np.float64)
        self.known = frozenset(self.categories)

    @property
    def n(self) -> int:
        return len(self.values)

    def measure(self, test: DriftTest, current: Sequence[Any]) -> tuple[float, float | None, int]:
        counted = category_counts(current)
        ref_counts, cur_counts = self._aligned(self.counts, counted)
        return (*self._measure(test, ref_counts, cur_counts), sum(counted.values()))

    def _aligned(self, ref_counts: Floats, current: Counter[str]) -> tuple[Floats, Floats]:
        """Counts over the reference's categories plus any new ones the window brought."""
        new = sorted(c for c in current if c not in self.known)
        ref = np.concatenate([ref_counts, np.zeros(len(new))])
        cur = np.array([current.get(c, 0) for c in [*self.categories, *new]], dtype=np.float64)
        return ref, cur

    def _measure(
        self, test: DriftTest, ref_counts: Floats, cur_counts: Floats
    ) -> tuple[float, float | None]:
        if cur_counts.sum() == 0 or ref_counts.sum() == 0:
            return math.nan, None
        if test is DriftTest.CHISQUARE:
            return drift.chi2_homogeneity(ref_counts, cur_counts)
        if test is DriftTest.JENSENSHANNON:
            return drift.jensenshannon(ref_counts, cur_counts), None
        if test is DriftTest.PSI:
            return drift.psi(ref_counts, cur_counts), None
        raise ValueError(f"test '{test}' does not apply to a categorical column")

    def chunk_scores(self, test: DriftTest, size: int) -> list[float]:
        scores = []
        for start in _chunk_starts(len(self.values), size):
            chunk = Counter(self.values[start : start + size])
            chunk_counts = np.array([chunk.get(c, 0) for c in self.categories], dtype=np.float64)
            score, _ = self._measure(test, self.counts - chunk_counts, chunk_counts)
            scores.append(score)
        return scores


Column = NumericColumn | CategoricalColumn


def _chunk_starts(n: int, size: int) -> list[int]:
    """Contiguous chunks, in reference order, evenly spread when there are more than MAX_CHUNKS."""
    count = n // size
    if count <= MAX_CHUNKS:
        return [i * size for i in range(count)]
    picks = np.linspace(0, count - 1, MAX_CHUNKS).round().astype(int)
    return [int(i) * size for i in np.unique(picks)]


def resolve_test(kind: str, requested: DriftTest, n_ref: int, n_window: int) -> DriftTest:
    if requested is not DriftTest.AUTO:
        return requested
    effective = n_ref * n_window / max(n_ref + n_window, 1)
    if kind == "numeric":
        return DriftTest.KS if effective <= AUTO_PVALUE_MAX_N else DriftTest.WASSERSTEIN
    return DriftTest.CHISQUARE if effective <= AUTO_PVALUE_MAX_N else DriftTest.JENSENSHANNON


@dataclass
class ColumnPlan:
    """How one column is tested: the test, its threshold, and whether the threshold is a p-value."""

    test: DriftTest
    threshold: float
    learned: bool
    chunk_mean: float | None = None
    chunk_std: float | None = None


@dataclass
class Profile:
    """Every monitored column of a reference, and how each is tested."""

    columns: dict[str, Column]
    plans: dict[str, ColumnPlan]
    spec: DriftSpec
    rows: int
    fingerprint: str = ""
    notes: list[str] = field(default_factory=list)

    def compare(self, window: ColumnData) -> DriftReport:
        """Drift of a window against this reference, with the multiple-testing correction."""
        measured: list[tuple[str, Column, ColumnPlan, float, float | None, int]] = []
        for name, column in self.columns.items():
            plan = self.plans[name]
            score, pvalue, n = column.measure(plan.test, window.get(name, ()))
            if n == 0 or math.isnan(score):
                continue
            measured.append((name, column, plan, score, pvalue, n))
        pvalued = [
            i for i, m in enumerate(measured) if not m[2].learned and m[2].test in PVALUE_TESTS
        ]
        rejected = drift.reject(
            [measured[i][4] or 1.0 for i in pvalued], self.spec.alpha, self.spec.correction
        )
        by_pvalue = dict(zip(pvalued, rejected, strict=True))
        results = []
        for i, (name, column, plan, score, pvalue, n) in enumerate(measured):
            drifted = by_pvalue.get(i, score > plan.threshold)
            results.append(
                ColumnDrift(
                    name,
                    column.kind,
                    plan.test.value,
                    score,
                    pvalue,
                    plan.threshold,
                    drifted,
                    n,
                    by_pvalue=i in by_pvalue,
                )
            )
        return DriftReport(results)

    def plans_json(self) -> dict[str, Any]:
        return {
            name: {
                "test": plan.test.value,
                "threshold": plan.threshold,
                "learned": plan.learned,
                "chunk_mean": plan.chunk_mean,
                "chunk_std": plan.chunk_std,
            }
            for name, plan in self.plans.items()
        }

    def to_json(self) -> dict[str, Any]:
        """The stored form: plans and the binned reference, not the raw values."""
        columns: dict[str, Any] = {}
        for name, column in self.columns.items():
            if isinstance(column, NumericColumn):
                columns[name] = {
                    "kind": "numeric",
                    "n": column.n,
                    "mean": float(np.mean(column.sorted)) if column.n else None,
                    "std": column.std,
                    "quantiles": [
                        float(q)
                        for q in np.quantile(column.sorted, [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1])
                    ]
                    if column.n
                    else [],
                    "edges": [float(e) for e in column.edges],
                    "counts": [int(c) for c in column.counts],
                }
            else:
                columns[name] = {
                    "kind": "categorical",
                    "n": column.n,
                    "categories": column.categories[:100],
                    "counts": [int(c) for c in column.counts[:100]],
                }
        return {
            "rows": self.rows,
            "columns": columns,
            "plans": self.plans_json(),
            "notes": self.notes,
        }


def build_profile(
    data: ColumnData,
    kinds: Mapping[str, str],
    spec: MonitoringSpec,
    *,
    stored_plans: Mapping[str, Any] | None = None,
) -> Profile:
    """Sort and bin each column, choose its test, and learn or fix its threshold.

    `stored_plans` (from an earlier build of the same fingerprint) skips threshold learning.
    """
    drift_spec = spec.drift
    window_n = spec.window.count or spec.window.min_count
    columns: dict[str, Column] = {}
    plans: dict[str, ColumnPlan] = {}
    notes: list[str] = []
    rows = max((len(v) for v in data.values()), default=0)
    for name, kind in kinds.items():
        if name not in data:
            notes.append(f"column '{name}' is not in the reference; it is not tested for drift")
            continue
        column: Column = (
            NumericColumn(numeric_values(data[name]), drift_spec.bins)
            if kind == "numeric"
            else CategoricalColumn(data[name])
        )
        if column.n == 0:
            notes.append(f"column '{name}' has no values in the reference")
            continue
        columns[name] = column
        stored = (stored_plans or {}).get(name)
        if stored is not None:
            plans[name] = ColumnPlan(
                DriftTest(stored["test"]),
                float(stored["threshold"]),
                bool(stored["learned"]),
                stored.get("chunk_mean"),
                stored.get("chunk_std"),
            )
            continue
        override = drift_spec.tests.get(name)
        requested = override.test if override else DriftTest.AUTO
        test = resolve_test(kind, requested, column.n, window_n)
        plans[name] = _plan(
            name, column, test, override.threshold if override else None, spec, notes
        )
    return Profile(columns, plans, drift_spec, rows, notes=notes)


def _plan(
    name: str,
    column: Column,
    test: DriftTest,
    fixed: float | None,
    spec: MonitoringSpec,
    notes: list[str],
) -> ColumnPlan:
    drift_spec = spec.drift
    if fixed is not None or drift_spec.threshold == "fixed":
        default = drift_spec.alpha if test in PVALUE_TESTS else FIXED_THRESHOLDS[test]
        return ColumnPlan(test, fixed if fixed is not None else default, learned=False)
    size = spec.window.count or max(spec.window.min_count, column.n // 20)
    if column.n // size < MIN_CHUNKS:
        notes.append(
            f"column '{name}': {column.n} reference rows make fewer than {MIN_CHUNKS} chunks of "
            f"{size}; using the fixed threshold"
        )
        default = drift_spec.alpha if test in PVALUE_TESTS else FIXED_THRESHOLDS[test]
        return ColumnPlan(test, default, learned=False)
    scores = np.array(column.chunk_scores(test, size))
    mean, std = float(np.mean(scores)), float(np.std(scores))
    return ColumnPlan(test, mean + drift_spec.k * std, learned=True, chunk_mean=mean, chunk_std=std)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
