"""What every model adapter provides, and the failures a guarded call can end in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

MODEL_ERROR = "model_error"
MODEL_TIMEOUT = "model_timeout"
INVALID_OUTPUT = "invalid_output"
BREAKER_OPEN = "breaker_open"
MODEL_SATURATED = "model_saturated"
MODEL_FAILURES = frozenset(
    {MODEL_ERROR, MODEL_TIMEOUT, INVALID_OUTPUT, BREAKER_OPEN, MODEL_SATURATED}
)


@dataclass(frozen=True, slots=True)
class Prediction:
    outcome: str
    confidence: float


class ModelFailure(Exception):
    """A model call that produced no usable prediction; the decision takes the failure path.

    `code` is one of: 'model_error', 'model_timeout', 'invalid_output', 'breaker_open',
    'model_saturated'.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def timeout_failure(timeout_ms: float) -> ModelFailure:
    return ModelFailure(MODEL_TIMEOUT, f"the model did not answer within {timeout_ms:g} ms")


def saturated_failure() -> ModelFailure:
    return ModelFailure(
        MODEL_SATURATED,
        "every model worker is busy (calls that timed out keep theirs until they return); the "
        "model is too slow for the load",
    )


class ModelLoadError(Exception):
    """A model could not be loaded; the message names the file or function and how to fix it."""


class Model(Protocol):
    """A loaded model. `predict` is the raw, unguarded call: adapters may return the label and
    confidence as the model gives them (numpy scalars, out-of-range values); the guard checks them.
    """

    version: str | None

    def predict(self, input: Mapping[str, Any]) -> Prediction: ...


def describe(value: object, limit: int = 80) -> str:
    """A short repr for error messages, so a huge model output never floods a log line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
