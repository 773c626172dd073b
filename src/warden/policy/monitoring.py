"""The `monitoring:` block of a decision point file: reference, windows, drift tests, alert rules.

Kept beside schema.py rather than in it because it is the largest block and only the monitor reads
it; unknown fields are refused here exactly as in the rest of the file.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from warden.policy.durations import parse_duration

Seconds = Annotated[float, BeforeValidator(parse_duration)]
_NAME = r"^[a-z][a-z0-9_]*$"

# Window metrics an alert rule may watch; `drift.<column>` names one monitored column's score.
RATE_METRICS = (
    "volume",
    "auto_rate",
    "review_rate",
    "fallback_rate",
    "refused_rate",
    "error_rate",
    "override_rate",
    "accuracy",
    "calibration_error",
    "confidence_mean",
    "drift_share",
)
OUTPUT_COLUMN = "output"
CONFIDENCE_COLUMN = "confidence"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ReferenceSpec(_Strict):
    """What "normal" looks like: a CSV/Parquet file beside the point file, or its first decisions."""

    path: str | None = Field(
        default=None, description="CSV or Parquet file, relative to the point file."
    )
    first_n: int | None = Field(
        default=None, ge=50, le=1_000_000, description="The point's first N decisions."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ReferenceSpec:
        if (self.path is None) == (self.first_n is None):
            raise ValueError(
                "needs exactly one of `path` (a CSV or Parquet file) "
                "or `first_n` (the point's first N decisions)"
            )
        if self.path is not None and not self.path.endswith((".csv", ".parquet", ".pq")):
            raise ValueError(f"path '{self.path}' must be a .csv or .parquet file")
        return self


class WindowSpec(_Strict):
    """A window closes after `count` decisions or `every` seconds, whichever comes first."""

    count: int | None = Field(default=500, ge=10, le=10_000_000)
    every: Seconds | None = 3600.0
    min_count: int = Field(
        default=30, ge=1, description="Fewer decisions than this: no drift test for the window."
    )

    @model_validator(mode="after")
    def _some_limit(self) -> WindowSpec:
        if self.count is None and self.every is None:
            raise ValueError("needs `count`, `every` or both")
        if self.every is not None and self.every < 1:
            raise ValueError("every must be at least 1s")
        return self


class DriftTest(StrEnum):
    AUTO = "auto"
    KS = "ks"
    WASSERSTEIN = "wasserstein"
    CHISQUARE = "chisquare"
    JENSENSHANNON = "jensenshannon"
    PSI = "psi"


NUMERIC_TESTS = frozenset({DriftTest.KS, DriftTest.WASSERSTEIN, DriftTest.PSI})
CATEGORICAL_TESTS = frozenset({DriftTest.CHISQUARE, DriftTest.JENSENSHANNON, DriftTest.PSI})


class ColumnSpec(_Strict):
    """Per-column override of the test, its threshold, or the detected column kind."""

    test: DriftTest = DriftTest.AUTO
    threshold: float | None = Field(
        default=None, gt=0, description="Score threshold; for ks/chisquare, the p-value alpha."
    )
    kind: Literal["numeric", "categorical"] | None = None


class DriftSpec(_Strict):
    columns: list[str] | None = Field(
        default=None,
        description="Columns to monitor (default: every input property, output and confidence).",
    )
    tests: dict[str, ColumnSpec] = Field(default_factory=dict)
    threshold: Literal["fixed", "learned"] = "fixed"
    k: float = Field(default=3.0, gt=0, le=20, description="learned: mean + k*sd of chunks.")
    alpha: float = Field(default=0.05, gt=0, lt=1)
    correction: Literal["holm", "bonferroni", "fdr_bh", "none"] = "holm"
    share: float = Field(
        default=0.5, gt=0, le=1, description="Dataset drift when this share of columns drifts."
    )
    bins: int = Field(default=10, ge=2, le=100)


class AlertRule(_Strict):
    """`metric op threshold` held for `for` fires the alert; `action` says what Warden does then."""

    id: str = Field(pattern=_NAME, max_length=64)
    metric: str
    op: Literal[">", ">=", "<", "<="] = ">"
    threshold: float
    for_: Seconds = Field(default=0.0, alias="for")
    keep_firing_for: Seconds = 0.0
    severity: Literal["info", "warning", "critical"] = "warning"
    action: Literal["notify", "tighten", "kill"] = "notify"
    no_data: Literal["alert", "ok", "keep"] = "alert"
    description: str | None = None


class WebhookSpec(_Strict):
    """A Slack-compatible webhook; `url_env` keeps a secret URL out of the versioned file."""

    url: str | None = None
    url_env: str | None = None

    @model_validator(mode="after")
    def _one_url(self) -> WebhookSpec:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("needs exactly one of `url` or `url_env`")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return self


class SinksSpec(_Strict):
    log: bool = True
    webhook: WebhookSpec | None = None


class MonitoringSpec(_Strict):
    reference: ReferenceSpec | None = None
    window: WindowSpec = Field(default_factory=WindowSpec)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    alerts: list[AlertRule] = Field(default_factory=list)
    no_data_after: Seconds | None = Field(
        default=None, description="No closed window for this long is 'no data' (default 2 x every)."
    )
    sinks: SinksSpec = Field(default_factory=SinksSpec)

    @property
    def stale_after(self) -> float:
        if self.no_data_after is not None:
            return self.no_data_after
        return 2 * (self.window.every or 3600.0)

    def check(self, input_fields: set[str] | None) -> None:
        """Cross-field checks; messages start with the offending path so errors name the line."""
        known = None if input_fields is None else input_fields | {OUTPUT_COLUMN, CONFIDENCE_COLUMN}
        if known is not None and self.drift.columns is not None:
            for index, column in enumerate(self.drift.columns):
                if column not in known:
                    raise ValueError(
                        f"monitoring.drift.columns.{index} '{column}' is not an input property, "
                        f"'output' or 'confidence'; known: {', '.join(sorted(known))}"
                    )
        if known is not None:
            for column in self.drift.tests:
                if column not in known:
                    raise ValueError(
                        f"monitoring.drift.tests.{column} names no input property, 'output' or "
                        f"'confidence'; known: {', '.join(sorted(known))}"
                    )
        for column, test in self.drift.tests.items():
            allowed = {"numeric": NUMERIC_TESTS, "categorical": CATEGORICAL_TESTS}.get(
                test.kind or ""
            )
            if allowed is not None and test.test is not DriftTest.AUTO and test.test not in allowed:
                raise ValueError(
                    f"monitoring.drift.tests.{column}.test '{test.test}' does not apply to a "
                    f"{test.kind} column; use one of {', '.join(sorted(allowed))}"
                )
        seen: set[str] = set()
        for index, rule in enumerate(self.alerts):
            if rule.id in seen:
                raise ValueError(
                    f"monitoring.alerts.{index}.id '{rule.id}' is used twice; alert ids must be "
                    "unique"
                )
            seen.add(rule.id)
            problem = metric_problem(rule.metric, known)
            if problem:
                raise ValueError(f"monitoring.alerts.{index}.metric {problem}")


def metric_problem(metric: str, columns: set[str] | None) -> str | None:
    """Why `metric` is not something an alert rule can watch, or None when it is."""
    if metric in RATE_METRICS:
        return None
    if metric.startswith("drift."):
        column = metric.removeprefix("drift.")
        if columns is None or column in columns:
            return None
        return (
            f"'{metric}' names no monitored column; use drift.<column> with one of "
            f"{', '.join(sorted(columns))}"
        )
    return (
        f"'{metric}' is not a monitored metric; use one of {', '.join(RATE_METRICS)} "
        "or drift.<column>"
    )
