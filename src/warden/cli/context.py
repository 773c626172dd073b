"""Opening the local database and decision points for CLI commands."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import sqlalchemy as sa

from warden.engine import Engine
from warden.policy.loader import load_available
from warden.settings import Settings
from warden.store.database import create_engine, migrate


def settings(config: Path | None = None) -> Settings:
    return Settings.from_env(config=config)


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "unknown")


def principal_name() -> str:
    """The person running the CLI: `WARDEN_PRINCIPAL`, else the operating-system user. The
    same name as a person's API tokens and console login makes them one person for review."""
    return os.environ.get("WARDEN_PRINCIPAL", "").strip() or os_user()


def actor() -> str:
    """Who runs this command, as recorded in the ledger: the principal, then the credential."""
    from warden.auth.principals import principal_id_for

    name = principal_name()
    return f"principal:{principal_id_for(name)}:{name} via cli:{os_user()}"


def database(s: Settings) -> sa.Engine:
    db = create_engine(s.db_url)
    migrate(db)
    return db


def open_engine(s: Settings) -> Engine:
    from warden.monitor.observer import attach

    loaded = load_available(s.config)  # a broken file is reported; the other points work
    engine = Engine(
        loaded.points,
        database(s),
        actor=actor(),
        model_cache=s.model_cache,
        broken=loaded.broken,
    )
    attach(engine)  # so an alert's `tighten` holds for decisions made from the CLI too
    return engine
