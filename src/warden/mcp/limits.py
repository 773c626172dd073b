"""Rate limits per principal and tool, and the loop detector, over sliding windows.

The windows live in the database (`mcp_windows`), so every gateway process sharing it counts
together and a restart keeps the count. A call's count is one upsert per window that applies
to it, all in one statement: the row keeps the newest call times within the window, at most
`cap` of them, which is all a limit needs (`max + 1` times say whether `max` is exceeded), so a
row stays small however busy the agent. The upsert is atomic on both databases (PostgreSQL locks
the conflicting row and re-reads its latest version; SQLite writes under one lock), so two
gateways racing never let more than `max` calls through.

The count is not a decision: it commits without waiting for the disk (SQLite
`synchronous=NORMAL` on its own connection, PostgreSQL `synchronous_commit=off`), so it never
waits for an fsync. A process crash loses nothing; a power loss may lose the counts of the
last moment, which the next decision's durable commit would otherwise have flushed.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import orjson
import sqlalchemy as sa

from warden.mcp.config import Limit, Loop
from warden.store.database import create_engine

Clock = Callable[[], float]
PRUNE_EVERY = 60.0  # seconds between deletions of stale windows by one process


@dataclass(frozen=True, slots=True)
class Exceeded:
    """A limit the call went over: what to do with it and why, in words for agent and reviewer."""

    action: str  # "review" | "refused"
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Hit:
    """One call counted in one window: `span` seconds long, keeping at most `cap` call times."""

    key: str
    span: float
    cap: int


def window_key(*parts: object) -> str:
    """A window's row key: a digest of what identifies it (principal, limit, tool, ...)."""
    return hashlib.sha256(orjson.dumps([str(p) for p in parts])).hexdigest()


_SQLITE = """
INSERT INTO mcp_windows (key, stamps, span, cap, expires_at) VALUES {values}
ON CONFLICT (key) DO UPDATE SET
  stamps = (
    SELECT json_group_array(v) FROM (
      SELECT v, row_number() OVER (ORDER BY v DESC) AS newest FROM (
        SELECT value AS v FROM json_each(mcp_windows.stamps)
        UNION ALL SELECT json_extract(excluded.stamps, '$[0]')
      )
      WHERE v > json_extract(excluded.stamps, '$[0]') - excluded.span
    ) WHERE newest <= excluded.cap
  ),
  span = excluded.span,
  cap = excluded.cap,
  expires_at = max(mcp_windows.expires_at, excluded.expires_at)
RETURNING key, json_array_length(stamps)
"""

_POSTGRESQL = """
INSERT INTO mcp_windows AS w (key, stamps, span, cap, expires_at) VALUES {values}
ON CONFLICT (key) DO UPDATE SET
  stamps = (
    SELECT coalesce(jsonb_agg(v), '[]'::jsonb)::text FROM (
      SELECT v, row_number() OVER (ORDER BY v::float8 DESC) AS newest
      FROM jsonb_array_elements(w.stamps::jsonb || excluded.stamps::jsonb) AS e(v)
      WHERE v::float8 > (excluded.stamps::jsonb ->> 0)::float8 - excluded.span
    ) AS kept WHERE newest <= excluded.cap
  ),
  span = excluded.span,
  cap = excluded.cap,
  expires_at = greatest(w.expires_at, excluded.expires_at)
RETURNING key, jsonb_array_length(stamps::jsonb)
"""


class Windows:
    """Sliding windows kept in the database, counted atomically across processes."""

    def __init__(self, db: sa.Engine) -> None:
        self.sqlite = db.dialect.name == "sqlite"
        self._source = db
        self._db: sa.Engine | None = None  # opened at the first count: many gateways have none
        self._own = False
        self._pruned = 0.0
        self._lock = threading.RLock()
        self._conn: Any = None  # a DBAPI connection of `db`, between counts
        self._statements: dict[int, str] = {}

    @property
    def db(self) -> sa.Engine:
        with self._lock:
            if self._db is None:
                self._db, self._own = self._engine(self._source)
            return self._db

    def _engine(self, db: sa.Engine) -> tuple[sa.Engine, bool]:
        url = db.url.render_as_string(hide_password=False)
        if self.sqlite:
            if db.url.database in (None, "", ":memory:"):
                return db, False  # one connection's database: share it, durably
            return create_engine(url, sqlite_synchronous="NORMAL"), True
        engine = sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)

        @sa.event.listens_for(engine, "connect")
        def _no_flush_wait(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET synchronous_commit TO off")
            dbapi_connection.commit()

        return engine, True

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._own and self._db is not None:
                self._db.dispose()

    def count(self, hits: Sequence[Hit], now: float) -> dict[str, int]:
        """Add a call at `now` to each window; its calls within the window, at most its cap."""
        if not hits:
            return {}
        params: list[Any] = []
        stamp = orjson.dumps([now]).decode()
        for hit in sorted(hits, key=lambda h: h.key):  # one lock order for every process
            params += [hit.key, stamp, hit.span, hit.cap, now + hit.span]
        sql = self._statements.get(len(hits))
        if sql is None:
            mark = "?" if self.sqlite else "%s"
            row = "(" + ", ".join([mark] * 5) + ")"
            template = _SQLITE if self.sqlite else _POSTGRESQL
            sql = self._statements[len(hits)] = template.format(values=", ".join([row] * len(hits)))
        with self._lock:
            prune = now - self._pruned >= PRUNE_EVERY
            if prune:
                self._pruned = now
            # One connection, kept: the statement is tiny, and a pool checkout, a transaction
            # object and a compiled statement would cost more than it does.
            conn = self._conn or self.db.raw_connection()
            self._conn = None
            try:
                cursor = conn.cursor()
                cursor.execute(sql, params)
                rows = cursor.fetchall()
                if prune:
                    mark = "?" if self.sqlite else "%s"
                    cursor.execute(f"DELETE FROM mcp_windows WHERE expires_at < {mark}", [now])
                cursor.close()
                conn.commit()
            except BaseException:
                conn.invalidate() if hasattr(conn, "invalidate") else conn.close()
                raise
            self._conn = conn
        return {str(key): int(n) for key, n in rows}


class Limiter:
    """The gateway's limits and loop detector over shared windows (`Windows`)."""

    def __init__(
        self,
        limits: Sequence[Limit],
        loop: Loop | None,
        windows: Windows,
        *,
        clock: Clock = time.time,
    ) -> None:
        self.limits = list(limits)
        self.loop = loop
        self.windows = windows
        self.clock = clock

    @property
    def active(self) -> bool:
        return bool(self.limits) or self.loop is not None

    def check(self, principal: str, server: str, tool: str, call_digest: str) -> Exceeded | None:
        """Count this call in its windows and say whether it exceeds one (refusals first).

        Blocking (one statement); call it from a worker thread on an event loop."""
        checks: list[tuple[Hit, Callable[[int], Exceeded | None]]] = []
        for limit in self.limits:
            if not (fnmatchcase(server, limit.server) and fnmatchcase(tool, limit.tool)):
                continue
            key = window_key("limit", principal, limit.server, limit.tool, limit.max, limit.per)
            checks.append(
                (
                    Hit(window_key(key, tool), limit.per, limit.max + 1),
                    _over_limit(limit, principal, tool),
                )
            )
        if self.loop is not None:
            loop = self.loop
            key = window_key("loop", principal, server, tool, call_digest, loop.within)
            checks.append((Hit(key, loop.within, loop.repeats), _looping(loop, tool)))
        if not checks:
            return None
        counts = self.windows.count([hit for hit, _ in checks], self.clock())
        found = [e for hit, judge in checks if (e := judge(counts[hit.key])) is not None]
        found.sort(key=lambda e: e.action != "refused")
        return found[0] if found else None


def _over_limit(limit: Limit, principal: str, tool: str) -> Callable[[int], Exceeded | None]:
    def judge(seen: int) -> Exceeded | None:
        if seen <= limit.max:
            return None
        return Exceeded(
            limit.exceed,
            "rate_limit",
            f"more than {limit.max} calls of {tool} in {limit.per:g} s by {principal}",
        )

    return judge


def _looping(loop: Loop, tool: str) -> Callable[[int], Exceeded | None]:
    def judge(seen: int) -> Exceeded | None:
        if seen < loop.repeats:
            return None
        return Exceeded(
            loop.exceed,
            "loop_detected",
            f"the same call of {tool} with the same arguments {seen} times in "
            f"{loop.within:g} s; the agent looks stuck in a loop",
        )

    return judge
