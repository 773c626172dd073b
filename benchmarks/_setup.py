"""Shared set-up for benchmarks: a trained scikit-learn credit model and its decision point."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

FEATURES = ["amount", "income", "credit_score"]

POINT = """
point: loan_approval
owner: credit-risk@example.com
input:
  type: object
  required: [amount, income, credit_score]
  properties:
    amount: {{type: number, minimum: 0}}
    income: {{type: number, minimum: 0}}
    credit_score: {{type: integer, minimum: 300, maximum: 850}}
    country: {{type: string}}
model:
  kind: {kind}
  {model_lines}
  version: "1"
  timeout_ms: {timeout_ms}
outcomes: [approve, decline]
rules:
  refuse:
    - {{id: blocked_country, when: "has(input.country) && input.country in ['XX']"}}
  review:
    - {{id: large_amount, when: "input.amount > 50000"}}
    - {{id: low_confidence, when: "confidence < 0.6"}}
  auto:
    - {{id: confident, when: "confidence >= 0.6"}}
"""

TRIVIAL = """
def predict(input):
    return ("approve" if input["credit_score"] >= 600 else "decline"), 0.9
"""


def applications(n: int, seed: int = 7) -> list[dict[str, float | int]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "amount": float(rng.uniform(500, 40000)),
            "income": float(rng.uniform(1000, 15000)),
            "credit_score": int(rng.integers(300, 851)),
        }
        for _ in range(n)
    ]


def train(folder: Path, seed: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.uniform(500, 40000, 4000),
            rng.uniform(1000, 15000, 4000),
            rng.integers(300, 851, 4000),
        ]
    )
    logit = (x[:, 2] - 600) / 60 + (x[:, 1] - x[:, 0] / 10) / 3000
    y = np.where(logit + rng.normal(0, 1, len(x)) > 0, "approve", "decline")
    model = LogisticRegression(max_iter=1000).fit(x, y)
    path = folder / "credit.joblib"
    joblib.dump(model, path)
    return path


def write_point(folder: Path, kind: str, timeout_ms: int = 200) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "sklearn":
        train(folder)
        lines = f"path: credit.joblib\n  features: {FEATURES}"
    else:
        (folder / "trivial_model.py").write_text(TRIVIAL)
        lines = "function: trivial_model:predict"
    (folder / "loan_approval.yaml").write_text(
        textwrap.dedent(POINT.format(kind=kind, model_lines=lines, timeout_ms=timeout_ms))
    )
    return folder


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def decide_for(
    engine: Any, inputs: list[dict[str, float | int]], threads: int, seconds: float
) -> tuple[int, float]:
    """`threads` callers deciding `loan_approval` back to back for `seconds`: how many
    decisions they made, and in how many seconds of wall time."""
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def work(index: int) -> None:
        i = index
        while time.monotonic() < stop:
            engine.decide("loan_approval", inputs[i % len(inputs)])
            counts[index] += 1
            i += threads

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts), time.monotonic() - began
