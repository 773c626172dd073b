"""OpenTelemetry spans for the stages of a decision, exported when an OTLP endpoint is set.

Spans are built after the decision is recorded, from the stage times the engine notes anyway,
so tracing adds nothing to a decision when it is off — and it is off unless
OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set and the `otel` extra is installed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from warden.monitor.observer import Observation

log = logging.getLogger(__name__)
STAGES = ("validate", "model", "route", "record")
ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def configured() -> bool:
    return any(os.environ.get(name) for name in ENDPOINT_VARS)


def tracer_from_env() -> Any | None:
    """An OTLP-exporting tracer, or None when no endpoint is set or the SDK is missing."""
    if not configured():
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "an OTLP endpoint is set but OpenTelemetry is not installed; "
            "pip install 'warden-ai[otel]' to export traces"
        )
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "warden")})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider.get_tracer("warden")


class SpanObserver:
    """Turns one observation into a `warden.decide` span with a child span per stage."""

    def __init__(self, tracer: Any, clock_offset_ns: int | None = None) -> None:
        self.tracer = tracer
        # perf_counter_ns -> epoch ns, fixed once so spans of one process line up
        self.offset = (
            clock_offset_ns
            if clock_offset_ns is not None
            else time.time_ns() - time.perf_counter_ns()
        )

    def __call__(self, observation: Observation) -> None:
        marks = (*observation.marks, observation.recorded_ns)
        if len(marks) != len(STAGES) + 1:
            return
        row = observation.row
        attributes = {
            "warden.point": row["point"],
            "warden.route": row["route"],
            "warden.decision_id": row["id"],
            "warden.policy_version": row["policy_version"],
            "warden.model_version": row["model_version"] or "",
        }
        to_epoch: Callable[[int], int] = lambda ns: ns + self.offset  # noqa: E731
        root = self.tracer.start_span(
            "warden.decide", start_time=to_epoch(marks[0]), attributes=attributes
        )
        from opentelemetry import trace

        context = trace.set_span_in_context(root)
        for stage, start, end in zip(STAGES, marks, marks[1:], strict=False):
            span = self.tracer.start_span(
                f"warden.{stage}", context=context, start_time=to_epoch(start)
            )
            span.end(end_time=to_epoch(end))
        root.end(end_time=to_epoch(marks[-1]))
