"""SQLite write-ahead-log checkpoints, off the write path.

By default SQLite folds the log back into the database file inside whichever commit pushes the
log past 1,000 pages; with `synchronous=FULL` that commit then also syncs the database file, and
every decision queued behind it waits — the tail of the decision latency. Warden turns the
automatic checkpoint off on its connections and runs a passive checkpoint from this thread
instead: a passive checkpoint never blocks a writer or a reader. A passive checkpoint never
shrinks the log file, though, so when nothing was written for a while — and at close — a
TRUNCATE checkpoint folds the log back and cuts the file to zero bytes. Failures are warnings:
a log that cannot be checkpointed grows without bound.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

INTERVAL = 0.5  # seconds between checkpoints; the log stays a few MB even under heavy load
IDLE_ROUNDS = 4  # rounds without new log frames before the log file is truncated


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
            previous: int | None = None
            idle = 0
            while not self._stop.wait(self._interval):
                frames = self._checkpoint(connection, "PASSIVE")
                idle = idle + 1 if frames is not None and frames == previous else 0
                previous = frames
                if idle == IDLE_ROUNDS and frames:  # quiet: give the disk space back
                    previous = self._truncate(connection)
            self._truncate(connection)  # at close: fold in what the last commits added
        finally:
            connection.close()

    def _truncate(self, connection: Any) -> int | None:
        """A TRUNCATE checkpoint waits for readers while holding writers off, so it waits
        briefly; if it cannot run now, the next idle spell tries again."""
        cursor = connection.cursor()
        try:
            cursor.execute("PRAGMA busy_timeout=200")
            return self._checkpoint(connection, "TRUNCATE")
        finally:
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    @staticmethod
    def _checkpoint(connection: Any, mode: str) -> int | None:
        """Frames in the log after the checkpoint; None when it failed or was blocked."""
        try:
            cursor = connection.cursor()
            cursor.execute(f"PRAGMA wal_checkpoint({mode})")
            busy, frames, _done = cursor.fetchone()
            cursor.close()
        except Exception as exc:  # a busy or closing database: the next round tries again
            log.warning("WAL checkpoint (%s) failed: %s", mode, exc)
            return None
        if busy:
            if mode != "PASSIVE":
                log.warning("WAL checkpoint (%s) was blocked by a reader or writer", mode)
            return None
        return int(frames)
