"""Train the demo's credit model: a scikit-learn pipeline whose classes are the outcomes.

The labels are the strings `approve` and `decline`, so `predict_proba` and `classes_` give
Warden outcomes directly and the decision point needs no `labels:` mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from warden.demo.data import SEED, training_set

MODEL_VERSION = "credit-lr-1"
BROKEN_FILE = Path("models") / "credit-broken.joblib"  # relative to the demo home
HOLDOUT_SHARE = 0.2


@dataclass(frozen=True)
class TrainedModel:
    path: Path
    version: str
    accuracy: float
    trained_on: int


def build_pipeline() -> Pipeline:
    """Fitted on a plain numpy matrix, so predicting from one (as Warden does) never warns
    about missing feature names."""
    return Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=1_000))])


def train(path: Path, *, seed: int = SEED, n: int = 6_000) -> TrainedModel:
    """Fit on generated applications, save with joblib at `path`, report holdout accuracy."""
    x, y = training_set(n, seed=seed)
    split = int(n * (1 - HOLDOUT_SHARE))
    pipeline = build_pipeline().fit(x[:split], y[:split])
    accuracy = float(pipeline.score(x[split:], y[split:]))
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, path)
    return TrainedModel(path=path, version=MODEL_VERSION, accuracy=accuracy, trained_on=split)


def train_broken(path: Path, *, seed: int = SEED, n: int = 2_000) -> Path:
    """A model that loads and answers like the real one but learned from shuffled labels: the
    bad model a rollout must catch (its agreement with the champion is near chance)."""
    x, y = training_set(n, seed=seed)
    shuffled = np.random.default_rng(seed + 1).permutation(y)
    pipeline = build_pipeline().fit(x, shuffled)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, path)
    return path
