"""SQLite write-ahead-log checkpoints, off the write path.

By default SQLite folds the log back into the database file inside whichever commit pushes the
log past 1,000 pages; with `synchronous=FULL` that commit then also syncs the database file, and
every decision queued behind it waits — the tail of the decision latency. Warden turns the
automatic checkpoint off on its connections and runs a passive checkpoint from this thread
instead: a passive checkpoint never blocks a writer or a reader, and a full one runs at close.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

INTERVAL = 0.5  # seconds between checkpoints; the log stays a few MB even under heavy load


class WalCheckpointer:
    """One background thread per recorder on SQLite."""

    def __init__(self, engine: sa.Engine, interval: float = INTERVAL) -> None:
        self._engine = engine
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="warden-wal", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        connection: Any = self._engine.raw_connection()
        try:
            while not self._stop.wait(self._interval):
                self._checkpoint(connection, "PASSIVE")
            self._checkpoint(connection, "PASSIVE")  # what the last commits added
        finally:
            connection.close()

    @staticmethod
    def _checkpoint(connection: Any, mode: str) -> None:
        try:
            cursor = connection.cursor()
            cursor.execute(f"PRAGMA wal_checkpoint({mode})")
            cursor.close()
        except Exception:  # a busy or closing database: the next round catches up
            log.debug("WAL checkpoint failed", exc_info=True)
