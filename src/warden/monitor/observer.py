"""How the engine reports each decision: observers called after the decision is recorded.

Only cheap counters run here, in the caller's thread; drift, windows and alerts are worked out by
the background monitor (worker.py) from the ledger, so a slow statistic never slows a decision.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from warden.engine import Engine

MODEL_FAILURE_CODES = frozenset(
    {"model_error", "model_timeout", "invalid_output", "breaker_open", "model_saturated"}
)


@dataclass(frozen=True, slots=True)
class Observation:
    """A recorded decision row, and perf_counter_ns marks at the start of the decision and after
    validation, the model and routing (empty for input the schema refused)."""

    row: dict[str, Any]
    marks: tuple[int, ...] = ()
    recorded_ns: int = 0


Observer = Callable[[Observation], None]


class MetricsObserver:
    """Counts each decision in Prometheus; label children are cached, so a decision costs a few
    dictionary lookups and increments."""

    def __init__(self) -> None:
        from warden.monitor import metrics

        self._metrics = metrics
        self._decisions: dict[tuple[str, str, str], Any] = {}
        self._durations: dict[str, Any] = {}
        self._errors: dict[tuple[str, str], Any] = {}

    def __call__(self, observation: Observation) -> None:
        row = observation.row
        point = row["point"]
        key = (point, row["route"], row["model_version"] or "")
        counter = self._decisions.get(key)
        if counter is None:
            counter = self._decisions[key] = self._metrics.DECISIONS.labels(*key)
        counter.inc()
        if observation.marks:
            histogram = self._durations.get(point)
            if histogram is None:
                histogram = self._durations[point] = self._metrics.DURATION.labels(point)
            histogram.observe((observation.recorded_ns - observation.marks[0]) / 1e9)
        reasons = row["reasons"]
        if reasons and row["route"] != "auto":
            for reason in reasons:
                if reason.get("kind") == "failure" and reason.get("code") in MODEL_FAILURE_CODES:
                    error_key = (point, reason["code"])
                    errors = self._errors.get(error_key)
                    if errors is None:
                        errors = self._errors[error_key] = self._metrics.MODEL_ERRORS.labels(
                            *error_key
                        )
                    errors.inc()


def observe(engine: Engine, row: dict[str, Any], marks: tuple[int, ...] = ()) -> None:
    """Called by the engine; an observer that raises must never fail a recorded decision."""
    observation = Observation(row, marks, time.perf_counter_ns())
    for observer in engine.observers:
        try:
            observer(observation)
        except Exception:  # pragma: no cover - observers are ours and tested
            import logging

            logging.getLogger(__name__).exception("decision observer failed")


def attach(engine: Engine) -> None:
    """Wire metrics, tracing and protections into an engine (the server and the CLI call this)."""
    from warden.monitor import metrics, tracing
    from warden.monitor.worker import load_protections

    if not any(isinstance(o, MetricsObserver) for o in engine.observers):
        engine.observers.append(MetricsObserver())
        tracer = tracing.tracer_from_env()
        if tracer is not None:
            engine.observers.append(tracing.SpanObserver(tracer))
    for name, model in engine.models.items():
        if model is None:
            continue
        gauge = metrics.BREAKER_STATE.labels(name)
        gauge.set(metrics.BREAKER_VALUES[model.breaker.state.value])
        model.breaker.on_transition = lambda _old, new, gauge=gauge: gauge.set(
            metrics.BREAKER_VALUES[new.value]
        )
    load_protections(engine)
