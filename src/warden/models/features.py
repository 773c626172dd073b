"""The matrices tabular models expect, built from inputs in `model.features` order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from warden.models.base import MODEL_ERROR, ModelFailure, describe


def feature_row(
    input: Mapping[str, Any], features: Sequence[str], dtype: type[np.floating[Any]]
) -> npt.NDArray[np.floating[Any]]:
    """A fresh (1, n) array per call: it is cheap and never shared between threads."""
    try:
        return np.array([[float(input[name]) for name in features]], dtype=dtype)
    except (KeyError, TypeError, ValueError):
        raise _explain(input, features) from None


def feature_matrix(
    inputs: Sequence[Mapping[str, Any]], features: Sequence[str], dtype: type[np.floating[Any]]
) -> npt.NDArray[np.floating[Any]]:
    """A (len(inputs), n) array for one vectorised call; raises, explained, for the first input
    that has no features."""
    try:
        return np.array([[float(x[name]) for name in features] for x in inputs], dtype=dtype)
    except (KeyError, TypeError, ValueError):
        return np.vstack([feature_row(x, features, dtype) for x in inputs])


def _explain(input: Mapping[str, Any], features: Sequence[str]) -> ModelFailure:
    for name in features:
        if name not in input:
            return ModelFailure(
                MODEL_ERROR, f"input has no field '{name}', which model.features lists"
            )
        try:
            float(input[name])
        except (TypeError, ValueError):
            return ModelFailure(
                MODEL_ERROR, f"input field '{name}' is {describe(input[name])}, not a number"
            )
    return ModelFailure(MODEL_ERROR, "input could not be turned into model features")
