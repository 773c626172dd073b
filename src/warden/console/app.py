"""Mounting the console into the API app: its pages under /console, its files under static."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from warden.console.account import router as account_router
from warden.console.health import router as health_router
from warden.console.routes import router
from warden.console.tools import router as tools_router

HERE = Path(__file__).parent


def mount_console(app: FastAPI) -> None:
    app.include_router(router)
    app.include_router(health_router)
    app.include_router(tools_router)
    app.include_router(account_router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
