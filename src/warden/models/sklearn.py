"""A scikit-learn classifier saved with joblib: the most probable class is the outcome."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from warden.models.base import ModelLoadError, Prediction
from warden.models.features import feature_matrix, feature_row
from warden.policy.schema import ModelSpec


class SklearnModel:
    def __init__(
        self, estimator: Any, *, features: list[str], labels: Mapping[str, str], version: str | None
    ) -> None:
        self.version = version
        self._predict_proba = estimator.predict_proba
        self._features = features
        # Class index -> outcome, computed once so the hot path only indexes a list.
        self._outcomes = [labels.get(str(label), str(label)) for label in estimator.classes_]

    def predict(self, input: Mapping[str, Any]) -> Prediction:
        probabilities = self._predict_proba(feature_row(input, self._features, np.float64))[0]
        best = int(probabilities.argmax())
        return Prediction(self._outcomes[best], float(probabilities[best]))

    def predict_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """One predict_proba over the whole batch: most of the cost is per call, not per row."""
        matrix = feature_matrix(inputs, self._features, np.float64)
        probabilities = self._predict_proba(matrix)
        best = probabilities.argmax(axis=1)
        outcomes = self._outcomes
        return [
            Prediction(outcomes[i], float(p[i])) for i, p in zip(best, probabilities, strict=True)
        ]


def load_sklearn(spec: ModelSpec, path: Path) -> SklearnModel:
    assert spec.features is not None  # the schema requires it for kind=sklearn
    try:
        estimator = joblib.load(path)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load {path} with joblib ({type(exc).__name__}: {exc}); save the fitted "
            "model with joblib.dump and install the scikit-learn version it was saved with"
        ) from exc
    if not callable(getattr(estimator, "predict_proba", None)):
        raise ModelLoadError(
            f"{path} holds a {type(estimator).__name__}, which has no predict_proba; "
            "kind 'sklearn' needs a fitted classifier that gives probabilities"
        )
    if getattr(estimator, "classes_", None) is None:
        raise ModelLoadError(
            f"{path} holds a {type(estimator).__name__} without classes_; save it after fit()"
        )
    check_features(estimator, spec.features, path)
    return SklearnModel(
        estimator, features=spec.features, labels=spec.labels or {}, version=spec.version
    )


def check_features(estimator: Any, features: list[str], path: Path) -> None:
    """Catches a feature list that is out of order, which would otherwise predict silently wrong."""
    trained_on = getattr(estimator, "feature_names_in_", None)
    if trained_on is not None:
        if [str(name) for name in trained_on] != features:
            raise ModelLoadError(
                f"{path} was trained on features {list(map(str, trained_on))} but model.features "
                f"is {features}; list the same fields in the same order"
            )
        # The names are checked here, once; scikit-learn would otherwise warn on every call
        # that the plain array we feed it has none.
        warnings.filterwarnings(
            "ignore", message="X does not have valid feature names", category=UserWarning
        )
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and expected != len(features):
        raise ModelLoadError(
            f"{path} expects {expected} features but model.features lists {len(features)}: "
            f"{features}"
        )
