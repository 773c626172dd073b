"""Synthetic loan applications with a ground truth, so the demo needs no data download.

Everything comes from a numpy Generator with a fixed seed: the same seed gives the same
applications and labels on every machine, which keeps the demo and its tests reproducible.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

SEED = 20240611
FEATURES = ("amount", "income", "credit_score", "debt_to_income", "employment_years")
COUNTRIES = ("DE", "FR", "NL", "ES", "IT", "PL", "SE", "XX")
COUNTRY_WEIGHTS = (0.30, 0.20, 0.12, 0.12, 0.10, 0.08, 0.07, 0.01)
BLOCKED_COUNTRY = "XX"
APPROVE, DECLINE = "approve", "decline"

Columns = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True, slots=True)
class Application:
    """One application as a caller sends it, with what turned out to be the right decision."""

    input: dict[str, Any]
    repaid: bool

    @property
    def right_outcome(self) -> str:
        return APPROVE if self.repaid else DECLINE


def sample_columns(
    rng: np.random.Generator, n: int, *, income_factor: float | npt.NDArray[np.float64] = 1.0
) -> Columns:
    """`n` applications as columns. `income_factor` (one, or one per row) scales incomes."""
    income = np.round(rng.lognormal(np.log(48_000), 0.45, n) * income_factor, -2)
    amount = np.clip(np.round(rng.lognormal(np.log(14_000), 0.8, n), -2), 1_000, 400_000)
    return {
        "amount": amount,
        "income": np.maximum(income, 6_000),
        "credit_score": np.clip(np.round(rng.normal(675, 75, n)), 300, 850).astype(np.int64),
        "debt_to_income": np.round(rng.beta(2.0, 5.0, n) * 0.9, 3),
        "employment_years": np.round(np.clip(rng.gamma(2.0, 3.0, n), 0, 45), 1),
        "country": rng.choice(COUNTRIES, size=n, p=COUNTRY_WEIGHTS),
    }


def repaid(rng: np.random.Generator, columns: Columns) -> npt.NDArray[np.bool_]:
    """Ground truth: a logistic function of the features plus noise.

    Repayment depends on the burden of the loan relative to income (a ratio the model does not
    see directly), so a linear model learns most but not all of it, as in real credit data.
    """
    burden = columns["amount"] / columns["income"]
    logit = (
        1.2
        + 0.032 * (columns["credit_score"] - 675)
        - 8.0 * (columns["debt_to_income"] - 0.26)
        - 2.5 * (burden - 0.35)
        + 0.10 * (np.minimum(columns["employment_years"], 15) - 5)
        + rng.normal(0.0, 0.5, len(burden))
    )
    result: npt.NDArray[np.bool_] = rng.random(len(burden)) < 1.0 / (1.0 + np.exp(-logit))
    return result


def training_set(
    n: int = 6_000, *, seed: int = SEED
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.str_]]:
    """Features in FEATURES order and `approve`/`decline` labels (approve = would repay)."""
    rng = np.random.default_rng(seed)
    columns = sample_columns(rng, n)
    x = np.column_stack([columns[name].astype(np.float64) for name in FEATURES])
    y = np.where(repaid(rng, columns), APPROVE, DECLINE)
    return x, y


def applications(
    *,
    seed: int = SEED + 1,
    batch: int = 256,
    drift_after: int | None = None,
    income_factor: float = 0.75,
) -> Iterator[Application]:
    """An endless stream of new applications, deterministic for a seed.

    From application `drift_after` on, incomes are scaled by `income_factor` (an economic
    downturn): the kind of input drift monitoring has to notice.
    """
    rng = np.random.default_rng(seed)
    for start in itertools.count(0, batch):
        factor: float | npt.NDArray[np.float64] = 1.0
        if drift_after is not None:  # per row, so drift never changes the draws before it
            factor = np.where(np.arange(start, start + batch) >= drift_after, income_factor, 1.0)
        columns = sample_columns(rng, batch, income_factor=factor)
        labels = repaid(rng, columns)
        for i in range(batch):
            yield Application(input=_row(columns, i), repaid=bool(labels[i]))


def _row(columns: Columns, i: int) -> dict[str, Any]:
    """Plain Python values, as JSON would carry them."""
    return {
        "amount": float(columns["amount"][i]),
        "income": float(columns["income"][i]),
        "credit_score": int(columns["credit_score"][i]),
        "debt_to_income": float(columns["debt_to_income"][i]),
        "employment_years": float(columns["employment_years"][i]),
        "country": str(columns["country"][i]),
    }
