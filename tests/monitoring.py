"""A monitored decision point, its reference data and traffic, shared by the monitoring tests."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import LOAN_POINT, write_points

MONITORING = """
monitoring:
  reference: {path: reference.csv}
  window: {count: 200, every: 1h, min_count: 50}
  drift: {correction: holm}
  alerts:
    - {id: input_drift, metric: drift_share, op: ">=", threshold: 0.5, for: 0s,
       severity: critical, action: tighten, description: "inputs no longer look like the reference"}
    - {id: review_surge, metric: review_rate, op: ">", threshold: 0.95, for: 10m, no_data: ok}
"""


def applications(
    rng: np.random.Generator, n: int, *, shifted: bool = False
) -> list[dict[str, Any]]:
    """Loan applications; `shifted` moves amount and income up and credit scores down."""
    amount = rng.lognormal(9.0 + (1.0 if shifted else 0.0), 0.5, n)
    income = rng.normal(5000 + (3000 if shifted else 0), 1000, n).clip(0)
    score = rng.integers(620 if not shifted else 400, 850 if not shifted else 700, n)
    return [
        {"amount": round(float(a), 2), "income": round(float(i), 2), "credit_score": int(s)}
        for a, i, s in zip(amount, income, score, strict=True)
    ]


def write_reference(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["amount", "income", "credit_score"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def monitored_points(folder: Path, monitoring: str = MONITORING) -> Path:
    """The loan point with a monitoring block and a 5,000-row reference beside it."""
    write_points(folder, LOAN_POINT.rstrip() + "\n" + monitoring)
    write_reference(folder / "reference.csv", applications(np.random.default_rng(1), 5000))
    return folder
