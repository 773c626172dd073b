"""FastAPI's own HTTP telemetry is off unless OpenTelemetry is set up when the app is built:
asking on every request whether it is costs as much as the rest of the middleware."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from warden.api.app import _fastapi_telemetry

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
