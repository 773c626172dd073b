"""The only way decisions call a model: breaker, timeout and output checks around the raw call,
so every way a model can misbehave ends in one ModelFailure with a stable code.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from warden.models.base import (
    BREAKER_OPEN,
    INVALID_OUTPUT,
    MODEL_ERROR,
    MODEL_SATURATED,
    MODEL_TIMEOUT,
    Model,
    ModelFailure,
    ModelLoadError,
    Prediction,
    describe,
    saturated_failure,
    timeout_failure,
)
from warden.models.batching import Batcher
from warden.models.breaker import CircuitBreaker
from warden.models.loader import ModelSource, load_model, source_of
from warden.models.thread_batching import ThreadBatcher
from warden.models.workers import CallTimeout, PoolSaturated, WorkerPool
from warden.monitor.metrics import BATCH_FALLBACKS
from warden.policy.schema import FailureSpec, ModelSpec

log = logging.getLogger(__name__)


class GuardedModel:
    """A model behind a circuit breaker, an optional timeout and output validation.

    Timeouts, errors, invalid outputs and saturation count as failures for the breaker (as a
    bulkhead rejection does inside a resilience4j breaker); calls refused by the open breaker do
    not. With a timeout the model runs on at most `max_concurrency` worker threads; a call that
    times out keeps its worker until it returns, and when all are busy calls fail fast with
    'model_saturated' rather than queue behind a hung model.
    """

    def __init__(
        self,
        model: Model,
        *,
        spec: ModelSpec,
        failure: FailureSpec,
        outcomes: Sequence[str],
        clock: Callable[[], float] = time.monotonic,
        max_concurrency: int = 16,
    ) -> None:
        self._model = model
        self._spec = spec
        self._failure = failure
        self._outcome_list = tuple(outcomes)
        self._recipe: ModelRecipe | None = None
        self._recipe_known = False  # built on first use, then kept: calls ask for it per call
        self._outcomes = frozenset(outcomes)
        self._breaker = CircuitBreaker(failure.breaker, clock)
        self._open_for = failure.breaker.open_for
        self._timeout_ms = spec.timeout_ms
        self._pool = None if spec.timeout_ms is None else WorkerPool(max_concurrency)
        timeout = None if spec.timeout_ms is None else spec.timeout_ms / 1000
        # Calls are gathered into one vectorised call only where the model has one; others
        # (a Python function calling a service, say) run side by side, one worker each.
        vectorised = callable(getattr(model, "predict_many", None))
        self._batcher = Batcher(self._predict_many, self._pool, timeout, gather=vectorised)
        self._threads = (
            ThreadBatcher(self._predict_many, self._pool, timeout)
            if vectorised and self._pool is not None and timeout is not None
            else None
        )

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def version(self) -> str | None:
        return self._model.version

    def recipe(self) -> ModelRecipe | None:
        """How to build this guarded model again in another process; None when the model was
        not loaded from a decision point's `model:` section (a test's function, say)."""
        if not self._recipe_known:
            source = source_of(self._model)
            if source is not None:
                self._recipe = ModelRecipe(
                    source, self._spec.timeout_ms, self._failure, self._outcome_list
                )
            self._recipe_known = True
        return self._recipe

    def call(self, input: Mapping[str, Any]) -> Prediction:
        """A checked prediction, or ModelFailure saying why there is none."""
        self._admit()
        succeeded = False
        try:
            if self._threads is not None:
                raw = self._threads.predict(input)
            elif self._pool is not None:
                raw = self._predict_in_time(input)
            else:
                raw = self._predict(input)
            prediction = self._checked(raw)
            succeeded = True
            return prediction
        finally:
            self._settle(succeeded)

    async def call_async(self, input: Mapping[str, Any]) -> Prediction:
        """`call` for a caller on an event loop: the model runs on a worker thread under the
        same timeout, no thread waits for it, and concurrent calls share one vectorised model
        call (see `warden.models.batching`)."""
        self._admit()
        succeeded = False
        try:
            prediction = self._checked(await self._batcher.predict(input))
            succeeded = True
            return prediction
        finally:
            self._settle(succeeded)

    def _admit(self) -> None:
        if not self._breaker.try_acquire():
            raise ModelFailure(
                BREAKER_OPEN,
                f"the circuit breaker is open after repeated model failures; the model is tried "
                f"again {self._open_for:g}s after it opened",
            )

    def _checked(self, raw: object) -> Prediction:
        if not isinstance(raw, Prediction):
            raise ModelFailure(INVALID_OUTPUT, f"model returned {describe(raw)}, not a Prediction")
        return check_prediction(raw.outcome, raw.confidence, self._outcomes)

    def _settle(self, succeeded: bool) -> None:
        if succeeded:
            self._breaker.on_success()
        else:
            self._breaker.on_failure()

    def call_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Prediction | ModelFailure]:
        """A batch as one guarded call: one breaker permit, one timeout, one model invocation
        where the adapter can (`predict_many`). Each row is checked on its own; when the model
        call itself fails, every row fails with it. The timeout grows with the batch: one
        `timeout_ms` per 64 rows."""
        if not inputs:
            return []
        if not self._breaker.try_acquire():
            failure = ModelFailure(
                BREAKER_OPEN,
                "the circuit breaker is open after repeated "
                f"model failures; retried {self._open_for:g}s after it opened",
            )
            return [failure] * len(inputs)
        results: list[Prediction | ModelFailure]
        try:
            if self._pool is None:
                raw = self._predict_many(inputs)
            else:
                assert self._timeout_ms is not None
                budget = self._timeout_ms / 1000 * max(1, -(-len(inputs) // 64))
                raw = self._pool.run(self._predict_many, inputs, budget)
        except CallTimeout:
            failure = ModelFailure(
                MODEL_TIMEOUT, f"the model did not answer the batch of {len(inputs)} in time"
            )
            self._breaker.on_failure()
            return [failure] * len(inputs)
        except PoolSaturated:
            self._breaker.on_failure()
            return [ModelFailure(MODEL_SATURATED, "every model worker is busy")] * len(inputs)
        if len(raw) != len(inputs):
            self._breaker.on_failure()
            failure = ModelFailure(
                INVALID_OUTPUT, f"the model answered {len(raw)} rows for a batch of {len(inputs)}"
            )
            return [failure] * len(inputs)
        results = []
        for prediction in raw:
            if isinstance(prediction, ModelFailure):
                results.append(prediction)
                continue
            try:
                results.append(
                    check_prediction(prediction.outcome, prediction.confidence, self._outcomes)
                )
            except ModelFailure as exc:
                results.append(exc)
        if any(isinstance(r, ModelFailure) for r in results):
            self._breaker.on_failure()
        else:
            self._breaker.on_success()
        return results

    def _predict_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Prediction | ModelFailure]:
        """One vectorised call where the adapter has one; row by row (each failing alone) when
        it has none or when the vectorised call fails."""
        many = getattr(self._model, "predict_many", None)
        if many is not None:
            try:
                predictions: list[Prediction | ModelFailure] = list(many(inputs))
                return predictions
            except Exception:  # find which rows fail, below; but say so, and count it
                BATCH_FALLBACKS.labels(self._spec.version or "").inc()
                log.warning(
                    "the vectorised call of model %s failed; answering its %d rows one by one",
                    self._spec.version,
                    len(inputs),
                    exc_info=True,
                )
        results: list[Prediction | ModelFailure] = []
        for item in inputs:
            try:
                results.append(self._predict(item))
            except ModelFailure as exc:
                results.append(exc)
        return results

    def _predict_in_time(self, input: Mapping[str, Any]) -> Prediction:
        assert self._pool is not None and self._timeout_ms is not None
        try:
            return self._pool.run(self._predict, input, self._timeout_ms / 1000)
        except CallTimeout:
            raise timeout_failure(self._timeout_ms) from None
        except PoolSaturated:
            raise saturated_failure() from None

    def _predict(self, input: Mapping[str, Any]) -> Prediction:
        try:
            return self._model.predict(input)
        except ModelFailure:
            raise
        except Exception as exc:
            raise ModelFailure(MODEL_ERROR, f"{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class ModelRecipe:
    """A guarded model as plain, picklable data (see `GuardedModel.recipe`)."""

    source: ModelSource
    timeout_ms: int | None
    failure: FailureSpec
    outcomes: tuple[str, ...]

    @cached_property
    def key(self) -> str:
        """Stable name of what the recipe builds, for caching the built model."""
        return f"{self.source.base_dir}|{self.source.spec.model_dump_json()}"

    def build(self) -> GuardedModel:
        spec = self.source.spec.model_copy(update={"timeout_ms": self.timeout_ms})
        model = load_model(self.source.spec, self.source.base_dir)
        if model is None:
            raise ModelLoadError(f"{self.source.spec.kind} has no model to load")
        return GuardedModel(model, spec=spec, failure=self.failure, outcomes=self.outcomes)


def check_prediction(outcome: object, confidence: object, outcomes: Collection[str]) -> Prediction:
    """A Prediction with a plain str outcome from `outcomes` and a float confidence in [0, 1].

    Used for model output and for proposals submitted by callers alike. numpy scalars are
    accepted; bools are not numbers here, since True as a confidence is a bug, not 1.0.
    """
    if type(outcome) is not str:
        if not isinstance(outcome, str):
            raise ModelFailure(
                INVALID_OUTPUT,
                f"outcome {describe(outcome)} has type {type(outcome).__name__}, not str; "
                f"the outcomes are {sorted(outcomes)}",
            )
        outcome = str(outcome)
    if outcome not in outcomes:
        raise ModelFailure(
            INVALID_OUTPUT,
            f"outcome {describe(outcome)} is not one of the outcomes {sorted(outcomes)}",
        )
    value = confidence if type(confidence) is float else _real(confidence)
    if not 0.0 <= value <= 1.0:  # also refuses NaN, which compares false
        raise ModelFailure(INVALID_OUTPUT, f"confidence {value!r} is not between 0 and 1")
    return Prediction(outcome, value)


def _real(confidence: object) -> float:
    if isinstance(confidence, numbers.Real) and not isinstance(confidence, bool):
        try:
            return float(confidence)
        except OverflowError:  # an int too large for a float
            return math.inf
    raise ModelFailure(
        INVALID_OUTPUT,
        f"confidence {describe(confidence)} has type {type(confidence).__name__}, "
        "not a number between 0 and 1",
    )
