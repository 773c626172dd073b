"""The HTTP hot path: FastAPI's own telemetry is off unless OpenTelemetry is set up when the
app is built, and POST /v1/decisions is a plain route that FastAPI's route describes."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette import routing

from warden.api.app import _fastapi_telemetry, create_app
from warden.api.routes import router as decisions_router
from warden.engine import Engine

pytest.importorskip("fastapi.telemetry")


def test_off_when_no_provider_is_set() -> None:
    app = FastAPI(**_fastapi_telemetry())
    # off by configuration, so `enabled()` answers without asking the providers
    assert not any(app._telemetry[k] for k in ("tracing", "metrics", "logs"))
    assert app._native_telemetry.enabled() is False


def test_left_on_when_a_global_tracer_provider_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry import trace

    provider = sdk.TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    assert _fastapi_telemetry() == {}
    assert FastAPI(**_fastapi_telemetry())._native_telemetry.enabled() is True


def test_left_on_when_fastapi_configures_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    assert _fastapi_telemetry() == {}


def test_decisions_are_taken_by_the_plain_route_and_described_by_fastapis(
    engine: Engine,
) -> None:
    """The plain route is matched first and runs the same endpoint the OpenAPI document
    describes; FastAPI's route stays for the document and for nothing else."""
    app = create_app(engine)
    first = app.router.routes[0]
    assert type(first) is routing.Route and first.path == "/v1/decisions"
    assert first.methods == {"POST"} and not first.include_in_schema
    described = [
        r
        for r in decisions_router.routes
        if isinstance(r, APIRoute) and r.path == "/v1/decisions" and "POST" in (r.methods or ())
    ]
    assert [r.endpoint for r in described] == [first.endpoint]
    assert "post" in app.openapi()["paths"]["/v1/decisions"]
