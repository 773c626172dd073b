"""A rollout plan: steps, interval, minimum evidence per step, and the checks that judge it."""

from __future__ import annotations

import itertools
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from warden.policy.durations import parse_duration

Seconds = Annotated[float, BeforeValidator(parse_duration)]


class Metric(StrEnum):
    """What a check measures on the challenger's decisions in the current step."""

    ERROR_RATE = "error_rate"  # model failures (errors, timeouts, invalid output)
    REVIEW_RATE = "review_rate"  # share routed to review
    OVERRIDE_RATE = "override_rate"  # reviewers overturning the challenger
    AGREEMENT = "agreement"  # same outcome as the champion on the same input
    OUTPUT_DRIFT = "output_drift"  # PSI of the challenger's outcomes against the champion's


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Metric
    max: float | None = Field(default=None, ge=0)
    min: float | None = Field(default=None, ge=0, le=1)
    max_increase: float | None = Field(
        default=None, ge=0, description="Allowed rise over the champion's value (rates only)."
    )

    @model_validator(mode="after")
    def _one_limit(self) -> Check:
        limits = [x for x in (self.max, self.min, self.max_increase) if x is not None]
        if len(limits) != 1:
            raise ValueError(f"check '{self.metric}' needs exactly one of max, min, max_increase")
        if self.max_increase is not None and self.metric in (Metric.AGREEMENT, Metric.OUTPUT_DRIFT):
            raise ValueError(f"max_increase does not apply to '{self.metric}'")
        if self.min is not None and self.metric is not Metric.AGREEMENT:
            raise ValueError(f"'{self.metric}' is a cost: give max or max_increase, not min")
        return self


class RolloutPlan(BaseModel):
    """How a challenger earns traffic, e.g. 5 → 25 → 50 → 100 % with checks at each step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: list[float] = Field(default=[5, 25, 50, 100], min_length=1)
    interval: Seconds = 600.0
    min_decisions: int = Field(default=100, ge=1)
    sticky_key: str = Field(
        default="input.id",
        description="Where the assignment key comes from: input.<field> or context.<field>.",
        pattern=r"^(input|context)\.[A-Za-z_][A-Za-z0-9_]*$",
    )
    checks: list[Check] = Field(
        default_factory=lambda: [
            Check(metric=Metric.ERROR_RATE, max=0.02),
            Check(metric=Metric.AGREEMENT, min=0.9),
        ],
        min_length=1,
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[float]) -> list[float]:
        if any(not 0 < s <= 100 for s in steps):
            raise ValueError("each step is a percentage in (0, 100]")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError("steps must increase, e.g. [5, 25, 50, 100]")
        if steps[-1] != 100:
            raise ValueError("the last step must be 100 so a passing rollout ends promoted")
        return steps
