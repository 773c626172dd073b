"""The FastAPI application."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from starlette.types import ASGIApp

import warden
from warden.api import errors, openapi
from warden.api.audit import router as audit_router
from warden.api.credentials import router as credentials_router
from warden.api.docs import mount_docs
from warden.api.limits import RequestLimits
from warden.api.monitoring import router as monitoring_router
from warden.api.responses import FastJSONResponse
from warden.api.reviews import router as reviews_router
from warden.api.rollouts import router as rollouts_router
from warden.api.routes import hot_routes, router
from warden.api.shedding import Shedding
from warden.auth.cache import TokenCache
from warden.console.app import mount_console
from warden.console.throttle import LoginThrottle
from warden.engine import Engine
from warden.errors import WardenError
from warden.heap import freeze_startup_heap
from warden.ledger.checkpointer import Checkpointer
from warden.monitor.observer import attach
from warden.monitor.worker import Monitor
from warden.policy.loader import load_available
from warden.review.desk import ReviewDesk
from warden.review.runtime import Worker, review_workers
from warden.rollout.controller import RolloutWorker
from warden.settings import Settings
from warden.store.database import create_engine, migrate

log = logging.getLogger(__name__)


def create_app(
    engine: Engine,
    *,
    max_body_bytes: int = 1_048_576,
    close_engine: bool = False,
    desk: ReviewDesk | None = None,
    workers: Sequence[Worker] | None = None,
    freeze_heap: bool = False,
) -> FastAPI:
    """The app. `workers` (default: review expiry and webhooks) run while it serves;
    `freeze_heap` is for a server process (see `warden.heap`)."""
    desk = desk or ReviewDesk(engine)
    background = list(review_workers(desk) if workers is None else workers)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for worker in background:
            worker.start()
        if freeze_heap:
            freeze_startup_heap()
        yield
        for worker in reversed(background):
            worker.stop()
        if close_engine:
            engine.close()
            engine.db.dispose()

    app = WardenAPI(
        engine,
        **_fastapi_telemetry(),
        title="Warden",
        version=warden.__version__,
        lifespan=lifespan,
        default_response_class=FastJSONResponse,
        docs_url=None,  # served offline by mount_docs
        redoc_url=None,
        description="Governed AI decisions: authority as code, human review, failure "
        "handling and a tamper-evident ledger.",
    )
    app.state.engine = engine
    app.state.tokens = TokenCache()
    app.state.login_throttle = LoginThrottle()
    app.state.review_desk = desk
    errors.install(app)
    openapi.install(app)
    app.include_router(router)
    app.include_router(reviews_router)
    app.include_router(monitoring_router)
    app.include_router(audit_router)
    app.include_router(rollouts_router)
    app.include_router(credentials_router)
    app.router.routes[0:0] = hot_routes()  # matched first (see hot_routes)
    mount_console(app)
    mount_docs(app)
    app.add_middleware(RequestLimits, max_bytes=max_body_bytes)
    return app


class WardenAPI(FastAPI):
    """FastAPI with `Shedding` as the outermost layer of its middleware stack (outside even
    the server-error handler), so a decision refused at capacity costs no more than a look at
    the request line."""

    def __init__(self, engine: Engine, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine = engine

    def build_middleware_stack(self) -> ASGIApp:
        return Shedding(super().build_middleware_stack(), self.engine)


def _fastapi_telemetry() -> dict[str, Any]:
    """FastAPI's own HTTP telemetry (spans, metrics and logs through the global OpenTelemetry
    providers) asks on every request whether any provider is set, which costs about as much
    as the rest of the middleware together. It is turned off unless a global provider is set
    when the app is built (as `opentelemetry-instrument` does) or FASTAPI_OTEL_AUTO_CONFIGURE
    is on; Warden's decision spans have a provider of their own (`warden.monitor.tracing`)."""
    try:
        from fastapi.telemetry._api import _unconfigured
        from opentelemetry import _logs, metrics, trace
    except ImportError:  # a FastAPI without native telemetry
        return {}
    if os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return {}
    providers = (
        trace.get_tracer_provider(),
        metrics.get_meter_provider(),
        _logs.get_logger_provider(),
    )
    if all(_unconfigured(p) for p in providers):
        return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    return {}


def create_app_from_env() -> FastAPI:
    """The factory `warden serve` runs in each worker process. A problem it cannot serve
    around is one log line and exit status 1, not a traceback through uvicorn's internals."""
    try:
        return _app_from_env()
    except WardenError as exc:
        log.error("warden cannot start: %s", exc)
    except sa.exc.SQLAlchemyError as exc:
        log.error("warden cannot open its database: %s", str(exc).splitlines()[0])
    raise SystemExit(1)


def _app_from_env() -> FastAPI:
    settings = Settings.from_env()
    db = create_engine(settings.db_url)
    migrate(db)
    loaded = load_available(settings.config)  # a broken file is logged; the others serve
    engine = Engine(
        loaded.points,
        db,
        actor="warden serve",
        model_cache=settings.model_cache,
        shadow_process=settings.shadow_process,
        shadow_host=settings.shadow_host,
        write_queue=settings.write_queue,
        shadow_backlog=settings.shadow_backlog,
        max_in_flight=settings.max_in_flight,
        writer_linger=settings.writer_linger_ms / 1000,
        broken=loaded.broken,
    )
    attach(engine)  # metrics, traces and protective actions; the monitor runs beside review
    desk = ReviewDesk(engine)
    return create_app(
        engine,
        max_body_bytes=settings.max_body_bytes,
        close_engine=True,
        desk=desk,
        freeze_heap=True,
        workers=[
            *review_workers(desk),
            Monitor(engine),
            RolloutWorker(engine),
            Checkpointer.from_env(db, settings.home),
        ],
    )
