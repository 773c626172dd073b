"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import warden
from warden.api import errors
from warden.api.auth import TokenCache
from warden.api.limits import BodyLimit
from warden.api.responses import FastJSONResponse
from warden.api.routes import router
from warden.engine import Engine
from warden.policy.loader import load_points
from warden.settings import Settings
from warden.store.database import create_engine, migrate


def create_app(
    engine: Engine, *, max_body_bytes: int = 1_048_576, close_engine: bool = False
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if close_engine:
            engine.close()
            engine.db.dispose()

    app = FastAPI(
        title="Warden",
        version=warden.__version__,
        lifespan=lifespan,
        default_response_class=FastJSONResponse,
        description="Governed AI decisions: authority as code, human review, failure "
        "handling and a tamper-evident ledger.",
    )
    app.state.engine = engine
    app.state.tokens = TokenCache()
    errors.install(app)
    app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    return app


def create_app_from_env() -> FastAPI:
    """The factory `warden serve` runs in each worker process."""
    settings = Settings.from_env()
    db = create_engine(settings.db_url)
    migrate(db)
    engine = Engine(load_points(settings.config), db, actor="warden serve")
    return create_app(engine, max_body_bytes=settings.max_body_bytes, close_engine=True)
