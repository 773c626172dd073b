"""Where Warden keeps its state and finds its decision points, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from warden.rollout.shadow_host import HostAddress
from warden.store.database import sqlite_url


@dataclass(frozen=True)
class Settings:
    home: Path
    config: Path
    db_url: str
    max_body_bytes: int = 1_048_576
    shadow_process: bool = True  # WARDEN_SHADOW_PROCESS=0 keeps shadow models on a thread
    write_queue: int = 10_000  # WARDEN_WRITE_QUEUE: changes waiting to be written, then 503
    shadow_backlog: int = 10_000  # WARDEN_SHADOW_BACKLOG: shadow results waiting, then dropped
    max_in_flight: int = 1024  # WARDEN_MAX_IN_FLIGHT: decisions being made at once, then 503
    writer_linger_ms: float = 0.5  # WARDEN_WRITER_LINGER_MS: group commit's gather gap
    shadow_host: HostAddress | None = None  # set by `warden serve --workers N` for its workers

    @property
    def model_cache(self) -> Path:
        """Where registered model artifacts are unpacked (verified by hash on every load)."""
        return self.home / "models"

    @classmethod
    def from_env(
        cls, *, home: Path | None = None, config: Path | None = None, db_url: str | None = None
    ) -> Settings:
        home = home or Path(os.environ.get("WARDEN_HOME", ".warden"))
        config = config or Path(os.environ.get("WARDEN_CONFIG", "points"))
        url = db_url or os.environ.get("WARDEN_DB_URL") or sqlite_url(home)
        limit = int(os.environ.get("WARDEN_MAX_BODY_BYTES", "1048576"))
        shadow_process = os.environ.get("WARDEN_SHADOW_PROCESS", "1") != "0"
        return cls(
            home=home,
            config=config,
            db_url=url,
            max_body_bytes=limit,
            shadow_process=shadow_process,
            write_queue=_positive("WARDEN_WRITE_QUEUE", 10_000),
            shadow_backlog=_positive("WARDEN_SHADOW_BACKLOG", 10_000),
            max_in_flight=_positive("WARDEN_MAX_IN_FLIGHT", 1024),
            writer_linger_ms=_milliseconds("WARDEN_WRITER_LINGER_MS", 0.5),
            shadow_host=HostAddress.from_env(),
        )


def _milliseconds(name: str, default: float, most: float = 100.0) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= most:
        raise ValueError(f"{name} must be a number of milliseconds from 0 to {most:g}, not {raw!r}")
    return value


def _positive(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a positive whole number, not {raw!r}")
    return value
