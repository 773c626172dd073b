"""Engines for SQLite (the embedded default) and PostgreSQL, and schema migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event

MIGRATIONS = Path(__file__).with_name("migrations")


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(url: str, *, sqlite_synchronous: str = "FULL") -> sa.Engine:
    """An engine configured for Warden's write pattern on either backend.

    SQLite runs in WAL mode; write transactions start with BEGIN IMMEDIATE so the ledger head is
    read and advanced under the database's single write lock (the PostgreSQL equivalent is the
    row lock on `ledger_head`).
    """
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        _configure_sqlite(engine, sqlite_synchronous)
        return engine
    return sa.create_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
    )


def _configure_sqlite(engine: sa.Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        # Checkpoints run on the recorder's WalCheckpointer thread, not inside a commit.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        mode = "IMMEDIATE" if connection.get_execution_options().get("write") else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")


def write_connection(engine: sa.Engine) -> sa.Connection:
    """A connection whose transactions take the write lock at BEGIN (SQLite) — use for writes."""
    return engine.connect().execution_options(write=True)


def sqlite_url(home: Path) -> str:
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(home / 'warden.db').resolve()}"


def alembic_config(engine: sa.Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the newest migration. Safe to call at every start."""
    command.upgrade(alembic_config(engine), "head")
