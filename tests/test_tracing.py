"""Traces: one span per decision stage when tracing is on, and nothing at all when it is off."""

from __future__ import annotations

import itertools

import pytest

from warden.engine import Engine
from warden.monitor import tracing
from warden.monitor.observer import MetricsObserver, attach

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

GOOD = {"amount": 1000, "income": 5000, "credit_score": 800}


def test_spans_per_stage_nest_under_the_decision(engine: Engine) -> None:
    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine.observers.append(tracing.SpanObserver(provider.get_tracer("test")))
    decision = engine.decide("loan_approval", GOOD)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {
        "warden.decide",
        "warden.validate",
        "warden.model",
        "warden.route",
        "warden.record",
    }
    root = spans["warden.decide"]
    assert root.attributes is not None and root.attributes["warden.decision_id"] == decision.id
    assert root.attributes["warden.route"] == "auto"
    stages = [spans[f"warden.{s}"] for s in tracing.STAGES]
    for stage in stages:
        assert stage.parent is not None and stage.parent.span_id == root.context.span_id
        assert stage.start_time is not None and stage.end_time is not None
        assert root.start_time <= stage.start_time <= stage.end_time <= root.end_time  # type: ignore[operator]
    for before, after in itertools.pairwise(stages):
        assert before.end_time == after.start_time


def test_tracing_is_off_without_an_endpoint(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in tracing.ENDPOINT_VARS:
        monkeypatch.delenv(name, raising=False)
    assert tracing.tracer_from_env() is None
    attach(engine)
    assert [type(o) for o in engine.observers] == [MetricsObserver]
